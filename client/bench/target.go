package bench

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/parleychat/parley/server"
)

// target is a server a scenario runs against.
type target struct {
	name   string   // "parley" or "baseline"
	parley bool     // has accounts, rooms and a log
	addr   string   // as reported: the nodes' addresses, comma-separated
	addrs  []string // one per node
	where  string   // "in-process", "child process", "external", with settings
	local  bool     // both ends of each connection are in this process

	// pids are the processes whose CPU and RSS are reported, summed: 0
	// for this one; none when empty.
	pids  []int
	scope string
	stop  func()
	// settle returns as much free memory to the OS as the target can, so
	// that RSS readings count live memory; nil when it cannot be asked.
	settle func()
}

// freeMemory collects garbage and returns free pages to the OS.
func freeMemory() {
	runtime.GC()
	debug.FreeOSMemory()
}

// serveChildArg is the hidden first argument that makes the binary serve
// as a child of another parley-bench (--spawn).
const serveChildArg = "internal-serve"

// startTarget starts (or names) the server a scenario runs against.
func startTarget(ctx context.Context, cfg Config, baseline bool, stderr io.Writer) (*target, error) {
	switch {
	case cfg.Spawn:
		return spawn(ctx, cfg, baseline, stderr)
	case baseline:
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		b := NewBaseline(0)
		b.Serve(l)
		return &target{name: "baseline", addr: b.Addr(), addrs: []string{b.Addr()}, where: "in-process", local: true,
			pids: []int{0}, scope: "whole process: in-process server + load generator", stop: b.Stop, settle: freeMemory}, nil
	case cfg.Server != "":
		addrs, err := ParseServers(cfg.Server)
		if err != nil {
			return nil, err
		}
		t := &target{name: "parley", parley: true, addr: strings.Join(addrs, ","), addrs: addrs, where: "external"}
		if len(addrs) > 1 {
			t.where = fmt.Sprintf("external, %d nodes", len(addrs))
		}
		switch t.pids = cfg.pids(); len(t.pids) {
		case 0:
		case 1:
			t.scope = "server process"
		default:
			t.scope = fmt.Sprintf("%d server processes, summed", len(t.pids))
		}
		t.stop = func() {}
		return t, nil
	}
	srv, dir, err := startParley(cfg.NoSync, stderr)
	if err != nil {
		return nil, err
	}
	addr := srv.Addr().String()
	return &target{name: "parley", parley: true, addr: addr, addrs: []string{addr}, where: "in-process", local: true,
		pids: []int{0}, scope: "whole process: in-process server + load generator",
		stop: func() { stopParley(srv, dir) }, settle: freeMemory}, nil
}

// startParley runs a node on a free loopback port with a temp data dir.
// Passwords are hashed at bcrypt's minimum cost, which only makes setup
// (registering thousands of users) fast; nothing measured hashes.
func startParley(noSync bool, stderr io.Writer) (*server.Server, string, error) {
	dir, err := os.MkdirTemp("", "parley-bench-")
	if err != nil {
		return nil, "", err
	}
	srv, err := server.New(server.Config{
		Addr:       "127.0.0.1:0",
		DataDir:    dir,
		NoSync:     noSync,
		BcryptCost: bcrypt.MinCost,
		Logger:     slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		os.RemoveAll(dir)
		return nil, "", err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		stopParley(srv, dir)
		return nil, "", err
	}
	srv.Serve(l)
	return srv, dir, nil
}

func stopParley(srv *server.Server, dir string) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	srv.Shutdown(ctx)
	os.RemoveAll(dir)
}

// spawn starts this binary as a child that serves Parley or the baseline
// and prints its address. The child stops when its stdin closes, so it
// does not outlive the parent even if the parent is killed.
func spawn(ctx context.Context, cfg Config, baseline bool, stderr io.Writer) (*target, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("spawn: %w", err)
	}
	args := []string{serveChildArg}
	name := "parley"
	if baseline {
		args, name = append(args, "--baseline"), "baseline"
	}
	if cfg.NoSync {
		args = append(args, "--no-sync")
	}
	cmd := exec.Command(exe, args...)
	cmd.Stderr = stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("spawn: %w", err)
	}
	stop := func() {
		stdin.Close()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	}
	addr := make(chan string, 1)
	settled := make(chan struct{}, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), "listening "); ok {
				addr <- a
			}
			if sc.Text() == "settled" {
				settled <- struct{}{}
			}
		}
	}()
	settle := func() {
		if _, err := io.WriteString(stdin, "settle\n"); err != nil {
			return
		}
		select {
		case <-settled:
		case <-time.After(10 * time.Second):
		}
	}
	select {
	case a := <-addr:
		return &target{name: name, parley: !baseline, addr: a, addrs: []string{a}, where: "child process", pids: []int{cmd.Process.Pid},
			scope: "server process (child)", stop: stop, settle: settle}, nil
	case <-time.After(30 * time.Second):
		stop()
		return nil, errors.New("spawn: the child did not report its address within 30s")
	case <-ctx.Done():
		stop()
		return nil, ctx.Err()
	}
}

// serveChild is the child side of spawn.
func serveChild(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet(serveChildArg, flag.ContinueOnError)
	fs.SetOutput(stderr)
	baseline := fs.Bool("baseline", false, "serve the baseline")
	noSync := fs.Bool("no-sync", false, "no fsync")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	signal.Ignore(syscall.SIGINT) // the parent handles ^C and then closes stdin
	var stop func()
	var addr string
	if *baseline {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		b := NewBaseline(0)
		b.Serve(l)
		addr, stop = b.Addr(), b.Stop
	} else {
		srv, dir, err := startParley(*noSync, stderr)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		addr, stop = srv.Addr().String(), func() { stopParley(srv, dir) }
	}
	fmt.Fprintf(stdout, "listening %s\n", addr)
	// The parent asks for a settle before it reads the RSS; the end of
	// stdin means stop.
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		if sc.Text() == "settle" {
			freeMemory()
			fmt.Fprintln(stdout, "settled")
		}
	}
	stop()
	return 0
}
