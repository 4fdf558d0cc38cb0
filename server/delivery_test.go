package server

import (
	"fmt"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
)

func TestDirectConversationBothWays(t *testing.T) {
	n := start(t, "")
	alice, bob := register(t, n, "alice"), register(t, n, "bob")
	dm, err := alice.convs.CreateDirect(alice.ctx(t), &parleyv1.CreateDirectRequest{UserId: bob.id})
	if err != nil {
		t.Fatal(err)
	}
	conv := dm.GetConversation().GetId()
	again, err := bob.convs.CreateDirect(bob.ctx(t), &parleyv1.CreateDirectRequest{UserId: alice.id})
	if err != nil || again.GetConversation().GetId() != conv {
		t.Fatalf("bob's direct conversation = %q (%v), want alice's %q", again.GetConversation().GetId(), err, conv)
	}

	as, bs := alice.open(t), bob.open(t)
	as.subscribe(t, conv, 0, "")
	bs.subscribe(t, conv, 0, "")
	as.until(t, isSubscribed(conv))
	bs.until(t, isSubscribed(conv))

	const each = 50
	for i := 0; i < each; i++ {
		for _, s := range []struct {
			st   *stream
			from string
		}{{as, alice.id}, {bs, bob.id}} {
			err := s.st.c.Send(&parleyv1.ChatRequest{FrameId: uint64(i), Frame: &parleyv1.ChatRequest_Send{Send: &parleyv1.SendRequest{
				ConversationId: conv, ClientMessageId: fmt.Sprintf("%s-%d", s.from, i), Body: fmt.Sprintf("hello %d from %s", i, s.from)}}})
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, s := range []struct {
		name string
		st   *stream
	}{{"alice", as}, {"bob", bs}} {
		var msgs []*parleyv1.Message
		acks := 0
		for len(msgs) < 2*each || acks < each {
			f := s.st.next(t)
			switch {
			case f.GetMessage() != nil:
				msgs = append(msgs, f.GetMessage())
			case f.GetSendAck() != nil:
				acks++
			case f.GetError() != nil:
				t.Fatalf("%s got error frame %v", s.name, f.GetError())
			}
		}
		checkOrdered(t, s.name, msgs)
		for i, m := range msgs {
			if m.GetSeq() != uint64(i+1) {
				t.Fatalf("%s: message %d has seq %d", s.name, i, m.GetSeq())
			}
		}
		// Each side's own messages arrive in the order it sent them.
		next := map[string]int{}
		for _, m := range msgs {
			want := fmt.Sprintf("%s-%d", m.GetSenderId(), next[m.GetSenderId()])
			if m.GetClientMessageId() != want {
				t.Fatalf("%s: got %s, want %s next", s.name, m.GetClientMessageId(), want)
			}
			next[m.GetSenderId()]++
		}
	}
}

func TestRoomFanOut(t *testing.T) {
	const subscribers, senders, perSender = 200, 5, 200
	n := start(t, "")
	owner := register(t, n, "owner")
	var members []*user
	for i := 0; i < subscribers; i++ {
		members = append(members, register(t, n, "sub"))
	}
	var sendUsers []*user
	for i := 0; i < senders; i++ {
		sendUsers = append(sendUsers, register(t, n, "sender"))
	}
	conv := room(t, owner, "fanout", append(members, sendUsers...)...)

	streams := make([]*stream, subscribers)
	for i, m := range members {
		streams[i] = m.open(t)
		streams[i].subscribe(t, conv, 0, "")
	}
	for _, s := range streams {
		s.until(t, isSubscribed(conv))
	}
	var wg sync.WaitGroup
	for _, u := range sendUsers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			u.pipeline(t, conv, "m", perSender, "m")
		}()
	}
	wg.Wait()
	var rg sync.WaitGroup
	for i, s := range streams {
		rg.Add(1)
		go func() {
			defer rg.Done()
			msgs := s.messages(t, senders*perSender)
			checkOrdered(t, fmt.Sprint("subscriber ", i), msgs)
			if last := msgs[len(msgs)-1].GetSeq(); last != senders*perSender {
				t.Errorf("subscriber %d: last seq %d, want %d (gap)", i, last, senders*perSender)
			}
		}()
	}
	rg.Wait()
}

func TestRestartKeepsAckedMessages(t *testing.T) {
	dir := t.TempDir()
	n := start(t, dir)
	alice, bob := register(t, n, "alice"), register(t, n, "bob")
	conv := room(t, alice, "restart", bob)
	var acks []*parleyv1.SendResponse
	for i := 0; i < 20; i++ {
		acks = append(acks, alice.send(t, conv, fmt.Sprint("m", i), fmt.Sprint("body ", i)))
	}
	epoch := n.Epoch()
	n.stop(t)

	n = start(t, dir)
	if n.Epoch() != epoch {
		t.Fatalf("epoch changed across restart: %s -> %s", epoch, n.Epoch())
	}
	alice.reconnect(t, n)
	bob.reconnect(t, n)
	h, err := bob.chat.History(bob.ctx(t), &parleyv1.HistoryRequest{ConversationId: conv, Forward: true, Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	if len(h.GetMessages()) != len(acks) {
		t.Fatalf("History has %d messages, want %d", len(h.GetMessages()), len(acks))
	}
	for i, m := range h.GetMessages() {
		if m.GetSeq() != acks[i].GetSeq() || m.GetBody() != fmt.Sprint("body ", i) {
			t.Fatalf("history[%d] = seq %d %q, ack said seq %d", i, m.GetSeq(), m.GetBody(), acks[i].GetSeq())
		}
	}

	bs := bob.open(t)
	bs.subscribe(t, conv, acks[len(acks)-1].GetSeq(), epoch)
	bs.until(t, isSubscribed(conv))

	// A resend of an acknowledged message gets the original ack and is not delivered.
	dup := alice.send(t, conv, "m3", "body 3")
	if !dup.GetDuplicate() || dup.GetSeq() != acks[3].GetSeq() || !dup.GetSentAt().AsTime().Equal(acks[3].GetSentAt().AsTime()) {
		t.Fatalf("resend ack = %v, want duplicate of %v", dup, acks[3])
	}
	next := alice.send(t, conv, "m20", "after restart")
	if next.GetSeq() != acks[len(acks)-1].GetSeq()+1 {
		t.Fatalf("seq after restart = %d, want %d", next.GetSeq(), acks[len(acks)-1].GetSeq()+1)
	}
	got := bs.messages(t, 1)[0]
	if got.GetClientMessageId() != "m20" {
		t.Fatalf("bob got %s first; the resend m3 must not be delivered again", got.GetClientMessageId())
	}
}

func TestResumeWhileSending(t *testing.T) {
	n := start(t, "")
	alice, bob := register(t, n, "alice"), register(t, n, "bob")
	conv := room(t, alice, "resume", bob)
	const total = 600

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < total; i++ {
			alice.send(t, conv, fmt.Sprint(i), "x")
		}
	}()
	// Bob reads a while, drops his stream, and resumes from where he was.
	bs := bob.open(t)
	bs.subscribe(t, conv, 0, "")
	first := bs.messages(t, 100)
	bs.cancel()
	last := first[len(first)-1].GetSeq()

	bs = bob.open(t)
	bs.subscribe(t, conv, last, "")
	rest := bs.messages(t, total-len(first))
	wg.Wait()
	all := append(first, rest...)
	checkOrdered(t, "bob", all)
	for i, m := range all {
		if m.GetSeq() != uint64(i+1) {
			t.Fatalf("message %d has seq %d: gap or duplicate at the switch", i, m.GetSeq())
		}
	}
}

func TestSlowConsumerIsCutAndResumes(t *testing.T) {
	n := start(t, "", func(c *Config) { c.Queue = 64 })
	alice, bob, carol := register(t, n, "alice"), register(t, n, "bob"), register(t, n, "carol")
	conv := room(t, alice, "slow", bob, carol)

	// bob's stream is never read. Fixed small HTTP/2 windows (no BDP growth)
	// make the transport push back soon, so the server's queue overflows.
	conn := dial(t, n.addr, fixedWindows...)
	slow, err := parleyv1.NewChatServiceClient(conn).Chat(bob.ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	slow.Send(&parleyv1.ChatRequest{Frame: &parleyv1.ChatRequest_Subscribe{Subscribe: &parleyv1.SubscribePosition{ConversationId: conv}}})
	cs := carol.open(t)
	cs.subscribe(t, conv, 0, "")
	cs.until(t, isSubscribed(conv))

	// Big bodies fill the windows quickly; batches of 32 keep each burst
	// within what a reading subscriber's queue absorbs.
	const batches, per = 60, 32
	const total = batches * per
	big := fmt.Sprintf("%02000d", 0)
	for b := 0; b < batches; b++ {
		alice.pipeline(t, conv, fmt.Sprint(b, "-"), per, big)
	}
	if got := cs.messages(t, total); len(got) != total {
		t.Fatalf("carol got %d", len(got))
	}

	// Now read bob's stream: it must end with RESOURCE_EXHAUSTED after some
	// prefix of the messages.
	var seen []*parleyv1.Message
	var end error
	for {
		f, err := slow.Recv()
		if err != nil {
			end = err
			break
		}
		if m := f.GetMessage(); m != nil {
			seen = append(seen, m)
		}
	}
	if status.Code(end) != codes.ResourceExhausted {
		t.Fatalf("slow stream ended with %v, want RESOURCE_EXHAUSTED", end)
	}
	if len(seen) >= total {
		t.Fatalf("slow consumer received everything (%d); the test did not make it slow", len(seen))
	}
	checkOrdered(t, "bob before the cut", seen)
	var last uint64
	if len(seen) > 0 {
		last = seen[len(seen)-1].GetSeq()
	}
	bs := bob.open(t)
	bs.subscribe(t, conv, last, "")
	rest := bs.until(t, isSubscribed(conv))
	all := append(seen, rest...)
	checkOrdered(t, "bob after resuming", all)
	if len(all) != total {
		t.Fatalf("bob has %d messages after resuming, want %d", len(all), total)
	}
}
