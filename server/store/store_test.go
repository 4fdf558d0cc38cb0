package store

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func open(t *testing.T, dir string, opts ...Option) *Store {
	t.Helper()
	s, err := Open(dir, opts...)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

// appendSync appends and waits for the commit.
func appendSync(t *testing.T, s *Store, e Entry) {
	t.Helper()
	done := make(chan error, 1)
	s.Append(e, func(err error) { done <- err })
	if err := <-done; err != nil {
		t.Fatalf("Append %s#%d: %v", e.Conv, e.Seq, err)
	}
}

func TestAppendSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, WithBatchSize(7))
	epoch := s.Epoch()
	if s.Unclean() {
		t.Fatal("a new store reports an unclean previous stop")
	}
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for i := 1; i <= 100; i++ {
		wg.Add(1)
		s.Append(Entry{Conv: "room:a", Seq: uint64(i), Sender: "u", ClientMsgID: fmt.Sprint("m", i), Data: []byte(fmt.Sprint(i))},
			func(err error) { errs <- err; wg.Done() })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, dir)
	defer s.Close()
	if s.Epoch() != epoch {
		t.Errorf("epoch changed across reopen: %q -> %q", epoch, s.Epoch())
	}
	if s.Unclean() {
		t.Error("clean Close reported as unclean")
	}
	head, err := s.Head("room:a")
	if err != nil || head != 100 {
		t.Fatalf("Head = %d, %v; want 100", head, err)
	}
	d, ok, err := s.Dedup("u", "m42")
	if err != nil || !ok || d.Conv != "room:a" || d.Seq != 42 {
		t.Fatalf("Dedup(u, m42) = %+v %v %v", d, ok, err)
	}
	if _, ok, _ := s.Dedup("v", "m42"); ok {
		t.Error("dedup key leaked across senders")
	}
}

func TestUncleanStopIsReported(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	appendSync(t, s, Entry{Conv: "c", Seq: 1, Data: []byte("x")})
	crash(s)

	s = open(t, dir)
	defer s.Close()
	if !s.Unclean() {
		t.Fatal("a stop without Close was not reported as unclean")
	}
	if h, _ := s.Head("c"); h != 1 {
		t.Fatalf("committed message lost: head %d", h)
	}
}

func TestPaging(t *testing.T) {
	s := open(t, t.TempDir())
	defer s.Close()
	for _, seq := range []uint64{1, 2, 3, 5, 8, 13} { // gaps on purpose
		appendSync(t, s, Entry{Conv: "c", Seq: seq, Data: []byte{byte(seq)}})
	}
	seqs := func(rs []Record) []uint64 {
		var out []uint64
		for _, r := range rs {
			out = append(out, r.Seq)
		}
		return out
	}
	tests := []struct {
		name     string
		get      func() ([]Record, bool, error)
		want     []uint64
		wantMore bool
	}{
		{"range from start", func() ([]Record, bool, error) { return s.Range("c", 0, 0, 3) }, []uint64{1, 2, 3}, true},
		{"range after gap", func() ([]Record, bool, error) { return s.Range("c", 3, 0, 10) }, []uint64{5, 8, 13}, false},
		{"range bounded", func() ([]Record, bool, error) { return s.Range("c", 1, 5, 10) }, []uint64{2, 3, 5}, false},
		{"range past head", func() ([]Record, bool, error) { return s.Range("c", 13, 0, 10) }, nil, false},
		{"range max seq", func() ([]Record, bool, error) { return s.Range("c", ^uint64(0), 0, 10) }, nil, false},
		{"newest page", func() ([]Record, bool, error) { return s.Before("c", 0, 2) }, []uint64{8, 13}, true},
		{"before 8", func() ([]Record, bool, error) { return s.Before("c", 8, 2) }, []uint64{3, 5}, true},
		{"before 4", func() ([]Record, bool, error) { return s.Before("c", 4, 10) }, []uint64{1, 2, 3}, false},
		{"before huge", func() ([]Record, bool, error) { return s.Before("c", 1000, 1) }, []uint64{13}, true},
		{"before 1", func() ([]Record, bool, error) { return s.Before("c", 1, 10) }, nil, false},
		{"unknown conversation", func() ([]Record, bool, error) { return s.Range("nope", 0, 0, 10) }, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			recs, more, err := tt.get()
			if err != nil {
				t.Fatal(err)
			}
			if got := seqs(recs); fmt.Sprint(got) != fmt.Sprint(tt.want) || more != tt.wantMore {
				t.Errorf("got %v more=%v, want %v more=%v", got, more, tt.want, tt.wantMore)
			}
			for _, r := range recs {
				if len(r.Data) != 1 || uint64(r.Data[0]) != r.Seq {
					t.Errorf("seq %d has data %v", r.Seq, r.Data)
				}
			}
		})
	}
}

func TestConversationsAndUsers(t *testing.T) {
	s := open(t, t.TempDir())
	defer s.Close()
	if err := s.CreateUser(User{ID: "alice"}); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateUser(User{ID: "alice"}); !errors.Is(err, ErrExists) {
		t.Fatalf("duplicate user: %v, want ErrExists", err)
	}
	if _, err := s.User("bob"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing user: %v, want ErrNotFound", err)
	}
	checkDeleteUser(t, s)
	checkLastSeen(t, s)
	if err := s.CreateConversation(Conversation{ID: "group:x", Kind: KindGroup, Owner: "alice", Members: []string{"carol", "alice", "alice"}}); err != nil {
		t.Fatal(err)
	}
	c, err := s.UpdateConversation("group:x", func(c *Conversation) error {
		c.Members = append(c.Members, "bob")
		return nil
	})
	if err != nil || fmt.Sprint(c.Members) != "[alice bob carol]" {
		t.Fatalf("after add: %v %v", c.Members, err)
	}
	if _, err := s.UpdateConversation("group:x", func(c *Conversation) error {
		c.Members = []string{"alice", "bob"}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for user, want := range map[string]string{"alice": "[group:x]", "bob": "[group:x]", "carol": "[]"} {
		ids, err := s.UserConversations(user)
		if err != nil || fmt.Sprint(ids) != want {
			t.Errorf("UserConversations(%s) = %v %v, want %s", user, ids, err, want)
		}
	}
	boom := errors.New("boom")
	if _, err := s.UpdateConversation("group:x", func(c *Conversation) error { c.Members = nil; return boom }); !errors.Is(err, boom) {
		t.Fatalf("fn error not returned: %v", err)
	}
	if c, _ := s.Conversation("group:x"); len(c.Members) != 2 {
		t.Fatalf("aborted update was stored: %v", c.Members)
	}
}

func TestAppendAfterClose(t *testing.T) {
	s := open(t, t.TempDir())
	s.Close()
	done := make(chan error, 1)
	s.Append(Entry{Conv: "c", Seq: 1}, func(err error) { done <- err })
	if err := <-done; !errors.Is(err, ErrClosed) {
		t.Fatalf("Append after Close: %v, want ErrClosed", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// BenchmarkAppend measures durable appends through the group commit, to one
// conversation and spread over 100 (each message then lands in a different
// part of the index, which the journal keeps off the ack path), with and
// without fsync. It reports messages per commit and commits per second.
func BenchmarkAppend(b *testing.B) {
	for _, convs := range []int{1, 100} {
		for _, fsync := range []bool{true, false} {
			b.Run(fmt.Sprintf("convs=%d/fsync=%v", convs, fsync), func(b *testing.B) {
				var commits atomic.Int64
				s, err := Open(b.TempDir(), WithNoSync(!fsync), WithCommitObserver(func(int, time.Duration, time.Duration, error) { commits.Add(1) }))
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
				data := make([]byte, 200)
				seqs := make([]uint64, convs)
				names := make([]string, convs)
				for i := range names {
					names[i] = fmt.Sprintf("dm:user%03d:peer%03d", i, i)
				}
				var wg sync.WaitGroup
				b.ReportAllocs()
				b.ResetTimer()
				start := time.Now()
				for i := 0; i < b.N; i++ {
					c := i % convs
					seqs[c]++
					wg.Add(1)
					s.Append(Entry{Conv: names[c], Seq: seqs[c], Sender: fmt.Sprint("u", c), ClientMsgID: strconv.Itoa(i), Data: data}, func(error) { wg.Done() })
				}
				wg.Wait()
				elapsed := time.Since(start)
				b.ReportMetric(float64(b.N)/float64(max(commits.Load(), 1)), "msgs/commit")
				b.ReportMetric(float64(commits.Load())/elapsed.Seconds(), "commits/s")
				b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
			})
		}
	}
}

// filled returns a store holding n messages of one conversation, each with a
// dedup key, all indexed.
func filled(b *testing.B, n int) *Store {
	b.Helper()
	s, err := Open(b.TempDir(), WithNoSync(true))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	data := make([]byte, 200)
	var wg sync.WaitGroup
	for i := 1; i <= n; i++ {
		wg.Add(1)
		s.Append(Entry{Conv: "room:bench", Seq: uint64(i), Sender: fmt.Sprint("u", i%100), ClientMsgID: strconv.Itoa(i), Data: data}, func(error) { wg.Done() })
	}
	wg.Wait()
	for s.pend.size() > 0 {
		time.Sleep(time.Millisecond)
	}
	return s
}

// BenchmarkHistoryPage reads 50-message pages of a 100,000-message
// conversation at random places, backwards (History's newest-first
// paging) and forwards (catch-up).
func BenchmarkHistoryPage(b *testing.B) {
	const n, page = 100_000, 50
	s := filled(b, n)
	for _, dir := range []string{"before", "range"} {
		b.Run(dir, func(b *testing.B) {
			b.ReportAllocs()
			rng := rand.New(rand.NewPCG(1, 2))
			for i := 0; i < b.N; i++ {
				at := uint64(rng.IntN(n-page)) + page + 1
				var recs []Record
				var err error
				if dir == "before" {
					recs, _, err = s.Before("room:bench", at, page)
				} else {
					recs, _, err = s.Range("room:bench", at-page-1, 0, page)
				}
				if err != nil || len(recs) != page {
					b.Fatalf("page at %d: %d records, %v", at, len(recs), err)
				}
			}
			b.ReportMetric(float64(b.N*page)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}

// BenchmarkDedupLookup looks up (sender, client_message_id) pairs among
// 100,000 indexed ones, as every send with a client id does: hits are
// resends, misses new messages.
func BenchmarkDedupLookup(b *testing.B) {
	const n = 100_000
	s := filled(b, n)
	for _, hit := range []bool{true, false} {
		b.Run(fmt.Sprintf("hit=%v", hit), func(b *testing.B) {
			b.ReportAllocs()
			rng := rand.New(rand.NewPCG(3, 4))
			for i := 0; i < b.N; i++ {
				k := rng.IntN(n) + 1
				id := strconv.Itoa(k)
				if !hit {
					id = "new-" + id
				}
				_, ok, err := s.Dedup(fmt.Sprint("u", k%100), id)
				if err != nil || ok != hit {
					b.Fatalf("Dedup(%d) = %v, %v", k, ok, err)
				}
			}
		})
	}
}

// checkDeleteUser deletes a user: it keeps its id (taken) and creation
// time, loses its password and name, and a second delete changes nothing.
func checkDeleteUser(t *testing.T, s *Store) {
	t.Helper()
	if err := s.DeleteUser("nobody", time.Now()); !errors.Is(err, ErrNotFound) {
		t.Fatalf("DeleteUser of a missing user: %v, want ErrNotFound", err)
	}
	created := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	if err := s.CreateUser(User{ID: "dora", DisplayName: "Dora", PasswordHash: []byte("hash"), CreatedAt: created}); err != nil {
		t.Fatal(err)
	}
	at := created.Add(time.Hour)
	for range 2 {
		if err := s.DeleteUser("dora", at); err != nil {
			t.Fatalf("DeleteUser: %v", err)
		}
		at = at.Add(time.Hour) // the second delete must not move DeletedAt
	}
	u, err := s.User("dora")
	if err != nil || !u.Deleted() || !u.DeletedAt.Equal(created.Add(time.Hour)) || !u.CreatedAt.Equal(created) || u.PasswordHash != nil || u.DisplayName != "" {
		t.Fatalf("deleted user = %+v, %v", u, err)
	}
	if err := s.CreateUser(User{ID: "dora"}); !errors.Is(err, ErrExists) {
		t.Fatalf("CreateUser of a deleted id: %v, want ErrExists", err)
	}
}

// lastSeenStore is what checkLastSeen needs.
type lastSeenStore interface {
	SetLastSeen(map[string]time.Time) error
	LastSeen(user string) (time.Time, error)
}

// checkLastSeen records last-seen times: unknown is zero, a time never
// moves back, times keep their nanoseconds.
func checkLastSeen(t *testing.T, s lastSeenStore) {
	t.Helper()
	if at, err := s.LastSeen("nobody"); err != nil || !at.IsZero() {
		t.Fatalf("LastSeen of a user never seen = %v, %v; want zero", at, err)
	}
	t1 := time.Date(2026, 11, 27, 12, 0, 0, 123456789, time.UTC)
	if err := s.SetLastSeen(map[string]time.Time{"ann": t1, "ben": t1.Add(time.Second)}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetLastSeen(map[string]time.Time{"ann": t1.Add(-time.Hour)}); err != nil {
		t.Fatal(err)
	}
	for user, want := range map[string]time.Time{"ann": t1, "ben": t1.Add(time.Second)} {
		if at, err := s.LastSeen(user); err != nil || !at.Equal(want) {
			t.Fatalf("LastSeen(%s) = %v, %v; want %v", user, at, err, want)
		}
	}
}

// BenchmarkJoinRoom is one member joining a room that already has size
// members: the cost of a join must not grow with the room.
func BenchmarkJoinRoom(b *testing.B) {
	for _, size := range []int{100, 1000, 10000} {
		b.Run(fmt.Sprintf("members=%d", size), func(b *testing.B) {
			s, err := Open(b.TempDir(), WithNoSync(true))
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			members := make([]string, size)
			for i := range members {
				members[i] = fmt.Sprintf("user%06d", i)
			}
			if err := s.CreateConversation(Conversation{ID: "room:big", Kind: KindRoom, Members: members}); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for i := range b.N {
				if _, err := s.UpdateConversation("room:big", func(c *Conversation) error {
					c.Members = append(c.Members, fmt.Sprintf("joiner%09d", i))
					return nil
				}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func TestDiffMembers(t *testing.T) {
	for _, tc := range []struct {
		before, after, added, removed []string
	}{
		{nil, nil, nil, nil},
		{nil, []string{"a", "b"}, []string{"a", "b"}, nil},
		{[]string{"a", "b"}, nil, nil, []string{"a", "b"}},
		{[]string{"a", "c", "e"}, []string{"a", "c", "e"}, nil, nil},
		{[]string{"a", "c", "e"}, []string{"b", "c", "d", "f"}, []string{"b", "d", "f"}, []string{"a", "e"}},
		{[]string{"b"}, []string{"a", "b", "c"}, []string{"a", "c"}, nil},
		{[]string{"a", "b", "c"}, []string{"b"}, nil, []string{"a", "c"}},
	} {
		added, removed := DiffMembers(tc.before, tc.after)
		if !slices.Equal(added, tc.added) || !slices.Equal(removed, tc.removed) {
			t.Errorf("DiffMembers(%v, %v) = %v, %v; want %v, %v", tc.before, tc.after, added, removed, tc.added, tc.removed)
		}
	}
}
