package client_test

// End-to-end tests of receipts, typing, presence, notifications, edits,
// deletes and attachments on real servertest nodes.

import (
	"bytes"
	"crypto/rand"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/parleychat/parley/client"
	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
	"github.com/parleychat/parley/server"
	"github.com/parleychat/parley/server/servertest"
)

// events returns the events of type E the recorder holds that match keep.
func events[E client.Event](r *recorder, keep func(E) bool) []E {
	var out []E
	for _, ev := range r.all() {
		if e, ok := ev.(E); ok && keep(e) {
			out = append(out, e)
		}
	}
	return out
}

func TestE2EReceipts(t *testing.T) {
	n := servertest.Start(t, "")
	ctx := testCtx(t)
	alice, bob := join(t, n.Addr, "alice"), join(t, n.Addr, "bob")
	dm, err := alice.CreateDirect(ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	conv := dm.GetId()
	sa, ra := record(t, alice, fast()...)
	sb, rb := record(t, bob, fast(client.WithAutoDelivered())...)
	subscribed(t, sa, ra, conv)
	subscribed(t, sb, rb, conv)

	ack, err := sa.Send(ctx, conv, "did you get this?")
	if err != nil {
		t.Fatal(err)
	}
	seq := ack.GetSeq()
	bobs := func() [][2]uint64 {
		var out [][2]uint64
		for _, e := range events(ra, func(e client.ReceiptEvent) bool { return e.Receipt.GetUserId() == "bob" }) {
			out = append(out, [2]uint64{e.Receipt.GetDeliveredSeq(), e.Receipt.GetReadSeq()})
		}
		return out
	}
	// bob's Session marks it delivered as it arrives, by itself.
	eventually(t, "bob's delivered receipt", func() bool { return len(bobs()) >= 1 })
	if err := sb.MarkRead(conv, seq); err != nil {
		t.Fatal(err)
	}
	eventually(t, "bob's read receipt", func() bool { return len(bobs()) >= 2 })
	if got, want := bobs(), [][2]uint64{{seq, 0}, {seq, seq}}; !slices.Equal(got, want) {
		t.Errorf("alice saw bob's positions go %v, want %v (delivered, then read, of #%d)", got, want, seq)
	}

	live := client.NewReceipts(conv)
	for _, e := range events(ra, func(client.ReceiptEvent) bool { return true }) {
		live.Update(e.Receipt)
	}
	stored, err := alice.GetReceipts(ctx, conv)
	if err != nil {
		t.Fatal(err)
	}
	fetched := client.NewReceipts(conv, stored...)
	for name, r := range map[string]*client.Receipts{"live": live, "fetched": fetched} {
		r.SetMembers(dm.GetMemberIds()...)
		if st := r.State(seq, "alice"); st.Status != client.StatusRead || !slices.Equal(st.ReadBy, []string{"bob"}) {
			t.Errorf("%s receipts: state of #%d = %+v, want read by bob", name, seq, st)
		}
	}

	// The read position drives unread counts.
	unread := func(c *client.Client) uint64 {
		cv, err := c.GetConversation(ctx, conv)
		if err != nil {
			t.Fatal(err)
		}
		return cv.GetUnreadCount()
	}
	if _, err := sa.Send(ctx, conv, "and this?"); err != nil {
		t.Fatal(err)
	}
	if got := unread(bob); got != 1 {
		t.Errorf("bob's unread count = %d, want 1", got)
	}
	if rc, err := bob.MarkRead(ctx, conv, seq+1); err != nil || rc.GetReadSeq() != seq+1 {
		t.Fatalf("MarkRead = %v, %v", rc, err)
	}
	if got := unread(bob); got != 0 {
		t.Errorf("bob's unread count after MarkRead = %d, want 0", got)
	}
}

func TestE2ETypingAndPresence(t *testing.T) {
	n := servertest.Start(t, "", func(c *server.Config) {
		c.PresenceGrace = 50 * time.Millisecond
		c.TypingTTL = 300 * time.Millisecond
	})
	ctx := testCtx(t)
	alice, bob := join(t, n.Addr, "alice"), join(t, n.Addr, "bob")
	room := openRoom(t, alice, "lobby", bob)
	sa, ra := record(t, alice, fast()...)
	subscribed(t, sa, ra, room)

	sb, err := bob.NewSession(ctx, fast()...)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for range sb.Events() {
		}
	}()
	isBob := func(online bool) func(client.PresenceEvent) bool {
		return func(e client.PresenceEvent) bool {
			return e.Presence.GetUserId() == "bob" && e.Presence.GetOnline() == online
		}
	}
	eventually(t, "bob online", func() bool { return len(events(ra, isBob(true))) > 0 })
	ps, err := alice.GetPresence(ctx, "bob", "nobody")
	if err != nil || len(ps) != 1 || ps[0].GetUserId() != "bob" || !ps[0].GetOnline() {
		t.Errorf("GetPresence = %v, %v; want bob online only", ps, err)
	}

	if err := sb.SetTyping(room, true); err != nil {
		t.Fatal(err)
	}
	bobTyping := func() []*parleyv1.Typing {
		var out []*parleyv1.Typing
		for _, e := range events(ra, func(e client.TypingEvent) bool { return e.Typing.GetUserId() == "bob" }) {
			out = append(out, e.Typing)
		}
		return out
	}
	eventually(t, "bob typing, then the indicator lapsing", func() bool { return len(bobTyping()) >= 2 })
	typing := bobTyping()
	if on := typing[0]; !on.GetTyping() || on.GetConversationId() != room || on.GetExpiresAt() == nil {
		t.Errorf("first typing event %v", on)
	}
	if off := typing[1]; off.GetTyping() {
		t.Errorf("second typing event %v, want typing=false after the TTL", off)
	}

	sb.Close()
	eventually(t, "bob offline", func() bool { return len(events(ra, isBob(false))) > 0 })
	off := events(ra, isBob(false))[0].Presence
	if off.GetLastSeen() == nil || time.Since(off.GetLastSeen().AsTime()) > time.Minute {
		t.Errorf("offline presence %v, want a recent last_seen", off)
	}
}

func TestE2EEditAndDelete(t *testing.T) {
	n := servertest.Start(t, "")
	ctx := testCtx(t)
	alice, bob := join(t, n.Addr, "alice"), join(t, n.Addr, "bob")
	room := openRoom(t, alice, "lobby", bob)
	sa, ra := record(t, alice, fast()...)
	sb, rb := record(t, bob, fast()...)
	subscribed(t, sa, ra, room)
	subscribed(t, sb, rb, room)

	first, err := sa.Send(ctx, room, "helo")
	if err != nil {
		t.Fatal(err)
	}
	second, err := sa.Send(ctx, room, "oops")
	if err != nil {
		t.Fatal(err)
	}
	edit, err := sa.Edit(ctx, room, first.GetSeq(), "hello")
	if err != nil {
		t.Fatal(err)
	}
	del, err := sa.Delete(ctx, room, second.GetSeq())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sb.Edit(ctx, room, first.GetSeq(), "mine now"); status.Code(err) != codes.PermissionDenied {
		t.Errorf("bob editing alice's post = %v, want PERMISSION_DENIED", err)
	}
	// The server's refusal of a malformed frame names no client_message_id;
	// the Session finds the change by its frame_id.
	if _, err := sa.Delete(ctx, room, 0); status.Code(err) != codes.InvalidArgument {
		t.Errorf("deleting seq 0 = %v, want INVALID_ARGUMENT", err)
	}

	// Live: bob gets the events at their own seqs and applies them.
	eventually(t, "bob to get all four", func() bool { return len(rb.messages(room)) == 4 })
	live := rb.messages(room)
	if e := live[2]; e.GetSeq() != edit.GetSeq() || e.GetKind() != parleyv1.MessageKind_MESSAGE_KIND_EDIT || e.GetTargetSeq() != first.GetSeq() || e.GetBody() != "hello" {
		t.Errorf("live edit event %v", e)
	}
	if d := live[3]; d.GetSeq() != del.GetSeq() || d.GetKind() != parleyv1.MessageKind_MESSAGE_KIND_DELETE || d.GetTargetSeq() != second.GetSeq() {
		t.Errorf("live delete event %v", d)
	}
	shown := map[uint64]*parleyv1.Message{}
	for _, m := range live {
		if client.IsPost(m) {
			shown[m.GetSeq()] = m
		} else if p := shown[m.GetTargetSeq()]; p != nil {
			shown[m.GetTargetSeq()] = client.Apply(p, m)
		}
	}

	// Stored: History from the very first message shows the posts as they
	// stand, with the events at their seqs.
	page, err := bob.History(ctx, room, client.HistoryQuery{Forward: true, Limit: 2})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.GetMessages()) != 2 || !page.GetHasMore() {
		t.Fatalf("first forward page: %v (more %v), want seqs 1 and 2 and more", page.GetMessages(), page.GetHasMore())
	}
	rest, err := bob.History(ctx, room, client.HistoryQuery{AfterSeq: page.GetMessages()[1].GetSeq()})
	if err != nil {
		t.Fatal(err)
	}
	stored := append(page.GetMessages(), rest.GetMessages()...)
	if got := len(stored); got != 4 {
		t.Fatalf("%d stored messages, want 4", got)
	}
	p1, p2 := stored[0], stored[1]
	if p1.GetBody() != "hello" || p1.GetEditedAt() == nil || p1.GetDeleted() {
		t.Errorf("stored first post %v, want the edited text", p1)
	}
	if p2.GetBody() != "" || !p2.GetDeleted() {
		t.Errorf("stored second post %v, want a tombstone", p2)
	}
	for _, p := range []*parleyv1.Message{p1, p2} {
		s := shown[p.GetSeq()]
		if s.GetBody() != p.GetBody() || s.GetDeleted() != p.GetDeleted() || (s.GetEditedAt() == nil) != (p.GetEditedAt() == nil) {
			t.Errorf("bob shows #%d as %v; History has %v", p.GetSeq(), s, p)
		}
	}
}

func TestE2EAttachments(t *testing.T) {
	n := servertest.Start(t, "")
	ctx := testCtx(t)
	alice, bob, carol := join(t, n.Addr, "alice"), join(t, n.Addr, "bob"), join(t, n.Addr, "carol")
	room := openRoom(t, alice, "lobby", bob)

	data := make([]byte, 3<<20)
	rand.Read(data)
	att, err := alice.Upload(ctx, "big.bin", "application/x-test", data)
	if err != nil {
		t.Fatal(err)
	}
	if att.GetSize() != uint64(len(data)) {
		t.Errorf("Upload = %v", att)
	}
	sb, rb := record(t, bob, fast()...)
	subscribed(t, sb, rb, room)
	sa, _ := record(t, alice, fast()...)
	if _, err := sa.Send(ctx, room, "the file", client.WithAttachments(att)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the message", func() bool { return len(rb.messages(room)) == 1 })
	got := rb.messages(room)[0].GetAttachments()
	if len(got) != 1 || got[0].GetId() != att.GetId() || got[0].GetSize() != uint64(len(data)) || got[0].GetName() != "big.bin" {
		t.Fatalf("bob got attachments %v", got)
	}

	var buf bytes.Buffer
	desc, err := bob.Download(ctx, got[0].GetId(), &buf)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), data) {
		t.Errorf("downloaded %d bytes, not the %d uploaded", buf.Len(), len(data))
	}
	if desc.GetName() != "big.bin" || desc.GetContentType() != "application/x-test" {
		t.Errorf("Download described %v", desc)
	}
	if _, err := carol.Download(ctx, att.GetId(), &bytes.Buffer{}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("carol, in no conversation with it, downloaded: %v", err)
	}
}

func TestE2ENotifications(t *testing.T) {
	n := servertest.Start(t, "")
	ctx := testCtx(t)
	alice, bob := join(t, n.Addr, "alice"), join(t, n.Addr, "bob")
	followed := openRoom(t, alice, "followed", bob)
	other := openRoom(t, alice, "other", bob)
	sa, ra := record(t, alice, fast()...)
	subscribed(t, sa, ra, followed)

	ack, err := bob.Send(ctx, other, "psst, over here")
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the notification", func() bool {
		return len(events(ra, func(client.NotificationEvent) bool { return true })) > 0
	})
	note := events(ra, func(client.NotificationEvent) bool { return true })[0].Notification
	if note.GetConversationId() != other || note.GetSeq() != ack.GetSeq() || note.GetSenderId() != "bob" || note.GetPreview() != "psst, over here" {
		t.Errorf("notification %v", note)
	}
	if len(ra.messages(other)) != 0 {
		t.Error("a message of a conversation not followed was delivered")
	}
}

// TestE2EChangeResentUnderItsID resends a delete and an edit under the
// client_message_id of one already applied, as a Session does when the ack
// was lost to a broken stream: the answer must be the original ack, marked
// duplicate, or the Session would report a change that happened as failed.
func TestE2EChangeResentUnderItsID(t *testing.T) {
	n := servertest.Start(t, "")
	ctx := testCtx(t)
	alice := join(t, n.Addr, "alice")
	room := openRoom(t, alice, "lobby")
	post, err := alice.Send(ctx, room, "helo")
	if err != nil {
		t.Fatal(err)
	}
	chat := alice.ChatService()
	edit := &parleyv1.EditMessageRequest{ConversationId: room, Seq: post.GetSeq(), ClientMessageId: "edit-1", Body: "hello"}
	del := &parleyv1.DeleteMessageRequest{ConversationId: room, Seq: post.GetSeq(), ClientMessageId: "delete-1"}
	first, err := chat.EditMessage(ctx, edit)
	if err != nil {
		t.Fatal(err)
	}
	if again, err := chat.EditMessage(ctx, edit); err != nil || !again.GetAck().GetDuplicate() || again.GetAck().GetSeq() != first.GetAck().GetSeq() {
		t.Errorf("edit resent = %v, %v; want the duplicate ack of #%d", again, err, first.GetAck().GetSeq())
	}
	deleted, err := chat.DeleteMessage(ctx, del)
	if err != nil {
		t.Fatal(err)
	}
	again, err := chat.DeleteMessage(ctx, del)
	if status.Code(err) == codes.FailedPrecondition {
		t.Fatalf("the server refuses a resent delete instead of answering it as a duplicate: %v", err)
	}
	if err != nil || !again.GetAck().GetDuplicate() || again.GetAck().GetSeq() != deleted.GetAck().GetSeq() {
		t.Errorf("delete resent = %v, %v; want the duplicate ack of #%d", again, err, deleted.GetAck().GetSeq())
	}
}
