package router

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
	"github.com/parleychat/parley/server/store"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// recorder is a Subscriber that keeps every frame, or refuses once full.
type recorder struct {
	mu     sync.Mutex
	frames []*Frame
	limit  int // 0 = unbounded
}

func (r *recorder) Deliver(f *Frame) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.limit > 0 && len(r.frames) >= r.limit {
		return false
	}
	r.frames = append(r.frames, f)
	return true
}

func (r *recorder) seqs() []uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]uint64, len(r.frames))
	for i, f := range r.frames {
		out[i] = f.Seq
	}
	return out
}

func decode(t *testing.T, f *Frame) *parleyv1.Message {
	t.Helper()
	var resp parleyv1.ChatResponse
	if err := proto.Unmarshal(f.Data, &resp); err != nil {
		t.Fatalf("frame %d does not decode as ChatResponse: %v", f.Seq, err)
	}
	return resp.GetMessage()
}

func newRouter(t *testing.T, dir string, opts ...Option) (*Router, *store.Store) {
	t.Helper()
	s, err := store.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	r, err := New(s, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return r, s
}

func publish(t *testing.T, r *Router, m Message) Result {
	t.Helper()
	type out struct {
		res Result
		err error
	}
	ch := make(chan out, 1)
	if err := r.Publish(context.Background(), m, func(res Result, err error) { ch <- out{res, err} }); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	o := <-ch
	if o.err != nil {
		t.Fatalf("ack: %v", o.err)
	}
	return o.res
}

func TestFanOutInOrderOnce(t *testing.T) {
	r, s := newRouter(t, t.TempDir())
	defer s.Close()
	subs := make([]*recorder, 20)
	for i := range subs {
		subs[i] = &recorder{}
		if _, _, live, err := r.Catchup("room:x", 0, 10, subs[i]); err != nil || !live {
			t.Fatalf("Catchup on empty conversation: live=%v err=%v", live, err)
		}
	}
	const senders, each = 4, 50
	var wg sync.WaitGroup
	for w := 0; w < senders; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				publish(t, r, Message{Conv: "room:x", Sender: fmt.Sprint("u", w), ClientMsgID: fmt.Sprint(i), Body: "hi"})
			}
		}()
	}
	wg.Wait()
	for i, sub := range subs {
		got := sub.seqs()
		if len(got) != senders*each {
			t.Fatalf("subscriber %d got %d frames, want %d", i, len(got), senders*each)
		}
		for j, seq := range got {
			if seq != uint64(j+1) {
				t.Fatalf("subscriber %d: frame %d has seq %d", i, j, seq)
			}
		}
	}
	m := decode(t, subs[0].frames[5])
	if m.GetSeq() != 6 || m.GetPrevSeq() != 5 || m.GetConversationId() != "room:x" {
		t.Errorf("decoded frame: %v", m)
	}
	if &subs[0].frames[5].Data[0] != &subs[1].frames[5].Data[0] {
		t.Error("frame encoded more than once for two subscribers")
	}
}

func TestResendIsAckedNotDelivered(t *testing.T) {
	dir := t.TempDir()
	r, s := newRouter(t, dir)
	sub := &recorder{}
	r.Catchup("dm:a:b", 0, 10, sub)
	first := publish(t, r, Message{Conv: "dm:a:b", Sender: "a", ClientMsgID: "m1", Body: "x"})
	again := publish(t, r, Message{Conv: "dm:a:b", Sender: "a", ClientMsgID: "m1", Body: "x"})
	if !again.Duplicate || again.Seq != first.Seq || !again.SentAt.Equal(first.SentAt) {
		t.Fatalf("resend ack = %+v, want duplicate of %+v", again, first)
	}
	if got := sub.seqs(); len(got) != 1 {
		t.Fatalf("resend was delivered: %v", got)
	}
	s.Close()

	// After a restart the durable index answers.
	r, s = newRouter(t, dir)
	defer s.Close()
	again = publish(t, r, Message{Conv: "dm:a:b", Sender: "a", ClientMsgID: "m1", Body: "x"})
	if !again.Duplicate || again.Seq != first.Seq || !again.SentAt.Equal(first.SentAt) {
		t.Fatalf("resend after restart = %+v, want duplicate of %+v", again, first)
	}
	next := publish(t, r, Message{Conv: "dm:a:b", Sender: "a", ClientMsgID: "m2", Body: "y"})
	if next.Seq != first.Seq+1 {
		t.Fatalf("seq after clean restart = %d, want %d", next.Seq, first.Seq+1)
	}
}

// TestCatchupSwitchesWithoutGap replays from the log and the tail while
// messages keep arriving, and checks the subscriber sees every seq once.
func TestCatchupSwitchesWithoutGap(t *testing.T) {
	r, s := newRouter(t, t.TempDir(), WithTail(8))
	defer s.Close()
	for i := 0; i < 100; i++ {
		publish(t, r, Message{Conv: "room:y", Sender: "a", ClientMsgID: fmt.Sprint("pre", i), Body: "x"})
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			r.Publish(context.Background(), Message{Conv: "room:y", Sender: "b", ClientMsgID: fmt.Sprint(i), Body: "x"}, func(Result, error) {})
		}
	}()
	sub := &recorder{}
	var replayed []uint64
	after := uint64(30)
	for {
		frames, next, live, err := r.Catchup("room:y", after, 7, sub)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range frames {
			replayed = append(replayed, f.Seq)
		}
		after = next
		if live {
			break
		}
	}
	// Let some live traffic arrive, then stop.
	deadline := time.Now().Add(5 * time.Second)
	for len(sub.seqs()) < 50 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	close(stop)
	wg.Wait()
	all := append(replayed, sub.seqs()...)
	for i, seq := range all {
		if seq != uint64(31+i) {
			t.Fatalf("position %d has seq %d, want %d (replayed %d, live %d)", i, seq, 31+i, len(replayed), len(sub.seqs()))
		}
	}
}

func TestUncleanRestartSkipsWindow(t *testing.T) {
	dir := t.TempDir()
	r, s := newRouter(t, dir, WithWindow(100))
	publish(t, r, Message{Conv: "room:z", Sender: "a", ClientMsgID: "1", Body: "x"})
	// Stop without Close by opening a copy of the file: the original is still
	// marked open, as after a crash.
	crashed := t.TempDir()
	copyFile(t, dir, crashed)
	s.Close()

	r, s = newRouter(t, crashed, WithWindow(100))
	defer s.Close()
	if !s.Unclean() {
		t.Fatal("copied open store not seen as unclean")
	}
	res := publish(t, r, Message{Conv: "room:z", Sender: "a", ClientMsgID: "2", Body: "y"})
	if res.Seq != 1+100+1 {
		t.Fatalf("first seq after unclean restart = %d, want %d", res.Seq, 102)
	}
}

func TestSlowSubscriberIsDropped(t *testing.T) {
	r, s := newRouter(t, t.TempDir())
	defer s.Close()
	slow, fast := &recorder{limit: 3}, &recorder{}
	r.Catchup("room:s", 0, 1, slow)
	r.Catchup("room:s", 0, 1, fast)
	for i := 0; i < 10; i++ {
		publish(t, r, Message{Conv: "room:s", Sender: "a", ClientMsgID: fmt.Sprint(i), Body: "x"})
	}
	if n := len(fast.seqs()); n != 10 {
		t.Fatalf("fast subscriber got %d, want 10", n)
	}
	if n := len(slow.seqs()); n != 3 {
		t.Fatalf("slow subscriber got %d, want 3 then dropped", n)
	}
}

func TestFramePrefixMatchesBothResponses(t *testing.T) {
	msg := []byte("\x10\x07") // seq = 7
	var chat parleyv1.ChatResponse
	var sub parleyv1.SubscribeResponse
	for _, m := range []proto.Message{&chat, &sub} {
		if err := proto.Unmarshal(wrap(msg), m); err != nil {
			t.Fatal(err)
		}
	}
	if chat.GetMessage().GetSeq() != 7 || sub.GetMessage().GetSeq() != 7 {
		t.Fatalf("wrapped frame decodes to %v / %v", &chat, &sub)
	}
}

func BenchmarkPublish(b *testing.B) {
	for _, n := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("subscribers=%d", n), func(b *testing.B) {
			s, err := store.Open(b.TempDir(), store.WithNoSync(true))
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			r, _ := New(s)
			for i := 0; i < n; i++ {
				r.Catchup("room:b", 0, 1, &discard{})
			}
			var wg sync.WaitGroup
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				wg.Add(1)
				r.Publish(context.Background(), Message{Conv: "room:b", Sender: "a", ClientMsgID: fmt.Sprint(i), Body: "hello"}, func(Result, error) { wg.Done() })
			}
			wg.Wait()
			b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "deliveries/s")
		})
	}
}

type discard struct{ _ int }

func (*discard) Deliver(*Frame) bool { return true }

// copyFile copies the store's files (the main file and the journal) as they
// are on disk now: what a kill at this moment would leave.
func copyFile(t *testing.T, from, to string) {
	t.Helper()
	for _, name := range []string{store.FileName, store.JournalFileName} {
		data, err := os.ReadFile(filepath.Join(from, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// backlogged is a subscriber whose queue reports itself filling up (and
// draining) while behind is set.
type backlogged struct {
	recorder
	behind atomic.Bool
}

func (b *backlogged) Backlogged() bool { return b.behind.Load() }

// When most subscribers are backlogged the conversation is saturated and
// the next publish waits for them; a backlogged minority is never waited
// for.
func TestPublishPacesASaturatedConversation(t *testing.T) {
	tests := []struct {
		name       string
		subs, slow int
		waits      bool
	}{
		{"majority behind", 3, 2, true},
		{"all behind", 4, 4, true},
		{"minority behind", 3, 1, false},
		{"half behind", 4, 2, false},
		{"alone", 1, 1, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A bound far beyond the test's life: a publish that waits
			// finishes only because the subscribers drained.
			r, s := newRouter(t, t.TempDir(), WithPacing(time.Hour))
			defer s.Close()
			subs := make([]*backlogged, tt.subs)
			for i := range subs {
				subs[i] = &backlogged{}
				subs[i].behind.Store(i < tt.slow)
				if _, _, live, err := r.Catchup("room:p", 0, 10, subs[i]); err != nil || !live {
					t.Fatalf("Catchup: live=%v %v", live, err)
				}
			}
			publish(t, r, Message{Conv: "room:p", Sender: "a", ClientMsgID: "1", Body: "first"})

			done := make(chan Result, 1)
			go func() { done <- publish(t, r, Message{Conv: "room:p", Sender: "a", ClientMsgID: "2", Body: "second"}) }()
			if !tt.waits {
				if res := <-done; res.Seq != 2 {
					t.Fatalf("second publish got seq %d", res.Seq)
				}
				return
			}
			select {
			case <-done:
				t.Fatal("a publish into a saturated conversation did not wait")
			case <-time.After(50 * time.Millisecond):
			}
			if got := subs[0].seqs(); len(got) != 1 {
				t.Fatalf("subscribers got %v while saturated, want only seq 1", got)
			}
			for _, sub := range subs {
				sub.behind.Store(false)
			}
			if res := <-done; res.Seq != 2 {
				t.Fatalf("second publish got seq %d", res.Seq)
			}
			if got := subs[0].seqs(); !slices.Equal(got, []uint64{1, 2}) {
				t.Fatalf("subscriber got %v, want [1 2]", got)
			}
		})
	}
}
