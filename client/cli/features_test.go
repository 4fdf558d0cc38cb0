package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/parleychat/parley/client"
	"github.com/parleychat/parley/client/internal/fakeserver"
)

// dialAs returns a Client with u's saved login, for what the command line
// cannot do itself (typing, a second device).
func (u *user) dialAs() *client.Client {
	u.t.Helper()
	cfg, err := LoadConfig(u.env["PARLEY_CONFIG_DIR"])
	if err != nil {
		u.t.Fatal(err)
	}
	c, err := client.Dial(testCtx(u.t), cfg.Server, client.WithToken(cfg.Token))
	if err != nil {
		u.t.Fatal(err)
	}
	u.t.Cleanup(func() { c.Close() })
	return c
}

var attachedLine = regexp.MustCompile(`^attached ([0-9a-f]{64}) (\S+)$`)

// sentFiles checks send's output and returns the attachment ids it printed,
// by file name.
func sentFiles(t *testing.T, out string, wantSent string) map[string]string {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if lines[0] != wantSent {
		t.Fatalf("send printed %q, want %q first", out, wantSent)
	}
	ids := map[string]string{}
	for _, l := range lines[1:] {
		m := attachedLine.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("send printed %q", l)
		}
		ids[m[2]] = m[1]
	}
	return ids
}

func TestSendFilesAndDownload(t *testing.T) {
	srv := fakeserver.New(t)
	alice := newUser(t, srv.Addr(), "alice")
	bob := newUser(t, srv.Addr(), "bob")
	alice.ok("room", "create", "lobby")
	bob.ok("room", "join", "lobby")

	dir := t.TempDir()
	notes := filepath.Join(dir, "notes.txt")
	blob := filepath.Join(dir, "data.bin")
	if err := os.WriteFile(notes, []byte("remember the milk\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte{0, 1, 2, 3, 254, 255}, 50000)
	if err := os.WriteFile(blob, data, 0o600); err != nil {
		t.Fatal(err)
	}
	ids := sentFiles(t, alice.ok("send", "room:lobby", "two files", "--file", notes, "--file", blob), "sent [room:lobby #1]")
	if len(ids) != 2 {
		t.Fatalf("attachment ids %v", ids)
	}
	// Files alone make a message.
	sentFiles(t, alice.ok("send", "--file", notes, "room:lobby"), "sent [room:lobby #2]")

	history := bob.ok("history", "room:lobby")
	for _, want := range []string{
		"[room:lobby #1] alice: two files\n  attachment " + ids["notes.txt"] + " notes.txt (18 bytes, text/plain; charset=utf-8)\n  attachment " + ids["data.bin"] + " data.bin (300000 bytes, application/octet-stream)\n",
		"[room:lobby #2] alice:\n  attachment " + ids["notes.txt"] + " notes.txt",
	} {
		if !strings.Contains(history, want) {
			t.Errorf("history lacks %q:\n%s", want, history)
		}
	}

	// -o names the file; without it, the attachment's own name in the
	// current directory, never overwriting one that is there.
	got := filepath.Join(t.TempDir(), "copy.bin")
	if out := bob.ok("download", ids["data.bin"], "-o", got); out != "saved "+got+" (300000 bytes, application/octet-stream)\n" {
		t.Errorf("download -o printed %q", out)
	}
	if b, err := os.ReadFile(got); err != nil || !bytes.Equal(b, data) {
		t.Errorf("downloaded file: %d bytes, %v; want the %d sent", len(b), err, len(data))
	}
	t.Chdir(t.TempDir())
	if out := bob.ok("download", ids["notes.txt"]); out != "saved notes.txt (18 bytes, text/plain; charset=utf-8)\n" {
		t.Errorf("download printed %q", out)
	}
	if b, _ := os.ReadFile("notes.txt"); string(b) != "remember the milk\n" {
		t.Errorf("notes.txt holds %q", b)
	}
	if errOut := bob.fails("download", ids["notes.txt"]); !strings.HasPrefix(errOut, "parley: ALREADY_EXISTS: notes.txt already exists") {
		t.Errorf("second download: %q", errOut)
	}
	if res := run(testCtx(t), bob.env, "", "download", ids["notes.txt"], "-o", "-"); res.code != 0 || res.stdout != "remember the milk\n" {
		t.Errorf("download -o -: %+v", res)
	}

	srv.CorruptDownloads(true)
	if errOut := bob.fails("download", ids["data.bin"], "-o", "bad.bin"); !strings.HasPrefix(errOut, "parley: DATA_LOSS: ") {
		t.Errorf("corrupted download: %q", errOut)
	}
	if entries, _ := os.ReadDir("."); len(entries) != 1 {
		t.Errorf("after a failed download the directory holds %d files, want only notes.txt", len(entries))
	}

	if errOut := alice.fails("send", "room:lobby", "--file", filepath.Join(dir, "missing")); !strings.HasPrefix(errOut, "parley: INVALID_ARGUMENT: attach ") {
		t.Errorf("send of a missing file: %q", errOut)
	}
	if n := len(srv.Messages("room:lobby")); n != 2 {
		t.Errorf("%d messages stored, want 2: a failed attach sends nothing", n)
	}
}

func TestEditDeleteAndRead(t *testing.T) {
	srv := fakeserver.New(t)
	alice := newUser(t, srv.Addr(), "alice")
	bob := newUser(t, srv.Addr(), "bob")
	alice.ok("room", "create", "lobby")
	bob.ok("room", "join", "lobby")
	alice.ok("send", "room:lobby", "helo")
	alice.ok("send", "room:lobby", "oops")
	alice.ok("send", "room:lobby", "third")

	if out := alice.ok("edit", "room:lobby", "1", "hello", "all"); out != "edited [room:lobby #1] (#4)\n" {
		t.Errorf("edit printed %q", out)
	}
	if out := alice.ok("delete", "room:lobby", "#2"); out != "deleted [room:lobby #2] (#5)\n" {
		t.Errorf("delete printed %q", out)
	}
	if errOut := bob.fails("edit", "room:lobby", "3", "mine"); !strings.HasPrefix(errOut, "parley: PERMISSION_DENIED: ") {
		t.Errorf("bob editing alice's message: %q", errOut)
	}
	want := "[room:lobby #1] alice: hello all (edited)\n" +
		"[room:lobby #2] alice: (deleted)\n" +
		"[room:lobby #3] alice: third\n" +
		"[room:lobby #4] alice edited #1: hello all\n" +
		"[room:lobby #5] alice deleted #2\n"
	if got := bob.ok("history", "room:lobby"); got != want {
		t.Errorf("history:\n%s\nwant:\n%s", got, want)
	}
	if got := bob.ok("history", "room:lobby", "--after", "0", "--limit", "2"); got != strings.Join(strings.SplitAfter(want, "\n")[:2], "") {
		t.Errorf("history --after 0 --limit 2:\n%s", got)
	}

	unread := func() string {
		for line := range strings.Lines(bob.ok("conversations")) {
			if f := strings.Fields(line); f[0] == "room:lobby" {
				return f[3]
			}
		}
		t.Fatal("no room:lobby row")
		return ""
	}
	// Three posts by alice, one of them deleted.
	if got := unread(); got != "2" {
		t.Errorf("bob's unread count %s, want 2", got)
	}
	if out := bob.ok("read", "room:lobby", "1"); out != "read [room:lobby] up to #1\n" {
		t.Errorf("read 1 printed %q", out)
	}
	if got := unread(); got != "1" {
		t.Errorf("unread after reading #1: %s, want 1", got)
	}
	if out := bob.ok("read", "room:lobby"); out != "read [room:lobby] up to #5\n" {
		t.Errorf("read printed %q", out)
	}
	if got := unread(); got != "0" {
		t.Errorf("unread after reading all: %s, want 0", got)
	}
	if rc := srv.Receipt("room:lobby", "bob"); rc.GetReadSeq() != 5 || rc.GetDeliveredSeq() != 5 {
		t.Errorf("bob's receipt on the server: %v", rc)
	}
}

func TestListenShowsWhatHappens(t *testing.T) {
	srv := fakeserver.New(t)
	alice := newUser(t, srv.Addr(), "alice")
	bob := newUser(t, srv.Addr(), "bob")
	alice.ok("room", "create", "lobby")
	alice.ok("room", "create", "other")
	bob.ok("room", "join", "lobby")
	bob.ok("room", "join", "other")
	alice.ok("send", "room:lobby", "one")

	listen := bob.start(nil, "listen", "--after", "0", "--mark-delivered", "room:lobby")
	eventually(t, "the replay", func() bool { return len(listen.lines()) == 1 })
	eventually(t, "bob's mark", func() bool { return srv.Receipt("room:lobby", "bob").GetDeliveredSeq() == 1 })

	ac := alice.dialAs()
	ctx := testCtx(t)
	steps := []struct {
		do   func() error
		line string
	}{
		{func() error { _, err := ac.MarkRead(ctx, "room:lobby", 1); return err }, "[room:lobby] alice read up to #1"},
		{func() error { return ac.SetTyping(ctx, "room:lobby", true) }, "[room:lobby] alice is typing\u2026"},
		{func() error { return ac.SetTyping(ctx, "room:lobby", false) }, "[room:lobby] alice stopped typing"},
		{func() error { _, err := ac.Send(ctx, "room:other", "elsewhere"); return err }, "notification [room:other #1] alice: elsewhere"},
		{func() error { _, err := ac.Edit(ctx, "room:lobby", 1, "uno"); return err }, "[room:lobby #2] alice edited #1: uno"},
		{func() error {
			s, err := ac.NewSession(context.Background())
			if err != nil {
				return err
			}
			go func() {
				for range s.Events() {
				}
			}()
			eventually(t, "alice online", func() bool { return slices.Contains(listen.lines(), "alice is online") })
			return s.Close()
		}, "alice is offline"},
	}
	for _, st := range steps {
		if err := st.do(); err != nil {
			t.Fatal(err)
		}
		eventually(t, st.line, func() bool {
			l := listen.lines() // once: the output may grow between two reads
			return strings.HasPrefix(l[len(l)-1], st.line)
		})
	}
	if code := listen.stop(); code != 0 {
		t.Fatalf("listen exit %d: %s", code, listen.errOut.String())
	}
	// Nothing of bob's own (his presence, his delivered mark) is shown.
	for _, l := range listen.lines() {
		if strings.Contains(l, "bob") {
			t.Errorf("listen showed bob his own doing: %q", l)
		}
	}
}
