package chat

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/parleychat/parley/server/router"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// A stream holds at most one Notification per conversation until it is
// written; a full queue drops it without leaving the conversation muted.
func TestNotificationsCoalesceUntilWritten(t *testing.T) {
	o := &outbound{svc: &Service{}, q: make(chan any, 3)}
	f := &router.Frame{}
	for range 5 {
		o.notify("room:a", f)
	}
	o.notify("room:b", f)
	if len(o.q) != 2 {
		t.Fatalf("%d frames queued for 6 posts in 2 conversations, want 2", len(o.q))
	}
	// The writer writes room:a's: the next post there queues a new one.
	if n := (<-o.q).(note); n.conv != "room:a" {
		t.Fatalf("first queued note is for %s", n.conv)
	} else {
		o.noteSent(n.conv)
	}
	o.notify("room:a", f)
	o.notify("room:c", f)
	if len(o.q) != 3 {
		t.Fatalf("%d frames queued, want 3 (room:b, room:a, room:c)", len(o.q))
	}
	// Full: room:d is dropped and counted, and not left marked as queued.
	o.notify("room:d", f)
	if got := o.svc.droppedEvents.Load(); got != 1 {
		t.Fatalf("dropped events = %d, want 1", got)
	}
	<-o.q
	o.notify("room:d", f)
	if len(o.q) != 3 {
		t.Fatal("room:d stayed muted after its notification was dropped")
	}
}
