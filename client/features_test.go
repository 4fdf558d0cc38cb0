package client_test

// Receipts, typing, presence, notifications, edits, deletes and
// attachments against the fake server.

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/parleychat/parley/client"
	"github.com/parleychat/parley/client/internal/fakeserver"
	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
)

// markFrames lists the delivered and read frames the server got, as
// "delivered 3" or "read 2", from the n-th signal on.
func markFrames(srv *fakeserver.Server, from int) []string {
	var out []string
	for _, f := range srv.Signals()[from:] {
		switch {
		case f.GetDelivered() != nil:
			out = append(out, fmt.Sprint("delivered ", f.GetDelivered().GetSeq()))
		case f.GetRead() != nil:
			out = append(out, fmt.Sprint("read ", f.GetRead().GetSeq()))
		}
	}
	return out
}

func typingFrames(srv *fakeserver.Server) []bool {
	var out []bool
	for _, f := range srv.Signals() {
		if t := f.GetTyping(); t != nil {
			out = append(out, t.GetTyping())
		}
	}
	return out
}

func subscribed(t *testing.T, s *client.Session, r *recorder, convs ...string) {
	t.Helper()
	for _, c := range convs {
		if err := s.Subscribe(c, 0); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "Subscribed", func() bool {
		for _, c := range convs {
			if len(r.subscribed(c)) == 0 {
				return false
			}
		}
		return true
	})
}

func TestMarksCoalesceAndSurviveReconnects(t *testing.T) {
	tests := []struct {
		name string
		// login makes the Client know its user, so that the Session can
		// recognise the server's confirmations of its own marks.
		login      bool
		wantResend bool
	}{
		{"user unknown: marks are sent again on a new stream", false, true},
		{"user known: confirmed marks are not sent again", true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, c := setup(t)
			if tt.login {
				if _, err := c.Login(testCtx(t), "alice", "password-alice"); err != nil {
					t.Fatal(err)
				}
			}
			publish(t, srv, "a", "b", "c", "d")
			s, r := record(t, c, fast()...)
			subscribed(t, s, r, conv)

			for _, m := range []struct {
				read bool
				seq  uint64
			}{{false, 1}, {false, 1}, {true, 2}, {false, 2}, {false, 1}, {true, 1}} {
				mark := s.MarkDelivered
				if m.read {
					mark = s.MarkRead
				}
				if err := mark(conv, m.seq); err != nil {
					t.Fatal(err)
				}
			}
			eventually(t, "read 2 on the server", func() bool { return srv.Receipt(conv, "alice").GetReadSeq() == 2 })
			// The writer may or may not have taken delivered 1 before read 2
			// came; nothing else may go out.
			if got := markFrames(srv, 0); !slices.Equal(got, []string{"read 2"}) && !slices.Equal(got, []string{"delivered 1", "read 2"}) {
				t.Errorf("frames %q, want [read 2] or [delivered 1, read 2]", got)
			}
			if err := s.MarkDelivered(conv, 3); err != nil {
				t.Fatal(err)
			}
			eventually(t, "delivered 3 on the server", func() bool { return srv.Receipt(conv, "alice").GetDeliveredSeq() == 3 })
			eventually(t, "alice's own receipts as events", func() bool {
				for _, ev := range r.all() {
					if rc, ok := ev.(client.ReceiptEvent); ok && rc.Receipt.GetUserId() == "alice" && rc.Receipt.GetDeliveredSeq() == 3 {
						return true
					}
				}
				return false
			})

			before := len(srv.Signals())
			srv.KillStreams(codes.Unavailable, "restart")
			eventually(t, "resubscribed", func() bool { return len(r.subscribed(conv)) == 2 })
			if err := s.MarkRead(conv, 4); err != nil {
				t.Fatal(err)
			}
			eventually(t, "read 4 on the server", func() bool { return srv.Receipt(conv, "alice").GetReadSeq() == 4 })
			// A resend goes out first on the new stream, so by now it has.
			want := []string{"read 4"}
			if tt.wantResend {
				want = []string{"read 2", "delivered 3", "read 4"}
			}
			if got := markFrames(srv, before); !slices.Equal(got, want) {
				t.Errorf("frames after the reconnect %q, want %q", got, want)
			}
		})
	}
}

func TestAutoDelivered(t *testing.T) {
	t.Run("on", func(t *testing.T) {
		srv, c := setup(t)
		publish(t, srv, "a", "b", "c")
		s, r := record(t, c, fast(client.WithAutoDelivered())...)
		subscribed(t, s, r, conv)
		eventually(t, "delivered up to the replay's end", func() bool { return srv.Receipt(conv, "alice").GetDeliveredSeq() == 3 })
		publish(t, srv, "d")
		eventually(t, "delivered up to the live message", func() bool { return srv.Receipt(conv, "alice").GetDeliveredSeq() == 4 })
		if rc := srv.Receipt(conv, "alice"); rc.GetReadSeq() != 0 {
			t.Errorf("receipt %v: delivered must not mark read", rc)
		}
	})
	t.Run("off by default", func(t *testing.T) {
		srv, c := setup(t)
		publish(t, srv, "a", "b", "c")
		s, r := record(t, c, fast()...)
		subscribed(t, s, r, conv)
		if _, err := s.Send(testCtx(t), conv, "mine"); err != nil {
			t.Fatal(err)
		}
		eventually(t, "every message", func() bool { return len(r.seqs(conv)) == 4 })
		if got := markFrames(srv, 0); len(got) != 0 {
			t.Errorf("the Session marked %q by itself", got)
		}
	})
}

func TestTypingIsThrottled(t *testing.T) {
	srv, c := setup(t)
	s, r := record(t, c, fast(client.WithTypingRenew(time.Hour))...)
	subscribed(t, s, r, conv)
	for _, on := range []bool{true, true, true, false, false, true} {
		if err := s.SetTyping(conv, on); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "three typing frames", func() bool { return len(typingFrames(srv)) == 3 })
	// A post takes the indicator down on the server, so typing again
	// must go out at once.
	if _, err := s.Send(testCtx(t), conv, "done"); err != nil {
		t.Fatal(err)
	}
	if err := s.SetTyping(conv, true); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the fourth typing frame", func() bool { return len(typingFrames(srv)) == 4 })
	if got := typingFrames(srv); !slices.Equal(got, []bool{true, false, true, true}) {
		t.Errorf("typing frames %v, want [true false true true]", got)
	}
	eventually(t, "alice's own typing events", func() bool {
		n := 0
		for _, ev := range r.all() {
			if ty, ok := ev.(client.TypingEvent); ok && ty.Typing.GetUserId() == "alice" {
				n++
			}
		}
		return n == 4
	})
}

func TestEventsFromOthers(t *testing.T) {
	srv, alice := setup(t)
	const other = "room:other"
	srv.AddConversation(other, parleyv1.ConversationKind_CONVERSATION_KIND_ROOM, "alice", "bob")
	ctx := testCtx(t)
	bob, err := client.Dial(ctx, srv.Addr(), client.WithToken(srv.AddUser("bob", "password-bob")))
	if err != nil {
		t.Fatal(err)
	}
	defer bob.Close()
	publish(t, srv, "a", "b")

	s, r := record(t, alice, fast()...)
	subscribed(t, s, r, conv)
	find := func(match func(client.Event) bool) func() bool {
		return func() bool { return slices.IndexFunc(r.all(), match) >= 0 }
	}

	if _, err := bob.MarkRead(ctx, conv, 2); err != nil {
		t.Fatal(err)
	}
	eventually(t, "bob's receipt", find(func(ev client.Event) bool {
		rc, ok := ev.(client.ReceiptEvent)
		return ok && rc.Receipt.GetUserId() == "bob" && rc.Receipt.GetReadSeq() == 2 && rc.Receipt.GetDeliveredSeq() == 2
	}))
	if err := bob.SetTyping(ctx, conv, true); err != nil {
		t.Fatal(err)
	}
	eventually(t, "bob typing", find(func(ev client.Event) bool {
		ty, ok := ev.(client.TypingEvent)
		return ok && ty.Typing.GetUserId() == "bob" && ty.Typing.GetTyping() && ty.Typing.GetExpiresAt() != nil
	}))
	if _, err := bob.Send(ctx, other, "over here"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a notification", find(func(ev client.Event) bool {
		n, ok := ev.(client.NotificationEvent)
		return ok && n.Notification.GetConversationId() == other && n.Notification.GetSenderId() == "bob" && n.Notification.GetPreview() == "over here"
	}))

	bs, err := bob.NewSession(ctx, fast()...)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for range bs.Events() {
		}
	}()
	eventually(t, "bob online", find(func(ev client.Event) bool {
		p, ok := ev.(client.PresenceEvent)
		return ok && p.Presence.GetUserId() == "bob" && p.Presence.GetOnline()
	}))
	ps, err := alice.GetPresence(ctx, "bob")
	if err != nil || len(ps) != 1 || !ps[0].GetOnline() {
		t.Errorf("GetPresence(bob) = %v, %v; want online", ps, err)
	}
	bs.Close()
	eventually(t, "bob offline", find(func(ev client.Event) bool {
		p, ok := ev.(client.PresenceEvent)
		return ok && p.Presence.GetUserId() == "bob" && !p.Presence.GetOnline() && p.Presence.GetLastSeen() != nil
	}))

	rs, err := alice.GetReceipts(ctx, conv)
	if err != nil || len(rs) != 1 || rs[0].GetUserId() != "bob" {
		t.Fatalf("GetReceipts = %v, %v", rs, err)
	}
	if st := client.NewReceipts(conv, rs...).State(2, "alice"); st.Status != client.StatusRead {
		t.Errorf("state of #2 = %+v, want read", st)
	}
}

func TestEditAndDeleteThroughTheOutbox(t *testing.T) {
	srv, c := setup(t)
	s, r := record(t, c, fast()...)
	subscribed(t, s, r, conv)
	ctx := testCtx(t)
	post, err := s.Send(ctx, conv, "helo")
	if err != nil {
		t.Fatal(err)
	}

	// An edit whose ack is lost is resent under its id and answered once.
	srv.DropAcks(true)
	id, result, err := s.EditAsync(ctx, conv, post.GetSeq(), "hello")
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the edit stored", func() bool { return len(srv.Messages(conv)) == 2 })
	srv.DropAcks(false)
	srv.KillStreams(codes.Unavailable, "going away")
	var res client.SendResult
	select {
	case res = <-result:
	case <-ctx.Done():
		t.Fatal("no result for the edit")
	}
	if res.Err != nil || !res.Ack.GetDuplicate() || res.Ack.GetSeq() != 2 || res.Ack.GetClientMessageId() != id {
		t.Fatalf("edit result %+v, want the duplicate ack of seq 2", res)
	}
	del, err := s.Delete(ctx, conv, post.GetSeq())
	if err != nil || del.GetSeq() != 3 {
		t.Fatalf("Delete = %v, %v; want seq 3", del, err)
	}

	eventually(t, "three messages", func() bool { return len(r.messages(conv)) == 3 })
	got := r.messages(conv)
	if e := got[1]; e.GetKind() != parleyv1.MessageKind_MESSAGE_KIND_EDIT || e.GetTargetSeq() != 1 || e.GetBody() != "hello" {
		t.Errorf("edit event %v", e)
	}
	if d := got[2]; d.GetKind() != parleyv1.MessageKind_MESSAGE_KIND_DELETE || d.GetTargetSeq() != 1 {
		t.Errorf("delete event %v", d)
	}
	shown := client.Apply(got[0], got[1])
	if shown.GetBody() != "hello" || shown.GetEditedAt() == nil || got[0].GetBody() != "helo" {
		t.Errorf("after the edit: %v (delivered post now %v)", shown, got[0])
	}
	if shown = client.Apply(shown, got[2]); !shown.GetDeleted() || shown.GetBody() != "" {
		t.Errorf("after the delete: %v", shown)
	}

	// Someone else's post: refused once, not resent.
	theirs, err := srv.Publish("bob", conv, "bob's")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Edit(ctx, conv, theirs.GetSeq(), "mine now"); status.Code(err) != codes.PermissionDenied {
		t.Errorf("editing bob's post = %v, want PERMISSION_DENIED", err)
	}
	if _, err := s.Delete(ctx, conv, 99); status.Code(err) != codes.NotFound {
		t.Errorf("deleting a missing seq = %v, want NOT_FOUND", err)
	}
	eventually(t, "the error events", func() bool { return len(r.errors()) == 2 })
	if e := r.errors(); e[0].Frame.GetFrame() != "edit" || e[1].Frame.GetFrame() != "delete" {
		t.Errorf("error events %+v", e)
	}
}

func TestAttachments(t *testing.T) {
	srv, c := setup(t)
	ctx := testCtx(t)
	data := bytes.Repeat([]byte("parley "), 40000) // several chunks
	att, err := c.Upload(ctx, "notes.txt", "text/plain", data)
	if err != nil {
		t.Fatal(err)
	}
	if att.GetSize() != uint64(len(data)) || att.GetName() != "notes.txt" {
		t.Errorf("Upload = %v", att)
	}

	s, r := record(t, c, fast()...)
	subscribed(t, s, r, conv)
	if _, err := s.Send(ctx, conv, "", client.WithAttachments(att)); err != nil {
		t.Fatalf("Send with only an attachment: %v", err)
	}
	if _, err := c.Send(ctx, conv, "again", client.WithAttachments(att, att)); err != nil {
		t.Fatalf("unary Send with attachments: %v", err)
	}
	eventually(t, "both delivered", func() bool { return len(r.messages(conv)) == 2 })
	for i, m := range r.messages(conv) {
		if len(m.GetAttachments()) != i+1 || m.GetAttachments()[0].GetId() != att.GetId() || m.GetAttachments()[0].GetSize() != att.GetSize() {
			t.Errorf("message %d carries %v", i, m.GetAttachments())
		}
	}

	var buf bytes.Buffer
	got, err := c.Download(ctx, att.GetId(), &buf)
	if err != nil || !bytes.Equal(buf.Bytes(), data) || got.GetName() != "notes.txt" || got.GetContentType() != "text/plain" {
		t.Fatalf("Download = %v, %v; %d bytes back of %d", got, err, buf.Len(), len(data))
	}
	srv.CorruptDownloads(true)
	if _, err := c.Download(ctx, att.GetId(), &bytes.Buffer{}); !errors.Is(err, client.ErrChecksum) {
		t.Errorf("corrupted Download = %v, want ErrChecksum", err)
	}
	if _, err := c.Download(ctx, "00", &bytes.Buffer{}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("Download of an unknown id = %v, want PERMISSION_DENIED", err)
	}
}

func TestHistoryForward(t *testing.T) {
	srv, c := setup(t)
	publish(t, srv, "a", "b", "c")
	tests := []struct {
		q    client.HistoryQuery
		want []uint64
		more bool
	}{
		{client.HistoryQuery{Limit: 2}, []uint64{2, 3}, true},
		{client.HistoryQuery{Limit: 2, Forward: true}, []uint64{1, 2}, true},
		{client.HistoryQuery{Limit: 2, AfterSeq: 2}, []uint64{3}, false},
	}
	for _, tt := range tests {
		page, err := c.History(testCtx(t), conv, tt.q)
		if err != nil {
			t.Fatal(err)
		}
		var got []uint64
		for _, m := range page.GetMessages() {
			got = append(got, m.GetSeq())
		}
		if !slices.Equal(got, tt.want) || page.GetHasMore() != tt.more {
			t.Errorf("History(%+v) = %v more %v, want %v more %v", tt.q, got, page.GetHasMore(), tt.want, tt.more)
		}
	}
}

// TestCloseSendsWhatIsQueued closes a Session right after a mark and a
// typing frame: Close half-closes the stream after sending them, so the
// server has them by the time it returns.
func TestCloseSendsWhatIsQueued(t *testing.T) {
	srv, c := setup(t)
	publish(t, srv, "a", "b")
	s, r := record(t, c, fast()...)
	subscribed(t, s, r, conv)
	if err := s.SetTyping(conv, true); err != nil {
		t.Fatal(err)
	}
	if err := s.MarkRead(conv, 2); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if rc := srv.Receipt(conv, "alice"); rc.GetReadSeq() != 2 {
		t.Errorf("receipt after Close: %v, want read 2", rc)
	}
	if got := typingFrames(srv); !slices.Equal(got, []bool{true}) {
		t.Errorf("typing frames %v, want [true]", got)
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("Close took %v; the server ended the stream at once", d)
	}
	if !errors.Is(s.Err(), client.ErrClosed) {
		t.Errorf("Err() = %v, want ErrClosed", s.Err())
	}
	if n := srv.StreamsOpened(); n != 1 {
		t.Errorf("%d streams opened: the Session reconnected while closing", n)
	}
}
