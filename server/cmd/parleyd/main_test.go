package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
)

var binary string

// TestMain builds parleyd once; the tests run it as a real process, the way
// it runs in production.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "parleyd-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "parleyd")
	if out, err := exec.Command("go", "build", "-race", "-o", binary, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build parleyd: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is a running parleyd.
type proc struct {
	cmd    *exec.Cmd
	addr   string
	exited chan error
}

// logs, when set, receives every parleyd's log after its serving line.
var logs io.Writer

// keptLines is how much of each parleyd's log a failed test shows.
const keptLines = 200

var servingRE = regexp.MustCompile(`msg="parleyd serving" addr=(\S+)`)

// startParleyd starts parleyd with args on a free loopback port and waits until it
// serves.
func startParleyd(t *testing.T, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(binary, append([]string{"--addr", "127.0.0.1:0", "--bcrypt-cost", "4"}, args...)...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, exited: make(chan error, 1)}
	sink := io.Discard
	if logs != nil {
		sink = logs
	}
	addr := make(chan string, 1)
	// The last lines parleyd said: before serving, for the failure
	// message; and for a test that fails once in many runs, what each
	// node said up to the failure.
	var said []string
	var saidMu sync.Mutex
	go func() {
		sc := bufio.NewScanner(stderr)
		serving := false
		for sc.Scan() {
			line := sc.Text()
			if !serving {
				if m := servingRE.FindStringSubmatch(line); m != nil {
					addr <- m[1]
					serving = true
				}
			} else {
				fmt.Fprintln(sink, line)
			}
			saidMu.Lock()
			if said = append(said, line); len(said) > 2*keptLines {
				said = slices.Clone(said[len(said)-keptLines:])
			}
			saidMu.Unlock()
		}
		p.exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		if t.Failed() {
			p.logGoroutines(t)
		}
		cmd.Process.Kill()
		<-p.exited
		if t.Failed() {
			saidMu.Lock()
			defer saidMu.Unlock()
			t.Logf("parleyd %s, its last lines:\n%s", p.addr, strings.Join(said[max(len(said)-keptLines, 0):], "\n"))
		}
	})
	select {
	case p.addr = <-addr:
	case err := <-p.exited:
		p.exited <- err // for the cleanup
		saidMu.Lock()
		defer saidMu.Unlock()
		t.Fatalf("parleyd exited before serving: %v\n%s", err, strings.Join(said, "\n"))
	case <-time.After(30 * time.Second):
		t.Fatal("parleyd did not start within 30s")
	}
	return p
}

// logGoroutines logs the goroutines of a parleyd started with --pprof and
// still alive, for a test that failed: what a node waits on is what its
// log cannot say.
func (p *proc) logGoroutines(t *testing.T) {
	if p.addr == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.addr+"/debug/pprof/goroutine?debug=2", nil)
	if err != nil {
		return
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return // killed by the test, or not answering: the log lines follow
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return // started without --pprof
	}
	dump, err := io.ReadAll(resp.Body)
	if err != nil {
		return
	}
	t.Logf("parleyd %s, its goroutines:\n%s", p.addr, dump)
}

// stop sends SIGTERM and returns the exit error.
func (p *proc) stop(t *testing.T) error {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.exited:
		p.exited <- err // for the cleanup
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("parleyd did not exit within 30s of SIGTERM")
		return nil
	}
}

func TestSIGTERMFlushesAndRestartKeepsMessages(t *testing.T) {
	dir := t.TempDir()
	p := startParleyd(t, "--data-dir", dir)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	conn, err := grpc.NewClient(p.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	reg, err := parleyv1.NewAuthServiceClient(conn).Register(ctx, &parleyv1.RegisterRequest{Username: "alice", Password: "correct horse"})
	if err != nil {
		t.Fatal(err)
	}
	actx := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+reg.GetToken().GetValue())
	if _, err := parleyv1.NewConversationServiceClient(conn).CreateRoom(actx, &parleyv1.CreateRoomRequest{Name: "lobby"}); err != nil {
		t.Fatal(err)
	}
	chat := parleyv1.NewChatServiceClient(conn)
	var last *parleyv1.SendResponse
	for i := 0; i < 50; i++ {
		if last, err = chat.Send(actx, &parleyv1.SendRequest{ConversationId: "room:lobby", ClientMessageId: fmt.Sprint(i), Body: fmt.Sprint("message ", i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.stop(t); err != nil {
		t.Fatalf("parleyd exited with %v after SIGTERM, want 0", err)
	}
	conn.Close()

	// The same data dir: the signing key, users and messages are all there.
	p = startParleyd(t, "--data-dir", dir)
	conn2, err := grpc.NewClient(p.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn2.Close()
	h, err := parleyv1.NewChatServiceClient(conn2).History(actx, &parleyv1.HistoryRequest{ConversationId: "room:lobby", Limit: 100})
	if err != nil {
		t.Fatalf("History with the token from before the restart: %v", err)
	}
	if len(h.GetMessages()) != 50 || h.GetHeadSeq() != last.GetSeq() {
		t.Fatalf("after restart: %d messages, head %d; want 50, head %d", len(h.GetMessages()), h.GetHeadSeq(), last.GetSeq())
	}
	if err := p.stop(t); err != nil {
		t.Fatalf("second SIGTERM: %v", err)
	}
}

// A SIGTERM as soon as parleyd says it listens is a graceful stop (exit
// 0), not the signal's default death.
func TestSIGTERMRightAfterListening(t *testing.T) {
	for range 5 {
		p := startParleyd(t, "--data-dir", t.TempDir())
		if err := p.stop(t); err != nil {
			t.Fatalf("parleyd exited with %v after SIGTERM, want 0", err)
		}
	}
}

func TestHelpAndBadFlags(t *testing.T) {
	out, err := exec.Command(binary, "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("--help: %v", err)
	}
	for _, want := range []string{"-data-dir", "PARLEY_DATA_DIR", "-batch-size", "-flush-interval", "-window", "-queue"} {
		if !regexp.MustCompile(regexp.QuoteMeta(want)).Match(out) {
			t.Errorf("--help does not mention %s", want)
		}
	}
	cmd := exec.Command(binary, "--data-dir", t.TempDir())
	cmd.Env = append(os.Environ(), "PARLEY_BATCH_SIZE=lots")
	out, err = cmd.CombinedOutput()
	if err == nil || !regexp.MustCompile(`PARLEY_BATCH_SIZE`).Match(out) {
		t.Fatalf("bad PARLEY_BATCH_SIZE: err=%v output=%s", err, out)
	}
}
