// Package jsstate is Parley's shared state for cluster mode: users,
// conversations and their members, receipts, attachments and the JWT
// signing key, kept in JetStream key-value buckets and an object store so
// that every parleyd node of a cluster sees the same state. The message log
// is not here (see the Log interface); Store joins the two into what the
// chat services need.
//
// Every write that must not be lost or overwritten by another node is a
// compare-and-set on a KV revision (create-if-absent for new keys, update
// at the revision that was read for changes), so nodes need no locks and no
// leader of their own. Values are JSON, with the same field names as
// server/store's bbolt values. The buckets, all named <prefix>_<name>:
//
//	users          token(user) → store.User
//	conversations  convKey(id) → store.Conversation (see conversations.go)
//	memberships    token(user).convKey(id) → id, the per-user index
//	receipts       convKey(conv).token(user) → store.Receipt
//	blobs          blob sizes, uploaders and grants (see blobs.go)
//	meta           signing-key → the cluster's JWT signing key
//	lastseen       token(user) → when the user was last seen online (RFC 3339)
//	blobdata       an object store: attachment content
//
// (token and convKey, in keys.go, make ids into valid KV keys.)
//
// A parleyd node in cluster mode uses it like this:
//
//	nc, err := nats.Connect(urls, nats.MaxReconnects(-1)) // keep reconnecting: a lost server is routine
//	js, err := jetstream.New(nc)
//	st, err := jsstate.Open(ctx, js, jsstate.WithReplicas(n))
//	key, err := st.SigningKey(ctx)       // unless a key is configured
//	svc, err := chat.New(router, jsstate.Store{Log: clusteredLog, State: st}, tokens, ...)
//	stop, err := st.WatchConversations(ctx, forget) // forget: drop chat's cached copy
//	...
//	svc.Shutdown(ctx); st.Close()          // Close ends the watch too; then drain the NATS connection
//
// Methods without a context bound themselves (WithTimeout) and ride out a
// lost server by retrying; what still fails wraps ErrUnavailable, and after
// Close, store.ErrClosed.
package jsstate

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/parleychat/parley/server/store"
)

// ErrUnavailable wraps failures to reach JetStream that outlasted the
// operation's retries (no quorum, no connection). It means "try again
// later", as gRPC's UNAVAILABLE does, and wraps store.ErrUnavailable, which
// the services answer with it.
var ErrUnavailable = fmt.Errorf("jsstate: JetStream unavailable: %w", store.ErrUnavailable)

// Bucket names, after the prefix (default "parley") and an underscore;
// the package doc says what each holds.
const (
	bucketUsers       = "users"
	bucketConvs       = "conversations"
	bucketMemberships = "memberships"
	bucketReceipts    = "receipts"
	bucketBlobs       = "blobs"
	bucketMeta        = "meta"
	bucketLastSeen    = "lastseen"
	bucketBlobData    = "blobdata"
)

type options struct {
	prefix    string
	replicas  int
	timeout   time.Duration
	attempt   time.Duration
	workers   int
	queue     int
	storage   jetstream.StorageType
	casJitter time.Duration
}

// Option configures Open.
type Option func(*options)

// WithReplicas sets how many servers hold each bucket (default 3, the
// smallest that survives losing one; 1 for a single nats-server). It
// applies when Open creates a bucket; an existing bucket keeps its own.
func WithReplicas(n int) Option { return func(o *options) { o.replicas = n } }

// WithPrefix sets the bucket name prefix (default "parley"), so that
// several deployments, or tests, can share one JetStream account. It must
// be letters, digits, '-' and '_'.
func WithPrefix(p string) Option { return func(o *options) { o.prefix = p } }

// WithTimeout bounds each operation, retries included (default 10 s: long
// enough to ride out the election of a new stream leader after a server is
// lost).
func WithTimeout(d time.Duration) Option { return func(o *options) { o.timeout = d } }

// WithReceiptWorkers sets how many goroutines write receipts (default 8)
// and how many updates may wait for each before UpdateReceipt blocks
// (default 256).
func WithReceiptWorkers(workers, queue int) Option {
	return func(o *options) { o.workers, o.queue = workers, queue }
}

// WithMemoryStorage keeps new buckets in memory instead of files: for
// tests and benchmarks only, since a cluster restart loses everything.
func WithMemoryStorage() Option { return func(o *options) { o.storage = jetstream.MemoryStorage } }

// State is the shared state of a Parley cluster. All methods are safe for
// concurrent use, on one node and across nodes. Close stops its goroutines;
// it does not close the NATS connection, which the caller owns.
type State struct {
	js   jetstream.JetStream
	opts options

	users       jetstream.KeyValue
	convs       jetstream.KeyValue
	memberships jetstream.KeyValue
	receipts    jetstream.KeyValue
	blobs       jetstream.KeyValue
	meta        jetstream.KeyValue
	lastSeen    jetstream.KeyValue
	blobData    jetstream.ObjectStore

	ctx    context.Context // canceled by Close; parent of every operation
	cancel context.CancelFunc

	receiptQueues []chan receiptJob
	workers       sync.WaitGroup // receipt workers
	watchers      sync.WaitGroup // WatchConversations goroutines
	done          chan struct{}  // closed by Close: watchers return

	mu     sync.RWMutex // protects closed; held for reading while enqueueing a receipt or starting a watch, so that Close cannot race either
	closed bool
}

var _ Metadata = (*State)(nil)

// Open binds to the buckets, creating those that do not exist yet. Nodes
// may call it concurrently (of two creating one bucket, the slower binds to
// the quicker's). A bucket that exists is used as it is: options such as
// WithReplicas apply only to buckets this call creates. ctx bounds Open
// only.
func Open(ctx context.Context, js jetstream.JetStream, opts ...Option) (*State, error) {
	o := options{prefix: "parley", replicas: 3, timeout: 10 * time.Second, attempt: 2 * time.Second,
		workers: 8, queue: 256, storage: jetstream.FileStorage, casJitter: 5 * time.Millisecond}
	for _, opt := range opts {
		opt(&o)
	}
	switch {
	case js == nil:
		return nil, errors.New("jsstate: no JetStream context")
	case o.replicas < 1 || o.replicas > 5:
		return nil, fmt.Errorf("jsstate: replicas must be 1 to 5, got %d", o.replicas)
	case o.timeout <= 0:
		return nil, fmt.Errorf("jsstate: timeout must be positive, got %s", o.timeout)
	case o.workers <= 0 || o.queue <= 0:
		return nil, fmt.Errorf("jsstate: receipt workers and queue must be positive, got %d and %d", o.workers, o.queue)
	case !validPrefix(o.prefix):
		return nil, fmt.Errorf("jsstate: bucket prefix %q: want 1 or more letters, digits, '-' and '_'", o.prefix)
	}
	s := &State{js: js, opts: o}
	kvs := []struct {
		name string
		kv   *jetstream.KeyValue
		desc string
	}{
		{bucketUsers, &s.users, "Parley users"},
		{bucketConvs, &s.convs, "Parley conversations and their members"},
		{bucketMemberships, &s.memberships, "Parley conversations per user"},
		{bucketReceipts, &s.receipts, "Parley delivered and read positions"},
		{bucketBlobs, &s.blobs, "Parley attachment sizes, uploaders and grants"},
		{bucketMeta, &s.meta, "Parley cluster settings"},
		{bucketLastSeen, &s.lastSeen, "Parley users' last seen times"},
	}
	for _, b := range kvs {
		kv, err := s.bindKV(ctx, jetstream.KeyValueConfig{
			Bucket: o.prefix + "_" + b.name, Description: b.desc, Replicas: o.replicas, Storage: o.storage,
		})
		if err != nil {
			return nil, err
		}
		*b.kv = kv
	}
	obs, err := s.bindObjects(ctx, jetstream.ObjectStoreConfig{
		Bucket: o.prefix + "_" + bucketBlobData, Description: "Parley attachment content", Replicas: o.replicas, Storage: o.storage,
	})
	if err != nil {
		return nil, err
	}
	s.blobData = obs
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.done = make(chan struct{})
	s.receiptQueues = make([]chan receiptJob, o.workers)
	for i := range s.receiptQueues {
		q := make(chan receiptJob, o.queue)
		s.receiptQueues[i] = q
		s.workers.Go(func() { s.receiptWorker(q) })
	}
	return s, nil
}

func validPrefix(p string) bool {
	if p == "" {
		return false
	}
	for i := 0; i < len(p); i++ {
		if !plain(p[i]) {
			return false
		}
	}
	return true
}

func (s *State) bindKV(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	var kv jetstream.KeyValue
	err := retry(ctx, s.opts.attempt, func(ctx context.Context) error {
		var err error
		if kv, err = s.js.KeyValue(ctx, cfg.Bucket); !errors.Is(err, jetstream.ErrBucketNotFound) {
			return err
		}
		kv, err = s.js.CreateKeyValue(ctx, cfg)
		if errors.Is(err, jetstream.ErrBucketExists) { // another node was quicker
			kv, err = s.js.KeyValue(ctx, cfg.Bucket)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("jsstate: bucket %s: %w", cfg.Bucket, err)
	}
	return kv, nil
}

func (s *State) bindObjects(ctx context.Context, cfg jetstream.ObjectStoreConfig) (jetstream.ObjectStore, error) {
	var obs jetstream.ObjectStore
	err := retry(ctx, s.opts.attempt, func(ctx context.Context) error {
		var err error
		if obs, err = s.js.ObjectStore(ctx, cfg.Bucket); !errors.Is(err, jetstream.ErrBucketNotFound) {
			return err
		}
		obs, err = s.js.CreateObjectStore(ctx, cfg)
		if errors.Is(err, jetstream.ErrBucketExists) {
			obs, err = s.js.ObjectStore(ctx, cfg.Bucket)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("jsstate: object store %s: %w", cfg.Bucket, err)
	}
	return obs, nil
}

// Close stops every conversation watcher and the receipt writers, after
// the updates already queued are written (or have failed: Close waits at
// most the operation timeout before it cancels them), and makes later calls
// fail with an error wrapping store.ErrClosed. It is safe to call more than
// once.
func (s *State) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.done)
	for _, q := range s.receiptQueues {
		close(q)
	}
	s.mu.Unlock()
	drained := make(chan struct{})
	go func() { s.workers.Wait(); close(drained) }()
	t := time.NewTimer(s.opts.timeout)
	defer t.Stop()
	select {
	case <-drained:
	case <-t.C:
		s.cancel()
		<-drained
	}
	s.cancel()
	s.watchers.Wait()
	return nil
}

// closing reports whether Close has begun.
func (s *State) closing() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

func (s *State) isClosed() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.closed
}

// op runs f within the operation timeout, retrying while JetStream is
// briefly unavailable. what names the operation in errors.
func (s *State) op(what string, f func(ctx context.Context) error) error {
	return s.opFor(what, s.opts.timeout, s.opts.attempt, f)
}

// opFor is op with its own timeout and per-attempt bound.
func (s *State) opFor(what string, timeout, attempt time.Duration, f func(ctx context.Context) error) error {
	if s.isClosed() {
		return fmt.Errorf("jsstate: %s: %w", what, store.ErrClosed)
	}
	ctx, cancel := context.WithTimeout(s.ctx, timeout)
	defer cancel()
	if err := retry(ctx, attempt, f); err != nil {
		if s.ctx.Err() != nil {
			return fmt.Errorf("jsstate: %s: %w", what, store.ErrClosed)
		}
		return fmt.Errorf("jsstate: %s: %w", what, err)
	}
	return nil
}

// retry runs f, each attempt bounded by attempt, until it succeeds, fails
// for good, or ctx ends. Failures to reach JetStream (no responders while a
// stream elects a leader, a timeout, a reconnect) are retried with backoff;
// a retried write may have been applied already, which callers allow for
// (see the CAS loops). When retries run out, the error wraps ErrUnavailable.
func retry(ctx context.Context, attempt time.Duration, f func(ctx context.Context) error) error {
	backoff := 25 * time.Millisecond
	for {
		actx, cancel := context.WithTimeout(ctx, attempt)
		err := f(actx)
		cancel()
		if errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, nats.ErrConnectionDraining) {
			return fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
		if err == nil || !transient(err) {
			return err
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
		if !sleep(ctx, backoff) {
			return fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
		backoff = min(2*backoff, 500*time.Millisecond)
	}
}

// jsErrCodeNoPeers is JetStream's "no suitable peers for placement".
const jsErrCodeNoPeers jetstream.ErrorCode = 10005

// transient reports whether err may go away by itself: JetStream or the
// connection is briefly unreachable.
func transient(err error) bool {
	var apiErr *jetstream.APIError
	switch {
	case errors.Is(err, nats.ErrNoResponders), errors.Is(err, nats.ErrTimeout),
		errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrConnectionReconnecting),
		errors.Is(err, jetstream.ErrNoStreamResponse), errors.Is(err, jetstream.ErrConsumerLeadershipChanged):
		return true
	case errors.As(err, &apiErr):
		// 10005: no suitable peers, as while a server of the cluster is
		// down or slow to answer and a bucket is being created.
		return apiErr.Code == 503 || apiErr.Code == 408 || apiErr.ErrorCode == jsErrCodeNoPeers
	}
	return false
}

// conflict reports whether err is a failed compare-and-set: the key's
// revision was not the expected one (or it existed when it should not).
func conflict(err error) bool {
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists) {
		return true
	}
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) &&
		(apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// casPause spreads out the retries of nodes that lost the same
// compare-and-set, so that they do not collide again in lockstep.
func (s *State) casPause(ctx context.Context, attempt int) {
	d := s.opts.casJitter * time.Duration(min(attempt, 8))
	sleep(ctx, time.Duration(rand.Int64N(int64(d)+1)))
}

// list returns the current entries under filter (a subject pattern of
// keys), without delete markers, read through one ordered consumer rather
// than a request per key.
func list(ctx context.Context, kv jetstream.KeyValue, filter string, opts ...jetstream.WatchOpt) ([]jetstream.KeyValueEntry, error) {
	w, err := kv.WatchFiltered(ctx, []string{filter}, append(opts, jetstream.IgnoreDeletes())...)
	if err != nil {
		return nil, err
	}
	defer stopWatcher(w)
	var out []jetstream.KeyValueEntry
	seen := make(map[string]int)
	for {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				return nil, fmt.Errorf("list %s: watcher closed", filter)
			}
			if e == nil {
				return out, nil
			}
			// A key written while the listing runs may come twice; the
			// later revision wins.
			if i, ok := seen[e.Key()]; ok {
				out[i] = e
				continue
			}
			seen[e.Key()] = len(out)
			out = append(out, e)
		case <-ctx.Done():
			return nil, fmt.Errorf("list %s: %w", filter, ctx.Err())
		}
	}
}
