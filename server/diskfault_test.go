//go:build linux

package server

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
	"github.com/parleychat/parley/internal/syncbuf"
)

// smallDisk mounts a tmpfs of size bytes for the test, or skips the test
// where mounting is not allowed (it needs root).
func smallDisk(t *testing.T, size int) string {
	t.Helper()
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d", size)); err != nil {
		t.Skipf("cannot mount a small tmpfs here (%v): the disk-full test needs root", err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	return dir
}

// TestDiskFullRefusesAcksAndRecovers fills the file system under a node:
// senders get errors instead of acks, history and subscriptions keep
// working, and once space is back the same messages are accepted without a
// restart, each stored once.
func TestDiskFullRefusesAcksAndRecovers(t *testing.T) {
	disk := smallDisk(t, 8<<20)
	ballast := filepath.Join(disk, "ballast")
	if err := os.WriteFile(ballast, make([]byte, 2<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	var logs syncbuf.Buffer
	n := start(t, filepath.Join(disk, "data"), func(c *Config) {
		c.MaxBody = 64 << 10
		c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	})
	alice, bob := register(t, n, "alice"), register(t, n, "bob")
	conv := room(t, alice, "full", bob)

	body := strings.Repeat("x", 60<<10)
	var acked []*parleyv1.SendResponse
	var refused []string
	// Stop three sends after the first refusal: every ack after it makes
	// the files bigger, and a bbolt file grows by doubling, so many of
	// them could leave the freed ballast too small for the next growth.
	for i, after := 0, 0; i < 500 && after < 3; i++ {
		if len(refused) > 0 {
			after++
		}
		id := fmt.Sprint("m", i)
		resp, err := alice.chat.Send(alice.ctx(t), &parleyv1.SendRequest{ConversationId: conv, ClientMessageId: id, Body: body})
		switch {
		case err == nil:
			// Acks may still come between refusals: the journal reuses
			// the pages its indexed entries leave behind.
			acked = append(acked, resp)
		case status.Code(err) == codes.Unavailable && strings.Contains(status.Convert(err).Message(), "not stored"):
			refused = append(refused, id)
		default:
			t.Fatalf("send %s: %v, want an ack or UNAVAILABLE (not stored)", id, err)
		}
	}
	if len(refused) == 0 {
		t.Fatalf("the disk never filled after %d messages", len(acked))
	}
	// The node says so in its log, naming what was refused.
	want := fmt.Sprintf("conv=%s client_message_id=%s", conv, refused[0])
	if l := logs.String(); !strings.Contains(l, `msg="chat: message not stored"`) || !strings.Contains(l, want) {
		t.Errorf("the log does not name the refused message (%s):\n%s", want, l)
	}

	// Reads and subscriptions still work while the disk is full.
	h := historyAll(t, bob, conv)
	for i, a := range acked {
		if i >= len(h) || h[i].GetSeq() != a.GetSeq() {
			t.Fatalf("acked message %d (seq %d) missing from History on a full disk", i, a.GetSeq())
		}
	}
	bs := bob.open(t)
	bs.subscribe(t, conv, 0, "")
	replayed := bs.until(t, isSubscribed(conv))
	got := map[uint64]bool{}
	for _, m := range replayed {
		got[m.GetSeq()] = true
	}
	for _, a := range acked {
		if !got[a.GetSeq()] {
			t.Fatalf("subscriber replay on a full disk misses acked seq %d", a.GetSeq())
		}
	}

	// Space comes back: the refused messages go through on resend, once.
	if err := os.Remove(ballast); err != nil {
		t.Fatal(err)
	}
	for _, id := range refused {
		resp, err := alice.chat.Send(alice.ctx(t), &parleyv1.SendRequest{ConversationId: conv, ClientMessageId: id, Body: body})
		if err != nil {
			t.Fatalf("resend %s after space returned: %v", id, err)
		}
		acked = append(acked, resp)
	}
	stored := map[string]int{}
	for _, m := range historyAll(t, bob, conv) {
		stored[m.GetClientMessageId()]++
	}
	for _, a := range acked {
		if stored[a.GetClientMessageId()] != 1 {
			t.Fatalf("%s stored %d times, want once", a.GetClientMessageId(), stored[a.GetClientMessageId()])
		}
	}
	if len(stored) != len(acked) {
		t.Fatalf("History holds %d messages, %d were acked", len(stored), len(acked))
	}
}

// historyAll pages through a whole conversation, oldest first.
func historyAll(t *testing.T, u *user, conv string) []*parleyv1.Message {
	t.Helper()
	var all []*parleyv1.Message
	var after uint64
	for {
		h, err := u.chat.History(u.ctx(t), &parleyv1.HistoryRequest{ConversationId: conv, AfterSeq: after, Forward: true, Limit: 500})
		if err != nil {
			t.Fatalf("History after %d: %v", after, err)
		}
		all = append(all, h.GetMessages()...)
		if n := len(h.GetMessages()); n > 0 {
			after = h.GetMessages()[n-1].GetSeq()
		}
		if !h.GetHasMore() {
			return all
		}
	}
}
