package server

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
)

// event reads frames until one satisfies pred.
func (s *stream) event(t testing.TB, what string, pred func(*parleyv1.ChatResponse) bool) *parleyv1.ChatResponse {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case f, ok := <-s.frames:
			if !ok {
				t.Fatalf("stream ended waiting for %s: %v", what, <-s.done)
			}
			if pred(f) {
				return f
			}
		case <-deadline:
			t.Fatalf("no %s within 20s", what)
		}
	}
}

// connect opens a stream and waits until the server has it: a client
// stream reaches the server with its first frame.
func (u *user) connect(t testing.TB) *stream {
	t.Helper()
	s := u.open(t)
	s.send(t, &parleyv1.ChatRequest{Frame: &parleyv1.ChatRequest_Ping{Ping: &parleyv1.Ping{Nonce: 7}}})
	s.event(t, "pong", func(f *parleyv1.ChatResponse) bool { return f.GetPong().GetNonce() == 7 })
	return s
}

func (s *stream) send(t testing.TB, req *parleyv1.ChatRequest) {
	t.Helper()
	if err := s.c.Send(req); err != nil {
		t.Fatal(err)
	}
}

func TestReceiptsAndUnreadSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	n := start(t, dir)
	alice, bob := register(t, n, "alice"), register(t, n, "bob")
	dm, err := alice.convs.CreateDirect(alice.ctx(t), &parleyv1.CreateDirectRequest{UserId: bob.id})
	if err != nil {
		t.Fatal(err)
	}
	conv := dm.GetConversation().GetId()
	as := alice.open(t)
	as.subscribe(t, conv, 0, "")
	as.until(t, isSubscribed(conv))

	var acks []*parleyv1.SendResponse
	for i := 0; i < 5; i++ {
		acks = append(acks, alice.send(t, conv, fmt.Sprint("m", i), fmt.Sprint("hello ", i)))
	}
	third := acks[2].GetSeq()
	isReceipt := func(delivered, read uint64) func(*parleyv1.ChatResponse) bool {
		return func(f *parleyv1.ChatResponse) bool {
			r := f.GetReceipt()
			return r != nil && r.GetUserId() == bob.id && r.GetDeliveredSeq() == delivered && r.GetReadSeq() == read
		}
	}
	// bob's device got the first three, then he reads the third.
	bs := bob.open(t)
	bs.send(t, &parleyv1.ChatRequest{Frame: &parleyv1.ChatRequest_Delivered{Delivered: &parleyv1.MarkDeliveredRequest{ConversationId: conv, Seq: third}}})
	as.event(t, "delivered receipt", isReceipt(third, 0))
	if _, err := bob.chat.MarkRead(bob.ctx(t), &parleyv1.MarkReadRequest{ConversationId: conv, Seq: third}); err != nil {
		t.Fatal(err)
	}
	as.event(t, "read receipt", isReceipt(third, third))

	// Positions never move back, and cannot pass the head.
	if r, err := bob.chat.MarkRead(bob.ctx(t), &parleyv1.MarkReadRequest{ConversationId: conv, Seq: 1}); err != nil || r.GetReceipt().GetReadSeq() != third {
		t.Fatalf("MarkRead(1) after MarkRead(%d) = %v, %v", third, r, err)
	}
	if _, err := bob.chat.MarkRead(bob.ctx(t), &parleyv1.MarkReadRequest{ConversationId: conv, Seq: 1000}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("MarkRead past head: %v, want INVALID_ARGUMENT", err)
	}

	unread := func(u *user) uint64 {
		t.Helper()
		resp, err := u.convs.ListConversations(u.ctx(t), &parleyv1.ListConversationsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range resp.GetConversations() {
			if c.GetId() == conv {
				return c.GetUnreadCount()
			}
		}
		t.Fatalf("%s does not list %s", u.id, conv)
		return 0
	}
	if got := unread(bob); got != 2 {
		t.Fatalf("bob's unread = %d, want 2", got)
	}
	if got := unread(alice); got != 0 {
		t.Fatalf("alice's unread = %d, want 0 (her own posts do not count)", got)
	}
	bob.send(t, conv, "b1", "a reply")
	if got := unread(alice); got != 1 {
		t.Fatalf("alice's unread after bob's reply = %d, want 1", got)
	}

	n.stop(t)
	n = start(t, dir)
	alice.reconnect(t, n)
	bob.reconnect(t, n)
	if got := unread(bob); got != 2 {
		t.Fatalf("bob's unread after restart = %d, want 2", got)
	}
	if got := unread(alice); got != 1 {
		t.Fatalf("alice's unread after restart = %d, want 1", got)
	}
	rs, err := alice.chat.GetReceipts(alice.ctx(t), &parleyv1.GetReceiptsRequest{ConversationId: conv})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, r := range rs.GetReceipts() {
		if r.GetUserId() == bob.id {
			found = r.GetReadSeq() == third && r.GetDeliveredSeq() == third
		}
	}
	if !found {
		t.Fatalf("bob's receipt after restart: %v", rs.GetReceipts())
	}
}

func TestTypingIsLiveOnlyAndLapses(t *testing.T) {
	n := start(t, "", func(c *Config) { c.TypingTTL = 200 * time.Millisecond })
	alice, bob := register(t, n, "alice"), register(t, n, "bob")
	conv := room(t, alice, "typing", bob)
	bs := bob.open(t)
	bs.subscribe(t, conv, 0, "")
	bs.until(t, isSubscribed(conv))

	if _, err := alice.chat.SetTyping(alice.ctx(t), &parleyv1.SetTypingRequest{ConversationId: conv, Typing: true}); err != nil {
		t.Fatal(err)
	}
	on := bs.event(t, "typing", func(f *parleyv1.ChatResponse) bool { return f.GetTyping() != nil }).GetTyping()
	if on.GetUserId() != alice.id || !on.GetTyping() || on.GetExpiresAt() == nil {
		t.Fatalf("typing event %v", on)
	}
	off := bs.event(t, "typing to lapse", func(f *parleyv1.ChatResponse) bool { return f.GetTyping() != nil }).GetTyping()
	if off.GetUserId() != alice.id || off.GetTyping() {
		t.Fatalf("after the TTL: %v, want typing=false", off)
	}
	// A post takes the indicator down at once.
	alice.chat.SetTyping(alice.ctx(t), &parleyv1.SetTypingRequest{ConversationId: conv, Typing: true})
	bs.event(t, "typing again", func(f *parleyv1.ChatResponse) bool { return f.GetTyping().GetTyping() })
	alice.send(t, conv, "x", "done typing")
	bs.event(t, "typing off after the post", func(f *parleyv1.ChatResponse) bool { return f.GetTyping() != nil && !f.GetTyping().GetTyping() })

	h, err := bob.chat.History(bob.ctx(t), &parleyv1.HistoryRequest{ConversationId: conv})
	if err != nil {
		t.Fatal(err)
	}
	if len(h.GetMessages()) != 1 || h.GetMessages()[0].GetBody() != "done typing" {
		t.Fatalf("History = %v; typing must never be stored", h.GetMessages())
	}
}

func TestPresenceTwoDevices(t *testing.T) {
	dir := t.TempDir()
	grace := func(c *Config) { c.PresenceGrace = 50 * time.Millisecond }
	n := start(t, dir, grace)
	alice, bob := register(t, n, "alice"), register(t, n, "bob")
	room(t, alice, "presence", bob)
	as := alice.connect(t)

	isBob := func(online bool) func(*parleyv1.ChatResponse) bool {
		return func(f *parleyv1.ChatResponse) bool {
			p := f.GetPresence()
			return p != nil && p.GetUserId() == bob.id && p.GetOnline() == online
		}
	}
	phone := bob.connect(t)
	as.event(t, "bob online", isBob(true))
	laptop := bob.connect(t)

	presence := func() *parleyv1.Presence {
		t.Helper()
		resp, err := alice.chat.GetPresence(alice.ctx(t), &parleyv1.GetPresenceRequest{UserIds: []string{bob.id, "stranger"}})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.GetPresences()) != 1 {
			t.Fatalf("GetPresence = %v; want bob only (a stranger shares nothing with alice)", resp.GetPresences())
		}
		return resp.GetPresences()[0]
	}
	phone.cancel()
	<-phone.done
	time.Sleep(200 * time.Millisecond) // well past the grace period
	if p := presence(); !p.GetOnline() {
		t.Fatalf("bob with his laptop still connected: %v", p)
	}
	laptop.cancel()
	<-laptop.done
	off := as.event(t, "bob offline", isBob(false)).GetPresence()
	if off.GetLastSeen() == nil || time.Since(off.GetLastSeen().AsTime()) > time.Minute {
		t.Fatalf("offline without a sane last_seen: %v", off)
	}
	if p := presence(); p.GetOnline() || p.GetLastSeen() == nil {
		t.Fatalf("GetPresence after both left: %v", p)
	}

	// The last-seen time outlives a restart.
	n.stop(t)
	n = start(t, dir, grace)
	alice.reconnect(t, n)
	if p := presence(); p.GetOnline() || !p.GetLastSeen().AsTime().Equal(off.GetLastSeen().AsTime()) {
		t.Fatalf("GetPresence after a restart = %v; want offline, last seen %v", p, off.GetLastSeen().AsTime())
	}
}

func TestEditAndDelete(t *testing.T) {
	dir := t.TempDir()
	n := start(t, dir)
	alice, bob := register(t, n, "alice"), register(t, n, "bob")
	conv := room(t, alice, "edits", bob)
	bs := bob.open(t)
	bs.subscribe(t, conv, 0, "")
	bs.until(t, isSubscribed(conv))

	first := alice.send(t, conv, "p1", "helo")
	second := alice.send(t, conv, "p2", "oops")
	bs.messages(t, 2)

	edit, err := alice.chat.EditMessage(alice.ctx(t), &parleyv1.EditMessageRequest{ConversationId: conv, Seq: first.GetSeq(), ClientMessageId: "e1", Body: "hello"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.chat.DeleteMessage(alice.ctx(t), &parleyv1.DeleteMessageRequest{ConversationId: conv, Seq: second.GetSeq(), ClientMessageId: "d1"}); err != nil {
		t.Fatal(err)
	}
	live := bs.messages(t, 2)
	if live[0].GetKind() != parleyv1.MessageKind_MESSAGE_KIND_EDIT || live[0].GetTargetSeq() != first.GetSeq() || live[0].GetBody() != "hello" || live[0].GetSeq() != edit.GetAck().GetSeq() {
		t.Fatalf("live edit event = %v", live[0])
	}
	if live[1].GetKind() != parleyv1.MessageKind_MESSAGE_KIND_DELETE || live[1].GetTargetSeq() != second.GetSeq() {
		t.Fatalf("live delete event = %v", live[1])
	}

	tests := []struct {
		name string
		call func() error
		code codes.Code
	}{
		{"bob edits alice's post", func() error {
			_, err := bob.chat.EditMessage(bob.ctx(t), &parleyv1.EditMessageRequest{ConversationId: conv, Seq: first.GetSeq(), ClientMessageId: "b", Body: "mine now"})
			return err
		}, codes.PermissionDenied},
		{"bob deletes alice's post", func() error {
			_, err := bob.chat.DeleteMessage(bob.ctx(t), &parleyv1.DeleteMessageRequest{ConversationId: conv, Seq: first.GetSeq(), ClientMessageId: "b2"})
			return err
		}, codes.PermissionDenied},
		{"edit a deleted post", func() error {
			_, err := alice.chat.EditMessage(alice.ctx(t), &parleyv1.EditMessageRequest{ConversationId: conv, Seq: second.GetSeq(), ClientMessageId: "e2", Body: "back"})
			return err
		}, codes.FailedPrecondition},
		{"edit an edit event", func() error {
			_, err := alice.chat.EditMessage(alice.ctx(t), &parleyv1.EditMessageRequest{ConversationId: conv, Seq: edit.GetAck().GetSeq(), ClientMessageId: "e3", Body: "x"})
			return err
		}, codes.FailedPrecondition},
		{"edit a missing seq", func() error {
			_, err := alice.chat.EditMessage(alice.ctx(t), &parleyv1.EditMessageRequest{ConversationId: conv, Seq: 999, ClientMessageId: "e4", Body: "x"})
			return err
		}, codes.NotFound},
		{"seq 0", func() error {
			_, err := alice.chat.DeleteMessage(alice.ctx(t), &parleyv1.DeleteMessageRequest{ConversationId: conv, ClientMessageId: "d0"})
			return err
		}, codes.InvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.call(); status.Code(err) != tt.code {
				t.Fatalf("got %v, want %v", err, tt.code)
			}
		})
	}

	n.stop(t)
	n = start(t, dir)
	bob.reconnect(t, n)
	h, err := bob.chat.History(bob.ctx(t), &parleyv1.HistoryRequest{ConversationId: conv, Forward: true, Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	posts := map[uint64]*parleyv1.Message{}
	for _, m := range h.GetMessages() {
		posts[m.GetSeq()] = m
	}
	if p := posts[first.GetSeq()]; p.GetBody() != "hello" || p.GetEditedAt() == nil {
		t.Fatalf("edited post after restart = %v", p)
	}
	if p := posts[second.GetSeq()]; !p.GetDeleted() || p.GetBody() != "" {
		t.Fatalf("deleted post after restart = %v, want a tombstone", p)
	}
}

func TestNotificationsForConversationsNotFollowed(t *testing.T) {
	n := start(t, "")
	alice, bob := register(t, n, "alice"), register(t, n, "bob")
	watched := room(t, alice, "watched", bob)
	other := room(t, alice, "other", bob)
	bs := bob.open(t)
	bs.subscribe(t, watched, 0, "")
	bs.until(t, isSubscribed(watched))

	alice.send(t, other, "o1", strings.Repeat("long news ", 30))
	note := bs.event(t, "notification", func(f *parleyv1.ChatResponse) bool { return f.GetNotification() != nil }).GetNotification()
	if note.GetConversationId() != other || note.GetSenderId() != alice.id || note.GetSeq() != 1 || len([]rune(note.GetPreview())) != 100 {
		t.Fatalf("notification = %v", note)
	}
	// A post in the followed conversation is a message, not a notification.
	alice.send(t, watched, "w1", "here")
	if m := bs.messages(t, 1)[0]; m.GetConversationId() != watched {
		t.Fatalf("got %v", m)
	}
}

func TestLimits(t *testing.T) {
	n := start(t, "", func(c *Config) {
		c.SendRate = 2 // bursts of 4
		c.TypingRate = 1
		c.MaxStreams = 2
	})
	alice := register(t, n, "alice")
	conv := room(t, alice, "limits")

	t.Run("send rate", func(t *testing.T) {
		var err error
		for i := 0; i < 20 && err == nil; i++ {
			_, err = alice.chat.Send(alice.ctx(t), &parleyv1.SendRequest{ConversationId: conv, ClientMessageId: fmt.Sprint(i), Body: "x"})
		}
		if st, _ := status.FromError(err); st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "--send-rate") {
			t.Fatalf("after a burst: %v, want RESOURCE_EXHAUSTED naming --send-rate", err)
		}
	})
	t.Run("typing rate", func(t *testing.T) {
		var err error
		for i := 0; i < 20 && err == nil; i++ {
			_, err = alice.chat.SetTyping(alice.ctx(t), &parleyv1.SetTypingRequest{ConversationId: conv, Typing: true})
		}
		if st, _ := status.FromError(err); st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "--typing-rate") {
			t.Fatalf("after a burst: %v, want RESOURCE_EXHAUSTED naming --typing-rate", err)
		}
	})
	t.Run("streams per user", func(t *testing.T) {
		alice.connect(t)
		alice.connect(t)
		third := alice.open(t)
		third.c.Send(&parleyv1.ChatRequest{Frame: &parleyv1.ChatRequest_Ping{Ping: &parleyv1.Ping{Nonce: 1}}})
		for range third.frames {
		}
		if st, _ := status.FromError(<-third.done); st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "--max-streams") {
			t.Fatalf("third stream: %v, want RESOURCE_EXHAUSTED naming --max-streams", st)
		}
	})
}

func TestSubscriptionsPerStreamLimit(t *testing.T) {
	n := start(t, "")
	alice := register(t, n, "alice")
	as := alice.open(t)
	var last *parleyv1.ErrorFrame
	for i := 0; i <= 256 && last == nil; i++ {
		conv := room(t, alice, fmt.Sprint("r", i))
		as.subscribe(t, conv, 0, "")
		for {
			f := as.control(t)
			if f.GetSubscribed() != nil {
				break
			}
			if e := f.GetError(); e != nil {
				last = e
				break
			}
		}
	}
	if last == nil || codes.Code(last.GetCode()) != codes.ResourceExhausted || !strings.Contains(last.GetMessage(), "at most 256") {
		t.Fatalf("257th subscription: %v", last)
	}
}

// Presence changes are pushed through conversations of at most
// PresenceFanout members; in a bigger room they are asked for.
func TestPresenceFanoutCap(t *testing.T) {
	n := start(t, "", func(c *Config) { c.PresenceFanout = 2 })
	alice, bob, carol := register(t, n, "alice"), register(t, n, "bob"), register(t, n, "carol")
	room(t, alice, "big", bob, carol) // 3 members: over the cap
	if _, err := alice.convs.CreateDirect(alice.ctx(t), &parleyv1.CreateDirectRequest{UserId: bob.id}); err != nil {
		t.Fatal(err)
	}
	as := alice.connect(t)
	carol.connect(t)
	bob.connect(t)
	// Presence frames reach alice's stream in the order the users came
	// online: carol's, had it been pushed, would come before bob's.
	f := as.event(t, "a presence frame", func(f *parleyv1.ChatResponse) bool { return f.GetPresence() != nil })
	if p := f.GetPresence(); p.GetUserId() != bob.id || !p.GetOnline() {
		t.Fatalf("first presence frame %v; want bob online (carol shares only a room over the cap with alice)", p)
	}
	resp, err := alice.chat.GetPresence(alice.ctx(t), &parleyv1.GetPresenceRequest{UserIds: []string{carol.id}})
	if err != nil {
		t.Fatal(err)
	}
	if ps := resp.GetPresences(); len(ps) != 1 || !ps[0].GetOnline() {
		t.Fatalf("GetPresence(carol) = %v; want carol online", ps)
	}
}
