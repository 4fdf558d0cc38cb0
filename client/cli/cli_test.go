package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/parleychat/parley/internal/syncbuf"
)

// The server that the end-to-end tests start pulls in the grpc-web wrapper,
// whose timer package starts a goroutine in its init; it is not ours.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/desertbit/timer.timerRoutine"))
}

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

type result struct {
	code           int
	stdout, stderr string
}

// run runs the command line with env as the whole environment.
func run(ctx context.Context, env map[string]string, stdin string, args ...string) result {
	var out, errOut syncbuf.Buffer
	code := Run(ctx, args, Env{
		Stdin:  strings.NewReader(stdin),
		Stdout: &out,
		Stderr: &errOut,
		Getenv: func(k string) string { return env[k] },
	})
	return result{code, out.String(), errOut.String()}
}

func TestParseInterspersed(t *testing.T) {
	tests := []struct {
		args  []string
		pos   []string
		title string
		n     int
	}{
		{[]string{"a", "b"}, []string{"a", "b"}, "", 0},
		{[]string{"--title", "T", "a"}, []string{"a"}, "T", 0},
		{[]string{"a", "--title", "T", "b", "-n", "3"}, []string{"a", "b"}, "T", 3},
		{[]string{"a", "--", "--title", "-n"}, []string{"a", "--title", "-n"}, "", 0},
		{[]string{"room:x", "-"}, []string{"room:x", "-"}, "", 0},
		{[]string{"--title=x y", "a"}, []string{"a"}, "x y", 0},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			title := fs.String("title", "", "")
			n := fs.Int("n", 0, "")
			pos, err := parseInterspersed(fs, tt.args)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(pos, tt.pos) || *title != tt.title || *n != tt.n {
				t.Errorf("got %q title %q n %d, want %q %q %d", pos, *title, *n, tt.pos, tt.title, tt.n)
			}
		})
	}
}

func TestConfigFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nested", "parley")
	got, err := ConfigDir(func(k string) string { return map[string]string{"PARLEY_CONFIG_DIR": dir}[k] })
	if err != nil || got != dir {
		t.Fatalf("ConfigDir = %q, %v; want %q", got, err, dir)
	}

	if cfg, err := LoadConfig(dir); err != nil || cfg != (Config{}) {
		t.Fatalf("LoadConfig of nothing = %+v, %v; want empty", cfg, err)
	}
	want := Config{Server: "chat.example:443", TLS: true, User: "alice", Token: "secret"}
	if err := SaveConfig(dir, want); err != nil {
		t.Fatal(err)
	}
	if cfg, err := LoadConfig(dir); err != nil || cfg != want {
		t.Fatalf("LoadConfig = %+v, %v; want %+v", cfg, err, want)
	}
	path := filepath.Join(dir, "config.json")
	// Overwriting must keep the mode even if someone loosened it.
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := SaveConfig(dir, Config{Server: "x"}); err != nil {
		t.Fatal(err)
	}
	for p, mode := range map[string]os.FileMode{path: 0o600, dir: 0o700} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s has mode %v, want %v", p, fi.Mode().Perm(), mode)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("config dir holds %d files, want only config.json", len(entries))
	}

	if err := os.WriteFile(path, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadConfig(dir); err == nil {
		t.Error("LoadConfig of a corrupt file succeeded")
	}
}

func TestResolve(t *testing.T) {
	saved := Config{Server: "saved:1", TLS: true, User: "alice", Token: "saved-token"}
	tests := []struct {
		name   string
		flags  []string
		env    map[string]string
		saved  Config
		server string
		token  string
		tls    bool
	}{
		{"nothing", nil, nil, Config{}, DefaultServer, "", false},
		{"saved login", nil, nil, saved, "saved:1", "saved-token", true},
		{"env beats saved", nil, map[string]string{"PARLEY_SERVER": "env:2"}, saved, "env:2", "", false},
		{"flag beats env", []string{"--server", "flag:3"}, map[string]string{"PARLEY_SERVER": "env:2"}, saved, "flag:3", "", false},
		{"flag naming the saved server", []string{"--server", "saved:1"}, nil, saved, "saved:1", "saved-token", true},
		{"tls flag beats saved", []string{"--tls=false"}, nil, saved, "saved:1", "saved-token", false},
		{"tls flag elsewhere", []string{"--tls", "--server", "x:5"}, nil, Config{}, "x:5", "", true},
		{"token from env", []string{"--server", "other:4"}, map[string]string{"PARLEY_TOKEN": "env-token"}, saved, "other:4", "env-token", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if tt.saved != (Config{}) {
				if err := SaveConfig(dir, tt.saved); err != nil {
					t.Fatal(err)
				}
			}
			env := map[string]string{"PARLEY_CONFIG_DIR": dir}
			for k, v := range tt.env {
				env[k] = v
			}
			r := &runner{getenv: func(k string) string { return env[k] }}
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			r.globalFlags(fs)
			if err := fs.Parse(tt.flags); err != nil {
				t.Fatal(err)
			}
			got, err := r.resolve()
			if err != nil {
				t.Fatal(err)
			}
			if got.server != tt.server || got.token != tt.token || got.tls != tt.tls {
				t.Errorf("resolve = server %q token %q tls %v, want %q %q %v", got.server, got.token, got.tls, tt.server, tt.token, tt.tls)
			}
		})
	}
}

func TestDescribe(t *testing.T) {
	tests := []struct {
		err       error
		code, msg string
	}{
		{fmt.Errorf("send to x: %w", status.Error(codes.PermissionDenied, "not a member")), "PERMISSION_DENIED", "not a member"},
		{status.Error(codes.Canceled, "bye"), "CANCELLED", "bye"},
		{usageError{msg: "missing arguments", cmd: "send"}, "INVALID_ARGUMENT", "missing arguments (run 'parley send --help')"},
		{errNotLoggedIn, "UNAUTHENTICATED", errNotLoggedIn.msg},
		{fmt.Errorf("x: %w", context.DeadlineExceeded), "DEADLINE_EXCEEDED", "x: context deadline exceeded"},
		{errors.New("disk on fire"), "UNKNOWN", "disk on fire"},
	}
	for _, tt := range tests {
		code, msg := describe(tt.err)
		if code != tt.code || msg != tt.msg {
			t.Errorf("describe(%v) = %s: %s, want %s: %s", tt.err, code, msg, tt.code, tt.msg)
		}
	}
}

func TestCommandLineMistakes(t *testing.T) {
	env := map[string]string{"PARLEY_CONFIG_DIR": t.TempDir()}
	tests := []struct {
		args   []string
		code   int
		stdout string // substring
		stderr string // substring
	}{
		{[]string{"--help"}, 0, "Commands:", ""},
		{[]string{"help"}, 0, "room create", ""},
		{[]string{"help", "history"}, 0, "-before N", ""},
		{[]string{"history", "--help"}, 0, "-limit N", ""},
		{[]string{"room", "create", "-h"}, 0, "-title title", ""},
		{[]string{"listen", "--help"}, 0, "-after N", ""},
		{[]string{}, 1, "Commands:", "parley: INVALID_ARGUMENT: no command given"},
		{[]string{"fly"}, 1, "", `parley: INVALID_ARGUMENT: unknown command "fly"`},
		{[]string{"room"}, 1, "", "needs a subcommand: create, join"},
		{[]string{"send", "room:x"}, 1, "", "parley: INVALID_ARGUMENT: missing arguments (run 'parley send --help')"},
		{[]string{"send", "--bogus", "room:x", "hi"}, 1, "", "flag provided but not defined: -bogus"},
		{[]string{"history", "c", "--before", "3", "--after", "1"}, 1, "", "set at most one of --before and --after"},
		{[]string{"history", "c", "--limit", "0"}, 1, "", "--limit must be 1 to 500"},
		{[]string{"dm", "a", "b"}, 1, "", `unexpected argument "b"`},
		{[]string{"--timeout", "soon", "conversations"}, 1, "", "invalid duration"},
		{[]string{"send", "room:x", "hi"}, 1, "", "parley: UNAUTHENTICATED: not logged in"},
		{[]string{"logout"}, 0, "not logged in", ""},
		{[]string{"help", "download"}, 0, "-o file", ""},
		{[]string{"send", "--help"}, 0, "-file path", ""},
		{[]string{"listen", "--help"}, 0, "-mark-delivered", ""},
		{[]string{"send", "room:x", "--file"}, 1, "", "flag needs an argument: -file"},
		{[]string{"edit", "room:x", "abc", "hi"}, 1, "", `parley: INVALID_ARGUMENT: "abc" is not a seq`},
		{[]string{"edit", "room:x", "1"}, 1, "", "missing arguments (run 'parley edit --help')"},
		{[]string{"delete", "room:x"}, 1, "", "missing arguments (run 'parley delete --help')"},
		{[]string{"read", "room:x", "0"}, 1, "", `"0" is not a seq`},
		{[]string{"read", "room:x", "1", "2"}, 1, "", `unexpected argument "2"`},
		{[]string{"download"}, 1, "", "missing arguments (run 'parley download --help')"},
		{[]string{"history", "c", "--before", "3", "--after", "0"}, 1, "", "set at most one of --before and --after"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			res := run(testCtx(t), env, "", tt.args...)
			if res.code != tt.code || !strings.Contains(res.stdout, tt.stdout) || !strings.Contains(res.stderr, tt.stderr) {
				t.Errorf("exit %d\nstdout: %s\nstderr: %s\nwant exit %d, stdout with %q, stderr with %q",
					res.code, res.stdout, res.stderr, tt.code, tt.stdout, tt.stderr)
			}
		})
	}
}
