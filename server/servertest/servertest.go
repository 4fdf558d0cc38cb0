// Package servertest starts real Parley nodes on loopback ports for tests of
// other packages (the Go client, the CLI, load tools): one line to start,
// stopped when the test ends.
package servertest

import (
	"context"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/parleychat/parley/server"
)

// SigningKey is the fixed HS256 key of test nodes, so tokens survive a
// restart on the same data dir.
var SigningKey = []byte("servertest-signing-key-0123456789")

// Node is a running server.
type Node struct {
	*server.Server
	// Addr is host:port of the one port (gRPC, grpc-web, HTTP).
	Addr string
	// Dir is the data dir; pass it to Start again to restart on it.
	Dir string
	t   testing.TB
}

// Start runs a node on dir (a new temp dir when empty) on a free loopback
// port. adjust may change the config. The node stops when the test ends.
func Start(t testing.TB, dir string, adjust ...func(*server.Config)) *Node {
	t.Helper()
	return StartAt(t, "127.0.0.1:0", dir, adjust...)
}

// StartAt is Start on a given address, e.g. to restart a node on the port
// its clients already know.
func StartAt(t testing.TB, addr, dir string, adjust ...func(*server.Config)) *Node {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	cfg := server.Config{
		Addr:       addr,
		DataDir:    dir,
		SigningKey: SigningKey,
		BcryptCost: bcrypt.MinCost,
		Logger:     slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	for _, f := range adjust {
		f(&cfg)
	}
	s, err := server.New(cfg)
	if err != nil {
		t.Fatalf("servertest: %v", err)
	}
	var l net.Listener
	for i := 0; ; i++ {
		// A restarted node may find its old port in TIME_WAIT for a moment.
		if l, err = net.Listen("tcp", cfg.Addr); err == nil || i == 50 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		s.Shutdown(context.Background())
		t.Fatalf("servertest: listen on %s: %v", cfg.Addr, err)
	}
	s.Serve(l)
	n := &Node{Server: s, Addr: l.Addr().String(), Dir: dir, t: t}
	t.Cleanup(n.Stop)
	return n
}

// Stop shuts the node down gracefully; it is safe to call more than once.
func (n *Node) Stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.Shutdown(ctx); err != nil {
		n.t.Errorf("servertest: shutdown: %v", err)
	}
}

// Restart stops the node and starts a new one on the same port and data dir.
func (n *Node) Restart(adjust ...func(*server.Config)) *Node {
	n.t.Helper()
	n.Stop()
	return StartAt(n.t, n.Addr, n.Dir, adjust...)
}
