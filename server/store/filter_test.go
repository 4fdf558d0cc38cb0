package store

import (
	"fmt"
	"strconv"
	"testing"
)

// The filter never says no for a key it was given, and rarely yes for one
// it was not; keys found in the index at Open count as given.
func TestDedupFilter(t *testing.T) {
	f := newDedupFilter()
	for i := range 10_000 {
		f.add(f.hash("u"+strconv.Itoa(i%50), "m"+strconv.Itoa(i)))
	}
	for i := range 10_000 {
		if !f.mayHold(f.hash("u"+strconv.Itoa(i%50), "m"+strconv.Itoa(i))) {
			t.Fatalf("key %d was added and is not held", i)
		}
	}
	yes := 0
	for i := range 100_000 {
		if f.mayHold(f.hash("u"+strconv.Itoa(i%50), "other"+strconv.Itoa(i))) {
			yes++
		}
	}
	if yes > 1000 {
		t.Errorf("%d of 100,000 keys never added may be held; want under 1%%", yes)
	}
	// The hash of (sender, id) is the hash of dedupKey's bytes, which is
	// what Open reads from the index.
	dir := t.TempDir()
	s := open(t, dir)
	appendSync(t, s, Entry{Conv: "c", Seq: 1, Sender: "ali", ClientMsgID: "x1", Data: []byte("a")})
	waitIndexed(t, s)
	s.Close()
	s = open(t, dir)
	defer s.Close()
	if !s.pend.filter.mayHold(s.pend.filter.hash("ali", "x1")) {
		t.Fatal("a key in the index at Open is not in the filter")
	}
}

// Every accepted (sender, id) is found by Dedup while pending, once
// indexed, and after a restart; ids never used are not.
func TestDedupFoundThroughFilter(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	check := func(when string, n int) {
		t.Helper()
		for i := 1; i <= n; i++ {
			rec, ok, err := s.Dedup(fmt.Sprint("u", i%7), fmt.Sprint("id", i))
			if err != nil || !ok || rec.Seq != uint64(i) {
				t.Fatalf("%s: Dedup(id%d) = %+v %v %v", when, i, rec, ok, err)
			}
			if _, ok, _ := s.Dedup(fmt.Sprint("u", i%7), fmt.Sprint("other", i)); ok {
				t.Fatalf("%s: an id never sent was found", when)
			}
		}
	}
	for i := 1; i <= 500; i++ {
		appendSync(t, s, Entry{Conv: "c", Seq: uint64(i), Sender: fmt.Sprint("u", i%7), ClientMsgID: fmt.Sprint("id", i), Data: []byte("x")})
	}
	check("pending or indexed", 500)
	waitIndexed(t, s)
	check("indexed", 500)
	s.Close()
	s = open(t, dir)
	defer s.Close()
	check("after a restart", 500)
}
