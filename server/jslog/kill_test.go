package jslog

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
	"github.com/parleychat/parley/server/natstest"
	"github.com/parleychat/parley/server/router"
)

// Killing the stream leader's server while two nodes publish loses no
// acknowledged message and stores none twice: publishes that cannot finish
// in time fail with ErrUnavailable, their resends (same client id) are
// acked once, every ack names where the message is, publishing resumes
// under the new leader, and a live subscriber misses nothing.
func TestKillStreamLeader(t *testing.T) {
	t.Parallel() // each test has a cluster of its own
	c := natstest.Start(t, natstest.Options{})
	ctx := testCtx(t)
	opts := append(names(), WithRetry(20*time.Second), WithLogger(testLogger(t)))
	first := node(t, c, 0, opts...)
	info, err := first.stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	leader := -1
	var others []int
	for i, n := range c.Nodes {
		if n.Name == info.Cluster.Leader {
			leader = i
		} else {
			others = append(others, i)
		}
	}
	if leader < 0 {
		t.Fatalf("no leader among the nodes: %+v", info.Cluster)
	}
	// a gives up quickly, so that some acks fail and are resent; b retries
	// through the election.
	a := node(t, c, others[0], append(opts, WithRetry(500*time.Millisecond))...)
	b := node(t, c, others[1], opts...)

	const conv, perNode, inflight = "room:failover", 150, 8
	var watcher recorder
	replay := follow(t, b, conv, 0, 50, &watcher)

	var mu sync.Mutex
	acked := make(map[string]uint64)
	var total, unavailable atomic.Int64
	killAt := make(chan struct{})
	var once sync.Once
	var wg sync.WaitGroup
	for n, l := range []*Log{a, b} {
		sem := make(chan struct{}, inflight)
		for i := range perNode {
			sem <- struct{}{}
			id := fmt.Sprintf("n%d-%d", n, i)
			wg.Go(func() {
				defer func() { <-sem }()
				for attempt := 0; ; attempt++ {
					o := <-publishAsync(t, l, post(conv, "alice", id))
					if o.err != nil {
						if !errors.Is(o.err, ErrUnavailable) {
							t.Errorf("ack of %s: %v, want ErrUnavailable", id, o.err)
							return
						}
						unavailable.Add(1)
						continue // the client resends with the same id
					}
					if o.res.Duplicate && attempt == 0 {
						t.Errorf("first send of %s acked as a duplicate", id)
					}
					mu.Lock()
					acked[id] = o.res.Seq
					mu.Unlock()
					if total.Add(1) == 60 {
						once.Do(func() { close(killAt) })
					}
					return
				}
			})
		}
	}
	<-killAt
	killed := time.Now()
	c.Nodes[leader].Kill()
	wg.Wait()
	t.Logf("%d acks failed with ErrUnavailable and were resent; all acked %v after the kill", unavailable.Load(), time.Since(killed).Round(time.Millisecond))

	// b reads through what is left of the election (its retry period is
	// long); a gives up on a read as quickly as on a publish, so it is
	// asked again, as a client asks again after UNAVAILABLE.
	for _, l := range []*Log{b, a} {
		var msgs []*parleyv1.Message
		waitFor(t, ctx, "a whole read", func() bool {
			var err error
			msgs, err = readAll(t, l, conv)
			if err != nil && (l == b || !errors.Is(err, ErrUnavailable)) {
				t.Fatal(err)
			}
			return err == nil
		})
		checkChain(t, msgs)
		if len(msgs) != 2*perNode {
			t.Fatalf("%d messages stored, want %d", len(msgs), 2*perNode)
		}
		for _, m := range msgs {
			if s := acked[m.GetClientMessageId()]; s != m.GetSeq() {
				t.Fatalf("%s is at %d, acked with %d", m.GetClientMessageId(), m.GetSeq(), s)
			}
		}
	}
	waitFor(t, ctx, "the live subscriber", func() bool {
		if len(replay)+len(watcher.snapshot()) >= 2*perNode {
			return true
		}
		t.Logf("subscriber has %d+%d frames, feed of b at %d", len(replay), len(watcher.snapshot()), b.Stats().FeedSeq)
		time.Sleep(time.Second)
		return false
	})
	got := append(replay, watcher.snapshot()...)
	stored := all(t, b, conv)
	if len(got) != len(stored) {
		t.Fatalf("subscriber got %d frames, %d are stored", len(got), len(stored))
	}
	for i, f := range got {
		if f.Seq != stored[i].GetSeq() {
			t.Fatalf("frame %d has seq %d, want %d", i, f.Seq, stored[i].GetSeq())
		}
	}
	t.Logf("subscriber complete %v after the kill", time.Since(killed).Round(time.Millisecond))
	// Publishing goes on under the new leader.
	publish(t, b, post(conv, "alice", "after"))
}

// testLogger logs to t.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(string(b))
	return len(b), nil
}

// While JetStream is down, a publish fails with ErrUnavailable once its
// retry period is over, and reads fail the same way; when it is back, the
// resend is stored once and the chain goes on from the message before.
func TestOutageIsRetryable(t *testing.T) {
	t.Parallel() // each test has a cluster of its own
	c := natstest.Start(t, natstest.Options{Nodes: 1})
	ctx := testCtx(t)
	l := node(t, c, 0, append(names(), WithReplicas(1), WithRetry(300*time.Millisecond), WithTimeout(200*time.Millisecond))...)
	const conv = "room:outage"
	first := publish(t, l, post(conv, "alice", "1"))
	c.Nodes[0].Stop()
	if o := <-publishAsync(t, l, post(conv, "alice", "2")); !errors.Is(o.err, ErrUnavailable) {
		t.Fatalf("publish during the outage: %+v, %v; want ErrUnavailable", o.res, o.err)
	}
	if _, _, err := l.Range("room:unread", 0, 0, 10); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Range during the outage: %v; want ErrUnavailable", err)
	}
	c.Nodes[0].Start()
	c.Nodes[0].WaitReady()
	var second router.Result
	waitFor(t, ctx, "the resend's ack", func() bool {
		o := <-publishAsync(t, l, post(conv, "alice", "2"))
		if o.err != nil && !errors.Is(o.err, ErrUnavailable) {
			t.Fatalf("resend: %v", o.err)
		}
		second = o.res
		return o.err == nil
	})
	msgs := all(t, l, conv)
	checkChain(t, msgs)
	if len(msgs) != 2 || msgs[0].GetSeq() != first.Seq || msgs[1].GetSeq() != second.Seq {
		t.Fatalf("stored %v, want 1 at %d and 2 at %d", msgs, first.Seq, second.Seq)
	}
}
