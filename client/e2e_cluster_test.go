package client_test

import (
	"fmt"
	"sync"
	"testing"

	"github.com/parleychat/parley/client"
	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
	"github.com/parleychat/parley/server"
	"github.com/parleychat/parley/server/natstest"
	"github.com/parleychat/parley/server/servertest"
)

// Two parleyd nodes on a three-server JetStream cluster. Alice sends
// through node 1 while a subscriber on node 2 follows, and the NATS server
// each node talks to first is killed and restarted under them, one after
// the other. Every send is acked exactly once with a seq that History on
// either node shows in order, and the subscriber gets each message once,
// in order, with a prev_seq chain that has no gap.
func TestE2EClusterRidesThroughNATSKills(t *testing.T) {
	c := natstest.Start(t, natstest.Options{})
	var nodes []*servertest.Node
	for i := range 2 {
		urls := c.Nodes[i].URL + "," + c.URL()
		nodes = append(nodes, servertest.Start(t, "", func(cfg *server.Config) { cfg.NATSURL = urls }))
	}
	ctx := testCtx(t)
	alice := join(t, nodes[0].Addr, "alice")
	bob := join(t, nodes[1].Addr, "bob")
	conv := openRoom(t, alice, "failover", bob)

	sa, _ := record(t, alice, fast()...)
	sb, rb := record(t, bob, fast()...)
	if err := sb.Subscribe(conv, 0); err != nil {
		t.Fatal(err)
	}
	eventually(t, "bob subscribed", func() bool { return len(rb.subscribed(conv)) == 1 })

	const total = 300
	var mu sync.Mutex
	acks := map[string]*parleyv1.SendResponse{}
	results := make([]<-chan client.SendResult, 0, total)
	// After this many sends, kill (or restart) this NATS server.
	kills := map[int]int{total / 3: 0, 2 * total / 3: 1}
	restarts := map[int]int{total / 2: 0, total - 1: 1}
	for i := range total {
		if n, ok := kills[i]; ok {
			c.Nodes[n].Kill()
		}
		_, res, err := sa.SendAsync(ctx, conv, fmt.Sprintf("m%03d", i))
		if err != nil {
			t.Fatalf("SendAsync %d: %v", i, err)
		}
		results = append(results, res)
		if n, ok := restarts[i]; ok {
			c.Nodes[n].Start()
			c.Nodes[n].WaitReady()
		}
	}
	for i, res := range results {
		select {
		case r := <-res:
			if r.Err != nil {
				t.Fatalf("send %d: %v", i, r.Err)
			}
			mu.Lock()
			acks[r.Ack.GetClientMessageId()] = r.Ack
			mu.Unlock()
		case <-ctx.Done():
			t.Fatalf("send %d never answered", i)
		}
	}
	// A send that met a dead server is resent by the Session, so later
	// pipelined sends may be stored before it: the promise is each message
	// once, at the seq its ack gave, in one order everyone shares.
	var stored []*parleyv1.Message
	for _, reader := range []*client.Client{alice, bob} {
		stored = history(t, reader, conv)
		if len(stored) != total {
			t.Fatalf("History holds %d messages, want %d", len(stored), total)
		}
		bodies := map[string]bool{}
		for i, m := range stored {
			if bodies[m.GetBody()] {
				t.Fatalf("%q stored twice", m.GetBody())
			}
			bodies[m.GetBody()] = true
			if ack := acks[m.GetClientMessageId()]; ack == nil || ack.GetSeq() != m.GetSeq() || ack.GetDuplicate() {
				t.Fatalf("stored #%d %q acked as %v", m.GetSeq(), m.GetBody(), ack)
			}
			if i > 0 && m.GetPrevSeq() != stored[i-1].GetSeq() {
				t.Fatalf("stored #%d has prev_seq %d, want %d", m.GetSeq(), m.GetPrevSeq(), stored[i-1].GetSeq())
			}
		}
	}
	eventually(t, "bob to get every message", func() bool { return len(rb.messages(conv)) >= total })
	if d := diffMessages(rb.messages(conv), stored); d != "" {
		t.Fatalf("bob was given %s", d)
	}
}
