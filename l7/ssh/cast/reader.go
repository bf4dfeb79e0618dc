package cast

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// MaxLine is the longest cast line Reader accepts.
const MaxLine = 4 << 20

// Event is one recorded event.
type Event struct {
	// Time is seconds since the start.
	Time float64
	Code string
	Data string
}

// Size returns a resize event's columns and rows.
func (e Event) Size() (cols, rows int, ok bool) {
	c, r, found := strings.Cut(e.Data, "x")
	if e.Code != Resize || !found {
		return 0, 0, false
	}
	cols, err1 := strconv.Atoi(c)
	rows, err2 := strconv.Atoi(r)
	return cols, rows, err1 == nil && err2 == nil && cols > 0 && rows > 0
}

// Reader reads an asciicast v2 recording.
type Reader struct {
	// Header is the cast's first line.
	Header Header
	sc     *bufio.Scanner
	line   int
	last   float64
}

// NewReader reads the header of a cast.
func NewReader(r io.Reader) (*Reader, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), MaxLine)
	cr := &Reader{sc: sc}
	if !sc.Scan() {
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("cast header: %w", err)
		}
		return nil, errors.New("cast header: empty recording")
	}
	cr.line = 1
	if err := json.Unmarshal(sc.Bytes(), &cr.Header); err != nil {
		return nil, fmt.Errorf("cast header: %w", err)
	}
	if cr.Header.Version != 2 {
		return nil, fmt.Errorf("cast header: version %d, want 2", cr.Header.Version)
	}
	if cr.Header.Width < 0 || cr.Header.Height < 0 {
		return nil, fmt.Errorf("cast header: size %dx%d", cr.Header.Width, cr.Header.Height)
	}
	return cr, nil
}

// Next returns the next event, or io.EOF after the last. Blank lines are
// skipped; times must not go backwards.
func (r *Reader) Next() (Event, error) {
	for r.sc.Scan() {
		r.line++
		b := bytes.TrimSpace(r.sc.Bytes())
		if len(b) == 0 {
			continue
		}
		var raw []json.RawMessage
		if err := json.Unmarshal(b, &raw); err != nil || len(raw) != 3 {
			return Event{}, fmt.Errorf("cast line %d: not a [time, code, data] event", r.line)
		}
		var e Event
		if err := json.Unmarshal(raw[0], &e.Time); err != nil {
			return Event{}, fmt.Errorf("cast line %d: time: %w", r.line, err)
		}
		if err := json.Unmarshal(raw[1], &e.Code); err != nil {
			return Event{}, fmt.Errorf("cast line %d: code: %w", r.line, err)
		}
		if err := json.Unmarshal(raw[2], &e.Data); err != nil {
			return Event{}, fmt.Errorf("cast line %d: data: %w", r.line, err)
		}
		if e.Time < r.last || e.Time != e.Time || e.Time > 1e9 {
			return Event{}, fmt.Errorf("cast line %d: time %v out of order", r.line, e.Time)
		}
		r.last = e.Time
		return e, nil
	}
	if err := r.sc.Err(); err != nil {
		return Event{}, fmt.Errorf("cast line %d: %w", r.line+1, err)
	}
	return Event{}, io.EOF
}

// PlayOptions shape a replay.
type PlayOptions struct {
	// Speed divides every delay (default 1).
	Speed float64
	// MaxIdle caps a pause between events (before Speed), like
	// asciinema's idle_time_limit; 0 takes the header's, or none.
	MaxIdle time.Duration
	// Resize writes an xterm resize sequence (CSI 8;rows;cols t) for
	// resize events and the header's size.
	Resize bool
	// Sleep waits d or until ctx ends (tests replace it).
	Sleep func(ctx context.Context, d time.Duration) error
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Play writes r's output events to w, waiting between them as recorded
// (idle gaps capped, sped up by Speed). Input and marker events are not
// shown. It returns when the cast ends, ctx ends, or writing fails.
func Play(ctx context.Context, w io.Writer, r *Reader, o PlayOptions) error {
	if o.Speed <= 0 {
		o.Speed = 1
	}
	if o.Sleep == nil {
		o.Sleep = sleep
	}
	if o.MaxIdle == 0 && r.Header.IdleTimeLimit > 0 {
		o.MaxIdle = time.Duration(r.Header.IdleTimeLimit * float64(time.Second))
	}
	if o.Resize && r.Header.Width > 0 && r.Header.Height > 0 {
		if _, err := fmt.Fprintf(w, "\x1b[8;%d;%dt", r.Header.Height, r.Header.Width); err != nil {
			return err
		}
	}
	prev := 0.0
	for {
		e, err := r.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		gap := time.Duration((e.Time - prev) * float64(time.Second))
		prev = e.Time
		if o.MaxIdle > 0 && gap > o.MaxIdle {
			gap = o.MaxIdle
		}
		if err := o.Sleep(ctx, time.Duration(float64(gap)/o.Speed)); err != nil {
			return err
		}
		switch e.Code {
		case Output:
			_, err = io.WriteString(w, e.Data)
		case Resize:
			if cols, rows, ok := e.Size(); ok && o.Resize {
				_, err = fmt.Fprintf(w, "\x1b[8;%d;%dt", rows, cols)
			}
		}
		if err != nil {
			return err
		}
	}
}
