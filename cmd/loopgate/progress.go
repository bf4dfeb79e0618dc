package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"
)

const (
	// progressAfter is how long a command runs before its bar shows: a
	// quick one prints nothing extra.
	progressAfter = time.Second
	// progressEvery is how often the bar is redrawn at most.
	progressEvery = 100 * time.Millisecond
)

// progress draws a progress bar on a terminal (stderr), from progressAfter
// on. Written to anything but a terminal (a pipe, a file) it prints
// nothing. update is safe to call from the goroutine doing the work; it
// costs a clock read per call and a write at most every progressEvery.
type progress struct {
	w     io.Writer // nil: not a terminal, draw nothing
	what  string
	unit  string
	start time.Time

	mu    sync.Mutex // guards next and drawn
	next  time.Time  // when the bar may be drawn again
	drawn bool
}

// newProgress returns a bar for what, counted in unit, on w if w is a
// terminal.
func newProgress(w io.Writer, what, unit string) *progress {
	p := &progress{what: what, unit: unit, start: time.Now()}
	p.next = p.start.Add(progressAfter)
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		p.w = w
	}
	return p
}

// update reports done of total units (total 0: unknown).
func (p *progress) update(done, total int64) {
	if p == nil || p.w == nil {
		return
	}
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	if now.Before(p.next) {
		return
	}
	p.next = now.Add(progressEvery)
	p.drawn = true
	fmt.Fprint(p.w, "\r"+progressLine(p.what, p.unit, done, total, now.Sub(p.start), termWidth(p.w)))
}

// done clears the bar if one was drawn.
func (p *progress) done() {
	if p == nil || p.w == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.drawn {
		fmt.Fprint(p.w, "\r\033[K")
		p.drawn = false
	}
}

// progressLine renders one line of at most width columns:
// "verify [#####.....]  42% 4200000/10000000 events 12s".
func progressLine(what, unit string, done, total int64, took time.Duration, width int) string {
	took = took.Round(time.Second)
	if total <= 0 {
		return fmt.Sprintf("%s %d %s %s", what, done, unit, took)
	}
	done = min(done, total)
	pct := done * 100 / total
	tail := fmt.Sprintf(" %3d%% %d/%d %s %s", pct, done, total, unit, took)
	bar := width - len(what) - len(tail) - 4
	if bar < 10 {
		return what + tail
	}
	fill := int(int64(bar) * done / total)
	return what + " [" + strings.Repeat("#", fill) + strings.Repeat(".", bar-fill) + "]" + tail
}

func termWidth(w io.Writer) int {
	if f, ok := w.(*os.File); ok {
		if cols, _, err := term.GetSize(int(f.Fd())); err == nil && cols > 0 {
			return min(cols, 100)
		}
	}
	return 80
}
