package server

import (
	"fmt"
	"testing"
	"time"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
	"github.com/parleychat/parley/server/natstest"
)

// startCluster runs three nodes on one three-server NATS JetStream cluster,
// each node talking to its own NATS server first.
func startCluster(t *testing.T) (*natstest.Cluster, []*node) {
	t.Helper()
	c := natstest.Start(t, natstest.Options{})
	var nodes []*node
	for i := range 3 {
		urls := c.Nodes[i].URL + "," + c.URL()
		nodes = append(nodes, start(t, "", func(cfg *Config) { cfg.NATSURL = urls }))
	}
	return c, nodes
}

// Three nodes share users, conversations and the log: a user registered on
// one logs in on another, a message sent on one reaches a subscriber on
// another live and in order, History on the third shows it, and a resend
// through yet another node is answered with the original seq.
func TestClusterNodesShareEverything(t *testing.T) {
	_, nodes := startCluster(t)
	alice := register(t, nodes[0], "alice")
	bob := register(t, nodes[1], "bob")
	conv := room(t, alice, "cluster", bob)
	bob.reconnect(t, nodes[2])

	// Bob follows the room on node 3 while alice sends on node 1.
	bs := bob.open(t)
	bs.subscribe(t, conv, 0, "")
	bs.until(t, isSubscribed(conv))
	var acks []*parleyv1.SendResponse
	for i := range 20 {
		acks = append(acks, alice.send(t, conv, fmt.Sprint("m", i), fmt.Sprint("hello ", i)))
	}
	got := bs.messages(t, 20)
	checkOrdered(t, "bob on node 3", got)
	for i, m := range got {
		if m.GetSeq() != acks[i].GetSeq() || m.GetBody() != fmt.Sprint("hello ", i) {
			t.Fatalf("message %d: seq %d %q, want seq %d", i, m.GetSeq(), m.GetBody(), acks[i].GetSeq())
		}
		if i > 0 && m.GetPrevSeq() != got[i-1].GetSeq() {
			t.Fatalf("message %d: prev_seq %d, want %d", i, m.GetPrevSeq(), got[i-1].GetSeq())
		}
	}

	// History through node 2 after the acks shows every message.
	alice.reconnect(t, nodes[1])
	hist, err := alice.chat.History(alice.ctx(t), &parleyv1.HistoryRequest{ConversationId: conv, Forward: true, Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(hist.GetMessages()); n != 20 {
		t.Fatalf("History on node 2 has %d messages, want 20", n)
	}

	// A resend of m3 through node 2 is the original, not a new message.
	again := alice.send(t, conv, "m3", "hello 3")
	if !again.GetDuplicate() || again.GetSeq() != acks[3].GetSeq() {
		t.Fatalf("resend through another node: %+v, want duplicate of seq %d", again, acks[3].GetSeq())
	}

	// Membership changed on one node is seen by the others: carol joins on
	// node 3 and reads on node 1.
	carol := register(t, nodes[2], "carol")
	if _, err := carol.convs.JoinRoom(carol.ctx(t), &parleyv1.JoinRoomRequest{ConversationId: conv}); err != nil {
		t.Fatal(err)
	}
	carol.reconnect(t, nodes[0])
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := carol.chat.History(carol.ctx(t), &parleyv1.HistoryRequest{ConversationId: conv, Limit: 1})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("carol, who joined on node 3, still cannot read on node 1: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
