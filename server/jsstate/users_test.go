package jsstate

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/parleychat/parley/server/store"
)

func testUsers(t *testing.T, cl *cluster) {
	a, b := cl.pair(t)
	for _, kv := range []interface {
		Status(context.Context) (jetstream.KeyValueStatus, error)
	}{a.users, a.convs, a.memberships, a.receipts, a.blobs, a.meta, a.lastSeen} {
		st, err := kv.Status(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if n := st.Config().Replicas; n != 3 {
			t.Fatalf("bucket %s has %d replicas; want 3 by default", st.Bucket(), n)
		}
	}
	if st, err := a.blobData.Status(context.Background()); err != nil || st.Replicas() != 3 {
		t.Fatalf("object store status %v, %v; want 3 replicas", st, err)
	}
	if _, err := a.User("nobody"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("missing user: %v; want store.ErrNotFound", err)
	}
	// Ids that chat accepts and ids an external issuer might use: all
	// must round-trip and stay distinct.
	for _, id := range []string{"alice", "bob_2", "a-b", "a.b", "a:b", "a=3Ab", "=", "x/y", "Ünïcode", "a b"} {
		u := store.User{ID: id, DisplayName: "user " + id, PasswordHash: []byte("hash-" + id), CreatedAt: time.Now().UTC()}
		if err := a.CreateUser(u); err != nil {
			t.Fatalf("CreateUser(%q): %v", id, err)
		}
		got, err := b.User(id)
		if err != nil || got.ID != id || !bytes.Equal(got.PasswordHash, u.PasswordHash) || !got.CreatedAt.Equal(u.CreatedAt) {
			t.Fatalf("User(%q) on the other node = %+v, %v; want %+v", id, got, err, u)
		}
		if err := b.CreateUser(store.User{ID: id}); !errors.Is(err, store.ErrExists) {
			t.Fatalf("second CreateUser(%q) on the other node: %v; want store.ErrExists", id, err)
		}
	}

	// A user deleted on one node is deleted, and still taken, on the
	// other; a second delete changes nothing.
	created := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	if err := a.CreateUser(store.User{ID: "dora", DisplayName: "Dora", PasswordHash: []byte("hash"), CreatedAt: created}); err != nil {
		t.Fatal(err)
	}
	if err := a.DeleteUser("nobody", time.Now()); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("DeleteUser of a missing user: %v; want store.ErrNotFound", err)
	}
	for i, s := range []*State{a, b} {
		if err := s.DeleteUser("dora", created.Add(time.Duration(i+1)*time.Hour)); err != nil {
			t.Fatalf("DeleteUser on node %d: %v", i, err)
		}
	}
	if u, err := b.User("dora"); err != nil || !u.Deleted() || !u.DeletedAt.Equal(created.Add(time.Hour)) || !u.CreatedAt.Equal(created) || u.PasswordHash != nil || u.DisplayName != "" {
		t.Fatalf("deleted user on the other node = %+v, %v", u, err)
	}
	if err := b.CreateUser(store.User{ID: "dora"}); !errors.Is(err, store.ErrExists) {
		t.Fatalf("CreateUser of a deleted id: %v; want store.ErrExists", err)
	}

	// Last-seen times written on one node are read on the other; an older
	// time written later does not move one back.
	if at, err := b.LastSeen("nobody"); err != nil || !at.IsZero() {
		t.Fatalf("LastSeen of a user never seen = %v, %v; want zero", at, err)
	}
	seen := time.Date(2026, 11, 27, 12, 0, 0, 123456789, time.UTC)
	if err := a.SetLastSeen(map[string]time.Time{"ann": seen, "ben": seen.Add(time.Second)}); err != nil {
		t.Fatal(err)
	}
	if err := b.SetLastSeen(map[string]time.Time{"ann": seen.Add(-time.Hour)}); err != nil {
		t.Fatal(err)
	}
	for user, want := range map[string]time.Time{"ann": seen, "ben": seen.Add(time.Second)} {
		if at, err := b.LastSeen(user); err != nil || !at.Equal(want) {
			t.Fatalf("LastSeen(%s) on the other node = %v, %v; want %v", user, at, err, want)
		}
	}

	// Both nodes register the same names at once: one wins each, the
	// other is told the name is taken, and both then read the winner.
	const n = 30
	var wg sync.WaitGroup
	errs := make([][2]error, n)
	for i := range n {
		for side, s := range []*State{a, b} {
			wg.Go(func() {
				errs[i][side] = s.CreateUser(store.User{ID: fmt.Sprintf("racer%d", i), DisplayName: fmt.Sprint(side)})
			})
		}
	}
	wg.Wait()
	for i, e := range errs {
		won := -1
		for side, err := range e {
			switch {
			case err == nil:
				if won >= 0 {
					t.Fatalf("racer%d: both nodes created the user", i)
				}
				won = side
			case !errors.Is(err, store.ErrExists):
				t.Fatalf("racer%d on node %d: %v; want nil or store.ErrExists", i, side, err)
			}
		}
		if won < 0 {
			t.Fatalf("racer%d: neither node created the user: %v", i, e)
		}
		for _, s := range []*State{a, b} {
			u, err := s.User(fmt.Sprintf("racer%d", i))
			if err != nil || u.DisplayName != fmt.Sprint(won) {
				t.Fatalf("racer%d = %+v, %v; want node %d's user", i, u, err, won)
			}
		}
	}
}

func testSigningKey(t *testing.T, cl *cluster) {
	p := cl.nextPrefix(t)
	// Four nodes on three servers start together.
	states := []*State{cl.open(t, 0, p), cl.open(t, 1, p), cl.open(t, 2, p), cl.open(t, 0, p)}
	keys := make([][]byte, len(states))
	errs := make([]error, len(states))
	var wg sync.WaitGroup
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i, s := range states {
		wg.Go(func() { keys[i], errs[i] = s.SigningKey(ctx) })
	}
	wg.Wait()
	for i := range states {
		if errs[i] != nil {
			t.Fatalf("node %d: %v", i, errs[i])
		}
		if len(keys[i]) != signingKeySize || !bytes.Equal(keys[i], keys[0]) {
			t.Fatalf("node %d got key %x, node 0 %x; want one 32-byte key", i, keys[i], keys[0])
		}
	}
	if bytes.Equal(keys[0], make([]byte, signingKeySize)) {
		t.Fatal("signing key is all zeros")
	}
	// A node that starts later gets the same key.
	late, err := cl.open(t, 2, p).SigningKey(ctx)
	if err != nil || !bytes.Equal(late, keys[0]) {
		t.Fatalf("later node: %x, %v; want %x", late, err, keys[0])
	}
	// Another deployment (prefix) has a key of its own.
	other, err := cl.open(t, 1, cl.nextPrefix(t)).SigningKey(ctx)
	if err != nil || bytes.Equal(other, keys[0]) {
		t.Fatalf("other deployment: %x, %v; want a different key", other, err)
	}
}
