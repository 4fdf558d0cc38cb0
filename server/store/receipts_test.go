package store

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

func updateReceipt(t *testing.T, s *Store, u ReceiptUpdate) Receipt {
	t.Helper()
	type out struct {
		r   Receipt
		err error
	}
	ch := make(chan out, 1)
	s.UpdateReceipt(u, func(r Receipt, err error) { ch <- out{r, err} })
	o := <-ch
	if o.err != nil {
		t.Fatal(o.err)
	}
	return o.r
}

func TestReceiptsOnlyMoveForward(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	now := time.Now()
	steps := []struct {
		u                   ReceiptUpdate
		wantDelivered, want uint64
	}{
		{ReceiptUpdate{Conv: "c", User: "bob", Delivered: 5, At: now}, 5, 0},
		{ReceiptUpdate{Conv: "c", User: "bob", Read: 3, At: now}, 5, 3},
		{ReceiptUpdate{Conv: "c", User: "bob", Delivered: 2, Read: 1, At: now}, 5, 3},
		{ReceiptUpdate{Conv: "c", User: "bob", Read: 9, At: now}, 9, 9},
	}
	for i, st := range steps {
		r := updateReceipt(t, s, st.u)
		if r.Delivered != st.wantDelivered || r.Read != st.want {
			t.Fatalf("step %d: delivered %d read %d, want %d %d", i, r.Delivered, r.Read, st.wantDelivered, st.want)
		}
	}
	updateReceipt(t, s, ReceiptUpdate{Conv: "c", User: "alice", Read: 1, At: now})
	updateReceipt(t, s, ReceiptUpdate{Conv: "cc", User: "zed", Read: 1, At: now})
	s.Close()

	s = open(t, dir)
	defer s.Close()
	rs, err := s.Receipts("c")
	if err != nil || len(rs) != 2 || rs[0].User != "alice" || rs[1].User != "bob" || rs[1].Read != 9 {
		t.Fatalf("Receipts after reopen = %+v, %v", rs, err)
	}
	if r, _ := s.Receipt("c", "nobody"); r.Read != 0 || r.Delivered != 0 {
		t.Fatalf("unknown receipt = %+v", r)
	}
}

func TestRewriteTarget(t *testing.T) {
	rewrite := func(stored, event []byte) ([]byte, error) {
		if string(event) == "noop" {
			return nil, nil
		}
		if strings.HasSuffix(string(stored), "+"+string(event)) {
			return nil, nil // already applied: idempotent
		}
		return append(stored, "+"+string(event)...), nil
	}
	for _, reopen := range []bool{false, true} {
		t.Run(fmt.Sprintf("reopen=%v", reopen), func(t *testing.T) {
			dir := t.TempDir()
			s := open(t, dir, WithRewrite(rewrite))
			defer func() { s.Close() }()
			appendSync(t, s, Entry{Conv: "c", Seq: 1, Data: []byte("original")})
			appendSync(t, s, Entry{Conv: "c", Seq: 2, Data: []byte("edited"), Target: 1})
			appendSync(t, s, Entry{Conv: "c", Seq: 3, Data: []byte("noop"), Target: 1})
			appendSync(t, s, Entry{Conv: "c", Seq: 4, Data: []byte("gone"), Target: 9}) // no such message
			if reopen {
				s.Close()
				s = open(t, dir, WithRewrite(rewrite))
			}
			rec, ok, err := s.Get("c", 1)
			if err != nil || !ok || string(rec.Data) != "original+edited" {
				t.Fatalf("rewritten message = %q %v %v", rec.Data, ok, err)
			}
			n, err := s.Count("c", 1, 10, func(d []byte) bool { return string(d) != "noop" })
			if err != nil || n != 2 {
				t.Fatalf("Count = %d, %v; want 2", n, err)
			}
		})
	}
}
