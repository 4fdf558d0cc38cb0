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
	var s jetstream.Stream
	attempt(t, ctx, "create the stream", func(ctx context.Context) (err error) {
		s, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}, Replicas: 3})
		return err
	})
	publish := func(from, to int) {
		t.Helper()
		for i := from; i < to; i++ {
			// Retried with the same id through a leader election.
			attempt(t, ctx, fmt.Sprint("publish ", i), func(ctx context.Context) error {
				_, err := js.Publish(ctx, "t.x", fmt.Appendf(nil, "%d", i), jetstream.WithMsgID(fmt.Sprint(i)))
				return err
			})
		}
	}
	publish(0, 100)
	c.Nodes[0].Kill()
	publish(100, 200)
	c.Nodes[0].Start()
	c.Nodes[0].WaitReady()

	var info *jetstream.StreamInfo
	attempt(t, ctx, "stream info", func(ctx context.Context) (err error) {
		info, err = s.Info(ctx)
		return err
	})
	if info.State.Msgs != 200 {
		t.Errorf("stream holds %d messages, want 200", info.State.Msgs)
	}
	for seq := uint64(1); seq <= 200; seq++ {
		var m *jetstream.RawStreamMsg
		attempt(t, ctx, fmt.Sprint("get ", seq), func(ctx context.Context) (err error) {
			m, err = s.GetMsg(ctx, seq)
			return err
		})
		if got, want := string(m.Data), fmt.Sprint(seq-1); got != want {
			t.Fatalf("seq %d holds %q, want %q", seq, got, want)
		}
	}
}

// attempt runs f until it succeeds, each try with its own 5 s deadline: a
// JetStream request sent while a leader is being chosen may get no answer
// at all, and must not use up the whole test's time. It fails the test
// when ctx ends first.
func attempt(t *testing.T, ctx context.Context, what string, f func(context.Context) error) {
	t.Helper()
	for {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := f(actx)
		cancel()
		if err == nil {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
