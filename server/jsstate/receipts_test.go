package jsstate

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/parleychat/parley/server/store"
)

func updateReceipt(t *testing.T, s *State, u store.ReceiptUpdate) store.Receipt {
	t.Helper()
	type out struct {
		r   store.Receipt
		err error
	}
	ch := make(chan out, 1)
	s.UpdateReceipt(u, func(r store.Receipt, err error) { ch <- out{r, err} })
	o := <-ch
	if o.err != nil {
		t.Fatal(o.err)
	}
	return o.r
}

// The contract of server/store's TestReceiptsOnlyMoveForward, alternating
// nodes.
func testReceipts(t *testing.T, cl *cluster) {
	a, b := cl.pair(t)
	now := time.Now()
	steps := []struct {
		u                   store.ReceiptUpdate
		wantDelivered, want uint64
		changed             bool
	}{
		{store.ReceiptUpdate{Conv: "room:c", User: "bob", Delivered: 5, At: now}, 5, 0, true},
		{store.ReceiptUpdate{Conv: "room:c", User: "bob", Read: 3, At: now}, 5, 3, true},
		{store.ReceiptUpdate{Conv: "room:c", User: "bob", Delivered: 2, Read: 1, At: now}, 5, 3, false},
		{store.ReceiptUpdate{Conv: "room:c", User: "bob", Read: 9, At: now}, 9, 9, true},
		{store.ReceiptUpdate{Conv: "room:c", User: "bob", Read: 9, At: now}, 9, 9, false},
	}
	for i, st := range steps {
		r := updateReceipt(t, []*State{a, b}[i%2], st.u)
		if r.Delivered != st.wantDelivered || r.Read != st.want || r.Changed != st.changed || r.Conv != "room:c" || r.User != "bob" {
			t.Fatalf("step %d: %+v; want delivered %d read %d changed %v", i, r, st.wantDelivered, st.want, st.changed)
		}
	}
	updateReceipt(t, a, store.ReceiptUpdate{Conv: "room:c", User: "alice", Read: 1, At: now})
	updateReceipt(t, b, store.ReceiptUpdate{Conv: "room:cc", User: "zed", Read: 1, At: now})
	updateReceipt(t, b, store.ReceiptUpdate{Conv: "room:c:x", User: "yan", Read: 1, At: now})

	rs, err := b.Receipts("room:c")
	if err != nil || len(rs) != 2 || rs[0].User != "alice" || rs[1].User != "bob" || rs[1].Read != 9 || rs[1].Conv != "room:c" {
		t.Fatalf("Receipts = %+v, %v; want alice's and bob's only", rs, err)
	}
	if !rs[1].UpdatedAt.Equal(now) {
		t.Fatalf("UpdatedAt = %v; want %v", rs[1].UpdatedAt, now)
	}
	if r, err := a.Receipt("room:c", "nobody"); err != nil || r.Read != 0 || r.Delivered != 0 || r.User != "nobody" {
		t.Fatalf("unknown receipt = %+v, %v", r, err)
	}
	if rs, err := a.Receipts("room:none"); err != nil || len(rs) != 0 {
		t.Fatalf("Receipts of a conversation without any = %+v, %v", rs, err)
	}

	c := cl.open(t, 2, cl.nextPrefix(t))
	c.Close()
	done := make(chan error, 1)
	c.UpdateReceipt(store.ReceiptUpdate{Conv: "room:c", User: "bob", Read: 1}, func(_ store.Receipt, err error) { done <- err })
	if err := <-done; !errors.Is(err, store.ErrClosed) {
		t.Fatalf("UpdateReceipt after Close: %v; want store.ErrClosed", err)
	}
}

// Both nodes move the same users' receipts at once, out of order: the
// positions only grow, end at the highest asked for, and Changed is true
// exactly for the updates that moved them.
func testConcurrentReceipts(t *testing.T, cl *cluster) {
	a, b := cl.pair(t)
	const conv, perUser = "group:0123456789abcdef01234567", 120
	users := []string{"ann", "ben", "cat"}
	type result struct {
		u   store.ReceiptUpdate
		r   store.Receipt
		err error
	}
	var mu sync.Mutex
	var results []result
	var wg sync.WaitGroup
	rng := rand.New(rand.NewPCG(1, 2))
	for _, user := range users {
		// Distinct read positions, so the highest is asked for once.
		reads := rng.Perm(perUser)
		for i, read := range reads {
			u := store.ReceiptUpdate{Conv: conv, User: user, Read: uint64(read + 1), Delivered: uint64(read + 1 + rng.IntN(5)), At: time.Now()}
			wg.Add(1)
			[]*State{a, b}[i%2].UpdateReceipt(u, func(r store.Receipt, err error) {
				mu.Lock()
				results = append(results, result{u, r, err})
				mu.Unlock()
				wg.Done()
			})
		}
	}
	wg.Wait()
	for _, user := range users {
		var maxRead, maxDelivered uint64
		for _, res := range results {
			if res.u.User == user {
				maxRead, maxDelivered = max(maxRead, res.u.Read), max(maxDelivered, res.u.Delivered)
			}
		}
		var changed []store.Receipt
		for _, res := range results {
			if res.u.User != user {
				continue
			}
			if res.err != nil {
				t.Fatal(res.err)
			}
			if res.r.Read < res.u.Read || res.r.Delivered < res.u.Delivered || res.r.Read > res.r.Delivered {
				t.Fatalf("%s: update %+v answered %+v: behind what was asked, or read past delivered", user, res.u, res.r)
			}
			if res.r.Changed {
				changed = append(changed, res.r)
				if res.r.Read != res.u.Read && res.r.Delivered != res.u.Delivered {
					t.Fatalf("%s: update %+v answered changed %+v, but set neither position", user, res.u, res.r)
				}
			} else if res.u.Read == maxRead {
				t.Fatalf("%s: the only update to read %d answered unchanged", user, maxRead)
			}
		}
		// Every change moved the receipt forward from the one before: in
		// the order they were stored, the changed receipts strictly grow.
		slices.SortFunc(changed, func(x, y store.Receipt) int {
			return int(x.Read+x.Delivered) - int(y.Read+y.Delivered)
		})
		for i := 1; i < len(changed); i++ {
			p, c := changed[i-1], changed[i]
			if c.Read < p.Read || c.Delivered < p.Delivered || c.Read == p.Read && c.Delivered == p.Delivered {
				t.Fatalf("%s: two changes that are not one after the other: %+v and %+v", user, p, c)
			}
		}
		for _, s := range []*State{a, b} {
			r, err := s.Receipt(conv, user)
			if err != nil || r.Read != maxRead || r.Delivered != maxDelivered {
				t.Fatalf("%s: stored %+v, %v; want read %d delivered %d", user, r, err, maxRead, maxDelivered)
			}
		}
		t.Logf("%s: %d of %d updates moved the receipt", user, len(changed), perUser)
	}
	if rs, err := b.Receipts(conv); err != nil || fmt.Sprint(len(rs)) != fmt.Sprint(len(users)) {
		t.Fatalf("Receipts = %+v, %v", rs, err)
	}
}
