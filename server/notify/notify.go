// Package notify posts messages for users who have no live stream to a
// configured webhook, so that a push service can be plugged in.
//
// Notify is meant for the publishing path and only queues: the HTTP work
// happens on a small pool of worker goroutines that own every request.
// The queue is bounded so that a slow or dead webhook costs memory we chose
// in advance, not memory proportional to the outage; when it is full the
// event is dropped and counted. A dropped notification loses nothing the
// user cannot get back: the message itself is in the log and arrives when
// the client next connects and resumes from its seq.
//
// Delivery is best effort, and an event may arrive more than once: a
// response lost on the way back looks like a failure and is retried. Every
// event carries an X-Parley-Delivery id that stays the same across
// retries, so the receiver can discard duplicates. Workers deliver in parallel, so events may arrive out of
// order; receivers order by (conversation_id, seq).
package notify

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Errors returned by New and Close. Callers compare with errors.Is.
var (
	// ErrBadURL means the webhook URL did not parse or is not http(s).
	ErrBadURL = errors.New("notify: bad webhook url")
	// ErrBadOption means an Option was given a value out of range.
	ErrBadOption = errors.New("notify: bad option")
	// ErrUndelivered is returned by Close when its context ended before
	// the queue drained; what was left is counted in Stats.Dropped.
	ErrUndelivered = errors.New("notify: closed with events undelivered")
)

// Event is one message for recipients who have no live stream. It is a
// plain value; Notify copies what it keeps.
type Event struct {
	UserIDs        []string // offline recipients; should not be empty
	ConversationID string
	Seq            uint64
	SenderID       string
	Preview        string // already truncated by the caller; sent as is
	SentAt         time.Time
}

// Stats is a snapshot of a Notifier's counters, each cumulative since New.
// The fields are read one at a time, so a snapshot taken while events are
// moving may be off by the events in flight.
//
// Every event passed to Notify ends in exactly one of Delivered, Failed and
// Dropped, so once the Notifier is closed
// Delivered+Failed+Dropped equals the number of Notify calls.
type Stats struct {
	Queued    uint64 // events Notify accepted (it returned true)
	Delivered uint64 // events the webhook answered with 2xx
	Retried   uint64 // repeated attempts, summed over all events
	Dropped   uint64 // queue full, closed, retries exhausted, or cut off by Close
	Failed    uint64 // events the webhook refused for good: a status other than 2xx, 429, 5xx
}

// Notifier queues events and posts them to a webhook. Its methods are safe
// for concurrent use. Notify and Stats never block; Close blocks until the
// workers have exited.
type Notifier struct {
	url    string
	cfg    config
	client *http.Client

	// ctx is the parent of every request and backoff wait; cancelling it is
	// how Close stops work that is already in flight.
	ctx    context.Context
	cancel context.CancelFunc

	// mu protects closed and the close of queue. Notify holds it shared for
	// one non-blocking send, so a send can never race with close(queue),
	// and an event accepted before Close is always seen by a worker.
	mu     sync.RWMutex
	closed bool
	queue  chan Event

	closeOnce sync.Once
	done      chan struct{} // closed when every worker has returned

	queued, delivered, retried, dropped, failed atomic.Uint64
	cutOff                                      atomic.Uint64 // dropped because Close's ctx ended; a subset of dropped
}

// New validates the webhook URL and options and starts the workers. The
// caller must call Close to stop them.
func New(rawURL string, opts ...Option) (*Notifier, error) {
	u, err := parseURL(rawURL)
	if err != nil {
		return nil, err
	}
	cfg := defaults()
	for _, o := range opts {
		o(&cfg)
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	client := cfg.client
	if client == nil {
		// A client of our own, so Close can drop its idle connections
		// without touching a client that someone else shares. No
		// Client.Timeout: each attempt carries its own deadline. No
		// redirects: the client would turn a POST into a GET on 302/303
		// and could carry a signed body to another host; a 3xx is logged
		// as a refusal instead.
		client = &http.Client{
			Transport: http.DefaultTransport.(*http.Transport).Clone(),
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &Notifier{
		url:    u,
		cfg:    cfg,
		client: client,
		ctx:    ctx,
		cancel: cancel,
		queue:  make(chan Event, cfg.queue),
		done:   make(chan struct{}),
	}
	var wg sync.WaitGroup
	for range cfg.workers {
		wg.Go(n.work)
	}
	go func() {
		wg.Wait()
		close(n.done)
	}()
	return n, nil
}

// Notify queues ev for delivery and reports whether it was accepted. It
// never blocks: when the queue is full, or the Notifier is closing, the
// event is dropped, counted in Stats.Dropped, and Notify returns false.
// Any goroutine may call it, including one that holds a lock on the
// publishing path.
//
// Notify copies ev.UserIDs, so the caller may reuse the slice. It does not
// log: a slog handler may write to a slow sink, and a flood of drops is
// better watched through Stats.
func (n *Notifier) Notify(ev Event) bool {
	ev.UserIDs = append([]string(nil), ev.UserIDs...)
	n.mu.RLock()
	defer n.mu.RUnlock()
	if n.closed {
		n.dropped.Add(1)
		return false
	}
	select {
	case n.queue <- ev:
		n.queued.Add(1)
		return true
	default:
		n.dropped.Add(1)
		return false
	}
}

// Stats returns the counters. It never blocks.
func (n *Notifier) Stats() Stats {
	return Stats{
		Queued:    n.queued.Load(),
		Delivered: n.delivered.Load(),
		Retried:   n.retried.Load(),
		Dropped:   n.dropped.Load(),
		Failed:    n.failed.Load(),
	}
}

// Close stops accepting events and keeps delivering what is queued until
// the queue is empty or ctx ends. When ctx ends first, Close cancels the
// requests and backoff waits in flight and drops what is left, counting it
// in Stats.Dropped. Either way no worker is running when Close returns.
//
// Close returns nil if every event was settled (delivered, refused, or
// given up on after its retries). If Close had to cut events off, it
// returns an error wrapping ErrUndelivered and ctx.Err().
//
// Close may be called more than once and from several goroutines; every
// call waits for the workers as above.
func (n *Notifier) Close(ctx context.Context) error {
	n.closeOnce.Do(func() {
		n.mu.Lock()
		n.closed = true
		close(n.queue)
		n.mu.Unlock()
	})
	select {
	case <-n.done:
	case <-ctx.Done():
	}
	// Cancel even after a clean drain: it releases the context's resources.
	n.cancel()
	<-n.done
	if n.cfg.client == nil {
		n.client.CloseIdleConnections()
	}
	// Counted rather than inferred from ctx: the queue may have emptied in
	// the instant between ctx ending and the cancel.
	if cut := n.cutOff.Load(); cut > 0 {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("%w (%d events): %w", ErrUndelivered, cut, err)
		}
		return fmt.Errorf("%w (%d events)", ErrUndelivered, cut)
	}
	return nil
}

// work delivers events until the queue is closed and empty. Once Close has
// cancelled n.ctx, deliver drops each remaining event at once, so the range
// ends quickly.
func (n *Notifier) work() {
	for ev := range n.queue {
		n.deliver(ev)
	}
}
