package natstest_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/parleychat/parley/server/natstest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// A replicated stream keeps every acked message through the kill of one
// node, and the node catches up when it comes back.
func TestClusterKeepsAckedMessagesThroughAKill(t *testing.T) {
	c := natstest.Start(t, natstest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	nc, err := nats.Connect(c.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}, Replicas: 3})
	if err != nil {
		t.Fatal(err)
	}
	publish := func(from, to int) {
		t.Helper()
		for i := from; i < to; i++ {
			for {
				// Each attempt has its own deadline: a publish sent while the
				// stream has no leader may get no answer at all, and must not
				// use up the whole test's time.
				actx, acancel := context.WithTimeout(ctx, 2*time.Second)
				_, err := js.Publish(actx, "t.x", fmt.Appendf(nil, "%d", i), jetstream.WithMsgID(fmt.Sprint(i)))
				acancel()
				if err == nil {
					break
				}
				if ctx.Err() != nil {
					t.Fatalf("publish %d: %v", i, err)
				}
				time.Sleep(50 * time.Millisecond) // leader election: retry with the same id
			}
		}
	}
	publish(0, 100)
	c.Nodes[0].Kill()
	publish(100, 200)
	c.Nodes[0].Start()
	c.Nodes[0].WaitReady()

	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 200 {
		t.Errorf("stream holds %d messages, want 200", info.State.Msgs)
	}
	for seq := uint64(1); seq <= 200; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("get %d: %v", seq, err)
		}
		if got, want := string(m.Data), fmt.Sprint(seq-1); got != want {
			t.Fatalf("seq %d holds %q, want %q", seq, got, want)
		}
	}
}
