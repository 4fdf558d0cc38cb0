package jsstate

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/parleychat/parley/server/store"
)

// The contract of server/store's TestConversationsAndUsers, with the two
// halves on different nodes.
func testConversations(t *testing.T, cl *cluster) {
	a, b := cl.pair(t)
	if err := a.CreateConversation(store.Conversation{ID: "group:x", Kind: store.KindGroup, Owner: "alice", Members: []string{"carol", "alice", "alice"}}); err != nil {
		t.Fatal(err)
	}
	if err := b.CreateConversation(store.Conversation{ID: "group:x", Kind: store.KindGroup}); !errors.Is(err, store.ErrExists) {
		t.Fatalf("duplicate conversation on the other node: %v; want store.ErrExists", err)
	}
	c, err := b.UpdateConversation("group:x", func(c *store.Conversation) error {
		c.Members = append(c.Members, "bob")
		return nil
	})
	if err != nil || fmt.Sprint(c.Members) != "[alice bob carol]" {
		t.Fatalf("after add: %v %v", c.Members, err)
	}
	if _, err := a.UpdateConversation("group:x", func(c *store.Conversation) error {
		c.Members = []string{"alice", "bob"}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, s := range []*State{a, b} {
		for user, want := range map[string]string{"alice": "[group:x]", "bob": "[group:x]", "carol": "[]", "nobody": "[]"} {
			ids, err := s.UserConversations(user)
			if err != nil || fmt.Sprint(ids) != want {
				t.Errorf("UserConversations(%s) = %v %v, want %s", user, ids, err, want)
			}
		}
	}
	// An update that changes nothing writes nothing.
	before, err := a.convs.Get(context.Background(), convKey("group:x"))
	if err != nil {
		t.Fatal(err)
	}
	if c, err := b.UpdateConversation("group:x", func(c *store.Conversation) error {
		c.Members = append(c.Members, "bob") // already a member
		return nil
	}); err != nil || fmt.Sprint(c.Members) != "[alice bob]" {
		t.Fatalf("no-op update = %v, %v", c.Members, err)
	}
	if after, err := a.convs.Get(context.Background(), convKey("group:x")); err != nil || after.Revision() != before.Revision() {
		t.Fatalf("no-op update wrote revision %d (was %d): %v", after.Revision(), before.Revision(), err)
	}
	boom := errors.New("boom")
	if _, err := b.UpdateConversation("group:x", func(c *store.Conversation) error { c.Members = nil; return boom }); err != boom {
		t.Fatalf("fn error not returned as is: %v", err)
	}
	if c, _ := a.Conversation("group:x"); len(c.Members) != 2 {
		t.Fatalf("aborted update was stored: %v", c.Members)
	}
	if _, err := a.Conversation("group:none"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("missing conversation: %v; want store.ErrNotFound", err)
	}
	if _, err := a.UpdateConversation("group:none", func(*store.Conversation) error { return nil }); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("update of a missing conversation: %v; want store.ErrNotFound", err)
	}

	// Ids of every kind, and one id that is a prefix of another's key,
	// stay apart in the index.
	ids := []string{"dm:alice:bob", "room:lobby", "room:lobby:x", "group:0123456789abcdef01234567"}
	for _, id := range ids {
		if err := a.CreateConversation(store.Conversation{ID: id, Kind: store.KindRoom, Members: []string{"dave"}, CreatedAt: time.Now().UTC()}); err != nil {
			t.Fatal(err)
		}
	}
	got, err := b.UserConversations("dave")
	if want := slices.Sorted(slices.Values(ids)); err != nil || !slices.Equal(got, want) {
		t.Fatalf("UserConversations(dave) = %v, %v; want %v", got, err, want)
	}
	for _, id := range ids {
		c, err := b.Conversation(id)
		if err != nil || c.ID != id {
			t.Fatalf("Conversation(%q) = %+v, %v", id, c, err)
		}
	}

	// An index entry the record does not confirm (a node died between
	// the two writes) is not listed, and is cleaned up.
	if _, err := a.memberships.Put(context.Background(), membershipKey("dave", "group:x"), []byte("group:x")); err != nil {
		t.Fatal(err)
	}
	// The clean-up is best effort ("the next reader tries again"), and a
	// replica may answer the check a moment before it applies the delete:
	// each read must leave the entry out, and one soon finds it gone.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if got, err := b.UserConversations("dave"); err != nil || slices.Contains(got, "group:x") {
			t.Fatalf("UserConversations(dave) with a stale entry = %v, %v", got, err)
		}
		_, err := a.memberships.Get(context.Background(), membershipKey("dave", "group:x"))
		if missing(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stale entry still there: %v", err)
		}
	}
}

// Members join and leave one room from two nodes at once: every change is
// kept, and the per-user index agrees with the members on both nodes.
func testConcurrentJoins(t *testing.T, cl *cluster) {
	tests := []struct {
		name            string
		joiners, stayer int // joiners join; of the initial members, stayer stay and the rest leave
		leavers         int
	}{
		{name: "50 joins", joiners: 50, stayer: 1},
		{name: "30 joins and 10 leaves", joiners: 30, stayer: 2, leavers: 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := cl.pair(t)
			const room = "room:busy"
			var initial []string
			for i := range tt.stayer + tt.leavers {
				initial = append(initial, fmt.Sprintf("old%02d", i))
			}
			if err := a.CreateConversation(store.Conversation{ID: room, Kind: store.KindRoom, Owner: initial[0], Members: initial}); err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			errs := make(chan error, tt.joiners+tt.leavers)
			runs := make(chan int, tt.joiners+tt.leavers)
			for i := range tt.joiners {
				s := []*State{a, b}[i%2]
				wg.Go(func() {
					n := 0
					_, err := s.UpdateConversation(room, func(c *store.Conversation) error {
						n++
						c.Members = append(c.Members, fmt.Sprintf("new%02d", i))
						return nil
					})
					errs <- err
					runs <- n
				})
			}
			for i := range tt.leavers {
				s := []*State{b, a}[i%2]
				wg.Go(func() {
					me := initial[tt.stayer+i]
					_, err := s.UpdateConversation(room, func(c *store.Conversation) error {
						c.Members = slices.DeleteFunc(c.Members, func(m string) bool { return m == me })
						return nil
					})
					errs <- err
				})
			}
			wg.Wait()
			close(errs)
			close(runs)
			for err := range errs {
				if err != nil {
					t.Fatal(err)
				}
			}
			retried := 0
			for n := range runs {
				if n > 1 {
					retried++
				}
			}
			t.Logf("%d of %d joins ran fn more than once", retried, tt.joiners)

			want := slices.Clone(initial[:tt.stayer])
			for i := range tt.joiners {
				want = append(want, fmt.Sprintf("new%02d", i))
			}
			slices.Sort(want)
			for _, s := range []*State{a, b} {
				c, err := s.Conversation(room)
				if err != nil || !slices.Equal(c.Members, want) {
					t.Fatalf("members = %v, %v; want %v", c.Members, err, want)
				}
			}
			for i, u := range append(slices.Clone(want), initial[tt.stayer:]...) {
				s := []*State{a, b}[i%2]
				ids, err := s.UserConversations(u)
				wantIDs := "[]"
				if slices.Contains(want, u) {
					wantIDs = "[" + room + "]"
				}
				if err != nil || fmt.Sprint(ids) != wantIDs {
					t.Fatalf("UserConversations(%s) = %v, %v; want %s", u, ids, err, wantIDs)
				}
			}
			// The index holds exactly the members: no leftovers to clean.
			entries, err := list(context.Background(), a.memberships, ">")
			if err != nil || len(entries) != len(want) {
				t.Fatalf("index has %d entries, %v; want %d", len(entries), err, len(want))
			}
		})
	}
}

// A change made on one node is seen by a watcher on the other.
func testWatch(t *testing.T, cl *cluster) {
	a, b := cl.pair(t)
	var mu sync.Mutex
	var seen []string
	stop, err := b.WatchConversations(context.Background(), func(id string) {
		mu.Lock()
		seen = append(seen, id)
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	saw := func(want ...string) func() bool {
		return func() bool {
			mu.Lock()
			defer mu.Unlock()
			return slices.Equal(seen, want)
		}
	}
	if err := a.CreateConversation(store.Conversation{ID: "room:watched", Kind: store.KindRoom, Members: []string{"alice"}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the watcher on node B sees the room created on node A", saw("room:watched"))
	if _, err := a.UpdateConversation("room:watched", func(c *store.Conversation) error {
		c.Members = append(c.Members, "bob")
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := a.CreateConversation(store.Conversation{ID: "dm:alice:bob", Kind: store.KindDirect, Members: []string{"alice", "bob"}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the watcher sees the join and the direct conversation, in order", saw("room:watched", "room:watched", "dm:alice:bob"))
	stop()
	stop() // a second stop is harmless
	if _, err := a.UpdateConversation("room:watched", func(c *store.Conversation) error {
		c.Title = "after stop"
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if !saw("room:watched", "room:watched", "dm:alice:bob")() {
		t.Fatalf("fn called after stop: %v", seen)
	}

	// Close ends a watcher that nobody stopped.
	c := cl.open(t, 2, cl.nextPrefix(t))
	if _, err := c.WatchConversations(context.Background(), func(string) {}); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if _, err := c.WatchConversations(context.Background(), func(string) {}); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("watch after Close: %v; want store.ErrClosed", err)
	}
}
