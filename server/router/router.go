// Package router sequences messages per conversation, fans them out from
// memory to subscribers, and hands them to the log behind delivery.
//
// Delivery never waits for the disk; the sender's acknowledgement always
// does. A message is sequenced, appended to its conversation's in-memory
// tail, queued to every live subscriber and queued to the log in one
// critical section, so subscribers see a conversation's messages in seq
// order. The acknowledgement callback runs once the log has committed it.
//
// Lock order: dedup shard, then conversation, then Router.mu. Nothing
// that may wait for the log's writer runs under any of them, because the
// writer's callbacks take them.
package router

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
	"github.com/parleychat/parley/server/store"
)

// Log is the durable side of the router. *store.Store implements it.
type Log interface {
	// Append queues e and calls done once it is durable or failed. Calls for
	// one conversation are committed in the order they are made.
	Append(e store.Entry, done func(error))
	// Head returns the newest committed seq of a conversation.
	Head(conv string) (uint64, error)
	// Range returns committed messages with after < seq <= upto, oldest first.
	Range(conv string, after, upto uint64, limit int) ([]store.Record, bool, error)
	// Dedup finds where an accepted (sender, client_message_id) went.
	Dedup(sender, clientMsgID string) (store.DedupRecord, bool, error)
	// Unclean reports that the previous process did not stop cleanly.
	Unclean() bool
}

var _ Log = (*store.Store)(nil)

// Frame is one message encoded once for every recipient: Data is the wire
// form of a response whose field 1 is the Message, which is the layout of
// both ChatResponse and SubscribeResponse. A Frame is immutable.
type Frame struct {
	Conv string
	Seq  uint64
	Data []byte
}

// Subscriber receives a conversation's live frames.
type Subscriber interface {
	// Deliver queues f for its stream. It is called with the conversation's
	// lock held, so it must not block and must not call back into the
	// router. It returns false when the subscriber is gone or cannot keep
	// up; the router then forgets it for that conversation.
	Deliver(f *Frame) bool
}

// Message is what a sender asks the router to publish.
type Message struct {
	Conv        string
	Sender      string
	ClientMsgID string
	Body        string
	// Attachments have been checked by the caller and carry their sizes.
	Attachments []*parleyv1.Attachment
	// Kind is a post, an edit or a delete; for the last two TargetSeq names
	// the post and the caller has checked that the sender may change it.
	Kind      parleyv1.MessageKind
	TargetSeq uint64
}

// Result acknowledges a durable message.
type Result struct {
	Conv      string
	Seq       uint64
	SentAt    time.Time
	Duplicate bool // a resend of an accepted client_message_id
}

// AckFunc receives a publish's outcome once it is durable or has failed. It
// runs on the log's writer goroutine: it must be quick and must not block.
type AckFunc func(Result, error)

// ErrClosed is returned by Publish after Close.
var ErrClosed = errors.New("router: closed")

type options struct {
	pace   time.Duration
	ackObs func(time.Duration)
	tail   int
	window uint64
	now    func() time.Time
}

// Option configures New.
type Option func(*options)

// WithPacing sets how long Publish waits, at most, for a saturated
// conversation (see Backlogger) to drain before it sequences more. Zero
// turns pacing off: the fan-out then only ever cuts slow consumers.
func WithPacing(d time.Duration) Option { return func(o *options) { o.pace = d } }

// WithTail sets how many committed messages per conversation stay in memory
// for catch-up without a disk read.
func WithTail(n int) Option { return func(o *options) { o.tail = n } }

// WithWindow sets W, how far sequencing may run ahead of the durable head.
// After an unclean stop every conversation resumes at head + W + 1, so that
// no seq that may have been delivered is handed out twice.
func WithWindow(w uint64) Option { return func(o *options) { o.window = w } }

// WithAckObserver is told, for every durable message, how long it took from
// sequencing to the commit: the wait a sender's ack adds to delivery.
func WithAckObserver(f func(time.Duration)) Option { return func(o *options) { o.ackObs = f } }

// WithClock replaces time.Now, for tests.
func WithClock(now func() time.Time) Option { return func(o *options) { o.now = now } }

// Router is the in-memory message router. It is safe for concurrent use.
type Router struct {
	log  Log
	opts options
	seed maphash.Seed

	shards [64]dedupShard

	// Counters for metrics; see Stats.
	routed, delivered, pending, subs, paced atomic.Int64

	mu     sync.Mutex       // protects convs and closed
	convs  map[string]*conv // conversations touched since start
	closed bool
}

type dedupShard struct {
	mu      sync.Mutex             // protects pending
	pending map[dedupKey]*inflight // sends sequenced but not yet durable
}

type dedupKey struct{ sender, id string }

// inflight is a sequenced message waiting for its commit; resends of it
// wait with it instead of being delivered again.
type inflight struct {
	res  Result
	acks []AckFunc
}

// conv is one conversation's sequencing state.
type conv struct {
	id string

	mu      sync.Mutex // protects everything below
	loaded  bool
	last    uint64 // newest seq handed out, 0 if none
	durable uint64 // newest seq whose commit has finished (ok or failed)
	tail    []*entry
	subs    map[Subscriber]struct{}
	advance chan struct{} // closed and replaced each time durable moves

	// saturated is set by the last fan-out when most subscribers were
	// backlogged; Publish reads it without the lock.
	saturated atomic.Bool
}

// Backlogger is a Subscriber that can say whether its queue is filling up
// while it is still draining. When most of a conversation's subscribers
// are backlogged, the fan-out itself is the bottleneck (the machine is
// saturated), not one reader: Publish then waits for them, up to the
// pacing bound, instead of queueing until every stream is cut. A slow or
// stuck minority is never waited for; its own queue cuts it.
type Backlogger interface {
	Backlogged() bool
}

// entry is a tail slot. committed and failed are guarded by conv.mu.
type entry struct {
	frame     *Frame
	committed bool
	failed    bool
}

// New returns a router writing behind log.
func New(log Log, opts ...Option) (*Router, error) {
	o := options{tail: 256, window: 4096, now: time.Now}
	for _, opt := range opts {
		opt(&o)
	}
	if log == nil {
		return nil, errors.New("router: nil log")
	}
	if o.tail < 0 {
		return nil, fmt.Errorf("router: tail must not be negative, got %d", o.tail)
	}
	if o.window == 0 {
		return nil, errors.New("router: window must be positive")
	}
	r := &Router{log: log, opts: o, seed: maphash.MakeSeed(), convs: make(map[string]*conv)}
	for i := range r.shards {
		r.shards[i].pending = make(map[dedupKey]*inflight)
	}
	return r, nil
}

// Close makes later Publish calls fail. Messages already published still
// get their acknowledgements from the log.
func (r *Router) Close() {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
}

// conversation returns the state of id, loading its head from the log on
// first use. It returns with c.mu held.
func (r *Router) conversation(id string) (*conv, error) {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil, ErrClosed
	}
	c := r.convs[id]
	if c == nil {
		c = &conv{id: id, subs: make(map[Subscriber]struct{}), advance: make(chan struct{})}
		r.convs[id] = c
	}
	r.mu.Unlock()
	c.mu.Lock()
	if !c.loaded {
		head, err := r.log.Head(id)
		if err != nil {
			c.mu.Unlock()
			return nil, fmt.Errorf("router: head of %s: %w", id, err)
		}
		c.last, c.durable = head, head
		if r.log.Unclean() {
			// Seqs up to head+W may have reached subscribers before the
			// crash; never hand them out again.
			c.last = head + r.opts.window
			c.durable = c.last
		}
		c.loaded = true
	}
	return c, nil
}

// Publish sequences m, delivers it to the conversation's live subscribers and
// queues it to the log; ack runs once it is durable. A resend of an accepted
// (Sender, ClientMsgID) is not delivered again: ack gets the original result
// with Duplicate set, once the original is durable. Publish blocks only while
// the conversation is W seqs ahead of the disk; ctx bounds that wait. The
// caller must have checked that the sender may write to the conversation and
// that ClientMsgID is not empty.
func (r *Router) Publish(ctx context.Context, m Message, ack AckFunc) error {
	r.pace(ctx, m.Conv)
	for {
		wait, appendLog, err := r.tryPublish(m, ack)
		if appendLog != nil {
			// Outside the locks: Append may block on a full writer queue,
			// and the writer's callbacks take the same locks.
			appendLog()
		}
		if err != nil || wait == nil {
			return err
		}
		select {
		case <-wait:
		case <-ctx.Done():
			return fmt.Errorf("router: waiting for the log: %w", ctx.Err())
		}
	}
}

// tryPublish sequences and delivers m and returns the call that hands it to
// the log, or returns a channel to wait on when the conversation is a full
// window ahead of the disk. Appends may reach the log out of seq order;
// nothing depends on their order: durable only counts finished commits, and
// the tail is trimmed only from the front while its entries are done.
func (r *Router) tryPublish(m Message, ack AckFunc) (wait <-chan struct{}, appendLog func(), err error) {
	key := dedupKey{m.Sender, m.ClientMsgID}
	shard := &r.shards[maphash.Comparable(r.seed, key)%uint64(len(r.shards))]
	shard.mu.Lock()
	defer shard.mu.Unlock()
	if f := shard.pending[key]; f != nil {
		f.acks = append(f.acks, duplicateAck(ack))
		return nil, nil, nil
	}
	if rec, ok, err := r.log.Dedup(m.Sender, m.ClientMsgID); err != nil {
		return nil, nil, fmt.Errorf("router: dedup lookup: %w", err)
	} else if ok {
		res := Result{Conv: rec.Conv, Seq: rec.Seq, Duplicate: true}
		res.SentAt, _ = r.sentAt(rec.Conv, rec.Seq)
		ack(res, nil)
		return nil, nil, nil
	}

	c, err := r.conversation(m.Conv)
	if err != nil {
		return nil, nil, err
	}
	defer c.mu.Unlock()
	if c.last-c.durable >= r.opts.window {
		return c.advance, nil, nil
	}
	now := r.opts.now()
	seq := c.last + 1
	msg := &parleyv1.Message{
		ConversationId:  m.Conv,
		Seq:             seq,
		SenderId:        m.Sender,
		ClientMessageId: m.ClientMsgID,
		Body:            m.Body,
		SentAt:          timestamppb.New(now),
		PrevSeq:         c.last,
		Attachments:     m.Attachments,
		Kind:            cmp.Or(m.Kind, parleyv1.MessageKind_MESSAGE_KIND_POST),
		TargetSeq:       m.TargetSeq,
	}
	data, err := proto.Marshal(msg)
	if err != nil {
		return nil, nil, fmt.Errorf("router: encode message: %w", err)
	}
	c.last = seq
	e := &entry{frame: &Frame{Conv: m.Conv, Seq: seq, Data: wrap(data)}}
	c.tail = append(c.tail, e)
	r.deliver(c, e.frame)
	r.routed.Add(1)
	r.pending.Add(1)
	f := &inflight{res: Result{Conv: m.Conv, Seq: seq, SentAt: now}, acks: []AckFunc{ack}}
	shard.pending[key] = f
	entry := store.Entry{Conv: m.Conv, Seq: seq, Sender: m.Sender, ClientMsgID: m.ClientMsgID, Data: data}
	if msg.Kind == parleyv1.MessageKind_MESSAGE_KIND_EDIT || msg.Kind == parleyv1.MessageKind_MESSAGE_KIND_DELETE {
		entry.Target = m.TargetSeq
	}
	return nil, func() { r.log.Append(entry, func(err error) { r.committed(c, e, shard, key, f, err) }) }, nil
}

// committed runs on the log's writer goroutine when e's batch is done.
func (r *Router) committed(c *conv, e *entry, shard *dedupShard, key dedupKey, f *inflight, err error) {
	c.mu.Lock()
	e.committed, e.failed = err == nil, err != nil
	if e.frame.Seq > c.durable {
		c.durable = e.frame.Seq
	}
	close(c.advance)
	c.advance = make(chan struct{})
	r.trim(c)
	c.mu.Unlock()

	r.pending.Add(-1)
	if err == nil && r.opts.ackObs != nil {
		r.opts.ackObs(r.opts.now().Sub(f.res.SentAt))
	}
	shard.mu.Lock()
	delete(shard.pending, key)
	acks := f.acks
	shard.mu.Unlock()
	for _, ack := range acks {
		if err != nil {
			ack(Result{}, err)
		} else {
			ack(f.res, nil)
		}
	}
}

// trim drops the oldest tail entries beyond the tail size whose commit has
// finished. Uncommitted entries stay, because the tail is the only place a
// reader finds them. c.mu must be held.
func (r *Router) trim(c *conv) {
	n := 0
	for n < len(c.tail) && len(c.tail)-n > r.opts.tail && (c.tail[n].committed || c.tail[n].failed) {
		c.tail[n] = nil
		n++
	}
	if n > 0 {
		c.tail = c.tail[n:]
	}
}

// Rewrite is the store's RewriteFunc for Parley messages: it returns how an
// edit or delete event changes the stored post it targets. An edit replaces
// the body, a delete leaves a tombstone. Nothing changes a tombstone, so an
// edit that raced a delete cannot bring the post back; applying an event
// twice gives what applying it once gave.
func Rewrite(stored, event []byte) ([]byte, error) {
	var ev, post parleyv1.Message
	if err := proto.Unmarshal(event, &ev); err != nil {
		return nil, err
	}
	if err := proto.Unmarshal(stored, &post); err != nil {
		return nil, err
	}
	if post.GetDeleted() || post.GetSenderId() != ev.GetSenderId() {
		return nil, nil
	}
	switch ev.GetKind() {
	case parleyv1.MessageKind_MESSAGE_KIND_EDIT:
		post.Body = ev.GetBody()
		post.EditedAt = ev.GetSentAt()
	case parleyv1.MessageKind_MESSAGE_KIND_DELETE:
		post.Body, post.Attachments, post.Deleted = "", nil, true
	default:
		return nil, nil
	}
	return proto.Marshal(&post)
}

func duplicateAck(ack AckFunc) AckFunc {
	return func(res Result, err error) {
		res.Duplicate = true
		ack(res, err)
	}
}

// sentAt reads a stored message's send time, for the ack of a resend.
func (r *Router) sentAt(conv string, seq uint64) (time.Time, error) {
	recs, _, err := r.log.Range(conv, seq-1, seq, 1)
	if err != nil || len(recs) == 0 {
		return time.Time{}, err
	}
	var m parleyv1.Message
	if err := proto.Unmarshal(recs[0].Data, &m); err != nil {
		return time.Time{}, err
	}
	return m.GetSentAt().AsTime(), nil
}

// wrap prefixes an encoded Message with the tag and length of field 1, which
// turns it into an encoded ChatResponse or SubscribeResponse.
func wrap(msg []byte) []byte {
	return wrapField(1, msg)
}

func wrapField(field protowire.Number, data []byte) []byte {
	return appendField(make([]byte, 0, fieldSize(field, data)), field, data)
}

// fieldSize is the length of wrapField(field, data); appendField appends
// it to b.
func fieldSize(field protowire.Number, data []byte) int {
	return protowire.SizeTag(field) + protowire.SizeBytes(len(data))
}

func appendField(b []byte, field protowire.Number, data []byte) []byte {
	return protowire.AppendBytes(protowire.AppendTag(b, field, protowire.BytesType), data)
}

// Catchup advances sub through conv from after: it returns up to max frames
// with seq > after, oldest first, and the position to continue from. When
// live is true, sub has been attached and every later message reaches it
// through Deliver; the frames returned by that same call come before all of
// them, so sending them first leaves neither a gap nor a duplicate. Call it
// again with next until live is true.
func (r *Router) Catchup(convID string, after uint64, max int, sub Subscriber) (frames []*Frame, next uint64, live bool, err error) {
	c, err := r.conversation(convID)
	if err != nil {
		return nil, after, false, err
	}
	if after >= c.last {
		r.attach(c, sub)
		c.mu.Unlock()
		return nil, after, true, nil
	}
	if len(c.tail) > 0 && after+1 >= c.tail[0].frame.Seq {
		next = after
		for _, e := range c.tail {
			if e.frame.Seq <= after || e.failed {
				continue
			}
			if len(frames) == max {
				c.mu.Unlock()
				return frames, next, false, nil
			}
			frames = append(frames, e.frame)
			next = e.frame.Seq
		}
		r.attach(c, sub)
		head := c.last
		c.mu.Unlock()
		return frames, head, true, nil
	}
	// Everything before the tail has been committed, so the log has it.
	upto := c.last
	if len(c.tail) > 0 {
		upto = c.tail[0].frame.Seq - 1
	}
	c.mu.Unlock()
	recs, more, err := r.log.Range(convID, after, upto, max)
	if err != nil {
		return nil, after, false, fmt.Errorf("router: replay %s: %w", convID, err)
	}
	// One array of frames and shared chunks for their bytes: a replay
	// page costs a few allocations, not two per message.
	frames = make([]*Frame, len(recs))
	page := make([]Frame, len(recs))
	var a store.Arena
	for i, rec := range recs {
		page[i] = Frame{Conv: convID, Seq: rec.Seq, Data: appendField(a.Alloc(fieldSize(1, rec.Data)), 1, rec.Data)}
		frames[i] = &page[i]
	}
	next = upto
	if more {
		next = recs[len(recs)-1].Seq
	}
	return frames, next, false, nil
}

// Event builds a frame for an ephemeral event (a receipt, typing): field is
// the event's field number in ChatResponse and SubscribeResponse, which
// share it. Event frames have Seq 0 and are never stored.
func Event(conv string, field protowire.Number, m proto.Message) (*Frame, error) {
	data, err := proto.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("router: encode event: %w", err)
	}
	return &Frame{Conv: conv, Data: wrapField(field, data)}, nil
}

// Broadcast delivers an event frame to conv's live subscribers, in order
// with its messages. Subscribers still replaying miss it: events are not
// stored.
func (r *Router) Broadcast(convID string, f *Frame) {
	r.mu.Lock()
	c := r.convs[convID]
	r.mu.Unlock()
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	r.deliver(c, f)
}

// deliver hands f to every live subscriber of c and forgets those that
// refuse it. c.mu must be held.
func (r *Router) deliver(c *conv, f *Frame) {
	var t tally
	for s := range c.subs {
		if s.Deliver(f) {
			r.delivered.Add(1)
			t.add(s)
		} else {
			delete(c.subs, s)
			r.subs.Add(-1)
		}
	}
	c.saturated.Store(t.saturated())
}

// tally counts a conversation's subscribers that say whether they are
// backlogged.
type tally struct{ n, behind int }

func (t *tally) add(s Subscriber) {
	if b, ok := s.(Backlogger); ok {
		t.n++
		if b.Backlogged() {
			t.behind++
		}
	}
}

// saturated: most of at least two subscribers are backlogged.
func (t tally) saturated() bool { return t.n >= 2 && 2*t.behind > t.n }

// pace waits while conv is saturated, up to the pacing bound or ctx's end,
// rechecking its subscribers with a growing interval.
func (r *Router) pace(ctx context.Context, convID string) {
	if r.opts.pace <= 0 {
		return
	}
	r.mu.Lock()
	c := r.convs[convID]
	r.mu.Unlock()
	if c == nil || !c.saturated.Load() {
		return
	}
	r.paced.Add(1)
	deadline := time.Now().Add(r.opts.pace)
	for d := 100 * time.Microsecond; ctx.Err() == nil && time.Now().Before(deadline); d = min(2*d, 2*time.Millisecond) {
		time.Sleep(d)
		if !r.stillSaturated(c) {
			return
		}
	}
}

func (r *Router) stillSaturated(c *conv) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	var t tally
	for s := range c.subs {
		t.add(s)
	}
	c.saturated.Store(t.saturated())
	return t.saturated()
}

// Stats are the router's counters since start.
type Stats struct {
	Routed        int64 // messages sequenced
	Deliveries    int64 // frames handed to subscribers (messages and events)
	Pending       int64 // messages sequenced but not yet committed: the write-behind lag
	Subscriptions int64 // live (conversation, subscriber) pairs
	Paced         int64 // publishes that waited for a saturated conversation
}

// Stats returns the counters. It is safe for concurrent use.
func (r *Router) Stats() Stats {
	return Stats{Routed: r.routed.Load(), Deliveries: r.delivered.Load(), Pending: r.pending.Load(), Subscriptions: r.subs.Load(), Paced: r.paced.Load()}
}

// Unsubscribe detaches sub from conv. Frames already queued stay queued.
func (r *Router) Unsubscribe(convID string, sub Subscriber) {
	r.mu.Lock()
	c := r.convs[convID]
	r.mu.Unlock()
	if c == nil {
		return
	}
	c.mu.Lock()
	if _, ok := c.subs[sub]; ok {
		delete(c.subs, sub)
		r.subs.Add(-1)
	}
	c.mu.Unlock()
}

// attach adds sub to c's live subscribers. c.mu must be held.
func (r *Router) attach(c *conv, sub Subscriber) {
	if _, ok := c.subs[sub]; !ok {
		c.subs[sub] = struct{}{}
		r.subs.Add(1)
	}
}

// Head returns the newest seq handed out in conv, durable or not.
func (r *Router) Head(convID string) (uint64, error) {
	c, err := r.conversation(convID)
	if err != nil {
		return 0, err
	}
	defer c.mu.Unlock()
	return c.last, nil
}
