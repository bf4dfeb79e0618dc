package l7_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/loopgate/loopgate/l7"
	"github.com/loopgate/loopgate/l7/l7test"
	"github.com/loopgate/loopgate/store/event"
	"github.com/loopgate/loopgate/tests/lgtest"
)

// TestProgressQueuesByteCounts: while a session runs, the bytes its client
// socket carried are queued for the record, so a daemon killed before the
// session's end leaves them behind.
func TestProgressQueuesByteCounts(t *testing.T) {
	t.Parallel()
	rec := l7test.NewRecorder()
	acc := newChanAccepter()
	ids := make(chan string, 1)
	srv := &l7.Server{
		Accepters: []l7.Accepter{acc},
		Recorder:  rec,
		Log:       slog.New(slog.NewTextHandler(t.Output(), nil)),
		Drain:     time.Second,
		Progress:  10 * time.Millisecond,
		Handlers: map[string]l7.Handler{"tcp": handlerFunc(func(ctx context.Context, c net.Conn, s *l7.Session) (l7.Result, error) {
			if err := s.Record(ctx, event.Event{Kind: event.KindDecision, Text: "connect", Decision: "allow"}); err != nil {
				return l7.Result{}, err
			}
			ids <- s.ID
			buf := make([]byte, 5)
			io.ReadFull(c, buf)
			c.Write([]byte("world!\n"))
			<-ctx.Done()
			return l7.Result{}, context.Cause(ctx)
		})},
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	defer func() { cancel(); <-done }()
	client, server := l7test.TCPPair(t)
	acc.ch <- l7.Accepted{Conn: server, Subject: subject()}
	id := <-ids
	client.Write([]byte("hello"))
	client.Read(make([]byte, 7))
	lgtest.Eventually(t, 5*time.Second, "byte counts 5/7", func() bool {
		up, down := rec.ProgressOf(id)
		return up == 5 && down == 7
	})
}
