// Package store is Parley's durable state in one bbolt file: the message log
// written behind delivery, the (sender, client_message_id) dedup index,
// users and conversations.
//
// One goroutine, the writer, owns every write transaction. Messages are
// appended in batches (group commit: up to BatchSize messages or
// FlushInterval, one transaction, one fsync) and each Append's callback runs
// only after its batch is on disk. Reads run in their own bbolt read
// transactions and never wait for the writer.
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
	"time"

	bolt "go.etcd.io/bbolt"
)

// Errors returned by the store. Callers compare with errors.Is.
var (
	ErrClosed   = errors.New("store: closed")
	ErrNotFound = errors.New("store: not found")
	ErrExists   = errors.New("store: already exists")
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

	keyEpoch = []byte("epoch")
	keyClean = []byte("clean")
)

type options struct {
	observe       CommitObserver
	batchSize     int
	flushInterval time.Duration
	noSync        bool
	queue         int
	logger        *slog.Logger
}

// Option configures Open.
type Option func(*options)

// WithBatchSize caps the number of messages committed in one transaction.
func WithBatchSize(n int) Option { return func(o *options) { o.batchSize = n } }

// WithFlushInterval is how long the writer waits for more messages after the
// first one of a batch before it commits. Zero commits as soon as the queue
// is empty, which still batches whatever arrived during the previous fsync.
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

// WithCommitObserver sets the observer, for metrics.
func WithCommitObserver(f CommitObserver) Option { return func(o *options) { o.observe = f } }

// WithLogger sets the logger for commit failures.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// Store is the bbolt-backed log and metadata store. All methods are safe for
// concurrent use. Close must be called to mark a clean shutdown; a store that
// was not closed cleanly reports Unclean on the next Open.
type Store struct {
	db      *bolt.DB
	opts    options
	epoch   string
	unclean bool

	jobs chan job
	done chan struct{} // closed when the writer has exited

	mu     sync.RWMutex // protects closed; held for reading while enqueueing so Close cannot race a send on jobs
	closed bool
}

// job is one unit of work for the writer: either a message append or a
// metadata update that runs in a transaction of its own.
type job struct {
	entry  *Entry
	onDone func(error)

	receipt    *ReceiptUpdate
	receiptOut Receipt
	onReceipt  func(Receipt, error)

	update func(tx *bolt.Tx) error
	result chan error
}

// Open opens (or creates) the store in dir. It fails fast if another process
// holds the file.
func Open(dir string, opts ...Option) (*Store, error) {
	o := options{batchSize: 512, queue: 8192, logger: slog.Default()}
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
	s := &Store{db: db, opts: o, jobs: make(chan job, o.queue), done: make(chan struct{})}
	if err := db.Update(s.init); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: initialise: %w", err)
	}
	go s.writer()
	return s, nil
}

// init creates the buckets, reads or creates the epoch and records that the
// store is open, so that a crash before Close is seen on the next Open.
func (s *Store) init(tx *bolt.Tx) error {
	for _, b := range [][]byte{bucketMeta, bucketMsgs, bucketDedup, bucketUsers, bucketConvs, bucketUserConvs, bucketReceipts} {
		if _, err := tx.CreateBucketIfNotExists(b); err != nil {
			return err
		}
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

// Close commits everything already queued, marks the file clean and closes
// it. Appends after Close fail with ErrClosed. Close is idempotent.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		<-s.done
		return nil
	}
	s.closed = true
	close(s.jobs)
	s.mu.Unlock()
	<-s.done
	err := s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(keyClean, []byte("1"))
	})
	if cerr := s.db.Close(); err == nil {
		err = cerr
	}
	return err
}

// enqueue hands a job to the writer. It blocks while the queue is full.
func (s *Store) enqueue(j job) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	s.jobs <- j
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

// writer is the only goroutine that writes. It exits when jobs is closed
// and drained.
func (s *Store) writer() {
	defer close(s.done)
	var timer *time.Timer
	batch := make([]job, 0, s.opts.batchSize)
	for {
		j, ok := <-s.jobs
		if !ok {
			return
		}
		if j.update != nil {
			j.result <- s.db.Update(j.update)
			continue
		}
		batch = append(batch[:0], j)
		var held *job // a metadata update met while filling the batch
		var deadline <-chan time.Time
		if s.opts.flushInterval > 0 {
			if timer == nil {
				timer = time.NewTimer(s.opts.flushInterval)
			} else {
				timer.Reset(s.opts.flushInterval)
			}
			deadline = timer.C
		}
		closed := false
	fill:
		for len(batch) < s.opts.batchSize {
			var next job
			var ok bool
			if deadline == nil {
				select {
				case next, ok = <-s.jobs:
				default:
					break fill
				}
			} else {
				select {
				case next, ok = <-s.jobs:
				case <-deadline:
					break fill
				}
			}
			if !ok {
				closed = true
				break
			}
			if next.update != nil {
				held = &next
				break
			}
			batch = append(batch, next)
		}
		if timer != nil {
			timer.Stop() // since Go 1.23 a stopped timer delivers no stale tick
		}
		start := time.Now()
		var write time.Duration
		err := s.db.Update(func(tx *bolt.Tx) error {
			if err := commitBatch(tx, batch); err != nil {
				return err
			}
			// The page writes and their fsync happen in Commit, after this
			// returns; WriteTime is read back below.
			tx.OnCommit(func() { st := tx.Stats(); write = st.GetWriteTime() })
			return nil
		})
		if s.opts.observe != nil {
			s.opts.observe(len(batch), time.Since(start), write, err)
		}
		if err != nil {
			s.opts.logger.Error("store: commit failed", "messages", len(batch), "err", err)
			err = fmt.Errorf("store: commit: %w", err)
		}
		for _, b := range batch {
			if b.receipt != nil {
				b.onReceipt(b.receiptOut, err)
			} else {
				b.onDone(err)
			}
		}
		clear(batch)
		if held != nil {
			held.result <- s.db.Update(held.update)
		}
		if closed {
			return
		}
	}
}
