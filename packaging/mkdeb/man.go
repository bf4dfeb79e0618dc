package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// manPages writes loopgate.1 and one loopgate-CMD.1 per top-level command
// (holding its subcommands' help too), gzipped, into dir and returns their
// paths. The text is the binary's own --help, so the pages never drift from
// the CLI whichever CLI library renders it.
func manPages(binary, dir string) ([]string, error) {
	top, err := help(binary)
	if err != nil {
		return nil, err
	}
	cmds := commandNames(top)
	if len(cmds) == 0 {
		return nil, fmt.Errorf("%s --help lists no commands", binary)
	}
	var b strings.Builder
	header(&b, "loopgate", "privileged-access gateway for agent loops, enforced in the kernel")
	section(&b, "DESCRIPTION", top)
	var see []string
	for _, c := range cmds {
		see = append(see, `\fBloopgate-`+c+`\fR(1)`)
	}
	fmt.Fprintf(&b, ".SH SEE ALSO\n%s\n", strings.Join(see, ",\n"))
	paths := []string{}
	p, err := writePage(dir, "loopgate", b.String())
	if err != nil {
		return nil, err
	}
	paths = append(paths, p)

	for _, c := range cmds {
		text, err := help(binary, c)
		if err != nil {
			return nil, err
		}
		b.Reset()
		header(&b, "loopgate-"+c, usageLine(text, c))
		section(&b, "DESCRIPTION", text)
		for _, sub := range commandNames(text) {
			st, err := help(binary, c, sub)
			if err != nil {
				return nil, err
			}
			section(&b, "loopgate "+c+" "+sub, st)
		}
		fmt.Fprintf(&b, ".SH SEE ALSO\n\\fBloopgate\\fR(1)\n")
		p, err := writePage(dir, "loopgate-"+c, b.String())
		if err != nil {
			return nil, err
		}
		paths = append(paths, p)
	}
	return paths, nil
}

func help(binary string, args ...string) (string, error) {
	cmd := exec.Command(binary, append(args, "--help")...)
	cmd.Env = append(os.Environ(), "NO_COLOR=1", "COLUMNS=80")
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s %s --help: %v", binary, strings.Join(args, " "), exitMsg(err))
	}
	return string(out), nil
}

// commandNames reads the COMMANDS: section of a help text: one command a
// line, "name, alias   usage", with category headings unindented or
// ending in ':'.
func commandNames(text string) []string {
	var names []string
	in := false
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := sc.Text()
		trim := strings.TrimSpace(line)
		switch {
		case trim == "COMMANDS:":
			in = true
			continue
		case !in:
			continue
		case trim == "":
			continue
		case !strings.HasPrefix(line, " "):
			in = false // the next section (GLOBAL OPTIONS:, OPTIONS:)
			continue
		case strings.HasSuffix(trim, ":"):
			continue // a category heading
		}
		name := strings.TrimSuffix(strings.Fields(trim)[0], ",")
		if name == "help" || name == "h" {
			continue
		}
		names = append(names, name)
	}
	return names
}

// usageLine is the one-line summary of cmd from its help's NAME section.
func usageLine(text, cmd string) string {
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if _, rest, ok := strings.Cut(line, cmd+" - "); ok {
			return rest
		}
	}
	return "loopgate " + cmd
}

func header(b *strings.Builder, name, summary string) {
	fmt.Fprintf(b, ".TH %s 1 \"\" \"loopgate\" \"loopgate manual\"\n", strings.ToUpper(name))
	fmt.Fprintf(b, ".SH NAME\n%s \\- %s\n", name, escape(summary))
}

// section prints text verbatim (no fill) under a heading.
func section(b *strings.Builder, title, text string) {
	fmt.Fprintf(b, ".SH %s\n.nf\n", strings.ToUpper(escape(title)))
	for _, line := range strings.Split(strings.TrimRight(text, "\n"), "\n") {
		b.WriteString(escape(line))
		b.WriteByte('\n')
	}
	b.WriteString(".fi\n")
}

// escape keeps roff from reading text as requests or escapes.
func escape(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	s = strings.ReplaceAll(s, "-", `\-`)
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = `\&` + s
	}
	return s
}

func writePage(dir, name, roff string) (string, error) {
	p := filepath.Join(dir, name+".1.gz")
	return p, os.WriteFile(p, gzipped([]byte(roff)), 0o644)
}
