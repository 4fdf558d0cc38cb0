package cli

// End-to-end tests: the command line against a real Parley node (package
// servertest) on a loopback port, where commands_test.go uses the fake
// server.

import (
	"context"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/parleychat/parley/server/servertest"
)

// running is a long-running command (listen, chat) in the background.
type running struct {
	cancel      context.CancelFunc
	done        chan struct{}
	code        int
	out, errOut syncBuffer
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
		"CONVERSATION": "KIND HEAD TITLE LAST MESSAGE",
		"room:lobby":   "room #2 The Lobby bob: from stdin",
		"dm:alice:bob": "direct #1 bob: psst",
		group:          "group #1 Team carol: hi team",
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
		for len(listen.lines()) == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("listen printed nothing; stderr: %s", listen.errOut.String())
			}
			out := alice.ok("send", "room:lobby", fmt.Sprintf("live %d", len(sent)))
			sent = append(sent, strings.TrimSpace(out))
			for wait := time.Now().Add(100 * time.Millisecond); len(listen.lines()) == 0 && time.Now().Before(wait); {
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
			got := listen.lines()
			return len(got) > 0 && slices.Equal(got, want[len(want)-len(got):])
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
		eventually(t, "the second message", func() bool { return len(listen.lines()) == 2 })
		if code := listen.stop(); code != 0 {
			t.Errorf("listen exit %d: %s", code, listen.errOut.String())
		}
		want := []string{
			fmt.Sprintf("[room:lobby #%d] alice: before the restart", seq),
			fmt.Sprintf("[room:lobby #%d] alice: after the restart", seq+1),
		}
		if got := listen.lines(); !slices.Equal(got, want) {
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
	bob.ok("send", "room:lobby", "hi alice")
	eventually(t, "bob's answer", func() bool { return strings.Contains(chat.out.String(), "[room:lobby #3] bob: hi alice") })
	typing.Close()

	<-chat.done
	if chat.code != 0 {
		t.Fatalf("chat exit %d: %s", chat.code, chat.errOut.String())
	}
	want := []string{"[room:lobby #1] bob: earlier", "[room:lobby #2] alice: hi bob", "\u2713 #2", "[room:lobby #3] bob: hi alice"}
	got := chat.lines()
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("chat printed %q, want %q in some order", chat.lines(), want)
	}
	if got := bob.ok("history", "room:lobby"); strings.Count(got, "\n") != 3 {
		t.Errorf("stored:\n%s", got)
	}
}
