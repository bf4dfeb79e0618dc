// Command mkdeb builds loopgate's Debian package with nfpm used as a
// library: the binary, the systemd unit, the sample config as a conffile,
// the state directory, maintainer scripts, and man pages and shell
// completions generated from the binary itself (so they match its CLI).
//
//	go run ./packaging/mkdeb -binary bin/loopgate -version "$(git describe --always --dirty)" -out bin
//
// It prints the path of the .deb it wrote. It runs the binary (for --help
// and `completion`), so build it for the host.
package main

import (
	"bytes"
	"compress/gzip"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/goreleaser/nfpm/v2"
	"github.com/goreleaser/nfpm/v2/deb"
	"github.com/goreleaser/nfpm/v2/files"
)

func main() {
	binary := flag.String("binary", "bin/loopgate", "the loopgate `binary` to package")
	version := flag.String("version", "", "the binary's version (git describe --always --dirty)")
	commits := flag.Int("commits", -1, "commits in history, orders untagged builds (default: git rev-list --count HEAD)")
	out := flag.String("out", "bin", "output `dir`")
	src := flag.String("src", "packaging", "`dir` holding loopgate.service, loopgate.yaml and debian/")
	needCompletion := flag.Bool("require-completion", false, "fail if the binary has no `completion` command")
	flag.Parse()
	if *version == "" {
		fmt.Fprintln(os.Stderr, "mkdeb: -version is required")
		os.Exit(2)
	}
	path, err := build(*binary, *version, *commits, *out, *src, *needCompletion)
	if err != nil {
		fmt.Fprintln(os.Stderr, "mkdeb:", err)
		os.Exit(1)
	}
	fmt.Println(path)
}

func build(binary, version string, commits int, outDir, src string, needCompletion bool) (string, error) {
	if commits < 0 {
		commits = gitCommits()
	}
	debVersion, err := DebVersion(version, commits)
	if err != nil {
		return "", err
	}
	gen, err := os.MkdirTemp("", "mkdeb-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(gen)

	contents := files.Contents{
		{Source: binary, Destination: "/usr/bin/loopgate", FileInfo: mode(0o755)},
		{Source: filepath.Join(src, "loopgate.service"), Destination: "/lib/systemd/system/loopgate.service", FileInfo: mode(0o644)},
		// A conffile: dpkg keeps the admin's edits across upgrades and
		// asks when both sides changed; remove leaves it, purge deletes it.
		{Source: filepath.Join(src, "loopgate.yaml"), Destination: "/etc/loopgate/loopgate.yaml", Type: files.TypeConfig, FileInfo: mode(0o640)},
		{Destination: "/etc/loopgate", Type: files.TypeDir, FileInfo: mode(0o755)},
		{Destination: "/var/lib/loopgate", Type: files.TypeDir, FileInfo: mode(0o700)},
		{Source: "LICENSE", Destination: "/usr/share/doc/loopgate/copyright", FileInfo: mode(0o644)},
	}
	pages, err := manPages(binary, gen)
	if err != nil {
		return "", err
	}
	for _, p := range pages {
		contents = append(contents, &files.Content{Source: p, Destination: "/usr/share/man/man1/" + filepath.Base(p), FileInfo: mode(0o644)})
	}
	comps, err := completions(binary, gen)
	if err != nil {
		if needCompletion {
			return "", err
		}
		fmt.Fprintln(os.Stderr, "mkdeb: no shell completions:", err)
	}
	contents = append(contents, comps...)

	info := nfpm.WithDefaults(&nfpm.Info{
		Name:          "loopgate",
		Arch:          "amd64",
		Version:       debVersion,
		VersionSchema: "none",
		Section:       "admin",
		Priority:      "optional",
		Maintainer:    "loopgate developers <dev@loopgate.invalid>",
		Homepage:      "https://github.com/loopgate/loopgate",
		License:       "see /usr/share/doc/loopgate/copyright",
		Description: "privileged-access gateway for agent loops, enforced in the kernel\n" +
			"loopgate redirects a workload's connections to protected targets into a\n" +
			"local proxy (eBPF on the workload's cgroup) that decides each command by\n" +
			"policy, holds risky ones for approval, masks data, injects credentials\n" +
			"and records every session. As installed it protects nothing until\n" +
			"/etc/loopgate/loopgate.yaml names targets and workloads.",
		Overridables: nfpm.Overridables{
			Depends:  []string{"libc6"},
			Contents: contents,
			Umask:    0o022,
			Scripts: nfpm.Scripts{
				PostInstall: filepath.Join(src, "debian", "postinst"),
				PreRemove:   filepath.Join(src, "debian", "prerm"),
				PostRemove:  filepath.Join(src, "debian", "postrm"),
			},
		},
	})
	if err := nfpm.PrepareForPackager(info, "deb"); err != nil {
		return "", fmt.Errorf("prepare: %w", err)
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return "", err
	}
	path := filepath.Join(outDir, deb.Default.ConventionalFileName(info))
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	if err := deb.Default.Package(info, f); err != nil {
		f.Close()
		os.Remove(path)
		return "", fmt.Errorf("package: %w", err)
	}
	return path, f.Close()
}

func mode(m os.FileMode) *files.ContentFileInfo {
	return &files.ContentFileInfo{Owner: "root", Group: "root", Mode: m}
}

var (
	tagVersion = regexp.MustCompile(`^v?([0-9][0-9A-Za-z.]*)(?:-([0-9]+)-g([0-9a-f]+))?(-dirty)?$`)
	bareHash   = regexp.MustCompile(`^([0-9a-f]{4,40})(-dirty)?$`)
)

// DebVersion turns `git describe --always --dirty` output into a Debian
// version that sorts as the builds do: "v1.2.3" is 1.2.3, "v1.2.3-4-gabc"
// 1.2.3+4.gabc, and an untagged "abc1234" 0.0.0+git<commits>.abc1234
// (commits orders them). "-dirty" becomes ".dirty".
func DebVersion(describe string, commits int) (string, error) {
	if m := tagVersion.FindStringSubmatch(describe); m != nil && !bareHash.MatchString(describe) {
		v := m[1]
		if m[2] != "" {
			v += "+" + m[2] + ".g" + m[3]
		}
		if m[4] != "" {
			v += map[bool]string{true: ".dirty", false: "+dirty"}[strings.Contains(v, "+")]
		}
		return v, nil
	}
	if m := bareHash.FindStringSubmatch(describe); m != nil {
		v := fmt.Sprintf("0.0.0+git%d.%s", max(commits, 0), m[1])
		if m[2] != "" {
			v += ".dirty"
		}
		return v, nil
	}
	if describe == "dev" {
		return "0.0.0+dev", nil
	}
	return "", fmt.Errorf("version %q: want git describe output (v1.2.3, v1.2.3-4-gabc, abc1234, with -dirty)", describe)
}

func gitCommits() int {
	out, err := exec.Command("git", "rev-list", "--count", "HEAD").Output()
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(out)))
	return n
}

// completions asks the binary for its bash, zsh and fish completion
// scripts and returns them as package contents at Debian's vendor paths.
func completions(binary, gen string) (files.Contents, error) {
	dests := []struct{ shell, dst string }{
		{"bash", "/usr/share/bash-completion/completions/loopgate"},
		{"zsh", "/usr/share/zsh/vendor-completions/_loopgate"},
		{"fish", "/usr/share/fish/vendor_completions.d/loopgate.fish"},
	}
	var out files.Contents
	for _, d := range dests {
		script, err := exec.Command(binary, "completion", d.shell).Output()
		if err != nil || len(bytes.TrimSpace(script)) == 0 {
			return nil, fmt.Errorf("%s completion %s: %v", binary, d.shell, exitMsg(err))
		}
		p := filepath.Join(gen, "completion."+d.shell)
		if err := os.WriteFile(p, script, 0o644); err != nil {
			return nil, err
		}
		out = append(out, &files.Content{Source: p, Destination: d.dst, FileInfo: mode(0o644)})
	}
	return out, nil
}

func exitMsg(err error) string {
	if ee, ok := err.(*exec.ExitError); ok {
		return strings.TrimSpace(string(ee.Stderr))
	}
	if err == nil {
		return "empty output"
	}
	return err.Error()
}

// gzipped compresses b as Debian ships man pages: no name, no time.
func gzipped(b []byte) []byte {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	zw.ModTime = time.Time{}
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}
