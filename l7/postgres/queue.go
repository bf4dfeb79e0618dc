package postgres

import (
	"sync"

	"github.com/loopgate/loopgate/store/event"
)

// maxQueued bounds the records waiting for the disk; past it the relay
// waits (backpressure) rather than drop a record.
const maxQueued = 1 << 16

// recordQueue hands records from the relay to the session's record writer.
// Pushing never wakes the writer except for the first record of a batch,
// so a busy session costs one wake-up per linger window, not per statement.
type recordQueue struct {
	mu     sync.Mutex
	cond   *sync.Cond // signalled when the queue drains
	evs    []event.Event
	closed bool
	kick   chan struct{} // capacity 1: "there is something"
}

func newRecordQueue() *recordQueue {
	q := &recordQueue{kick: make(chan struct{}, 1)}
	q.cond = sync.NewCond(&q.mu)
	return q
}

// push queues ev, waiting while the queue is full.
func (q *recordQueue) push(ev event.Event) {
	q.mu.Lock()
	for len(q.evs) >= maxQueued && !q.closed {
		q.cond.Wait()
	}
	q.evs = append(q.evs, ev)
	first := len(q.evs) == 1
	q.mu.Unlock()
	if first {
		select {
		case q.kick <- struct{}{}:
		default:
		}
	}
}

// take returns everything queued, and whether the queue is closed (then
// nothing more will come).
func (q *recordQueue) take() ([]event.Event, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	evs := q.evs
	q.evs = nil
	q.cond.Broadcast()
	return evs, q.closed
}

func (q *recordQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.cond.Broadcast()
	q.mu.Unlock()
	select {
	case q.kick <- struct{}{}:
	default:
	}
}
