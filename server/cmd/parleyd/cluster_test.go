package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"

	"github.com/parleychat/parley/client"
	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
	"github.com/parleychat/parley/server/natstest"
)

// cluster is three parleyd processes on a three-server JetStream cluster,
// each talking to its own NATS server first.
func startClusterProcs(t *testing.T) (*natstest.Cluster, []*proc) {
	t.Helper()
	c := natstest.Start(t, natstest.Options{})
	var procs []*proc
	for i := range 3 {
		// --pprof: a failed test logs each live node's goroutines.
		procs = append(procs, startParleyd(t, "--data-dir", t.TempDir(), "--send-rate", "0", "--pprof",
			"--nats", c.Nodes[i].URL+","+c.URL()))
	}
	return c, procs
}

// dialAll returns a Client that knows every node and moves to another when
// the one it uses dies (gRPC's pick_first over a fixed address list).
func dialAll(t *testing.T, ctx context.Context, procs []*proc) *client.Client {
	t.Helper()
	r := manual.NewBuilderWithScheme(fmt.Sprintf("parley%d", time.Now().UnixNano()))
	var addrs []resolver.Address
	for _, p := range procs {
		addrs = append(addrs, resolver.Address{Addr: p.addr})
	}
	r.InitialState(resolver.State{Addresses: addrs})
	c, err := client.Dial(ctx, r.Scheme()+":///parley", client.WithDialOptions(grpc.WithResolvers(r)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// kill -9 of the node a sending client uses: the client moves to another
// node and resends what was not acked; every ack is stored once at its seq,
// and a subscriber on a third node gets exactly what is stored, in order.
func TestClusterNodeKilledUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a NATS cluster and three parleyd processes")
	}
	_, procs := startClusterProcs(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	sender := dialAll(t, ctx, procs) // pick_first: node 1 while it lives
	if _, err := sender.Register(ctx, "sender", "correct horse", ""); err != nil {
		t.Fatal(err)
	}
	listener, err := client.Dial(ctx, procs[2].addr)
	if err != nil {
		t.Fatal(err)
	}
	defer listener.Close()
	if _, err := listener.Register(ctx, "listener", "correct horse", ""); err != nil {
		t.Fatal(err)
	}
	room, err := sender.CreateRoom(ctx, "killed", "")
	if err != nil {
		t.Fatal(err)
	}
	conv := room.GetId()
	if _, err := listener.JoinRoom(ctx, conv); err != nil {
		t.Fatal(err)
	}
	ls, err := listener.NewSession(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer ls.Close()
	if err := ls.Subscribe(conv, 0); err != nil {
		t.Fatal(err)
	}
	ss, err := sender.NewSession(ctx, client.WithBackoff(20*time.Millisecond, 200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer ss.Close()
	// What the sender's session went through, for a failure seen once in
	// many runs: its connection states and refusals, with times.
	var trail struct {
		sync.Mutex
		lines []string
	}
	note := func(format string, args ...any) {
		trail.Lock()
		defer trail.Unlock()
		if len(trail.lines) < 200 {
			trail.lines = append(trail.lines, time.Now().Format("15:04:05.000 ")+fmt.Sprintf(format, args...))
		}
	}
	go func() {
		for ev := range ss.Events() {
			switch e := ev.(type) {
			case client.StateEvent:
				note("state %s attempt %d err %v", e.State, e.Attempt, e.Err)
			case client.ErrorEvent:
				note("error frame %s %s: %v", e.Frame.GetFrame(), e.Frame.GetClientMessageId(), e.Err)
			}
		}
	}()

	const total = 400
	results := make([]<-chan client.SendResult, 0, total)
	for i := range total {
		if i == total/3 {
			note("kill node 1 (%s)", procs[0].addr)
			procs[0].kill(t)
		}
		_, res, err := ss.SendAsync(ctx, conv, fmt.Sprintf("m%03d", i))
		if err != nil {
			t.Fatalf("SendAsync %d: %v", i, err)
		}
		results = append(results, res)
	}
	acked := map[string]uint64{}
	for i, res := range results {
		select {
		case r := <-res:
			if r.Err != nil {
				t.Fatalf("send %d failed: %v", i, r.Err)
			}
			acked[r.Ack.GetClientMessageId()] = r.Ack.GetSeq()
		case <-ctx.Done():
			var later []int // what was answered after it, for a failure seen once in many runs
			for j := i + 1; j < len(results); j++ {
				select {
				case <-results[j]:
					later = append(later, j)
				default:
				}
			}
			trail.Lock()
			events := strings.Join(trail.lines, "\n")
			trail.Unlock()
			t.Fatalf("send %d never answered (node killed before send %d); of the %d after it, %d were answered, the first %v; the sender's session:\n%s",
				i, total/3, len(results)-i-1, len(later), later[:min(len(later), 10)], events)
		}
	}

	var stored []*parleyv1.Message
	q := client.HistoryQuery{Forward: true, Limit: 500}
	page, err := listener.History(ctx, conv, q)
	if err != nil {
		t.Fatal(err)
	}
	stored = page.GetMessages()
	if len(stored) != total {
		t.Fatalf("History holds %d messages, want %d", len(stored), total)
	}
	seen := map[string]bool{}
	for i, m := range stored {
		id := m.GetClientMessageId()
		if seen[id] || acked[id] != m.GetSeq() {
			t.Fatalf("stored #%d (%s): twice=%v, acked at %d", m.GetSeq(), id, seen[id], acked[id])
		}
		seen[id] = true
		if i > 0 && m.GetPrevSeq() != stored[i-1].GetSeq() {
			t.Fatalf("stored #%d has prev_seq %d, want %d", m.GetSeq(), m.GetPrevSeq(), stored[i-1].GetSeq())
		}
	}
	var got []*parleyv1.Message
	deadline := time.After(time.Minute)
	for len(got) < total {
		select {
		case ev := <-ls.Events():
			if m, ok := ev.(client.MessageEvent); ok {
				got = append(got, m.Message)
			}
		case <-deadline:
			t.Fatalf("the listener got %d of %d messages", len(got), total)
		}
	}
	for i, m := range got {
		if m.GetSeq() != stored[i].GetSeq() {
			t.Fatalf("the listener's message %d is #%d, History's is #%d", i, m.GetSeq(), stored[i].GetSeq())
		}
	}
}
