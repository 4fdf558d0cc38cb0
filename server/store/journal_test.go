package store

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// crash stops the store's goroutines and closes its files without marking
// them clean, as a killed process would leave them.
func crash(s *Store) {
	s.mu.Lock()
	s.closed = true
	close(s.appends)
	close(s.jobs)
	s.mu.Unlock()
	<-s.jdone
	<-s.done
	s.jdb.Close()
	s.db.Close()
}

// holdWriter keeps the writer busy in a metadata update until the returned
// func is called, so that appends stay journaled and unindexed.
func holdWriter(t *testing.T, s *Store) (release func()) {
	t.Helper()
	started, hold := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- s.update(func(*bolt.Tx) error { close(started); <-hold; return nil }) }()
	<-started
	return func() {
		close(hold)
		if err := <-done; err != nil {
			t.Errorf("held update: %v", err)
		}
	}
}

func waitIndexed(t *testing.T, s *Store) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for s.pend.size() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d messages still not indexed", s.pend.size())
		}
		time.Sleep(time.Millisecond)
	}
}

func seqs(recs []Record) []uint64 {
	out := make([]uint64, len(recs))
	for i, r := range recs {
		out[i] = r.Seq
	}
	return out
}

func span(from, to uint64) []uint64 {
	var out []uint64
	for i := from; i <= to; i++ {
		out = append(out, i)
	}
	return out
}

// Every read sees an acknowledged append at once, whether it is still only
// in the journal or already indexed, and pages across the boundary.
func TestReadsMergeJournaledMessages(t *testing.T) {
	s := open(t, t.TempDir(), WithRewrite(func(stored, event []byte) ([]byte, error) {
		return []byte("edited:" + string(event)), nil
	}))
	defer s.Close()
	for i := uint64(1); i <= 20; i++ {
		appendSync(t, s, Entry{Conv: "c", Seq: i, Sender: "u", ClientMsgID: fmt.Sprint("m", i), Data: []byte(fmt.Sprint(i))})
	}
	waitIndexed(t, s)
	release := holdWriter(t, s)
	for i := uint64(21); i <= 40; i++ {
		e := Entry{Conv: "c", Seq: i, Sender: "u", ClientMsgID: fmt.Sprint("m", i), Data: []byte(fmt.Sprint(i))}
		if i == 40 {
			e.Target = 5 // an edit of an indexed message
		}
		if i == 39 {
			e.Target = 30 // an edit of a journaled one
		}
		appendSync(t, s, e)
	}
	check := func(t *testing.T) {
		tests := []struct {
			name     string
			read     func() ([]Record, bool, error)
			want     []uint64
			wantMore bool
		}{
			{"range across", func() ([]Record, bool, error) { return s.Range("c", 15, 0, 10) }, span(16, 25), true},
			{"range journaled", func() ([]Record, bool, error) { return s.Range("c", 30, 0, 100) }, span(31, 40), false},
			{"range bounded", func() ([]Record, bool, error) { return s.Range("c", 18, 22, 100) }, span(19, 22), false},
			{"newest page", func() ([]Record, bool, error) { return s.Before("c", 0, 10) }, span(31, 40), true},
			{"before across", func() ([]Record, bool, error) { return s.Before("c", 25, 10) }, span(15, 24), true},
			{"oldest page", func() ([]Record, bool, error) { return s.Before("c", 4, 10) }, span(1, 3), false},
		}
		for _, tt := range tests {
			recs, more, err := tt.read()
			if err != nil || !slices.Equal(seqs(recs), tt.want) || more != tt.wantMore {
				t.Errorf("%s: %v more=%v err=%v, want %v more=%v", tt.name, seqs(recs), more, err, tt.want, tt.wantMore)
			}
		}
		for _, g := range []struct {
			seq  uint64
			want string
		}{{5, "edited:40"}, {30, "edited:39"}, {31, "31"}, {6, "6"}} {
			if rec, ok, err := s.Get("c", g.seq); err != nil || !ok || string(rec.Data) != g.want {
				t.Errorf("Get(%d) = %q %v %v, want %q", g.seq, rec.Data, ok, err, g.want)
			}
		}
		if h, err := s.Head("c"); h != 40 || err != nil {
			t.Errorf("Head = %d, %v", h, err)
		}
		if rec, ok, err := s.Last("c"); !ok || err != nil || rec.Seq != 40 {
			t.Errorf("Last = %d %v %v", rec.Seq, ok, err)
		}
		if n, err := s.Count("c", 10, 100, func([]byte) bool { return true }); n != 30 || err != nil {
			t.Errorf("Count after 10 = %d, %v; want 30", n, err)
		}
		if n, err := s.Count("c", 0, 25, func([]byte) bool { return true }); n != 25 || err != nil {
			t.Errorf("Count capped = %d, %v; want 25", n, err)
		}
		for _, id := range []string{"m3", "m33"} {
			if rec, ok, err := s.Dedup("u", id); !ok || err != nil || fmt.Sprint("m", rec.Seq) != id {
				t.Errorf("Dedup(%s) = %+v %v %v", id, rec, ok, err)
			}
		}
	}
	t.Run("journaled", func(t *testing.T) {
		if n := s.pend.size(); n != 20 {
			t.Fatalf("%d messages pending, want 20 (the writer is held)", n)
		}
		check(t)
	})
	release()
	waitIndexed(t, s)
	t.Run("indexed", check)
}

// What a crash leaves in the journal is indexed by the next Open, edits and
// dedup keys included, and the journal is emptied.
func TestJournalReplayedOnOpen(t *testing.T) {
	rewrite := func(stored, event []byte) ([]byte, error) {
		if strings.HasSuffix(string(stored), "+"+string(event)) {
			return nil, nil // idempotent, as RewriteFunc must be
		}
		return []byte(string(stored) + "+" + string(event)), nil
	}
	s := open(t, t.TempDir(), WithRewrite(rewrite))
	appendSync(t, s, Entry{Conv: "c", Seq: 1, Data: []byte("one")})
	waitIndexed(t, s)
	release := holdWriter(t, s)
	appendSync(t, s, Entry{Conv: "c", Seq: 2, Sender: "u", ClientMsgID: "x", Data: []byte("two")})
	appendSync(t, s, Entry{Conv: "c", Seq: 3, Data: []byte("ed"), Target: 1})
	appendSync(t, s, Entry{Conv: "d", Seq: 1, Data: []byte("d1")})
	// The process dies with three messages only in the journal: the
	// files as they are now are what the next Open finds.
	dir := t.TempDir()
	copyFiles(t, s, dir)
	if n := s.pend.size(); n != 3 {
		t.Fatalf("%d messages pending when the files were copied, want 3", n)
	}
	release()
	s.Close()

	s = open(t, dir, WithRewrite(rewrite))
	defer s.Close()
	if !s.Unclean() {
		t.Error("the crash was not reported")
	}
	if rec, ok, _ := s.Get("c", 1); !ok || string(rec.Data) != "one+ed" {
		t.Errorf("edited message = %q, %v", rec.Data, ok)
	}
	if h, _ := s.Head("c"); h != 3 {
		t.Errorf("head of c = %d, want 3", h)
	}
	if h, _ := s.Head("d"); h != 1 {
		t.Errorf("head of d = %d, want 1", h)
	}
	if rec, ok, _ := s.Dedup("u", "x"); !ok || rec.Seq != 2 {
		t.Errorf("dedup after replay = %+v %v", rec, ok)
	}
	if n := s.pend.size(); n != 0 {
		t.Errorf("%d messages pending after replay", n)
	}
	var left int
	s.jdb.View(func(tx *bolt.Tx) error { left = tx.Bucket(bucketBatches).Stats().KeyN; return nil })
	if left != 0 {
		t.Errorf("journal holds %d batches after replay", left)
	}
}

// copyFiles copies the store's two files into dir as they are on disk now:
// what a kill at this moment would leave.
func copyFiles(t *testing.T, s *Store, dir string) {
	t.Helper()
	for _, db := range []*bolt.DB{s.db, s.jdb} {
		b, err := os.ReadFile(db.Path())
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(db.Path())), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// A batch decodes to the entries it was made of, with consecutive journal
// ids ending at the key's.
func TestBatchRoundTrip(t *testing.T) {
	long := strings.Repeat("x", 300) // a length that takes two varint bytes
	entries := []Entry{
		{Conv: "room:a", Seq: 1, Sender: "ali", ClientMsgID: "m1", Data: []byte("hello")},
		{Conv: "dm:ali:bob", Seq: 7, Target: 3, Sender: "bob", Data: []byte(long)},
		{Conv: "room:a", Seq: 2},
	}
	var batch []job
	for i := range entries {
		batch = append(batch, job{entry: &entries[i]})
	}
	var buf []byte
	for range 2 { // the buffer is reused between commits
		buf = encodeBatch(buf, batch)
		got, err := decodeBatch(buf, 12)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(entries) {
			t.Fatalf("%d entries, want %d", len(got), len(entries))
		}
		for i, j := range got {
			if j.jid != uint64(10+i) {
				t.Errorf("entry %d: journal id %d, want %d", i, j.jid, 10+i)
			}
			w := entries[i]
			if j.e.Conv != w.Conv || j.e.Seq != w.Seq || j.e.Target != w.Target || j.e.Sender != w.Sender ||
				j.e.ClientMsgID != w.ClientMsgID || string(j.e.Data) != string(w.Data) {
				t.Errorf("entry %d = %+v, want %+v", i, j.e, w)
			}
		}
	}
	for _, bad := range [][]byte{nil, {0}, {3, 1, 1}, append(slices.Clone(buf), 0), buf[:len(buf)-1]} {
		if _, err := decodeBatch(bad, 12); err == nil {
			t.Errorf("decodeBatch(%x) took a malformed batch", bad)
		}
	}
	if _, err := decodeBatch(buf, 2); err == nil {
		t.Error("a batch of 3 ending at journal id 2 was taken")
	}
}

// FuzzDecodeBatch: whatever a damaged journal file holds, decoding it
// returns entries or an error, never a panic, and what decodes encodes back
// to the same bytes.
func FuzzDecodeBatch(f *testing.F) {
	e := Entry{Conv: "room:a", Seq: 1, Sender: "ali", ClientMsgID: "m1", Data: []byte("hello")}
	f.Add(encodeBatch(nil, []job{{entry: &e}}), uint64(1))
	f.Add([]byte{2, 0, 0}, uint64(5))
	f.Fuzz(func(t *testing.T, b []byte, last uint64) {
		got, err := decodeBatch(b, last)
		if err != nil {
			return
		}
		batch := make([]job, len(got))
		for i := range got {
			batch[i] = job{entry: &got[i].e}
		}
		// Varints have more than one form, so compare what the
		// re-encoding decodes to, not the bytes.
		again, err := decodeBatch(encodeBatch(nil, batch), last)
		if err != nil {
			t.Fatalf("re-encoded batch does not decode: %v", err)
		}
		for i := range got {
			if fmt.Sprint(again[i]) != fmt.Sprint(got[i]) {
				t.Fatalf("entry %d: %v, then %v", i, got[i], again[i])
			}
		}
	})
}

// A data dir whose journal was written one message per key (as earlier
// versions did) has those messages indexed by Open, and the old bucket
// goes.
func TestOldJournalReplayed(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	appendSync(t, s, Entry{Conv: "c", Seq: 1, Data: []byte("one")})
	s.Close()
	jdb, err := bolt.Open(filepath.Join(dir, JournalFileName), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = jdb.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketJournal)
		if err != nil {
			return err
		}
		for i, e := range []Entry{
			{Conv: "c", Seq: 2, Sender: "u", ClientMsgID: "x", Data: []byte("two")},
			{Conv: "c", Seq: 3, Data: []byte("three")},
		} {
			if err := b.Put(jidKey(uint64(100+i)), appendEntry(nil, &e)); err != nil {
				return err
			}
		}
		return nil
	})
	jdb.Close()
	if err != nil {
		t.Fatal(err)
	}

	s = open(t, dir)
	defer s.Close()
	if h, _ := s.Head("c"); h != 3 {
		t.Errorf("head of c = %d, want 3", h)
	}
	if rec, ok, _ := s.Dedup("u", "x"); !ok || rec.Seq != 2 {
		t.Errorf("dedup after replay = %+v %v", rec, ok)
	}
	appendSync(t, s, Entry{Conv: "c", Seq: 4, Data: []byte("four")})
	s.jdb.View(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketJournal) != nil {
			t.Error("the old journal bucket is still there")
		}
		c := tx.Bucket(bucketBatches).Cursor()
		if k, _ := c.Last(); k == nil || binary.BigEndian.Uint64(k) <= 101 {
			t.Errorf("new batch keyed %x, want a journal id past the old journal's 101", k)
		}
		return nil
	})
}

// A message after a quiet spell is committed at once whatever the flush
// interval; one that follows a commit closer than that waits for company.
func TestFlushIntervalWaitsOnlyUnderLoad(t *testing.T) {
	var mu sync.Mutex
	clock := time.Now()
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	advance := func(d time.Duration) { mu.Lock(); clock = clock.Add(d); mu.Unlock() }
	appendAsync := func(s *Store, seq uint64) chan error {
		done := make(chan error, 1)
		s.Append(Entry{Conv: "c", Seq: seq, Data: []byte("x")}, func(err error) { done <- err })
		return done
	}
	acked := func(done chan error, what string) {
		t.Helper()
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: not acknowledged after 10 s", what)
		}
	}

	// Just opened: that counts as a commit a moment ago, so a message
	// waits for the interval (or, here, for Close).
	s := open(t, t.TempDir(), WithFlushInterval(time.Hour), func(o *options) { o.now = now })
	done := appendAsync(s, 1)
	select {
	case err := <-done:
		t.Fatalf("a message right after open was committed at once (%v)", err)
	case <-time.After(200 * time.Millisecond):
	}
	s.Close()
	acked(done, "the waiting message at Close")

	// An hour after its last commit (by its clock) the journal is quiet:
	// each message is committed at once.
	s = open(t, t.TempDir(), WithFlushInterval(time.Hour), func(o *options) { o.now = now })
	defer s.Close()
	for seq := uint64(1); seq <= 3; seq++ {
		advance(2 * time.Hour)
		acked(appendAsync(s, seq), fmt.Sprintf("message %d after a quiet spell", seq))
	}
}

// The wait for company counts from when a message was appended: one that
// already waited an interval in the queue (here, by a clock that stamps it
// two hours back) is committed at once although the last commit ended a
// moment ago.
func TestFlushIntervalCountsFromAppend(t *testing.T) {
	var mu sync.Mutex
	clock := time.Now()
	backdate := false
	now := func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		if backdate {
			// The journaler reads the clock only once it holds a
			// message, so this first read is Append's stamp.
			backdate = false
			return clock.Add(-2 * time.Hour)
		}
		return clock
	}
	s := open(t, t.TempDir(), WithFlushInterval(time.Hour), func(o *options) { o.now = now })
	defer s.Close()
	mu.Lock()
	backdate = true
	mu.Unlock()
	done := make(chan error, 1)
	s.Append(Entry{Conv: "c", Seq: 1, Data: []byte("x")}, func(err error) { done <- err })
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a message stamped past its interval waited for more")
	}
}
