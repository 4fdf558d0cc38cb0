// Package natstest runs real nats-server processes with JetStream on
// loopback for tests: a cluster of any size in one line, each node stoppable,
// killable and restartable on its own store, all stopped when the test ends.
//
// The binary is $PARLEY_NATS_SERVER, else bin/nats-server at the module
// root (`make test` installs it there). A test that needs it and finds
// neither fails: a skipped cluster test would prove nothing.
package natstest

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Options shape a cluster. The zero value is a three-node cluster with
// JetStream's default sync interval.
type Options struct {
	// Nodes is the cluster size (default 3). One node runs without a
	// cluster block.
	Nodes int
	// SyncAlways fsyncs every JetStream write (sync_interval: always).
	SyncAlways bool
}

// Cluster is a set of running nats-server nodes that route to each other.
type Cluster struct {
	Nodes []*Node
	t     testing.TB
}

// Node is one nats-server process. Its ports and store survive Stop, Kill
// and Start, so clients reconnect to where they were.
type Node struct {
	Name string
	// URL is the client URL, nats://127.0.0.1:port.
	URL string

	t       testing.TB
	bin     string
	dir     string // config, store and log
	conf    string
	monitor string // http://127.0.0.1:port

	mu     sync.Mutex
	cmd    *exec.Cmd
	log    *os.File
	exited chan struct{} // closed when the process of this run has exited
}

// Start runs a cluster and waits until JetStream answers on every node.
//
// Ports are chosen below the kernel's ephemeral range (see FreePorts), and
// a cluster whose node still finds its port taken at start, by a process
// that bound it between the choice and the start, is started again on
// fresh ports: a port race is the machine's, not the code under test's.
func Start(t testing.TB, opts Options) *Cluster {
	t.Helper()
	if opts.Nodes <= 0 {
		opts.Nodes = 3
	}
	bin := Binary(t)
	// Made before the cleanups below so that it is removed after them:
	// they stop the nodes and read their logs from it.
	base := t.TempDir()
	c := &Cluster{t: t}
	t.Cleanup(c.Stop)
	t.Cleanup(func() {
		// A failed test shows what the servers said, for failures that
		// happen once in many runs.
		if t.Failed() {
			for _, n := range c.Nodes {
				t.Logf("natstest: log of %s:\n%s", n.Name, n.Log())
			}
		}
	})
	const tries = 3
	for try := 1; ; try++ {
		c.Nodes = c.Nodes[:0]
		ports := FreePorts(t, 3*opts.Nodes)
		var routes []string
		for i := range opts.Nodes {
			routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", ports[3*i+1]))
		}
		for i := range opts.Nodes {
			dir := filepath.Join(base, fmt.Sprintf("try%d-n%d", try, i+1))
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatalf("natstest: %v", err)
			}
			n := &Node{
				Name:    fmt.Sprintf("n%d", i+1),
				URL:     fmt.Sprintf("nats://127.0.0.1:%d", ports[3*i]),
				t:       t,
				bin:     bin,
				dir:     dir,
				conf:    filepath.Join(dir, "nats.conf"),
				monitor: fmt.Sprintf("http://127.0.0.1:%d", ports[3*i+2]),
			}
			var b strings.Builder
			fmt.Fprintf(&b, "server_name: %s\nlisten: 127.0.0.1:%d\nhttp: 127.0.0.1:%d\n", n.Name, ports[3*i], ports[3*i+2])
			fmt.Fprintf(&b, "jetstream {\n  store_dir: %q\n", filepath.Join(dir, "js"))
			if opts.SyncAlways {
				b.WriteString("  sync_interval: always\n")
			}
			b.WriteString("}\n")
			if opts.Nodes > 1 {
				fmt.Fprintf(&b, "cluster {\n  name: parley\n  listen: 127.0.0.1:%d\n  routes: [%s]\n}\n", ports[3*i+1], strings.Join(routes, ", "))
			}
			if err := os.WriteFile(n.conf, []byte(b.String()), 0o600); err != nil {
				t.Fatalf("natstest: %v", err)
			}
			c.Nodes = append(c.Nodes, n)
		}
		for _, n := range c.Nodes {
			n.Start()
		}
		err := c.waitReady()
		if err == nil {
			return c
		}
		if !errors.Is(err, errPortTaken) || try == tries {
			t.Fatalf("natstest: %v", err)
		}
		t.Logf("natstest: %v; starting again on other ports", err)
		c.Stop()
	}
}

// waitReady waits for every node at once and returns the first error: a
// node that exits at start must not leave the others waiting out their
// time for it.
func (c *Cluster) waitReady() error {
	stop := make(chan struct{})
	defer close(stop)
	errs := make(chan error, len(c.Nodes))
	for _, n := range c.Nodes {
		go func() { errs <- n.waitReady(stop) }()
	}
	for range c.Nodes {
		if err := <-errs; err != nil {
			return err
		}
	}
	return nil
}

// URL is every node's client URL, comma-separated, as nats.Connect and
// parleyd's --nats take it.
func (c *Cluster) URL() string {
	urls := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		urls[i] = n.URL
	}
	return strings.Join(urls, ",")
}

// Stop ends every node; it runs on cleanup too.
func (c *Cluster) Stop() {
	for _, n := range c.Nodes {
		n.Stop()
	}
}

// Start runs the node's process on its config; it does not wait for
// JetStream (see WaitReady).
func (n *Node) Start() {
	n.t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd != nil {
		n.t.Fatalf("natstest: %s already running", n.Name)
	}
	log, err := os.OpenFile(filepath.Join(n.dir, "nats.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		n.t.Fatalf("natstest: %v", err)
	}
	cmd := exec.Command(n.bin, "-c", n.conf)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		log.Close()
		n.t.Fatalf("natstest: start %s: %v", n.Name, err)
	}
	exited := make(chan struct{})
	// The only Wait of this run: signal and waitReady learn of the exit
	// from exited.
	go func() { _ = cmd.Wait(); close(exited) }()
	n.cmd, n.log, n.exited = cmd, log, exited
}

// WaitReady waits until the node reports JetStream healthy (it has a meta
// leader and is current), failing the test with its log if the process
// exits first or after 30 s.
func (n *Node) WaitReady() {
	n.t.Helper()
	if err := n.waitReady(nil); err != nil {
		n.t.Fatalf("natstest: %v", err)
	}
}

// errPortTaken is a node that exited because one of its ports was bound by
// another process.
var errPortTaken = errors.New("port taken")

// waitReady is WaitReady returning its error, or nil early once stop is
// closed.
func (n *Node) waitReady(stop <-chan struct{}) error {
	n.mu.Lock()
	exited := n.exited
	n.mu.Unlock()
	deadline := time.Now().Add(30 * time.Second)
	hc := &http.Client{Timeout: time.Second}
	for {
		resp, err := hc.Get(n.monitor + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-exited:
			log := n.Log()
			if strings.Contains(log, "address already in use") {
				return fmt.Errorf("%s exited at start: %w\n%s", n.Name, errPortTaken, log)
			}
			return fmt.Errorf("%s exited before it was ready\n%s", n.Name, log)
		case <-stop:
			return nil
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after 30 s (last: %v)\n%s", n.Name, err, n.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop ends the process with SIGTERM (a clean shutdown) and waits for it.
func (n *Node) Stop() { n.signal(syscall.SIGTERM) }

// Kill ends the process with SIGKILL, as a crash would.
func (n *Node) Kill() { n.signal(syscall.SIGKILL) }

func (n *Node) signal(sig syscall.Signal) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return
	}
	_ = n.cmd.Process.Signal(sig)
	select {
	case <-n.exited:
	case <-time.After(15 * time.Second):
		_ = n.cmd.Process.Kill()
		<-n.exited
	}
	n.log.Close()
	n.cmd, n.log, n.exited = nil, nil, nil
}

// Log returns the node's log so far (stdout and stderr of every run).
func (n *Node) Log() string {
	b, err := os.ReadFile(filepath.Join(n.dir, "nats.log"))
	if err != nil {
		return err.Error()
	}
	if len(b) > 8<<10 {
		b = append([]byte("…"), b[len(b)-8<<10:]...)
	}
	return string(bytes.TrimSpace(b))
}

// Binary finds nats-server as the package doc says.
func Binary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("PARLEY_NATS_SERVER"); p != "" {
		return p
	}
	dir, err := os.Getwd()
	if err != nil {
		t.Fatalf("natstest: %v", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			p := filepath.Join(dir, "bin", "nats-server")
			if _, err := os.Stat(p); err != nil {
				t.Fatalf("natstest: no nats-server at %s; run `make bin/nats-server` or set PARLEY_NATS_SERVER", p)
			}
			return p
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("natstest: no nats-server: set PARLEY_NATS_SERVER")
		}
		dir = parent
	}
}

// FreePorts returns n distinct loopback ports that were free a moment ago,
// for processes that must bind them, and bind them again after a restart.
//
// They are chosen at random below the kernel's ephemeral range, where a
// port is never handed out for an outgoing connection or a listen on port
// 0: the many connections and :0 listeners of tests running alongside
// cannot take them between the choice and the bind, or while a node is
// down. Each is checked free by a listen held until all n are found.
func FreePorts(t testing.TB, n int) []int {
	t.Helper()
	lo, hi := fixedRange()
	ports := make([]int, 0, n)
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for tries := 0; len(ports) < n; tries++ {
		if tries > 100*n {
			t.Fatalf("natstest: no %d free ports in %d-%d", n, lo, hi)
		}
		p := lo + rand.IntN(hi-lo)
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		ls = append(ls, l)
		ports = append(ports, p)
	}
	return ports
}

// fixedRange is the span of ports FreePorts picks from: up to the start of
// the ephemeral range, which Linux states in ip_local_port_range.
func fixedRange() (lo, hi int) {
	lo, hi = 10000, 32768
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return lo, hi
	}
	var first, last int
	if _, err := fmt.Sscan(string(b), &first, &last); err != nil {
		return lo, hi
	}
	switch {
	case first > lo+1000:
		hi = first
	case last < 60000:
		// An ephemeral range starting low: pick above it.
		lo, hi = last+1, 65535
	}
	return lo, hi
}
