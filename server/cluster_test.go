package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

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

	// An account deleted through node 2 is gone on node 1 at once (its
	// open stream there ends, its token is refused), and the room on node
	// 3 no longer lists it.
	cs := carol.open(t) // on node 1
	cs.subscribe(t, conv, 0, "")
	cs.until(t, isSubscribed(conv))
	if _, err := parleyv1.NewAuthServiceClient(dial(t, nodes[1].addr)).DeleteAccount(carol.ctx(t), &parleyv1.DeleteAccountRequest{Username: carol.id, Password: "correct horse"}); err != nil {
		t.Fatalf("DeleteAccount through node 2: %v", err)
	}
	if _, err := carol.chat.History(carol.ctx(t), &parleyv1.HistoryRequest{ConversationId: conv, Limit: 1}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("the deleted account's token on node 1 = %v, want UNAUTHENTICATED", err)
	}
	for range cs.frames {
	}
	if err := <-cs.done; status.Code(err) != codes.Unauthenticated {
		t.Fatalf("the deleted account's stream on node 1 ended with %v, want UNAUTHENTICATED", err)
	}
	// Node 3 learns of the change through the conversation watch.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		c, err := bob.convs.GetConversation(bob.ctx(t), &parleyv1.GetConversationRequest{ConversationId: conv})
		if err == nil && !slices.Contains(c.GetConversation().GetMemberIds(), carol.id) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node 3 still lists %v, %v; want the room without %s", c.GetConversation().GetMemberIds(), err, carol.id)
		}
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

// A room with two subscribers on each of three nodes and a sender on each:
// every subscriber gets every message once, all in the same order, which
// is History's. A subscriber then resumes on another node from its last
// seq while sends go on, and misses nothing. Finally every node and every
// NATS server stops (the NATS servers by SIGKILL) and comes back: History
// is intact and the seq chain continues.
func TestClusterRoomAcrossNodes(t *testing.T) {
	c, nodes := startCluster(t)
	const perSender = 40
	var senders, subs []*user
	for i, n := range nodes {
		senders = append(senders, register(t, n, fmt.Sprint("sender", i)))
		for range 2 {
			subs = append(subs, register(t, n, fmt.Sprint("sub", i)))
		}
	}
	conv := room(t, senders[0], "spread", append(senders[1:], subs...)...)
	var streams []*stream
	for _, u := range subs {
		s := u.open(t)
		s.subscribe(t, conv, 0, "")
		s.until(t, isSubscribed(conv))
		streams = append(streams, s)
	}

	done := make(chan []*parleyv1.SendResponse, len(senders))
	for i, u := range senders {
		go func() { done <- u.pipeline(t, conv, fmt.Sprint("s", i, "-"), perSender, "hello") }()
	}
	acked := map[uint64]bool{}
	for range senders {
		for _, a := range <-done {
			acked[a.GetSeq()] = true
		}
	}
	total := len(senders) * perSender
	if len(acked) != total {
		t.Fatalf("%d distinct seqs acked, want %d", len(acked), total)
	}
	var want []uint64
	for i, s := range streams {
		got := s.messages(t, total)
		checkOrdered(t, fmt.Sprint("subscriber ", i), got)
		seqs := make([]uint64, len(got))
		for j, m := range got {
			seqs[j] = m.GetSeq()
			if !acked[m.GetSeq()] {
				t.Fatalf("subscriber %d got unacked seq %d", i, m.GetSeq())
			}
			if j > 0 && m.GetPrevSeq() != got[j-1].GetSeq() {
				t.Fatalf("subscriber %d: seq %d has prev_seq %d, want %d", i, m.GetSeq(), m.GetPrevSeq(), got[j-1].GetSeq())
			}
		}
		if want == nil {
			want = seqs
		} else if !slices.Equal(seqs, want) {
			t.Fatalf("subscriber %d (node %d) saw another order than subscriber 0", i, i/2+1)
		}
	}
	hist, err := subs[0].chat.History(subs[0].ctx(t), &parleyv1.HistoryRequest{ConversationId: conv, Forward: true, Limit: 500})
	if err != nil {
		t.Fatal(err)
	}
	var stored []uint64
	for _, m := range hist.GetMessages() {
		stored = append(stored, m.GetSeq())
	}
	if !slices.Equal(stored, want) {
		t.Fatalf("History's order differs from the subscribers'")
	}

	// Resume on another node from the last seq seen, while sends go on.
	mover := subs[0] // on node 1
	last := want[len(want)-1]
	streams[0].cancel()
	more := make(chan []*parleyv1.SendResponse, 1)
	go func() { more <- senders[2].pipeline(t, conv, "more-", 30, "later") }()
	mover.reconnect(t, nodes[1])
	s := mover.open(t)
	s.subscribe(t, conv, last, hist.GetEpoch())
	extra := <-more
	got := s.messages(t, len(extra))
	checkOrdered(t, "the resumed subscriber", got)
	var extraSeqs []uint64 // acks may come back in any order; seqs are the order
	for _, a := range extra {
		extraSeqs = append(extraSeqs, a.GetSeq())
	}
	slices.Sort(extraSeqs)
	for j, m := range got {
		if m.GetSeq() != extraSeqs[j] {
			t.Fatalf("resumed subscriber: message %d has seq %d, want %d", j, m.GetSeq(), extraSeqs[j])
		}
	}
	if got[0].GetPrevSeq() != last {
		t.Fatalf("first message after the resume has prev_seq %d, want %d", got[0].GetPrevSeq(), last)
	}

	// Everything stops; NATS servers die without warning. Then back.
	for _, n := range nodes {
		n.stop(t)
	}
	for _, n := range c.Nodes {
		n.Kill()
	}
	for _, n := range c.Nodes {
		n.Start()
	}
	for _, n := range c.Nodes {
		n.WaitReady()
	}
	again := start(t, "", func(cfg *Config) { cfg.NATSURL = c.URL() })
	reader := register(t, again, "reader")
	if _, err := reader.convs.JoinRoom(reader.ctx(t), &parleyv1.JoinRoomRequest{ConversationId: conv}); err != nil {
		t.Fatal(err)
	}
	after, err := reader.chat.History(reader.ctx(t), &parleyv1.HistoryRequest{ConversationId: conv, Forward: true, Limit: 500})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(after.GetMessages()); n != total+len(extra) {
		t.Fatalf("History after a full restart holds %d messages, want %d", n, total+len(extra))
	}
	if after.GetEpoch() != hist.GetEpoch() {
		t.Fatalf("epoch changed across the restart: %s -> %s", hist.GetEpoch(), after.GetEpoch())
	}
	ack := reader.send(t, conv, "r1", "back")
	if prev := after.GetMessages()[len(after.GetMessages())-1].GetSeq(); ack.GetSeq() <= prev {
		t.Fatalf("a send after the restart got seq %d, not past %d", ack.GetSeq(), prev)
	}
}

// The same client_message_id sent through two nodes at once is stored once
// and both senders get its seq. A subscriber that never reads, on node 1, is
// cut as a slow consumer while subscribers on node 1 and node 2 get
// everything.
func TestClusterDedupAndSlowConsumer(t *testing.T) {
	_, nodes := startCluster(t, func(c *Config) { c.Queue = 64 })
	alice := register(t, nodes[2], "alice")
	bob := register(t, nodes[0], "bob")
	carol := register(t, nodes[1], "carol")
	dave := register(t, nodes[0], "dave")
	conv := room(t, alice, "busy", bob, carol, dave)

	// Dedup across nodes.
	twin := &user{id: alice.id, token: alice.token}
	twin.reconnect(t, nodes[1])
	acks := make(chan *parleyv1.SendResponse, 2)
	for _, u := range []*user{alice, twin} {
		go func() {
			resp, err := u.chat.Send(u.ctx(t), &parleyv1.SendRequest{ConversationId: conv, ClientMessageId: "twice", Body: "once"})
			if err != nil {
				t.Errorf("Send through one node: %v", err)
			}
			acks <- resp
		}()
	}
	a, b := <-acks, <-acks
	if a == nil || b == nil {
		t.FailNow()
	}
	if a.GetSeq() != b.GetSeq() || a.GetDuplicate() == b.GetDuplicate() {
		t.Fatalf("the same id through two nodes: %v and %v, want one seq, one of them a duplicate", a, b)
	}
	hist, err := carol.chat.History(carol.ctx(t), &parleyv1.HistoryRequest{ConversationId: conv, Forward: true, Limit: 500})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(hist.GetMessages()); n != 1 {
		t.Fatalf("History holds %d messages after one id sent twice, want 1", n)
	}

	// A stuck subscriber on node 1, next to healthy ones on nodes 1 and 2.
	conn := dial(t, nodes[0].addr, fixedWindows...)
	stuck, err := parleyv1.NewChatServiceClient(conn).Chat(bob.ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	stuck.Send(&parleyv1.ChatRequest{Frame: &parleyv1.ChatRequest_Subscribe{Subscribe: &parleyv1.SubscribePosition{ConversationId: conv, AfterSeq: a.GetSeq()}}})
	var healthy []*stream
	for _, u := range []*user{carol, dave} {
		s := u.open(t)
		s.subscribe(t, conv, a.GetSeq(), "")
		s.until(t, isSubscribed(conv))
		healthy = append(healthy, s)
	}
	const batches, per = 40, 32
	big := fmt.Sprintf("%02000d", 0)
	for i := range batches {
		alice.pipeline(t, conv, fmt.Sprint(i, "-"), per, big)
	}
	for i, s := range healthy {
		got := s.messages(t, batches*per)
		checkOrdered(t, fmt.Sprint("healthy subscriber ", i), got)
	}
	var seen int
	for {
		f, err := stuck.Recv()
		if err != nil {
			if status.Code(err) != codes.ResourceExhausted {
				t.Fatalf("the stuck stream ended with %v, want RESOURCE_EXHAUSTED", err)
			}
			break
		}
		if f.GetMessage() != nil {
			seen++
		}
	}
	if seen >= batches*per {
		t.Fatalf("the stuck subscriber got everything (%d): the test did not make it slow", seen)
	}
}

// A post on one node reaches, as a Notification, the streams on other
// nodes (and its own) of members who do not follow the conversation, once
// each.
func TestClusterNotificationsAcrossNodes(t *testing.T) {
	hooked := make(chan hookBody, 10)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b hookBody
		if err := json.NewDecoder(r.Body).Decode(&b); err != nil {
			t.Errorf("webhook body: %v", err)
		}
		hooked <- b
	}))
	defer hook.Close()
	_, nodes := startCluster(t, func(c *Config) { c.WebhookURL = hook.URL })
	alice := register(t, nodes[0], "alice")
	bob := register(t, nodes[1], "bob")
	carol := register(t, nodes[0], "carol")
	dave := register(t, nodes[2], "dave") // no stream anywhere
	conv := room(t, alice, "notes", bob, carol, dave)
	var streams []*stream
	for _, u := range []*user{bob, carol} { // following nothing
		s := u.open(t)
		s.c.Send(&parleyv1.ChatRequest{Frame: &parleyv1.ChatRequest_Ping{Ping: &parleyv1.Ping{Nonce: 1}}})
		s.until(t, func(f *parleyv1.ChatResponse) bool { return f.GetPong() != nil })
		streams = append(streams, s)
	}
	// The posting node must know bob is online on node 2 before it decides
	// who the webhook is for.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		resp, err := alice.chat.GetPresence(alice.ctx(t), &parleyv1.GetPresenceRequest{UserIds: []string{bob.id}})
		if err == nil && len(resp.GetPresences()) == 1 && resp.GetPresences()[0].GetOnline() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node 1 never saw bob online on node 2: %v, %v", resp, err)
		}
	}
	ack := alice.send(t, conv, "n1", "over here")
	select {
	case b := <-hooked:
		if fmt.Sprint(b.Recipients) != fmt.Sprint([]string{dave.id}) || b.Seq != ack.GetSeq() {
			t.Fatalf("webhook got %+v, want it for %s only (bob has a stream on another node)", b, dave.id)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("webhook not called for dave, who has no stream")
	}
	for i, s := range streams {
		var note *parleyv1.Notification
		for note == nil {
			note = s.next(t).GetNotification()
		}
		if note.GetConversationId() != conv || note.GetSeq() != ack.GetSeq() || note.GetSenderId() != alice.id || note.GetPreview() != "over here" {
			t.Fatalf("stream %d (node %d) got %v", i, 2-i, note)
		}
	}
	// Once each: the next notification is the second post's, not the
	// first one again from the posting node.
	ack2 := alice.send(t, conv, "n2", "again")
	for i, s := range streams {
		var note *parleyv1.Notification
		for note == nil {
			note = s.next(t).GetNotification()
		}
		if note.GetSeq() != ack2.GetSeq() {
			t.Fatalf("stream %d: next notification is for seq %d, want %d (the first one twice?)", i, note.GetSeq(), ack2.GetSeq())
		}
	}
}
