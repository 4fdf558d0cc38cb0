package jsstate

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/parleychat/parley/server/natstest"
	"github.com/parleychat/parley/server/store"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// nats.go's JetStream publisher watches the connection's status
		// and should return when the connection closes; a connection
		// closed while reconnecting (the server-lost test) now and then
		// leaves it waiting for a status that never comes. It belongs to
		// the closed connection, not to this package.
		goleak.IgnoreTopFunction("github.com/nats-io/nats.go/jetstream.(*jetStream).resetPendingAcksOnReconnect"))
}

// cluster is one three-node nats-server cluster shared by a test's
// subtests; each subtest uses buckets of its own (a prefix per subtest).
type cluster struct {
	c      *natstest.Cluster
	prefix atomic.Int64
}

func startCluster(t testing.TB) *cluster {
	t.Helper()
	return &cluster{c: natstest.Start(t, natstest.Options{})}
}

// nextPrefix returns a bucket prefix no other subtest uses.
func (cl *cluster) nextPrefix(t testing.TB) string {
	name := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			return r
		}
		return '_'
	}, t.Name())
	return fmt.Sprintf("t%d_%s", cl.prefix.Add(1), name[max(0, len(name)-24):])
}

// open returns a State on its own connection to nats-server node (the
// others are fallbacks for when that server goes away), as one parleyd
// node would have. Both are closed when t ends.
func (cl *cluster) open(t testing.TB, node int, prefix string, opts ...Option) *State {
	t.Helper()
	urls := []string{cl.c.Nodes[node].URL}
	for i, n := range cl.c.Nodes {
		if i != node {
			urls = append(urls, n.URL)
		}
	}
	nc, err := nats.Connect(strings.Join(urls, ","), nats.DontRandomize(), nats.MaxReconnects(-1),
		nats.ReconnectWait(100*time.Millisecond), nats.Name(fmt.Sprintf("%s-node%d", t.Name(), node)))
	if err != nil {
		t.Fatalf("connect to %s: %v", urls[0], err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := Open(ctx, js, append([]Option{WithPrefix(prefix)}, opts...)...)
	if err != nil {
		t.Fatalf("Open on node %d: %v", node, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// pair opens two States on different servers sharing one prefix: two
// parleyd nodes of one cluster.
func (cl *cluster) pair(t testing.TB) (a, b *State) {
	t.Helper()
	p := cl.nextPrefix(t)
	return cl.open(t, 0, p), cl.open(t, 1, p)
}

// eventually polls cond until it holds or 10 s pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after 10 s: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestCluster(t *testing.T) {
	cl := startCluster(t)
	t.Run("users", func(t *testing.T) { testUsers(t, cl) })
	t.Run("signing key", func(t *testing.T) { testSigningKey(t, cl) })
	t.Run("conversations", func(t *testing.T) { testConversations(t, cl) })
	t.Run("concurrent joins", func(t *testing.T) { testConcurrentJoins(t, cl) })
	t.Run("watch", func(t *testing.T) { testWatch(t, cl) })
	t.Run("receipts", func(t *testing.T) { testReceipts(t, cl) })
	t.Run("concurrent receipts", func(t *testing.T) { testConcurrentReceipts(t, cl) })
	t.Run("blobs", func(t *testing.T) { testBlobs(t, cl) })
	t.Run("blob access", func(t *testing.T) { testBlobAccess(t, cl) })
	t.Run("concurrent uploads", func(t *testing.T) { testConcurrentUploads(t, cl) })
	// Last: it kills a server.
	t.Run("server lost", func(t *testing.T) { testServerLost(t, cl) })
}

// One nats-server without a cluster takes one replica; Open refuses
// options that cannot work.
func TestSingleServer(t *testing.T) {
	cl := &cluster{c: natstest.Start(t, natstest.Options{Nodes: 1})}
	s := cl.open(t, 0, "parley", WithReplicas(1))
	if err := s.CreateUser(store.User{ID: "alice"}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if k, err := s.SigningKey(ctx); err != nil || len(k) != signingKeySize {
		t.Fatalf("SigningKey = %x, %v", k, err)
	}
	// A second node binds the buckets the first created, whatever its
	// own replica setting.
	if _, err := cl.open(t, 0, "parley", WithReplicas(3)).User("alice"); err != nil {
		t.Fatalf("second node: %v", err)
	}

	// Without a server, calls fail within their timeout with
	// ErrUnavailable, and Close does not hang.
	short := cl.open(t, 0, "parley", WithTimeout(time.Second))
	cl.c.Nodes[0].Stop()
	if _, err := short.User("alice"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("User without a server: %v; want ErrUnavailable", err)
	}
	done := make(chan error, 1)
	short.UpdateReceipt(store.ReceiptUpdate{Conv: "room:x", User: "alice", Read: 1}, func(_ store.Receipt, err error) { done <- err })
	if err := <-done; !errors.Is(err, ErrUnavailable) {
		t.Fatalf("UpdateReceipt without a server: %v; want ErrUnavailable", err)
	}
	short.Close()
	if _, err := short.User("alice"); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("User after Close: %v; want store.ErrClosed", err)
	}
	cl.c.Nodes[0].Start()
	cl.c.Nodes[0].WaitReady()

	nc, err := nats.Connect(cl.c.Nodes[0].URL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	for _, opts := range [][]Option{{WithReplicas(0)}, {WithReplicas(6)}, {WithPrefix("a.b")}, {WithPrefix("")}, {WithTimeout(0)}, {WithReceiptWorkers(0, 1)}} {
		if s, err := Open(ctx, js, opts...); err == nil {
			s.Close()
			t.Errorf("Open accepted bad options %d", len(opts))
		}
	}
	if _, err := Open(ctx, nil); err == nil {
		t.Error("Open accepted no JetStream")
	}
}
