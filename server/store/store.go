// Package store is Parley's durable state on one machine: the message log
// written behind delivery, the (sender, client_message_id) dedup index,
// receipts, attachments, users and conversations, in two bbolt files.
//
// Appends take the ack path: one goroutine, the journaler, group-commits
// them (up to BatchSize messages or FlushInterval, one transaction, one
// fsync) to a sequential journal, and each Append's callback runs only
// after its batch is on disk. A second goroutine, the writer, owns every
// write to the main file: it indexes journaled messages per conversation in
// large batches, off the ack path, and runs metadata updates and receipts.
// Reads run in their own bbolt read transactions, merge in what is journaled
// but not yet indexed, and never wait for either goroutine.
package store

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Errors returned by the store. Callers compare with errors.Is.
var (
	ErrClosed   = errors.New("store: closed")
	ErrNotFound = errors.New("store: not found")
	ErrExists   = errors.New("store: already exists")
	// ErrUnavailable is for stores that can be out of reach for a while
	// (a cluster's during a leader election): their retryable errors wrap
	// it, and the services answer them with UNAVAILABLE.
	ErrUnavailable = errors.New("store: unavailable")
)

// FileName is the name of the bbolt file inside the data directory.
const FileName = "parley.db"

var (
	bucketMeta      = []byte("meta")
	bucketMsgs      = []byte("msgs")
	bucketDedup     = []byte("dedup")
	bucketUsers     = []byte("users")
	bucketConvs     = []byte("convs")
	bucketUserConvs = []byte("user_convs")
	bucketReceipts  = []byte("receipts")
	bucketLastSeen  = []byte("last_seen")

	keyEpoch = []byte("epoch")
	keyClean = []byte("clean")
)

type options struct {
	observe       CommitObserver
	observeIndex  IndexObserver
	rewrite       RewriteFunc
	indexDelay    time.Duration
	batchSize     int
	flushInterval time.Duration
	noSync        bool
	queue         int
	logger        *slog.Logger
	now           func() time.Time // the journal's clock; tests stop it
}

// Option configures Open.
type Option func(*options)

// WithBatchSize caps the number of messages committed in one transaction.
func WithBatchSize(n int) Option { return func(o *options) { o.batchSize = n } }

// WithFlushInterval is how long the first message of a batch may wait for
// more before the journal commits, counted from when it was appended, when
// the last commit ended less than that long ago (appends come faster than
// one an interval); a message after a quiet spell is committed at once. A
// message that already waited out a commit in the queue does not wait
// again: its wait for company is never more than the interval. The store
// counts as just committed when it opens. Fewer, bigger commits under load
// spend less CPU on fsync (on the dm benchmark at 10,000 msg/s, 2 ms made
// a third as many commits and took ack p50 from ~7 to ~5 ms). Zero (the
// default) commits as soon as the queue is empty, which still batches
// whatever arrived during the previous fsync.
func WithFlushInterval(d time.Duration) Option { return func(o *options) { o.flushInterval = d } }

// WithNoSync turns fsync off. Only benchmarks should use it: a crash may then
// lose acknowledged messages.
func WithNoSync(b bool) Option { return func(o *options) { o.noSync = b } }

// WithQueue sets how many appends may wait for the writer before Append
// blocks; the bound is the backpressure that keeps memory flat when the
// disk is slower than the senders.
func WithQueue(n int) Option { return func(o *options) { o.queue = n } }

// CommitObserver is told about every group commit: how many jobs it held,
// how long the transaction took, how much of that was writing pages and
// syncing them, and whether it failed. It runs on the writer goroutine.
type CommitObserver func(jobs int, total, write time.Duration, err error)

// IndexObserver is told about every index commit of the writer: how many
// journaled messages it indexed, how long it took, and whether it failed.
// It runs on the writer goroutine.
type IndexObserver func(msgs int, total time.Duration, err error)

// WithIndexObserver sets the index observer, for metrics.
func WithIndexObserver(f IndexObserver) Option { return func(o *options) { o.observeIndex = f } }

// Unindexed is the number of messages acknowledged (journaled) but not yet
// in the index: how far the writer is behind.
func (s *Store) Unindexed() int { return s.pend.size() }

// WithCommitObserver sets the observer, for metrics.
func WithCommitObserver(f CommitObserver) Option { return func(o *options) { o.observe = f } }

// RewriteFunc computes how an edit or delete event changes the stored
// message it targets (Entry.Target): it gets a copy of the stored bytes and
// the event's Data and returns the new bytes, or nil to leave the message as
// it is. It must be deterministic and idempotent (applying an event twice
// gives what applying it once gave), because replay after a crash and reads
// of not yet indexed messages may apply an event again.
type RewriteFunc func(stored, event []byte) ([]byte, error)

// WithRewrite sets how edits and deletes change their targets. Without it an
// entry's Target is ignored and only the event itself is stored.
func WithRewrite(f RewriteFunc) Option { return func(o *options) { o.rewrite = f } }

// WithIndexDelay is how long the writer lets journaled messages gather
// before it indexes them (unless thousands are waiting): larger index
// commits share pages and leave the disk to the journal's fsyncs.
func WithIndexDelay(d time.Duration) Option { return func(o *options) { o.indexDelay = d } }

// WithLogger sets the logger for commit failures.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// Store is the bbolt-backed log and metadata store. All methods are safe for
// concurrent use. Close must be called to mark a clean shutdown; a store that
// was not closed cleanly reports Unclean on the next Open.
type Store struct {
	db      *bolt.DB // the main file: written only by the writer goroutine
	jdb     *bolt.DB // the journal: written only by the journaler goroutine
	opts    options
	epoch   string
	unclean bool

	appends chan job         // Append -> journaler
	jobs    chan job         // metadata updates and receipts -> writer
	index   chan []journaled // journaled batches, in journal order -> writer
	indexed atomic.Uint64    // the journal id up to which the main file holds every entry durably
	pend    pending

	jdone chan struct{} // closed when the journaler has exited
	done  chan struct{} // closed when the writer has exited

	mu     sync.RWMutex // protects closed; held for reading while enqueueing so Close cannot race a send
	closed bool
}

// job is one unit of work: a message append (journaler), or a receipt or a
// metadata update that runs in a transaction of its own (writer).
type job struct {
	entry  *Entry
	onDone func(error)
	at     time.Time // when entry was handed over, by the journal's clock

	receipt    *ReceiptUpdate
	receiptOut Receipt
	onReceipt  func(Receipt, error)

	update func(tx *bolt.Tx) error
	result chan error
}

// Open opens (or creates) the store in dir. It fails fast if another process
// holds the file.
func Open(dir string, opts ...Option) (*Store, error) {
	o := options{batchSize: 4096, queue: 8192, indexDelay: 100 * time.Millisecond, logger: slog.Default(), now: time.Now}
	for _, opt := range opts {
		opt(&o)
	}
	if o.batchSize <= 0 {
		return nil, fmt.Errorf("store: batch size must be positive, got %d", o.batchSize)
	}
	if o.flushInterval < 0 {
		return nil, fmt.Errorf("store: flush interval must not be negative, got %s", o.flushInterval)
	}
	if o.queue <= 0 {
		return nil, fmt.Errorf("store: queue must be positive, got %d", o.queue)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("store: create data dir: %w", err)
	}
	db, err := bolt.Open(filepath.Join(dir, FileName), 0o600, &bolt.Options{
		Timeout:      time.Second,
		NoSync:       o.noSync,
		FreelistType: bolt.FreelistMapType,
	})
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", filepath.Join(dir, FileName), err)
	}
	s := &Store{db: db, opts: o, done: make(chan struct{}), jdone: make(chan struct{})}
	if err := db.Update(s.init); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: initialise: %w", err)
	}
	jpath := filepath.Join(dir, JournalFileName)
	// The journal's freelist is not written at each commit (one page
	// write fewer on the ack path); Open rebuilds it by scanning the
	// file, which is small: it holds only what the index has not yet.
	s.jdb, err = bolt.Open(jpath, 0o600, &bolt.Options{Timeout: time.Second, NoSync: o.noSync, FreelistType: bolt.FreelistMapType, NoFreelistSync: true})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("store: open %s: %w", jpath, err)
	}
	last, err := s.openJournal()
	if err == nil {
		// After the journal's replay, which indexes without pending.
		s.pend.filter = newDedupFilter()
		err = db.View(s.pend.filter.fill)
	}
	if err != nil {
		s.jdb.Close()
		db.Close()
		return nil, fmt.Errorf("store: %w", err)
	}
	s.appends = make(chan job, o.queue)
	s.jobs = make(chan job, o.queue)
	s.index = make(chan []journaled, indexQueue)
	go s.journaler(last, o.now())
	go s.writer()
	return s, nil
}

// indexQueue bounds the journaled batches waiting for the writer; when it is
// full the journaler waits, Append's queue fills and Append blocks.
const indexQueue = 16

// maxBacklog is how many journaled messages the writer holds before it stops
// taking more from the journaler (a failing or slow index commit): pending
// memory stays bounded and Append blocks instead.
const maxBacklog = 4 * indexChunk

// openJournal creates the journal's bucket and replays what it holds.
func (s *Store) openJournal() (uint64, error) {
	if err := s.jdb.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucketBatches)
		return err
	}); err != nil {
		return 0, fmt.Errorf("initialise journal: %w", err)
	}
	return s.replayJournal()
}

// init creates the buckets (converting a file of an earlier layout: see
// splitMembers), reads or creates the epoch and records that the store is
// open, so that a crash before Close is seen on the next Open.
func (s *Store) init(tx *bolt.Tx) error {
	for _, b := range [][]byte{bucketMeta, bucketMsgs, bucketDedup, bucketUsers, bucketConvs, bucketUserConvs, bucketReceipts, bucketLastSeen} {
		if _, err := tx.CreateBucketIfNotExists(b); err != nil {
			return err
		}
	}
	n, err := splitMembers(tx)
	if err != nil {
		return fmt.Errorf("move conversation members to their own keys: %w", err)
	}
	if n > 0 {
		s.opts.logger.Info("store: moving conversation members to their own keys", "conversations", n)
	}
	meta := tx.Bucket(bucketMeta)
	if e := meta.Get(keyEpoch); e != nil {
		s.epoch = string(e)
	} else {
		var b [12]byte
		if _, err := rand.Read(b[:]); err != nil {
			return err
		}
		s.epoch = hex.EncodeToString(b[:])
		if err := meta.Put(keyEpoch, []byte(s.epoch)); err != nil {
			return err
		}
	}
	if c := meta.Get(keyClean); c != nil && string(c) != "1" {
		s.unclean = true
	}
	return meta.Put(keyClean, []byte("0"))
}

// Epoch identifies this log. It is created with the file and never changes,
// so a seq is meaningful only together with its epoch.
func (s *Store) Epoch() string { return s.epoch }

// Unclean reports whether the previous process using this file stopped
// without Close: messages it delivered but had not committed may be lost,
// and their seqs must not be handed out again.
func (s *Store) Unclean() bool { return s.unclean }

// Close commits and indexes everything already queued, marks the files
// clean and closes them. Appends after Close fail with ErrClosed. Close is
// idempotent.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		<-s.done
		<-s.jdone
		return nil
	}
	s.closed = true
	close(s.appends)
	close(s.jobs)
	s.mu.Unlock()
	<-s.jdone
	<-s.done
	// Whatever the writer indexed can leave the journal now; what it could
	// not index stays and is replayed by the next Open.
	err := s.jdb.Update(func(tx *bolt.Tx) error { return dropJournal(tx.Bucket(bucketBatches), s.indexed.Load()) })
	if err == nil {
		err = s.db.Update(func(tx *bolt.Tx) error {
			return tx.Bucket(bucketMeta).Put(keyClean, []byte("1"))
		})
	}
	for _, db := range []*bolt.DB{s.jdb, s.db} {
		if cerr := db.Close(); err == nil {
			err = cerr
		}
	}
	return err
}

// enqueue hands a job to the journaler (appends) or the writer (the rest).
// It blocks while that queue is full.
func (s *Store) enqueue(j job) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	if j.entry != nil {
		s.appends <- j
	} else {
		s.jobs <- j
	}
	return nil
}

// update runs fn in a write transaction of its own on the writer goroutine
// and returns its error.
func (s *Store) update(fn func(tx *bolt.Tx) error) error {
	res := make(chan error, 1)
	if err := s.enqueue(job{update: fn, result: res}); err != nil {
		return err
	}
	return <-res
}

// indexMin is the backlog the writer indexes at once, without waiting for
// the index delay.
const indexMin = 4096

// indexRetry is how long the writer waits before retrying an index commit
// that failed (a full disk, say); the messages stay journaled and readable
// meanwhile.
const indexRetry = 100 * time.Millisecond

// writer is the only goroutine that writes the main file: it indexes what
// the journaler hands it, batches receipts into one commit, and runs
// metadata updates. It exits when jobs and index are both closed and
// drained (or, for the index, when a commit keeps failing at Close).
func (s *Store) writer() {
	defer close(s.done)
	jobs, index := s.jobs, s.index
	var backlog []journaled    // journaled, not yet indexed, in journal order
	var retry <-chan time.Time // the next index commit: a delay, or after a failure (failing) a backoff
	failing := false
	receipts := make([]job, 0, s.opts.batchSize)
	for jobs != nil || index != nil || len(backlog) > 0 {
		in := index
		if len(backlog) >= maxBacklog {
			in = nil // far behind: let the journaler wait
		}
		if jobs == nil && index == nil {
			// Closing: one more try for what is left, then leave it to
			// the journal and the next Open.
			if err := s.indexBacklog(&backlog); err != nil {
				return
			}
			continue
		}
		select {
		case j, ok := <-jobs:
			if !ok {
				jobs = nil
				continue
			}
			if j.update != nil {
				j.result <- s.db.Update(j.update)
				continue
			}
			receipts = append(receipts[:0], j)
			var held *job
		fill:
			for len(receipts) < s.opts.batchSize {
				select {
				case next, ok := <-jobs:
					if !ok {
						jobs = nil
						break fill
					}
					if next.update != nil {
						held = &next
						break fill
					}
					receipts = append(receipts, next)
				default:
					break fill
				}
			}
			s.commitReceipts(receipts)
			clear(receipts)
			if held != nil {
				held.result <- s.db.Update(held.update)
			}
		case b, ok := <-in:
			if !ok {
				index = nil
				continue
			}
			backlog = append(backlog, b...)
			// Take whatever else is ready: bigger index commits share pages.
		more:
			for len(backlog) < indexChunk {
				select {
				case b, ok := <-index:
					if !ok {
						index = nil
						break more
					}
					backlog = append(backlog, b...)
				default:
					break more
				}
			}
			switch {
			case failing:
				// Wait for the retry.
			case len(backlog) >= indexMin:
				retry = nil
				if err := s.indexBacklog(&backlog); err != nil {
					retry, failing = time.After(indexRetry), true
				}
			case retry == nil:
				// Index a little later, with whatever else comes by then:
				// the index is off the ack path, and a commit of many
				// messages costs little more than one of a few.
				retry = time.After(s.opts.indexDelay)
			}
		case <-retry:
			retry, failing = nil, false
			if err := s.indexBacklog(&backlog); err != nil {
				retry, failing = time.After(indexRetry), true
			}
		}
	}
}

// indexBacklog indexes the backlog in chunks, forgetting from pending and
// the backlog what each successful commit holds. It stops at the first
// failure and returns it.
func (s *Store) indexBacklog(backlog *[]journaled) error {
	for len(*backlog) > 0 {
		chunk := (*backlog)[:min(len(*backlog), indexChunk)]
		start := time.Now()
		err := s.db.Update(func(tx *bolt.Tx) error { return s.indexEntries(tx, chunk) })
		if s.opts.observeIndex != nil {
			s.opts.observeIndex(len(chunk), time.Since(start), err)
		}
		if err != nil {
			s.opts.logger.Error("store: index commit failed; the messages stay journaled", "messages", len(chunk), "err", err)
			return err
		}
		s.indexed.Store(chunk[len(chunk)-1].jid)
		s.pend.drop(chunk)
		clear(chunk)
		*backlog = (*backlog)[len(chunk):]
	}
	*backlog = nil
	return nil
}

// commitReceipts writes a batch of receipt updates in one transaction and
// calls each one's callback with the result.
func (s *Store) commitReceipts(batch []job) {
	err := s.db.Update(func(tx *bolt.Tx) error {
		for i := range batch {
			r, err := putReceipt(tx, *batch[i].receipt)
			if err != nil {
				return err
			}
			batch[i].receiptOut = r
		}
		return nil
	})
	if err != nil {
		s.opts.logger.Error("store: receipt commit failed", "receipts", len(batch), "err", err)
		err = fmt.Errorf("store: commit: %w", err)
	}
	for _, b := range batch {
		b.onReceipt(b.receiptOut, err)
	}
}
