// Package jslog is Parley's message plane for cluster mode: the log, the
// sequencer, deduplication and live fan-out of every conversation, kept in
// NATS JetStream and shared by any number of stateless parleyd nodes.
//
// One stream holds every conversation, one subject each
// (<prefix>.msg.<conversation id>). A message's seq is its stream sequence:
// it grows within a conversation, is not contiguous, and is the same on
// every node. The stored parley.v1.Message does not know its own seq; reads
// add it. It does carry prev_seq, the seq of the message before it in its
// conversation: a publish expects exactly that seq as its subject's last
// sequence, so the chain is exact however many nodes publish to one
// conversation, and readers use it to prove that a page has no holes.
//
// Each node runs one ordered consumer over all conversations (the feed) and
// fans its messages out to the node's own subscribers; ephemeral events
// (receipts, typing, presence) travel on core NATS subjects
// (<prefix>.evt.<conversation id>) that every node listens to. Reads are
// direct gets, never a consumer per request or per subscriber.
//
// Edits and deletes are messages like any other; what they do to their
// target post lives in an overlay (a KV bucket keyed by conversation and
// seq) that reads apply. The node that publishes a change writes its
// overlay and the (sender, client_message_id) dedup entry before it
// acknowledges, and a shared durable consumer (the repairer) goes over
// every message of the stream once more and writes whatever is missing,
// idempotently, so a node that dies between the stream's ack and those
// writes leaves nothing undone.
//
// Cluster mode builds the services on a Log and on server/jsstate, which
// holds the rest of the state:
//
//	l, err := jslog.New(ctx, nc, jslog.WithReplicas(3))
//	st, err := jsstate.Open(ctx, js)
//	svc, err := chat.New(l, jsstate.Store{Log: l, State: st}, tokens)
//	// ... and on the way out: svc.Shutdown(ctx); l.Close(); st.Close()
//
// Lock order: Log.feedMu, then conv.mu, then Log.mu. Nothing that waits
// for the network runs under conv.mu or Log.mu; Log.feedMu is held while a
// feed starts, when no messages are being delivered anyway.
package jslog

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
	"github.com/parleychat/parley/server/chat"
	"github.com/parleychat/parley/server/router"
	"github.com/parleychat/parley/server/store"
)

// Errors returned by the log. Callers compare with errors.Is.
var (
	// ErrClosed is returned after Close. It wraps router.ErrClosed, so the
	// services treat it as they treat a closed router.
	ErrClosed = fmt.Errorf("jslog: closed: %w", router.ErrClosed)
	// ErrUnavailable wraps every failure that a retry may cure: a JetStream
	// leader election, a timeout, a lost connection. An acknowledgement that
	// fails with it means the message may or may not be stored; a resend
	// with the same client_message_id finds out without storing it twice.
	// It wraps store.ErrUnavailable, which the services answer with
	// UNAVAILABLE.
	ErrUnavailable = fmt.Errorf("jslog: JetStream unavailable, retry: %w", store.ErrUnavailable)
)

// epochKey is the stream metadata key holding the log's epoch.
const epochKey = "parley_epoch"

type options struct {
	stream   string
	prefix   string
	replicas int
	window   time.Duration
	timeout  time.Duration
	retry    time.Duration
	queue    int
	tail     int
	forget   time.Duration
	logger   *slog.Logger
	now      func() time.Time
	observe  func(conv string, m *parleyv1.Message)
}

// Option configures New.
type Option func(*options)

// WithFeedObserver has the node's feed call fn with every message of every
// conversation, followed here or not, in stream order (a node's services
// use it to notify their streams of posts made on other nodes). fn runs on
// the feed goroutine: it must be quick and must not call back into the Log.
func WithFeedObserver(fn func(conv string, m *parleyv1.Message)) Option {
	return func(o *options) { o.observe = fn }
}

// WithStream names the message stream (default PARLEY_MSGS). The dedup and
// overlay buckets and the repairer are named after it.
func WithStream(name string) Option { return func(o *options) { o.stream = name } }

// WithSubjectPrefix sets the first subject token (default "parley"):
// messages go to <prefix>.msg.<conv>, events to <prefix>.evt.<conv>. Two
// logs on one NATS account need different prefixes and stream names.
func WithSubjectPrefix(p string) Option { return func(o *options) { o.prefix = p } }

// WithReplicas sets how many servers hold the stream and buckets when New
// creates them (default 3). Existing ones are used as they are.
func WithReplicas(n int) Option { return func(o *options) { o.replicas = n } }

// WithDuplicateWindow sets how long JetStream itself recognises a resent
// message id (default 2 minutes). Older resends are answered from the
// dedup bucket.
func WithDuplicateWindow(d time.Duration) Option { return func(o *options) { o.window = d } }

// WithTimeout bounds each JetStream request (default 2 s). Every request
// is safe to repeat, so a short bound only makes a request that went to a
// server that died be repeated sooner.
func WithTimeout(d time.Duration) Option { return func(o *options) { o.timeout = d } }

// WithRetry sets how long a publish keeps retrying through leader elections
// and timeouts before its acknowledgement fails with ErrUnavailable
// (default 10 s).
func WithRetry(d time.Duration) Option { return func(o *options) { o.retry = d } }

// WithQueue sets how many publishes per conversation may wait on this node
// before Publish blocks (default 1024). Publishes to one conversation go
// out one at a time, because each must name the seq of the one before.
func WithQueue(n int) Option { return func(o *options) { o.queue = n } }

// WithTail sets how many recent frames per conversation the node keeps for
// catch-up without a read (default 128).
func WithTail(n int) Option { return func(o *options) { o.tail = n } }

// WithForget sets how long the node keeps what it knows of a conversation
// that nobody on it follows or publishes to (default 10 minutes).
func WithForget(d time.Duration) Option { return func(o *options) { o.forget = d } }

// WithLogger sets the logger.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithClock replaces time.Now for sent_at, for tests.
func WithClock(now func() time.Time) Option { return func(o *options) { o.now = now } }

// Log is the JetStream message plane of one node. It implements the
// services' Router and the message-log half of their Store. It is safe for
// concurrent use.
type Log struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	stream jetstream.Stream
	dedup  jetstream.KeyValue
	edits  jetstream.KeyValue
	opts   options
	epoch  string

	msgPrefix   string // "<prefix>.msg."
	evtPrefix   string // "<prefix>.evt."
	editsStream string // the overlay bucket's stream

	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // publishers and settlers

	repair  jetstream.ConsumeContext
	events  *nats.Subscription
	replies replyMux

	feedMu  sync.Mutex               // protects feed and feedGen; held while the feed handles a message
	feed    jetstream.ConsumeContext // the running feed, nil if none
	feedGen uint64                   // generation of the running feed

	// done is the stream seq through which the feed has delivered. It only
	// grows. See conversation for why it is stored under Log.mu or conv.mu.
	done atomic.Uint64
	// lastFed is when the feed last delivered a message, Unix nanoseconds.
	lastFed atomic.Int64

	published, deliveries, subs, repaired atomic.Int64

	mu     sync.Mutex       // protects convs and closed; held for wg.Add
	convs  map[string]*conv // conversations in use; see forget
	closed bool
}

// New connects the message plane on nc: it creates the stream, the dedup
// and overlay buckets and the repairer if they do not exist, and starts
// the feed. nc stays the caller's; Close does not close it.
func New(ctx context.Context, nc *nats.Conn, opts ...Option) (*Log, error) {
	o := options{
		stream: "PARLEY_MSGS", prefix: "parley", replicas: 3, window: 2 * time.Minute,
		timeout: 2 * time.Second, retry: 10 * time.Second, queue: 1024, tail: 128,
		forget: 10 * time.Minute, logger: slog.Default(), now: time.Now,
	}
	for _, opt := range opts {
		opt(&o)
	}
	switch {
	case nc == nil:
		return nil, errors.New("jslog: nil NATS connection")
	case o.stream == "" || o.prefix == "":
		return nil, errors.New("jslog: stream name and subject prefix must not be empty")
	case o.replicas < 1 || o.replicas > 5:
		return nil, fmt.Errorf("jslog: replicas must be 1 to 5, got %d", o.replicas)
	case o.window <= 0 || o.timeout <= 0 || o.retry <= 0 || o.forget <= 0:
		return nil, errors.New("jslog: duplicate window, timeout, retry and forget must be positive")
	case o.queue <= 0 || o.tail < 0:
		return nil, fmt.Errorf("jslog: queue must be positive and tail not negative, got %d and %d", o.queue, o.tail)
	}
	js, err := jetstream.New(nc, jetstream.WithDefaultTimeout(o.timeout))
	if err != nil {
		return nil, fmt.Errorf("jslog: %w", err)
	}
	l := &Log{
		nc: nc, js: js, opts: o,
		msgPrefix:   o.prefix + ".msg.",
		evtPrefix:   o.prefix + ".evt.",
		editsStream: "KV_" + o.stream + "_EDITS",
		convs:       make(map[string]*conv),
	}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	if err := l.setup(ctx); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// setup creates or finds what the log needs. Each step is retried until ctx
// ends: right after a cluster starts, or during an election, JetStream's
// API may not answer for a moment.
func (l *Log) setup(ctx context.Context) error {
	step := func(f func(ctx context.Context) error) error { return l.retry(ctx, f) }
	if err := l.replies.start(l.nc); err != nil {
		return fmt.Errorf("jslog: subscribe to replies: %w", err)
	}
	var info *jetstream.StreamInfo
	err := step(func(ctx context.Context) error {
		var err error
		if l.stream, err = l.ensureStream(ctx); err != nil {
			return err
		}
		if info, err = l.stream.Info(ctx); err != nil {
			return unavailable("jslog: stream info", err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if !info.Config.AllowDirect {
		return fmt.Errorf("jslog: stream %s does not allow direct gets", l.opts.stream)
	}
	l.epoch = info.Config.Metadata[epochKey]
	if l.epoch == "" {
		l.epoch = fmt.Sprintf("%x", info.Created.UnixNano())
	}
	if err := step(func(ctx context.Context) (err error) {
		l.dedup, err = l.ensureBucket(ctx, l.opts.stream+"_DEDUP")
		return err
	}); err != nil {
		return err
	}
	if err := step(func(ctx context.Context) (err error) {
		l.edits, err = l.ensureBucket(ctx, l.opts.stream+"_EDITS")
		return err
	}); err != nil {
		return err
	}
	if l.events, err = l.nc.Subscribe(l.evtPrefix+">", l.event); err != nil {
		return fmt.Errorf("jslog: subscribe to events: %w", err)
	}
	l.done.Store(info.State.LastSeq)
	if err := step(func(ctx context.Context) error { return l.startFeed(ctx, info.State.LastSeq) }); err != nil {
		return err
	}
	if err := step(l.startRepairer); err != nil {
		return err
	}
	l.spawn(l.watch)
	return nil
}

func (l *Log) ensureStream(ctx context.Context) (jetstream.Stream, error) {
	s, err := l.js.Stream(ctx, l.opts.stream)
	if err == nil {
		return s, nil
	}
	if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, unavailable("jslog: look up stream "+l.opts.stream, err)
	}
	var id [12]byte
	if _, err := rand.Read(id[:]); err != nil {
		return nil, fmt.Errorf("jslog: epoch: %w", err)
	}
	s, err = l.js.CreateStream(ctx, jetstream.StreamConfig{
		Name:        l.opts.stream,
		Description: "Parley messages, one subject per conversation",
		Subjects:    []string{l.msgPrefix + ">"},
		Storage:     jetstream.FileStorage,
		Replicas:    l.opts.replicas,
		AllowDirect: true,
		Duplicates:  l.opts.window,
		Metadata:    map[string]string{epochKey: hex.EncodeToString(id[:])},
	})
	if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		// Another node created it first.
		s, err = l.js.Stream(ctx, l.opts.stream)
	}
	if err != nil {
		return nil, unavailable("jslog: create stream "+l.opts.stream, err)
	}
	return s, nil
}

func (l *Log) ensureBucket(ctx context.Context, name string) (jetstream.KeyValue, error) {
	kv, err := l.js.KeyValue(ctx, name)
	if err == nil {
		return kv, nil
	}
	if !errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, unavailable("jslog: look up bucket "+name, err)
	}
	kv, err = l.js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:   name,
		History:  1,
		Storage:  jetstream.FileStorage,
		Replicas: l.opts.replicas,
	})
	if errors.Is(err, jetstream.ErrBucketExists) || errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		kv, err = l.js.KeyValue(ctx, name)
	}
	if err != nil {
		return nil, unavailable("jslog: create bucket "+name, err)
	}
	return kv, nil
}

// Epoch identifies the log: it is created with the stream and kept in its
// metadata, so every node reports the same one, and a stream created anew
// has another. A seq is meaningful only together with its epoch.
func (l *Log) Epoch() string { return l.epoch }

// Close stops the feed, the repairer and the event subscription, fails the
// publishes still waiting with ErrClosed, and returns once every goroutine
// the log started has exited: at once, as a rule, but after up to ten
// seconds when the feed is in the middle of recreating its consumer on a
// JetStream that does not answer. A publish that was in flight may still
// have been stored; its sender's resend finds it. Close is idempotent.
func (l *Log) Close() {
	l.mu.Lock()
	already := l.closed
	l.closed = true
	l.mu.Unlock()
	if already {
		l.wg.Wait()
		return
	}
	l.cancel()
	_, feedStopped := l.stopFeed()
	closed := []<-chan struct{}{feedStopped}
	if l.repair != nil {
		l.repair.Stop()
		closed = append(closed, l.repair.Closed())
	}
	for _, sub := range []*nats.Subscription{l.events, l.replies.sub} {
		if sub != nil {
			_ = sub.Unsubscribe()
		}
	}
	for _, ch := range closed {
		select {
		case <-ch:
		case <-time.After(l.opts.timeout):
		}
	}
	l.wg.Wait()
}

// spawn runs f on a goroutine that Close waits for, unless the log is
// closed. Lock order allows it under conv.mu.
func (l *Log) spawn(f func()) bool {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return false
	}
	l.wg.Add(1)
	l.mu.Unlock()
	go func() {
		defer l.wg.Done()
		f()
	}()
	return true
}

// Stats are the node's counters since start.
type Stats struct {
	Published     int64  // messages this node stored (not counting duplicates)
	Deliveries    int64  // frames handed to local subscribers (messages and events)
	Subscriptions int64  // live (conversation, subscriber) pairs on this node
	Repaired      int64  // messages whose dedup entry or overlay the repairer had to write
	FeedSeq       uint64 // the stream seq through which the feed has delivered
	Conversations int    // conversations the node keeps state for
}

// Stats returns the counters. It is safe for concurrent use.
func (l *Log) Stats() Stats {
	l.mu.Lock()
	n := len(l.convs)
	l.mu.Unlock()
	return Stats{Published: l.published.Load(), Deliveries: l.deliveries.Load(), Subscriptions: l.subs.Load(),
		Repaired: l.repaired.Load(), FeedSeq: l.done.Load(), Conversations: n}
}

// unavailable marks err as retryable.
func unavailable(what string, err error) error {
	if errors.Is(err, ErrUnavailable) || errors.Is(err, ErrClosed) {
		return fmt.Errorf("%s: %w", what, err)
	}
	return fmt.Errorf("%s: %w: %w", what, ErrUnavailable, err)
}

var _ chat.Router = (*Log)(nil)
