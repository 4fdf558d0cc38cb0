package chat

import (
	"sync"
	"sync/atomic"
)

// queue is a stream's bounded outbound queue: many producers (the router's
// fan-out, events, answers to the stream's own frames) and one consumer,
// the stream's writer. Unlike a buffered channel it holds memory only for
// what is queued, so the thousands of idle streams a node keeps cost
// nothing here.
type queue struct {
	mu    sync.Mutex // protects items and head
	items []any      // queued: items[head:]
	head  int
	max   int
	// n mirrors len(items)-head for len, which the router's fan-out asks
	// for every delivery (Backlogged) and the writer before it goes idle,
	// neither of which may take mu.
	n atomic.Int64
}

func newQueue(max int) *queue { return &queue{max: max} }

// put queues item, or returns false when max items are already queued.
func (q *queue) put(item any) bool {
	q.mu.Lock()
	if len(q.items)-q.head >= q.max {
		q.mu.Unlock()
		return false
	}
	q.items = append(q.items, item)
	q.n.Add(1)
	q.mu.Unlock()
	return true
}

// take returns the oldest item, or false when there is none. Only the
// stream's writer calls it.
func (q *queue) take() (any, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.head == len(q.items) {
		return nil, false
	}
	item := q.items[q.head]
	q.items[q.head] = nil
	q.head++
	q.n.Add(-1)
	switch {
	case q.head == len(q.items):
		// Drained: start over, and let a burst's big array go.
		if cap(q.items) > 256 {
			q.items = nil
		} else {
			q.items = q.items[:0]
		}
		q.head = 0
	case q.head > len(q.items)/2 && q.head > 64:
		n := copy(q.items, q.items[q.head:])
		clear(q.items[n:])
		q.items, q.head = q.items[:n], 0
	}
	return item, true
}

// len is the number of queued items.
func (q *queue) len() int { return int(q.n.Load()) }
