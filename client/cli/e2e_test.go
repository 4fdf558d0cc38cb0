package cli

// End-to-end tests: the command line against a real Parley node (package
// servertest) on a loopback port, where commands_test.go uses the fake
// server.

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/parleychat/parley/client"
	"github.com/parleychat/parley/internal/syncbuf"
	"github.com/parleychat/parley/server"
	"github.com/parleychat/parley/server/servertest"
)

// running is a long-running command (listen, chat) in the background.
type running struct {
	cancel      context.CancelFunc
	done        chan struct{}
	code        int
	out, errOut syncbuf.Buffer
}

// start runs a command in the background until stop or the end of the test.
func (u *user) start(stdin io.Reader, args ...string) *running {
	u.t.Helper()
	ctx, cancel := context.WithCancel(testCtx(u.t))
	r := &running{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		r.code = Run(ctx, args, Env{Stdin: stdin, Stdout: &r.out, Stderr: &r.errOut, Getenv: func(k string) string { return u.env[k] }})
	}()
	u.t.Cleanup(func() { r.stop() })
	return r
}

// stop ends the command as Ctrl-C would and returns its exit code.
func (r *running) stop() int {
	r.cancel()
	<-r.done
	return r.code
}

// lines returns what the command printed to standard output so far.
func (r *running) lines() []string {
	return strings.FieldsFunc(r.out.String(), func(c rune) bool { return c == '\n' })
}

// messages returns the printed lines that are messages of conv, leaving out
// notifications, receipts, typing and presence.
func (r *running) messages(conv string) []string {
	var msgs []string
	for _, l := range r.lines() {
		if strings.HasPrefix(l, "["+conv+" #") {
			msgs = append(msgs, l)
		}
	}
	return msgs
}

func TestE2ECommands(t *testing.T) {
	n := servertest.Start(t, "")
	alice := newUser(t, n.Addr, "alice")
	bob := newUser(t, n.Addr, "bob")
	carol := newUser(t, n.Addr, "carol")

	if got := alice.ok("room", "create", "lobby", "--title", "The Lobby"); got != "room:lobby\n" {
		t.Errorf("room create printed %q", got)
	}
	if got := bob.ok("room", "join", "lobby"); got != "room:lobby\n" {
		t.Errorf("room join printed %q", got)
	}
	if got := alice.ok("send", "room:lobby", "hello", "everyone"); got != "sent [room:lobby #1]\n" {
		t.Errorf("send printed %q", got)
	}
	res := run(testCtx(t), bob.env, "from stdin\n", "send", "room:lobby", "-")
	if res.code != 0 || res.stdout != "sent [room:lobby #2]\n" {
		t.Errorf("send from standard input: %+v", res)
	}
	if got, want := bob.ok("history", "room:lobby"), "[room:lobby #1] alice: hello everyone\n[room:lobby #2] bob: from stdin\n"; got != want {
		t.Errorf("history printed %q, want %q", got, want)
	}

	if got := alice.ok("dm", "bob"); got != "dm:alice:bob\n" {
		t.Errorf("dm printed %q", got)
	}
	if got := bob.ok("dm", "alice"); got != "dm:alice:bob\n" {
		t.Errorf("dm from the other side printed %q", got)
	}
	if got := bob.ok("send", "dm:alice:bob", "psst"); got != "sent [dm:alice:bob #1]\n" {
		t.Errorf("send to the dm printed %q", got)
	}

	group := strings.TrimSpace(alice.ok("group", "create", "Team", "bob"))
	if !regexp.MustCompile(`^group:[0-9a-f]{24}$`).MatchString(group) {
		t.Fatalf("group create printed %q", group)
	}
	members := func(out string) []string {
		rest, ok := strings.CutPrefix(out, group+" members: ")
		if !ok {
			t.Fatalf("group add/remove printed %q", out)
		}
		m := strings.Fields(rest)
		slices.Sort(m)
		return m
	}
	if got := members(alice.ok("group", "add", group, "carol")); !slices.Equal(got, []string{"alice", "bob", "carol"}) {
		t.Errorf("members after add: %q", got)
	}
	if got := members(alice.ok("group", "remove", group, "bob")); !slices.Equal(got, []string{"alice", "carol"}) {
		t.Errorf("members after remove: %q", got)
	}
	if got := carol.ok("send", group, "hi", "team"); got != "sent ["+group+" #1]\n" {
		t.Errorf("send to the group printed %q", got)
	}
	if got := bob.fails("send", group, "still here?"); !strings.HasPrefix(got, "parley: PERMISSION_DENIED: ") {
		t.Errorf("send after removal: %q", got)
	}

	rows := map[string][]string{}
	for line := range strings.Lines(alice.ok("conversations")) {
		f := strings.Fields(line)
		rows[f[0]] = f[1:]
	}
	for id, want := range map[string]string{
		"CONVERSATION": "KIND HEAD UNREAD TITLE LAST MESSAGE",
		"room:lobby":   "room #2 1 The Lobby bob: from stdin",
		"dm:alice:bob": "direct #1 1 bob: psst",
		group:          "group #1 1 Team carol: hi team",
	} {
		if got := strings.Join(rows[id], " "); got != want {
			t.Errorf("conversations row %s: %q, want %q", id, got, want)
		}
	}
	if len(rows) != 4 {
		t.Errorf("conversations printed %d rows, want a header and 3", len(rows))
	}

	// A non-member's send: the server's status and message, exit code 1.
	res = run(testCtx(t), carol.env, "", "send", "room:lobby", "let", "me", "in")
	if res.code != 1 || !strings.HasPrefix(res.stderr, "parley: PERMISSION_DENIED: ") || strings.Count(res.stderr, "\n") != 1 || res.stdout != "" {
		t.Errorf("non-member send: %+v", res)
	}
	if got := bob.ok("history", "room:lobby", "--after", "2"); got != "" {
		t.Errorf("the refused message is stored: %q", got)
	}

	// carol deletes her account: her saved login is gone, she is out of the
	// group, and her message stays.
	if got := carol.ok("delete-account", "carol"); !strings.HasPrefix(got, "deleted account carol on ") {
		t.Errorf("delete-account printed %q", got)
	}
	if got := carol.fails("conversations"); !strings.Contains(got, "not logged in") {
		t.Errorf("a command after delete-account: %q", got)
	}
	if got := members(alice.ok("group", "add", group, "bob")); !slices.Equal(got, []string{"alice", "bob"}) {
		t.Errorf("members after carol's deletion: %q", got)
	}
	if got, want := alice.ok("history", group), "["+group+" #1] carol: hi team\n"; got != want {
		t.Errorf("history after carol's deletion printed %q, want %q", got, want)
	}
	if got := carol.fails("login", "carol"); !strings.HasPrefix(got, "parley: UNAUTHENTICATED: ") {
		t.Errorf("login of a deleted account: %q", got)
	}
}

func TestE2EListen(t *testing.T) {
	n := servertest.Start(t, "")
	alice := newUser(t, n.Addr, "alice")
	bob := newUser(t, n.Addr, "bob")
	alice.ok("room", "create", "lobby")
	bob.ok("room", "join", "lobby")
	alice.ok("send", "room:lobby", "before listening")

	t.Run("replay then live", func(t *testing.T) {
		listen := bob.start(nil, "listen", "--after", "0", "room:lobby")
		eventually(t, "the replay", func() bool { return len(listen.lines()) == 1 })
		alice.ok("send", "room:lobby", "live")
		eventually(t, "the live message", func() bool { return len(listen.lines()) == 2 })
		if code := listen.stop(); code != 0 {
			t.Errorf("listen exit %d: %s", code, listen.errOut.String())
		}
		want := []string{"[room:lobby #1] alice: before listening", "[room:lobby #2] alice: live"}
		if got := listen.lines(); !slices.Equal(got, want) {
			t.Errorf("listen printed %q, want %q", got, want)
		}
	})

	t.Run("live only", func(t *testing.T) {
		listen := bob.start(nil, "listen", "room:lobby")
		// listen starts from the head it reads first, so a message sent
		// before that read is not printed: send until one is.
		var sent []string
		deadline := time.Now().Add(10 * time.Second)
		// A send that lands before the subscription may also show as a
		// notification line (bob's stream is live but not yet looking at
		// the room), so only message lines are compared.
		printed := func() []string { return listen.messages("room:lobby") }
		for len(printed()) == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("listen printed nothing; stderr: %s", listen.errOut.String())
			}
			out := alice.ok("send", "room:lobby", fmt.Sprintf("live %d", len(sent)))
			sent = append(sent, strings.TrimSpace(out))
			for wait := time.Now().Add(100 * time.Millisecond); len(printed()) == 0 && time.Now().Before(wait); {
				time.Sleep(5 * time.Millisecond)
			}
		}
		// Whatever was printed is a tail of what was sent, in order, once
		// each, and nothing from before listen started.
		var want []string
		for i, s := range sent {
			var seq int
			fmt.Sscanf(s, "sent [room:lobby #%d]", &seq)
			want = append(want, fmt.Sprintf("[room:lobby #%d] alice: live %d", seq, i))
		}
		eventually(t, "every message after the first printed", func() bool {
			got := printed()
			return len(got) > 0 && len(got) <= len(want) && slices.Equal(got, want[len(want)-len(got):])
		})
		if code := listen.stop(); code != 0 {
			t.Errorf("listen exit %d: %s", code, listen.errOut.String())
		}
	})

	t.Run("across a restart", func(t *testing.T) {
		var seq int
		fmt.Sscanf(alice.ok("send", "room:lobby", "before the restart"), "sent [room:lobby #%d]", &seq)
		listen := bob.start(nil, "listen", "--after", fmt.Sprint(seq-1), "room:lobby")
		eventually(t, "the first message", func() bool { return len(listen.lines()) == 1 })
		n = n.Restart()
		eventually(t, "the reconnect", func() bool { return strings.Contains(listen.errOut.String(), "parley: reconnected\n") })
		alice.ok("send", "room:lobby", "after the restart")
		// The send may beat the resubscription and show as a notification
		// too; the messages are what must be exactly right.
		eventually(t, "the second message", func() bool { return len(listen.messages("room:lobby")) == 2 })
		if code := listen.stop(); code != 0 {
			t.Errorf("listen exit %d: %s", code, listen.errOut.String())
		}
		want := []string{
			fmt.Sprintf("[room:lobby #%d] alice: before the restart", seq),
			fmt.Sprintf("[room:lobby #%d] alice: after the restart", seq+1),
		}
		if got := listen.messages("room:lobby"); !slices.Equal(got, want) {
			t.Errorf("listen printed %q, want %q", got, want)
		}
		if got := listen.errOut.String(); !strings.HasPrefix(got, "parley: disconnected (UNAVAILABLE: ") {
			t.Errorf("listen reported %q", got)
		}
	})

	t.Run("not a member", func(t *testing.T) {
		carol := newUser(t, n.Addr, "carol")
		res := run(testCtx(t), carol.env, "", "listen", "room:lobby")
		if res.code != 1 || !strings.HasPrefix(res.stderr, "parley: PERMISSION_DENIED: ") {
			t.Errorf("listen to a room carol is not in: %+v", res)
		}
	})
}

func TestE2EChat(t *testing.T) {
	n := servertest.Start(t, "")
	alice := newUser(t, n.Addr, "alice")
	bob := newUser(t, n.Addr, "bob")
	alice.ok("room", "create", "lobby")
	bob.ok("room", "join", "lobby")
	bob.ok("send", "room:lobby", "earlier")

	stdin, typing := io.Pipe()
	chat := alice.start(stdin, "chat", "room:lobby", "--last", "5")
	// chat follows on from the messages it shows, so anything sent after
	// they are printed reaches it.
	eventually(t, "recent messages", func() bool { return strings.Contains(chat.out.String(), "[room:lobby #1] bob: earlier") })
	if _, err := io.WriteString(typing, "hi bob\n\n"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the ack", func() bool { return strings.Contains(chat.out.String(), "\u2713 #2") })
	bc := bob.dialAs()
	if err := bc.SetTyping(testCtx(t), "room:lobby", true); err != nil {
		t.Fatal(err)
	}
	eventually(t, "bob typing", func() bool { return strings.Contains(chat.out.String(), "[room:lobby] bob is typing\u2026") })
	// His post takes the indicator down.
	bob.ok("send", "room:lobby", "hi alice")
	eventually(t, "bob's answer", func() bool { return strings.Contains(chat.out.String(), "[room:lobby #3] bob: hi alice") })
	eventually(t, "bob done typing", func() bool { return strings.Contains(chat.out.String(), "[room:lobby] bob stopped typing") })
	typing.Close()

	<-chat.done
	if chat.code != 0 {
		t.Fatalf("chat exit %d: %s", chat.code, chat.errOut.String())
	}
	want := []string{"[room:lobby #1] bob: earlier", "[room:lobby #2] alice: hi bob", "\u2713 #2",
		"[room:lobby] bob is typing\u2026", "[room:lobby #3] bob: hi alice", "[room:lobby] bob stopped typing"}
	got := chat.lines()
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("chat printed %q, want %q in some order", chat.lines(), want)
	}
	// What chat showed, it marked read, and the mark went out before chat
	// closed its stream; the server stores it a moment later.
	eventually(t, "alice's read position at #3", func() bool {
		rs, err := bc.GetReceipts(testCtx(t), "room:lobby")
		if err != nil {
			t.Fatal(err)
		}
		_, read := client.NewReceipts("room:lobby", rs...).Position("alice")
		return read == 3
	})
	if got := bob.ok("history", "room:lobby"); strings.Count(got, "\n") != 3 {
		t.Errorf("stored:\n%s", got)
	}
}

func TestE2EFilesEditsAndUnread(t *testing.T) {
	n := servertest.Start(t, "")
	alice := newUser(t, n.Addr, "alice")
	bob := newUser(t, n.Addr, "bob")
	carol := newUser(t, n.Addr, "carol")
	alice.ok("room", "create", "lobby")
	bob.ok("room", "join", "lobby")

	dir := t.TempDir()
	big := filepath.Join(dir, "big.bin")
	data := make([]byte, 3<<20)
	rand.Read(data)
	if err := os.WriteFile(big, data, 0o600); err != nil {
		t.Fatal(err)
	}
	ids := sentFiles(t, alice.ok("send", "room:lobby", "--file", big, "a", "big", "one"), "sent [room:lobby #1]")
	id := ids["big.bin"]
	sum := sha256.Sum256(data)
	if id != hex.EncodeToString(sum[:]) {
		t.Fatalf("attachment id %s, want the sha256 of the file", id)
	}
	got := filepath.Join(t.TempDir(), "got.bin")
	if out := bob.ok("download", id, "-o", got); out != fmt.Sprintf("saved %s (%d bytes, application/octet-stream)\n", got, len(data)) {
		t.Errorf("download printed %q", out)
	}
	if b, err := os.ReadFile(got); err != nil || !bytes.Equal(b, data) {
		t.Errorf("downloaded %d bytes (%v), not the %d sent", len(b), err, len(data))
	}
	if errOut := carol.fails("download", id, "-o", filepath.Join(t.TempDir(), "x")); !strings.HasPrefix(errOut, "parley: PERMISSION_DENIED: ") {
		t.Errorf("carol's download: %q", errOut)
	}

	alice.ok("send", "room:lobby", "tpyo")
	alice.ok("send", "room:lobby", "never mind")
	if out := alice.ok("edit", "room:lobby", "2", "typo"); out != "edited [room:lobby #2] (#4)\n" {
		t.Errorf("edit printed %q", out)
	}
	if out := alice.ok("delete", "room:lobby", "3"); out != "deleted [room:lobby #3] (#5)\n" {
		t.Errorf("delete printed %q", out)
	}
	if errOut := bob.fails("delete", "room:lobby", "2"); !strings.HasPrefix(errOut, "parley: PERMISSION_DENIED: ") {
		t.Errorf("bob deleting alice's message: %q", errOut)
	}
	res := run(testCtx(t), bob.env, "", "history", "room:lobby", "--after", "0", "--limit", "3")
	want := fmt.Sprintf("[room:lobby #1] alice: a big one\n  attachment %s big.bin (%d bytes, application/octet-stream)\n", id, len(data)) +
		"[room:lobby #2] alice: typo (edited)\n" +
		"[room:lobby #3] alice: (deleted)\n"
	if res.code != 0 || res.stdout != want || res.stderr != "(more: --after 3)\n" {
		t.Errorf("history --after 0: %+v\nwant stdout:\n%s", res, want)
	}
	if got := bob.ok("history", "room:lobby", "--after", "3"); got != "[room:lobby #4] alice edited #2: typo\n[room:lobby #5] alice deleted #3\n" {
		t.Errorf("history --after 3:\n%s", got)
	}

	unread := func(u *user) string {
		for line := range strings.Lines(u.ok("conversations")) {
			if f := strings.Fields(line); f[0] == "room:lobby" {
				return f[3]
			}
		}
		t.Fatal("no room:lobby row")
		return ""
	}
	if got := unread(bob); got != "2" {
		t.Errorf("bob's unread count %s, want 2 (three posts, one deleted)", got)
	}
	if got := unread(alice); got != "0" {
		t.Errorf("alice's unread count %s, want 0: her own posts do not count", got)
	}
	if out := bob.ok("read", "room:lobby"); out != "read [room:lobby] up to #5\n" {
		t.Errorf("read printed %q", out)
	}
	if got := unread(bob); got != "0" {
		t.Errorf("bob's unread count after read: %s, want 0", got)
	}
}

func TestE2EListenShowsWhatHappens(t *testing.T) {
	n := servertest.Start(t, "", func(c *server.Config) {
		c.PresenceGrace = 20 * time.Millisecond
		c.TypingTTL = 200 * time.Millisecond
	})
	alice := newUser(t, n.Addr, "alice")
	bob := newUser(t, n.Addr, "bob")
	alice.ok("room", "create", "lobby")
	alice.ok("room", "create", "other")
	bob.ok("room", "join", "lobby")
	bob.ok("room", "join", "other")
	alice.ok("send", "room:lobby", "first")

	listen := bob.start(nil, "listen", "--after", "0", "--mark-delivered", "room:lobby")
	// The replay shows that the stream is open and followed.
	eventually(t, "the replay", func() bool { return len(listen.lines()) == 1 })

	ac := alice.dialAs()
	s, err := ac.NewSession(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for range s.Events() {
		}
	}()
	last := func() string { l := listen.lines(); return l[len(l)-1] }
	eventually(t, "alice online", func() bool { return last() == "alice is online" })
	if err := s.SetTyping("room:lobby", true); err != nil {
		t.Fatal(err)
	}
	eventually(t, "alice typing", func() bool { return slices.Contains(listen.lines(), "[room:lobby] alice is typing\u2026") })
	eventually(t, "the indicator lapsing", func() bool { return last() == "[room:lobby] alice stopped typing" })
	alice.ok("send", "room:lobby", "second")
	eventually(t, "the message", func() bool { return last() == "[room:lobby #2] alice: second" })
	alice.ok("read", "room:lobby")
	eventually(t, "alice's receipt", func() bool { return last() == "[room:lobby] alice read up to #2" })
	alice.ok("send", "room:other", "over here")
	eventually(t, "the notification", func() bool { return last() == "notification [room:other #1] alice: over here" })
	s.Close()
	eventually(t, "alice offline", func() bool { return strings.HasPrefix(last(), "alice is offline (last seen ") })

	if code := listen.stop(); code != 0 {
		t.Fatalf("listen exit %d: %s", code, listen.errOut.String())
	}
	for _, l := range listen.lines() {
		if strings.Contains(l, "bob") {
			t.Errorf("listen showed bob his own doing: %q", l)
		}
	}
	// --mark-delivered told alice's side that bob has both messages.
	rs, err := ac.GetReceipts(testCtx(t), "room:lobby")
	if err != nil {
		t.Fatal(err)
	}
	r := client.NewReceipts("room:lobby", rs...)
	if d, _ := r.Position("bob"); d != 2 {
		t.Errorf("bob's delivered position %d, want 2", d)
	}
}
