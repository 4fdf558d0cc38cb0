package jsstate

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/parleychat/parley/server/store"
)

// With three replicas, losing one server (the one node A talks to) loses
// nothing and stops nothing: both nodes read what was written before and
// keep writing.
func testServerLost(t *testing.T, cl *cluster) {
	a, b := cl.pair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	key, err := a.SigningKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.CreateUser(store.User{ID: "alice"}); err != nil {
		t.Fatal(err)
	}
	if err := a.CreateConversation(store.Conversation{ID: "room:r3", Kind: store.KindRoom, Members: []string{"alice"}}); err != nil {
		t.Fatal(err)
	}
	updateReceipt(t, a, store.ReceiptUpdate{Conv: "room:r3", User: "alice", Read: 1, At: time.Now()})
	data := randomBytes(segmentSize + 10)
	id, _ := putBlob(t, a, data, "alice", store.Label{Name: "before"})

	var mu sync.Mutex
	changed := map[string]int{}
	stop, err := a.WatchConversations(ctx, func(id string) {
		mu.Lock()
		changed[id]++
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer stop()

	// The server stays down: this is the cluster's last subtest, and the
	// cluster stops when the test ends.
	cl.c.Nodes[0].Kill()

	for i, s := range []*State{a, b} {
		if k, err := s.SigningKey(ctx); err != nil || !bytes.Equal(k, key) {
			t.Fatalf("node %d: signing key %x, %v; want %x", i, k, err, key)
		}
		if _, err := s.User("alice"); err != nil {
			t.Fatalf("node %d: %v", i, err)
		}
		if r, err := s.Receipt("room:r3", "alice"); err != nil || r.Read < 1 {
			t.Fatalf("node %d: receipt %+v, %v", i, r, err)
		}
		if got := readAll(t, s, id, len(data), segmentChunks); !bytes.Equal(got, data) {
			t.Fatalf("node %d: blob read back differs", i)
		}
		user := fmt.Sprintf("after%d", i)
		if err := s.CreateUser(store.User{ID: user}); err != nil {
			t.Fatalf("node %d: create user: %v", i, err)
		}
		if _, err := s.UpdateConversation("room:r3", func(c *store.Conversation) error {
			c.Members = append(c.Members, user)
			return nil
		}); err != nil {
			t.Fatalf("node %d: join: %v", i, err)
		}
		if r := updateReceipt(t, s, store.ReceiptUpdate{Conv: "room:r3", User: "alice", Read: uint64(2 + i), At: time.Now()}); !r.Changed || r.Read != uint64(2+i) {
			t.Fatalf("node %d: receipt update %+v", i, r)
		}
		if _, created := putBlob(t, s, randomBytes(1000+i), user, store.Label{Name: "after"}); !created {
			t.Fatalf("node %d: new blob not created", i)
		}
	}
	// Node A's watcher, whose server died under it, reports the room
	// changed (once or twice: changes that pile up while it recovers are
	// reported once).
	eventually(t, "node A's watcher sees the joins made after the server was lost", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return changed["room:r3"] >= 1
	})
	c, err := b.Conversation("room:r3")
	if want := []string{"after0", "after1", "alice"}; err != nil || !slices.Equal(c.Members, want) {
		t.Fatalf("members = %v, %v; want %v", c.Members, err, want)
	}
	if ids, err := a.UserConversations("after1"); err != nil || !slices.Equal(ids, []string{"room:r3"}) {
		t.Fatalf("UserConversations(after1) = %v, %v", ids, err)
	}
}
