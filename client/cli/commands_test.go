package cli

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/parleychat/parley/client/internal/fakeserver"
	"github.com/parleychat/parley/internal/syncbuf"
)

// user is one person at the command line: their own config directory and
// environment.
type user struct {
	t   *testing.T
	env map[string]string
}

func newUser(t *testing.T, addr, name string) *user {
	t.Helper()
	u := &user{t: t, env: map[string]string{
		"PARLEY_CONFIG_DIR": t.TempDir(),
		"PARLEY_SERVER":     addr,
		"PARLEY_PASSWORD":   "password-" + name,
	}}
	u.ok("register", name)
	return u
}

// ok runs a command that must succeed and returns its standard output.
func (u *user) ok(args ...string) string {
	u.t.Helper()
	res := run(testCtx(u.t), u.env, "", args...)
	if res.code != 0 {
		u.t.Fatalf("parley %s: exit %d: %s", strings.Join(args, " "), res.code, res.stderr)
	}
	return res.stdout
}

// fails runs a command that must fail and returns its standard error.
func (u *user) fails(args ...string) string {
	u.t.Helper()
	res := run(testCtx(u.t), u.env, "", args...)
	if res.code != 1 {
		u.t.Fatalf("parley %s: exit %d, want 1; stdout: %s", strings.Join(args, " "), res.code, res.stdout)
	}
	return res.stderr
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestRegisterLoginLogout(t *testing.T) {
	srv := fakeserver.New(t)
	alice := newUser(t, srv.Addr(), "alice")

	path := filepath.Join(alice.env["PARLEY_CONFIG_DIR"], "config.json")
	cfg, err := LoadConfig(alice.env["PARLEY_CONFIG_DIR"])
	if err != nil || cfg.Server != srv.Addr() || cfg.User != "alice" || cfg.Token == "" {
		t.Fatalf("config after register = %+v, %v", cfg, err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("config file mode: %v, %v", fi, err)
	}

	// The saved server is used without the environment.
	delete(alice.env, "PARLEY_SERVER")
	alice.ok("conversations")

	if got := alice.ok("logout"); !strings.Contains(got, "logged out alice") {
		t.Errorf("logout said %q", got)
	}
	if got := alice.fails("conversations"); !strings.HasPrefix(got, "parley: UNAUTHENTICATED: not logged in") {
		t.Errorf("after logout: %q", got)
	}

	// The password from a prompt on standard input.
	delete(alice.env, "PARLEY_PASSWORD")
	res := run(testCtx(t), alice.env, "password-alice\n", "login", "alice")
	if res.code != 0 || !strings.Contains(res.stdout, "logged in as alice on "+srv.Addr()) || !strings.Contains(res.stderr, "Password: ") {
		t.Fatalf("login with a prompt: %+v", res)
	}
	res = run(testCtx(t), alice.env, "wrong\n", "login", "alice")
	if res.code != 1 || !strings.Contains(res.stderr, "parley: UNAUTHENTICATED: wrong username or password") {
		t.Errorf("login with a wrong password: %+v", res)
	}
	if got := alice.fails("register", "alice", "--password", "password-alice"); !strings.Contains(got, "parley: ALREADY_EXISTS:") {
		t.Errorf("second register: %q", got)
	}
}

func TestConversationCommands(t *testing.T) {
	srv := fakeserver.New(t)
	alice := newUser(t, srv.Addr(), "alice")
	bob := newUser(t, srv.Addr(), "bob")
	newUser(t, srv.Addr(), "carol")

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
		t.Fatalf("send -: %+v", res)
	}
	if got := alice.ok("history", "room:lobby"); got != "[room:lobby #1] alice: hello everyone\n[room:lobby #2] bob: from stdin\n" {
		t.Errorf("history printed %q", got)
	}
	if got := alice.ok("history", "room:lobby", "--after", "1", "--limit", "1"); got != "[room:lobby #2] bob: from stdin\n" {
		t.Errorf("history --after 1 printed %q", got)
	}
	if got := alice.ok("history", "room:lobby", "--before", "2"); got != "[room:lobby #1] alice: hello everyone\n" {
		t.Errorf("history --before 2 printed %q", got)
	}

	if got := alice.ok("dm", "bob"); got != "dm:alice:bob\n" {
		t.Errorf("dm printed %q", got)
	}
	if got := alice.fails("dm", "nobody"); !strings.HasPrefix(got, "parley: NOT_FOUND: ") {
		t.Errorf("dm nobody: %q", got)
	}

	group := strings.TrimSpace(alice.ok("group", "create", "Plans", "bob"))
	if !strings.HasPrefix(group, "group:") {
		t.Fatalf("group create printed %q", group)
	}
	if got := alice.ok("group", "add", group, "carol"); got != group+" members: alice bob carol\n" {
		t.Errorf("group add printed %q", got)
	}
	if got := bob.fails("group", "remove", group, "carol"); !strings.HasPrefix(got, "parley: PERMISSION_DENIED: ") {
		t.Errorf("group remove by a member: %q", got)
	}
	if got := alice.ok("group", "remove", group, "carol"); got != group+" members: alice bob\n" {
		t.Errorf("group remove printed %q", got)
	}

	list := alice.ok("conversations")
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^CONVERSATION\s+KIND\s+HEAD\s+UNREAD\s+TITLE\s+LAST MESSAGE$`),
		// Only bob's message is unread to alice.
		regexp.MustCompile(`(?m)^room:lobby\s+room\s+#2\s+1\s+The Lobby\s+bob: from stdin$`),
		regexp.MustCompile(`(?m)^dm:alice:bob\s+direct\s+#0\s+0`),
		regexp.MustCompile(`(?m)^` + group + `\s+group\s+#0\s+0\s+Plans`),
	} {
		if !want.MatchString(list) {
			t.Errorf("conversations output lacks %v:\n%s", want, list)
		}
	}

	if got := bob.ok("leave", "room:lobby"); got != "left room:lobby\n" {
		t.Errorf("leave printed %q", got)
	}
	if got := bob.fails("send", "room:lobby", "still here?"); got != "parley: PERMISSION_DENIED: not a member of this conversation\n" {
		t.Errorf("send after leaving: %q", got)
	}
}

func TestListen(t *testing.T) {
	srv := fakeserver.New(t)
	alice := newUser(t, srv.Addr(), "alice")
	bob := newUser(t, srv.Addr(), "bob")
	alice.ok("room", "create", "lobby")
	bob.ok("room", "join", "lobby")
	alice.ok("send", "room:lobby", "before listening")

	tests := []struct {
		name  string
		args  []string
		first string // the first line listen prints
	}{
		{"live only", []string{"listen", "room:lobby"}, "[room:lobby #2] alice: live"},
		{"with replay", []string{"listen", "--after", "0", "room:lobby"}, "[room:lobby #1] alice: before listening"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(testCtx(t))
			var out, errOut syncbuf.Buffer
			done := make(chan int)
			go func() {
				done <- Run(ctx, tt.args, Env{Stdout: &out, Stderr: &errOut, Getenv: func(k string) string { return bob.env[k] }})
			}()
			// Subscribed only once the fake has seen the subscribe.
			eventually(t, "listen to subscribe", func() bool { return len(srv.Subscribes()) == i+1 })
			if i == 0 {
				alice.ok("send", "room:lobby", "live")
			}
			eventually(t, "the message printed", func() bool { return strings.Contains(out.String(), "alice: live") })
			cancel()
			if code := <-done; code != 0 {
				t.Errorf("listen exit %d: %s", code, errOut.String())
			}
			if first, _, _ := strings.Cut(out.String(), "\n"); first != tt.first {
				t.Errorf("first line %q, want %q", first, tt.first)
			}
		})
	}

	t.Run("not a member", func(t *testing.T) {
		if got := bob.fails("listen", "dm:alice:zed"); !strings.HasPrefix(got, "parley: PERMISSION_DENIED:") {
			t.Errorf("listen to a stranger's conversation: %q", got)
		}
	})
}

func TestChat(t *testing.T) {
	srv := fakeserver.New(t)
	alice := newUser(t, srv.Addr(), "alice")
	bob := newUser(t, srv.Addr(), "bob")
	alice.ok("room", "create", "lobby")
	bob.ok("room", "join", "lobby")
	bob.ok("send", "room:lobby", "earlier")

	stdin, typing := io.Pipe()
	var out, errOut syncbuf.Buffer
	done := make(chan int)
	go func() {
		done <- Run(testCtx(t), []string{"chat", "room:lobby", "--last", "5"},
			Env{Stdin: stdin, Stdout: &out, Stderr: &errOut, Getenv: func(k string) string { return alice.env[k] }})
	}()
	eventually(t, "recent messages", func() bool { return strings.Contains(out.String(), "[room:lobby #1] bob: earlier") })
	eventually(t, "chat to subscribe", func() bool { return len(srv.Subscribes()) == 1 })

	if _, err := io.WriteString(typing, "hi bob\n\n"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the ack", func() bool { return strings.Contains(out.String(), "\u2713 #2") })
	bob.ok("send", "room:lobby", "hi alice")
	eventually(t, "bob's answer", func() bool { return strings.Contains(out.String(), "[room:lobby #3] bob: hi alice") })
	typing.Close()

	if code := <-done; code != 0 {
		t.Fatalf("chat exit %d: %s", code, errOut.String())
	}
	if !strings.Contains(out.String(), "[room:lobby #2] alice: hi bob") {
		t.Errorf("own message not shown:\n%s", out.String())
	}
	if n := len(srv.Messages("room:lobby")); n != 3 {
		t.Errorf("%d messages stored, want 3 (empty lines are not sent)", n)
	}
}
