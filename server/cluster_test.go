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
func startCluster(t *testing.T, adjust ...func(*Config)) (*natstest.Cluster, []*node) {
	t.Helper()
	c := natstest.Start(t, natstest.Options{})
	var nodes []*node
	for i := range 3 {
		urls := c.Nodes[i].URL + "," + c.URL()
		nodes = append(nodes, start(t, "", append(adjust, func(cfg *Config) { cfg.NATSURL = urls })...))
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

// Presence is the cluster's, not a node's: a user with streams on two nodes
// stays online until the last one goes, and others on a third node see each
// overall change once.
func TestClusterPresenceAcrossNodes(t *testing.T) {
	_, nodes := startCluster(t, func(c *Config) { c.PresenceGrace = 20 * time.Millisecond })
	alice := register(t, nodes[0], "alice")
	bob := register(t, nodes[2], "bob")
	carol := register(t, nodes[0], "carol")
	room(t, alice, "presence", bob, carol)
	bs := bob.open(t)
	// presenceOf reads bob's frames until one is about who, and returns
	// it with the presence frames about alice met on the way.
	presenceOf := func(who string) (*parleyv1.Presence, []*parleyv1.Presence) {
		var aliceFrames []*parleyv1.Presence
		for {
			p := bs.next(t).GetPresence()
			if p.GetUserId() == who {
				return p, aliceFrames
			}
			if p.GetUserId() == alice.id {
				aliceFrames = append(aliceFrames, p)
			}
		}
	}
	ping := func(s *stream) {
		s.c.Send(&parleyv1.ChatRequest{Frame: &parleyv1.ChatRequest_Ping{Ping: &parleyv1.Ping{Nonce: 1}}})
		s.until(t, func(f *parleyv1.ChatResponse) bool { return f.GetPong() != nil })
	}

	a1 := alice.open(t) // on node 1
	if p, _ := presenceOf(alice.id); !p.GetOnline() {
		t.Fatalf("alice's first stream: %v", p)
	}
	alice.reconnect(t, nodes[1])
	a2 := alice.open(t) // and on node 2
	ping(a2)
	a1.cancel() // gone from node 1 but still on node 2: nothing to announce
	<-a1.done
	// Node 1 tells the others once its grace period is over; what it
	// publishes next (carol coming online there) arrives after it.
	time.Sleep(time.Second)
	carol.reconnect(t, nodes[0])
	carol.open(t)
	if p, between := presenceOf(carol.id); !p.GetOnline() || len(between) != 0 {
		t.Fatalf("carol: %v; alice frames while she still had a stream on node 2: %v", p, between)
	}
	a2.cancel() // gone everywhere: offline
	if p, _ := presenceOf(alice.id); p.GetOnline() || p.GetLastSeen() == nil {
		t.Fatalf("after alice's last stream went: %v, want offline with last seen", p)
	}
}
