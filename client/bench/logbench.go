package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
	"github.com/parleychat/parley/server/store"
)

// LogResult is what the log scenario adds: the store's group commit on its
// own, with no network and no router in front of it.
type LogResult struct {
	Conversations int `json:"conversations"`
	// InFlight is how many appends may wait for their commit at once, over
	// all appenders.
	InFlight int `json:"in_flight"`
	// AckedPerSec is appends whose commit was durable, per second, from the
	// first Append to the last acknowledgement.
	AckedPerSec float64 `json:"acked_per_sec"`
	Commits     uint64  `json:"commits"`
	// PerCommit is messages per group commit (journal transaction).
	PerCommit float64 `json:"messages_per_commit"`
	// Commit is the time each journal transaction took, fsync included.
	Commit Latency `json:"commit"`
	// Bytes is the size of each appended entry's data.
	Bytes int `json:"entry_bytes"`
}

// logScenario appends to a store.Store in a temp dir from cfg.Convs
// goroutines, one conversation each, every one keeping cfg.Window appends
// in flight, for cfg.Duration; it counts the appends acknowledged, the
// group commits and their sizes. The appenders are not throttled: this is
// the log's ceiling, what the router's senders can at most get acked.
// Every Append's ack latency (Append called -> done) goes in res.Ack.
func logScenario(ctx context.Context, cfg Config, progress io.Writer) (res Result) {
	res = Result{Scenario: "log", Target: "parley", Where: "in-process store, fsync on", Addr: "-"}
	if cfg.NoSync {
		res.Where = "in-process store, fsync off"
	}
	if progress == nil {
		progress = io.Discard
	}
	dir, err := os.MkdirTemp("", "parley-bench-log-")
	if err != nil {
		res.Errors = append(res.Errors, err.Error())
		return res
	}
	defer os.RemoveAll(dir)

	var commits, committed, failedCommits atomic.Uint64
	var commitLat Histogram
	s, err := store.Open(dir,
		store.WithNoSync(cfg.NoSync),
		store.WithLogger(slog.New(slog.NewTextHandler(progress, &slog.HandlerOptions{Level: slog.LevelWarn}))),
		store.WithCommitObserver(func(jobs int, total, _ time.Duration, err error) {
			if err != nil {
				failedCommits.Add(1)
				return
			}
			commits.Add(1)
			committed.Add(uint64(jobs))
			commitLat.Record(total)
		}))
	if err != nil {
		res.Errors = append(res.Errors, fmt.Sprintf("open store: %v", err))
		return res
	}
	closed := false
	defer func() {
		if !closed {
			s.Close()
		}
	}()

	var acked, failed atomic.Uint64
	var ackLat Histogram
	var errMu sync.Mutex // protects firstErr
	var firstErr error
	var lastAck atomic.Int64 // unix nanoseconds
	p0 := readProc(0)
	start := time.Now()
	end := start.Add(cfg.Duration)

	pctx, pstop := context.WithCancel(ctx)
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		var last uint64
		for {
			select {
			case <-pctx.Done():
				return
			case now := <-t.C:
				a, c := acked.Load(), commits.Load()
				per := 0.0
				if c > 0 {
					per = float64(committed.Load()) / float64(c)
				}
				fmt.Fprintf(progress, "%-16s %6.1fs  acked %9d  (%7.0f/s)  commits %7d  %6.1f messages per commit\n",
					"[log store]", now.Sub(start).Seconds(), a, float64(a-last), c, per)
				last = a
			}
		}
	}()

	entryBytes := 0
	var wg sync.WaitGroup
	for i := range cfg.Convs {
		conv := fmt.Sprintf("room:bench-log-%d", i)
		sender := fmt.Sprintf("log-%d", i)
		// One encoded message per conversation, shared by its appends: the
		// store only reads Data, and a real one is about this size.
		data, err := proto.Marshal(&parleyv1.Message{
			ConversationId: conv, Seq: 1, SenderId: sender, ClientMessageId: "1",
			Body: string(body(nil, start.UnixNano(), cfg.Size)), SentAt: timestamppb.New(start),
		})
		if err != nil {
			res.Errors = append(res.Errors, err.Error())
			break
		}
		entryBytes = len(data) // the same for every conversation, give or take a digit
		wg.Go(func() {
			window := make(chan struct{}, cfg.Window)
			defer func() {
				for range cfg.Window { // wait for every append in flight
					window <- struct{}{}
				}
			}()
			for seq := uint64(1); ; seq++ {
				if ctx.Err() != nil || !time.Now().Before(end) {
					return
				}
				select {
				case window <- struct{}{}:
				case <-ctx.Done():
					return
				}
				at := time.Now()
				s.Append(store.Entry{Conv: conv, Seq: seq, Sender: sender, ClientMsgID: strconv.FormatUint(seq, 10), Data: data}, func(err error) {
					now := time.Now()
					if err != nil {
						if failed.Add(1) == 1 {
							errMu.Lock()
							firstErr = err
							errMu.Unlock()
						}
					} else {
						acked.Add(1)
						ackLat.Record(now.Sub(at))
						lastAck.Store(now.UnixNano())
					}
					<-window
				})
			}
		})
	}
	wg.Wait()
	pstop()
	p1 := readProc(0)

	res.Users = cfg.Convs
	res.Measured = p1.at.Sub(p0.at)
	res.Resources = resources("load generator process (the store and its appenders)", p0, p1)
	res.Acked = acked.Load()
	res.Sent = res.Acked + failed.Load()
	res.Ack = ackLat.Summary()
	lr := &LogResult{
		Conversations: cfg.Convs,
		InFlight:      cfg.Convs * cfg.Window,
		Commits:       commits.Load(),
		Commit:        commitLat.Summary(),
		Bytes:         entryBytes,
	}
	if last := lastAck.Load(); last > 0 {
		if d := time.Unix(0, last).Sub(start); d > 0 {
			lr.AckedPerSec = float64(res.Acked) / d.Seconds()
			res.SentPerSec = lr.AckedPerSec
		}
	}
	if lr.Commits > 0 {
		lr.PerCommit = float64(committed.Load()) / float64(lr.Commits)
	}
	res.Log = lr
	if n := failed.Load(); n > 0 {
		errMu.Lock()
		res.Errors = append(res.Errors, fmt.Sprintf("%d appends failed, the first with: %v", n, firstErr))
		errMu.Unlock()
	}
	if n := failedCommits.Load(); n > 0 {
		res.Errors = append(res.Errors, fmt.Sprintf("%d group commits failed", n))
	}
	closed = true
	if err := s.Close(); err != nil {
		res.Errors = append(res.Errors, fmt.Sprintf("close store: %v", err))
	}
	return res
}
