package jslog

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
	"github.com/parleychat/parley/server/jsget"
	"github.com/parleychat/parley/server/router"
)

// conv is what a node knows of one conversation.
//
// The feed delivers the stream in order and records how far it got in
// Log.done. A conv is created with created = Log.done, and every message of
// the conversation after created reaches the conv through the feed (fed,
// tail, subs); load finds base, the newest seq at or before created, from
// the stream leader. So max(base, fed) is exactly the conversation's newest
// seq at or before Log.done: everything up to it can be read from the
// stream, everything after it will still be delivered to subs. A conv
// that forget dropped is marked evicted and must not get subscribers or
// publishes; whoever finds it so asks conversation for a new one.
type conv struct {
	id      string
	subject string

	used atomic.Int64 // when conversation last returned it, Unix nanoseconds

	mu       sync.Mutex // protects everything below
	evicted  bool       // forgotten by the log: get a new conv instead
	created  uint64
	loaded   bool
	loading  chan struct{} // closed when the running load ends; nil if none runs
	base     uint64
	fed      uint64                       // newest seq delivered by the feed since created
	tail     []tailEntry                  // the frames fed last, oldest first, contiguous; kept while subs is not empty
	subs     map[router.Subscriber]uint64 // live subscribers and the seq each has seen
	pubLast  uint64                       // this node's best guess of the newest seq, for publishing
	pubKnown bool                         // pubLast came from an ack or the leader since the last conflict

	queue      []*pending    // publishes waiting, in order
	publishing bool          // a publisher goroutine runs for this conversation
	space      chan struct{} // closed and replaced when the queue shrinks
}

type tailEntry struct {
	frame *router.Frame
	prev  uint64 // the frame's prev_seq
}

// head is the newest seq at or before Log.done. c.mu must be held and c
// loaded.
func (c *conv) head() uint64 { return max(c.base, c.fed) }

// conversation returns id's state, creating it if needed.
func (l *Log) conversation(id string) (*conv, error) {
	if id == "" || strings.ContainsAny(id, " \t\r\n.*>") {
		// Conversation ids are subject-safe by construction; one that is
		// not would address other subjects.
		return nil, fmt.Errorf("jslog: conversation id %q cannot be a subject token", id)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, ErrClosed
	}
	c := l.convs[id]
	if c == nil {
		// Reading done under l.mu is what makes created exact: the feed
		// skips a message of an unknown conversation and records it as
		// done in one critical section of l.mu.
		c = &conv{id: id, subject: l.msgPrefix + id, created: l.done.Load(),
			subs: make(map[router.Subscriber]uint64), space: make(chan struct{})}
		l.convs[id] = c
	}
	c.used.Store(time.Now().UnixNano())
	return c, nil
}

// locked returns id's state loaded and with its lock held, never one that
// has been forgotten.
func (l *Log) locked(id string) (*conv, error) {
	for {
		c, err := l.conversation(id)
		if err != nil {
			return nil, err
		}
		if err := l.load(c); err != nil {
			return nil, err
		}
		c.mu.Lock()
		if !c.evicted {
			return c, nil
		}
		c.mu.Unlock()
	}
}

// forget drops the state of conversations nobody has used for the forget
// period and nobody follows or publishes to on this node, so that a node's
// memory follows its live conversations, not every one it ever served. It
// holds feedMu, so that no message is between the feed's lookup of a
// conversation and its delivery: a conversation created again starts from
// what the feed has done, as any new one does.
func (l *Log) forget() int {
	cutoff := time.Now().Add(-l.opts.forget).UnixNano()
	l.feedMu.Lock()
	defer l.feedMu.Unlock()
	l.mu.Lock()
	var idle []*conv
	for _, c := range l.convs {
		if c.used.Load() < cutoff {
			idle = append(idle, c)
		}
	}
	l.mu.Unlock()
	n := 0
	for _, c := range idle {
		c.mu.Lock()
		if len(c.subs) == 0 && len(c.queue) == 0 && !c.publishing && c.loading == nil && c.used.Load() < cutoff {
			c.evicted = true
			l.mu.Lock()
			if l.convs[c.id] == c {
				delete(l.convs, c.id)
				n++
			}
			l.mu.Unlock()
		}
		c.mu.Unlock()
	}
	return n
}

// lookup returns id's state if the node has one.
func (l *Log) lookup(id string) *conv {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.convs[id]
}

// load finds c's base once; concurrent callers wait for the one doing it.
func (l *Log) load(c *conv) error {
	for {
		c.mu.Lock()
		if c.loaded {
			c.mu.Unlock()
			return nil
		}
		if ch := c.loading; ch != nil {
			c.mu.Unlock()
			select {
			case <-ch:
				continue
			case <-l.ctx.Done():
				return ErrClosed
			}
		}
		ch := make(chan struct{})
		c.loading = ch
		created := c.created
		c.mu.Unlock()

		// Through a leader election: what is at stake is a subscriber's
		// catch-up or a head, which are better late than failed.
		var base uint64
		ctx, cancel := context.WithTimeout(l.ctx, l.opts.retry)
		err := l.retry(ctx, func(ctx context.Context) (err error) {
			base, err = l.lastAtOrBefore(ctx, c.subject, created)
			return err
		})
		cancel()
		c.mu.Lock()
		c.loading = nil
		if err == nil {
			c.base, c.loaded = base, true
		}
		c.mu.Unlock()
		close(ch)
		if err != nil {
			return fmt.Errorf("jslog: head of %s: %w", c.id, err)
		}
		return nil
	}
}

// lastAtOrBefore returns the newest seq of subject that is <= bound, 0 if
// none, from the stream leader: the newest message, then back along
// prev_seq while it is past bound (rarely more than a step or two: only
// messages stored since bound was read).
func (l *Log) lastAtOrBefore(ctx context.Context, subject string, bound uint64) (uint64, error) {
	m, err := l.leaderGet(ctx, l.opts.stream, jsget.Request{LastFor: subject})
	if errors.Is(err, errNotFound) {
		return 0, nil
	}
	for err == nil && m.seq > bound {
		p := prevSeq(m.data)
		if p <= bound {
			return p, nil
		}
		m, err = l.leaderGet(ctx, l.opts.stream, jsget.Request{Seq: p})
	}
	if err != nil {
		return 0, err
	}
	return m.seq, nil
}

// startFeed starts the node's one ordered consumer from the message after
// last, in place of any feed already running: messages the replaced feed
// still hands over are ignored, because each feed has a generation and
// only the newest one's messages are handled.
func (l *Log) startFeed(ctx context.Context, last uint64) error {
	cons, err := l.stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{l.msgPrefix + ">"},
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    last + 1,
	})
	if err != nil {
		return unavailable("jslog: create feed", err)
	}
	l.feedMu.Lock()
	defer l.feedMu.Unlock()
	l.feedGen++
	gen := l.feedGen
	// A short pull expiry makes missed heartbeats, and so the move to a new
	// stream leader, noticed within seconds.
	cc, err := cons.Consume(func(m jetstream.Msg) {
		l.feedMu.Lock()
		defer l.feedMu.Unlock()
		if gen == l.feedGen {
			l.handle(m)
		}
	},
		jetstream.PullExpiry(2*time.Second),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			l.opts.logger.Debug("jslog: feed", "err", err)
		}))
	if err != nil {
		return unavailable("jslog: start feed", err)
	}
	l.feed = cc
	return nil
}

// stopFeed stops the running feed, if any, and returns the seq it
// delivered through; from then on no feed message is handled.
func (l *Log) stopFeed() (last uint64, stopped <-chan struct{}) {
	l.feedMu.Lock()
	l.feedGen++
	old := l.feed
	l.feed = nil
	last = l.done.Load()
	l.feedMu.Unlock()
	done := make(chan struct{})
	if old == nil {
		close(done)
		return last, done
	}
	// Stop waits for a reset the consumer may be retrying (a request of up
	// to ten seconds when JetStream does not answer); nobody needs to wait
	// for that but Close. The goroutine counts in l.wg even while Close
	// runs: Close calls this before it waits, and the watchdog, the other
	// caller, is itself counted.
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		defer close(done)
		old.Stop()
		select {
		case <-old.Closed():
		case <-time.After(l.opts.timeout):
		}
	}()
	return last, done
}

// watch forgets idle conversations, and restarts the feed when it has
// stood still for feedStall while the stream moved on. The client library's ordered consumer recovers from most
// failures by itself, but not always from the loss of the server it ran
// on; the watchdog makes sure the feed never stops for good.
func (l *Log) watch() {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	last, since, swept := l.done.Load(), time.Now(), time.Now()
	for {
		select {
		case <-t.C:
		case <-l.ctx.Done():
			return
		}
		if time.Since(swept) >= l.opts.forget/2 {
			l.forget()
			swept = time.Now()
		}
		if d := l.done.Load(); d != last {
			last, since = d, time.Now()
			continue
		}
		if time.Since(since) < feedStall {
			continue
		}
		ctx, cancel := context.WithTimeout(l.ctx, l.opts.timeout)
		info, err := l.stream.Info(ctx)
		switch {
		case err != nil:
			// No leader yet: ask again at the next tick.
		case info.State.LastSeq > last:
			l.opts.logger.Warn("jslog: feed stalled; restarting it", "at", last, "stream", info.State.LastSeq)
			from, _ := l.stopFeed()
			if err := l.startFeed(ctx, from); err != nil {
				l.opts.logger.Warn("jslog: feed restart failed; will retry", "err", err)
			}
			since = time.Now()
		default:
			since = time.Now() // idle, not stalled
		}
		cancel()
	}
}

// feedStall is how long the feed may stand still behind the stream before
// the watchdog asks whether it is stalled. Asking costs a stream info
// request, so an idle feed asks once per feedStall.
const feedStall = 2 * time.Second

// handle is the feed's callback: it runs for every message of the stream,
// in order, on one goroutine.
func (l *Log) handle(m jetstream.Msg) {
	meta, err := m.Metadata()
	if err != nil {
		l.opts.logger.Error("jslog: feed message without metadata", "err", err)
		return
	}
	seq := meta.Sequence.Stream
	l.lastFed.Store(time.Now().UnixNano())
	if seq <= l.done.Load() {
		return
	}
	id := strings.TrimPrefix(m.Subject(), l.msgPrefix)
	if l.opts.observe != nil {
		var msg parleyv1.Message
		if err := proto.Unmarshal(m.Data(), &msg); err == nil {
			msg.Seq = seq
			l.opts.observe(id, &msg)
		}
	}
	l.mu.Lock()
	c := l.convs[id]
	if c == nil {
		l.done.Store(seq)
		l.mu.Unlock()
		return
	}
	l.mu.Unlock()

	data := m.Data()
	f := &router.Frame{Conv: id, Seq: seq, Data: wrap(data, seq)}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.fed = seq
	switch {
	case len(c.subs) == 0:
		// A tail must hold every message since its first one; one that
		// stops growing must go. Catch-up of a conversation nobody here
		// follows reads the stream.
		c.tail = nil
	case l.opts.tail > 0:
		c.tail = append(c.tail, tailEntry{frame: f, prev: prevSeq(data)})
		if len(c.tail) > l.opts.tail {
			c.tail[0] = tailEntry{}
			c.tail = c.tail[1:]
		}
	}
	l.deliver(c, f)
	l.done.Store(seq)
}

// deliver hands f to c's live subscribers that have not seen it and forgets
// those that refuse it. c.mu must be held.
func (l *Log) deliver(c *conv, f *router.Frame) {
	for s, seen := range c.subs {
		if f.Seq != 0 && f.Seq <= seen {
			continue
		}
		if s.Deliver(f) {
			l.deliveries.Add(1)
		} else {
			delete(c.subs, s)
			l.subs.Add(-1)
		}
	}
}

// attach makes sub a live subscriber of c that has seen everything up to
// seen; later frames at or below seen are not delivered to it again (they
// can arrive when the subscriber read them from a node whose feed is ahead
// of this one's). c.mu must be held.
func (l *Log) attach(c *conv, sub router.Subscriber, seen uint64) {
	if _, ok := c.subs[sub]; !ok {
		l.subs.Add(1)
	}
	c.subs[sub] = seen
}

// Catchup advances sub through conv from after, with router.Router's
// contract: it returns up to max frames with seq > after, oldest first, and
// the position to continue from; when live is true, sub has been attached
// and every later message reaches it through Deliver, after the frames this
// same call returned, with neither a gap nor a duplicate. Call it again
// with next until live is true.
//
// Frames come from the node's tail of recent frames when it reaches back
// to after, and otherwise from the stream (batched direct gets, with edits
// and deletes applied to the posts); sub is attached under the same lock
// the feed takes to deliver, at the seq the feed has reached.
func (l *Log) Catchup(convID string, after uint64, max int, sub router.Subscriber) (frames []*router.Frame, next uint64, live bool, err error) {
	c, err := l.locked(convID)
	if err != nil {
		return nil, after, false, err
	}
	head := c.head()
	if after >= head {
		l.attach(c, sub, after)
		c.mu.Unlock()
		return nil, after, true, nil
	}
	if len(c.tail) > 0 && c.tail[0].prev <= after {
		// The tail holds every message after after.
		for _, e := range c.tail {
			if e.frame.Seq <= after {
				continue
			}
			if len(frames) == max {
				c.mu.Unlock()
				return frames, frames[len(frames)-1].Seq, false, nil
			}
			frames = append(frames, e.frame)
		}
		l.attach(c, sub, head)
		c.mu.Unlock()
		return frames, head, true, nil
	}
	c.mu.Unlock()

	recs, more, err := l.forward(l.ctx, c, after, head, head, max)
	if err != nil {
		return nil, after, false, fmt.Errorf("jslog: replay %s: %w", convID, err)
	}
	frames = make([]*router.Frame, len(recs))
	for i, r := range recs {
		frames[i] = &router.Frame{Conv: convID, Seq: r.Seq, Data: wrapBytes(r.Data)}
	}
	next = head
	if more && len(recs) > 0 {
		next = recs[len(recs)-1].Seq
	}
	return frames, next, false, nil
}

// Unsubscribe detaches sub from conv. Frames already queued stay queued.
func (l *Log) Unsubscribe(convID string, sub router.Subscriber) {
	c := l.lookup(convID)
	if c == nil {
		return
	}
	c.mu.Lock()
	if _, ok := c.subs[sub]; ok {
		delete(c.subs, sub)
		l.subs.Add(-1)
	}
	c.mu.Unlock()
}

// Head returns the newest seq of conv this node knows: what its feed has
// delivered, or what its own publishes were acknowledged with. A message
// just stored through another node may be missing for as long as the feed
// takes to deliver it, usually a millisecond; when the feed has delivered
// nothing for feedQuiet (an idle stream, or a feed that stalls), Head asks
// the stream leader instead, so that a stalled feed does not leave it
// behind for long.
func (l *Log) Head(convID string) (uint64, error) {
	c, err := l.locked(convID)
	if err != nil {
		return 0, err
	}
	head := max(c.head(), c.pubLast)
	c.mu.Unlock()
	if time.Since(time.Unix(0, l.lastFed.Load())) < feedQuiet {
		return head, nil
	}
	m, err := l.leaderGet(l.ctx, l.opts.stream, jsget.Request{LastFor: c.subject})
	if err != nil || m.seq <= head {
		return head, nil // what the node knows is the best answer it has
	}
	c.mu.Lock()
	c.pubLast = max(c.pubLast, m.seq)
	c.mu.Unlock()
	return m.seq, nil
}

// feedQuiet is how long the feed may deliver nothing before Head stops
// trusting it alone.
const feedQuiet = time.Second

// Broadcast sends an event frame (Seq 0: a receipt, typing, presence) to
// conv's live subscribers on every node, this one included, over core NATS.
// Events are best effort, as in the router: subscribers still replaying
// miss them, and they are not ordered with the conversation's messages.
func (l *Log) Broadcast(convID string, f *router.Frame) {
	if err := l.nc.Publish(l.evtPrefix+convID, f.Data); err != nil {
		l.opts.logger.Debug("jslog: broadcast", "conv", convID, "err", err)
	}
}

// event delivers a broadcast event to this node's subscribers.
func (l *Log) event(m *nats.Msg) {
	id := strings.TrimPrefix(m.Subject, l.evtPrefix)
	c := l.lookup(id)
	if c == nil {
		return
	}
	f := &router.Frame{Conv: id, Data: m.Data}
	c.mu.Lock()
	l.deliver(c, f)
	c.mu.Unlock()
}
