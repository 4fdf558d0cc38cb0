package jslog

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
	"github.com/parleychat/parley/server/natstest"
	"github.com/parleychat/parley/server/router"
	"github.com/parleychat/parley/server/store"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// nats.go's JetStream publisher watches its connection's status
		// and now and then keeps waiting after a connection that was
		// reconnecting is closed (the leader-kill test). It belongs to the
		// closed connection, not to this package.
		goleak.IgnoreTopFunction("github.com/nats-io/nats.go/jetstream.(*jetStream).resetPendingAcksOnReconnect"))
}

// testCtx bounds a test.
func testCtx(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

var streams atomic.Int64

// names returns a stream name and subject prefix of their own, so tests
// can share a cluster.
func names() []Option {
	n := streams.Add(1)
	return []Option{WithStream(fmt.Sprintf("T%d", n)), WithSubjectPrefix(fmt.Sprintf("t%d", n))}
}

// node starts a Log on its own connection to cluster node i (falling back
// to the others), as one parleyd would.
func node(t testing.TB, c *natstest.Cluster, i int, opts ...Option) *Log {
	t.Helper()
	urls := []string{c.Nodes[i].URL}
	for j, n := range c.Nodes {
		if j != i {
			urls = append(urls, n.URL)
		}
	}
	nc, err := nats.Connect(strings.Join(urls, ","), nats.DontRandomize(), nats.MaxReconnects(-1),
		nats.ReconnectWait(50*time.Millisecond), nats.Name(fmt.Sprintf("node-%d", i)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	l, err := New(testCtx(t), nc, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	return l
}

type outcome struct {
	res router.Result
	err error
}

func publishAsync(t *testing.T, l *Log, m router.Message) <-chan outcome {
	t.Helper()
	ch := make(chan outcome, 1)
	if err := l.Publish(context.Background(), m, func(res router.Result, err error) { ch <- outcome{res, err} }); err != nil {
		t.Errorf("Publish: %v", err)
		ch <- outcome{err: err}
	}
	return ch
}

func publish(t *testing.T, l *Log, m router.Message) router.Result {
	t.Helper()
	select {
	case o := <-publishAsync(t, l, m):
		if o.err != nil {
			t.Fatalf("ack of %s: %v", m.ClientMsgID, o.err)
		}
		return o.res
	case <-time.After(30 * time.Second):
		t.Fatalf("no ack for %s", m.ClientMsgID)
	}
	return router.Result{}
}

func post(conv, sender, id string) router.Message {
	return router.Message{Conv: conv, Sender: sender, ClientMsgID: id, Body: "body of " + id}
}

// recorder is a Subscriber that keeps every frame, or refuses once full.
type recorder struct {
	mu     sync.Mutex
	frames []*router.Frame
	limit  int // 0: unbounded
}

func (r *recorder) Deliver(f *router.Frame) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.limit > 0 && len(r.frames) >= r.limit {
		return false
	}
	r.frames = append(r.frames, f)
	return true
}

func (r *recorder) snapshot() []*router.Frame {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.frames)
}

// follow catches sub up through conv from after in pages of max, as a
// stream's writer does, and returns the frames the calls returned.
func follow(t *testing.T, l *Log, conv string, after uint64, max int, sub router.Subscriber) []*router.Frame {
	t.Helper()
	var out []*router.Frame
	for range 10000 {
		frames, next, live, err := l.Catchup(conv, after, max, sub)
		if err != nil {
			t.Fatalf("Catchup(%s, %d): %v", conv, after, err)
		}
		if len(frames) > max {
			t.Fatalf("Catchup returned %d frames, max %d", len(frames), max)
		}
		out = append(out, frames...)
		if live {
			return out
		}
		after = next
	}
	t.Fatal("Catchup never went live")
	return nil
}

func decodeFrame(t *testing.T, f *router.Frame) *parleyv1.Message {
	t.Helper()
	var resp parleyv1.ChatResponse
	if err := proto.Unmarshal(f.Data, &resp); err != nil {
		t.Fatalf("frame %d does not decode: %v", f.Seq, err)
	}
	m := resp.GetMessage()
	if m == nil || m.GetSeq() != f.Seq {
		t.Fatalf("frame %d holds %v", f.Seq, m)
	}
	return m
}

func decode(t *testing.T, r store.Record) *parleyv1.Message {
	t.Helper()
	var m parleyv1.Message
	if err := proto.Unmarshal(r.Data, &m); err != nil {
		t.Fatalf("record %d does not decode: %v", r.Seq, err)
	}
	if m.GetSeq() != r.Seq {
		t.Fatalf("record %d decodes with seq %d", r.Seq, m.GetSeq())
	}
	return &m
}

// all reads conv from the start in pages.
func all(t *testing.T, l *Log, conv string) []*parleyv1.Message {
	t.Helper()
	out, err := readAll(t, l, conv)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// readAll is all, returning the first read error.
func readAll(t *testing.T, l *Log, conv string) ([]*parleyv1.Message, error) {
	t.Helper()
	var out []*parleyv1.Message
	var after uint64
	for {
		recs, more, err := l.Range(conv, after, 0, 100)
		if err != nil {
			return nil, fmt.Errorf("Range(%s, %d): %w", conv, after, err)
		}
		for _, r := range recs {
			out = append(out, decode(t, r))
		}
		if !more {
			return out, nil
		}
		after = recs[len(recs)-1].Seq
	}
}

// checkChain fails unless msgs is the whole conversation: seqs grow, each
// prev_seq names the message before, and no (sender, client id) repeats.
func checkChain(t *testing.T, msgs []*parleyv1.Message) {
	t.Helper()
	var prev uint64
	seen := make(map[string]uint64)
	for _, m := range msgs {
		if m.GetPrevSeq() != prev {
			t.Fatalf("seq %d has prev_seq %d, want %d", m.GetSeq(), m.GetPrevSeq(), prev)
		}
		if m.GetSeq() <= prev {
			t.Fatalf("seq %d after %d", m.GetSeq(), prev)
		}
		key := m.GetSenderId() + "/" + m.GetClientMessageId()
		if s, dup := seen[key]; dup {
			t.Fatalf("%s stored twice, at %d and %d", key, s, m.GetSeq())
		}
		seen[key] = m.GetSeq()
		prev = m.GetSeq()
	}
}

// waitFor polls cond until it holds or the test's time is up.
func waitFor(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// TestLog runs the behaviour tests on one shared three-node cluster, each
// on a stream of its own.
func TestLog(t *testing.T) {
	t.Parallel() // each test has a cluster of its own
	c := natstest.Start(t, natstest.Options{})
	t.Run("ConcurrentPublishersKeepTheChain", func(t *testing.T) { testConcurrentPublishers(t, c) })
	t.Run("LiveAcrossNodes", func(t *testing.T) { testLiveAcrossNodes(t, c) })
	t.Run("CatchupWhilePublishing", func(t *testing.T) { testCatchupWhilePublishing(t, c) })
	t.Run("Resends", func(t *testing.T) { testResends(t, c) })
	t.Run("EditsAndDeletes", func(t *testing.T) { testEditsAndDeletes(t, c) })
	t.Run("RepairerFinishesADeadPublisher", func(t *testing.T) { testRepairer(t, c) })
	t.Run("BroadcastReachesEveryNode", func(t *testing.T) { testBroadcast(t, c) })
	t.Run("RefusingSubscriberIsDropped", func(t *testing.T) { testRefusingSubscriber(t, c) })
	t.Run("Reads", func(t *testing.T) { testReads(t, c) })
	t.Run("BeforePagesBackThroughEverything", func(t *testing.T) { testBeforePages(t, c) })
	t.Run("ForgetsIdleConversations", func(t *testing.T) { testForget(t, c) })
	t.Run("NoClientIDIsNotDeduplicated", func(t *testing.T) { testNoClientID(t, c) })
	t.Run("HeadWithoutFeed", func(t *testing.T) { testHeadWithoutFeed(t, c) })
	t.Run("ChatServicesOnTwoNodes", func(t *testing.T) { testChatServices(t, c) })
	t.Run("Closed", func(t *testing.T) { testClosed(t, c) })
}

// Two nodes publish to one conversation at once, from several goroutines
// each: every message is stored once, acked with its seq, and the prev_seq
// chain has no hole, however the nodes' publishes interleave.
func testConcurrentPublishers(t *testing.T, c *natstest.Cluster) {
	opts := names()
	nodes := []*Log{node(t, c, 0, opts...), node(t, c, 1, opts...)}
	const conv, perWorker, workers = "room:busy", 25, 3
	acks := make(map[string]uint64)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for n, l := range nodes {
		for w := range workers {
			wg.Go(func() {
				var pending []<-chan outcome
				var ids []string
				for i := range perWorker {
					id := fmt.Sprintf("n%d-w%d-%d", n, w, i)
					ids = append(ids, id)
					pending = append(pending, publishAsync(t, l, post(conv, "alice", id)))
				}
				for i, ch := range pending {
					o := <-ch
					if o.err != nil || o.res.Duplicate || o.res.Conv != conv {
						t.Errorf("ack of %s: %+v, %v", ids[i], o.res, o.err)
						continue
					}
					mu.Lock()
					acks[ids[i]] = o.res.Seq
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	for _, l := range nodes {
		msgs := all(t, l, conv)
		checkChain(t, msgs)
		if len(msgs) != len(nodes)*workers*perWorker {
			t.Fatalf("%d messages stored, want %d", len(msgs), len(nodes)*workers*perWorker)
		}
		for _, m := range msgs {
			if acks[m.GetClientMessageId()] != m.GetSeq() {
				t.Fatalf("%s stored at %d, acked with %d", m.GetClientMessageId(), m.GetSeq(), acks[m.GetClientMessageId()])
			}
		}
	}
}

// A subscriber on one node gets what another node publishes, live, in
// order, once each.
func testLiveAcrossNodes(t *testing.T, c *natstest.Cluster) {
	ctx := testCtx(t)
	opts := names()
	a, b := node(t, c, 0, opts...), node(t, c, 1, opts...)
	const conv = "dm:alice:bob"
	before := publish(t, a, post(conv, "alice", "before")).Seq
	var rec recorder
	// b's feed may not have brought "before" yet: then the replay is empty
	// and it comes live, first.
	replay := follow(t, b, conv, 0, 10, &rec)
	if len(replay) > 1 {
		t.Fatalf("replay holds %d frames, want at most the one published before", len(replay))
	}
	const n = 40
	want := []uint64{before}
	for i := range n {
		want = append(want, publish(t, a, post(conv, "alice", fmt.Sprint(i))).Seq)
	}
	waitFor(t, ctx, "live frames", func() bool { return len(replay)+len(rec.snapshot()) >= n+1 })
	frames := append(replay, rec.snapshot()...)
	if len(frames) != n+1 {
		t.Fatalf("%d frames, want %d", len(frames), n+1)
	}
	for i, f := range frames {
		id := "before"
		if i > 0 {
			id = fmt.Sprint(i - 1)
		}
		if m := decodeFrame(t, f); f.Seq != want[i] || m.GetClientMessageId() != id {
			t.Fatalf("frame %d is %s at %d, want %s at %d", i, m.GetClientMessageId(), f.Seq, id, want[i])
		}
	}
	if st := b.Stats(); st.Subscriptions != 1 {
		t.Errorf("node b has %d subscriptions, want 1", st.Subscriptions)
	}
	b.Unsubscribe(conv, &rec)
	publish(t, a, post(conv, "alice", "after"))
	waitFor(t, ctx, "node b's feed", func() bool { h, _ := b.Head(conv); return h >= want[n-1]+1 })
	if got := len(rec.snapshot()); got != n {
		t.Errorf("unsubscribed recorder got %d frames, want %d", got, n)
	}
}

// Catching up from 0 while another node publishes gives every message
// once, in order: the switch from replay to live loses and doubles
// nothing, whether the replay comes from the node's tail or the stream.
func testCatchupWhilePublishing(t *testing.T, c *natstest.Cluster) {
	for _, tc := range []struct {
		name string
		tail int
		page int
	}{
		{"from the stream in small pages", 0, 7},
		{"from the tail", 128, 32},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			opts := names()
			a := node(t, c, 0, opts...)
			b := node(t, c, 1, append(opts, WithTail(tc.tail))...)
			const conv, total = "room:replay", 200
			// b follows the conversation first, so its tail fills.
			var early recorder
			follow(t, b, conv, 0, tc.page, &early)

			var wg sync.WaitGroup
			started := make(chan struct{})
			wg.Go(func() {
				var pending []<-chan outcome
				for i := range total {
					pending = append(pending, publishAsync(t, a, post(conv, "alice", fmt.Sprint(i))))
					if i == total/4 {
						close(started)
					}
				}
				for _, ch := range pending {
					if o := <-ch; o.err != nil {
						t.Errorf("ack: %v", o.err)
					}
				}
			})
			<-started
			var rec recorder
			replay := follow(t, b, conv, 0, tc.page, &rec)
			wg.Wait()
			waitFor(t, ctx, "every message", func() bool { return len(replay)+len(rec.snapshot()) >= total })
			got := append(replay, rec.snapshot()...)
			stored := all(t, a, conv)
			if len(got) != len(stored) {
				t.Fatalf("subscriber got %d frames (%d replayed), %d are stored", len(got), len(replay), len(stored))
			}
			for i, f := range got {
				if f.Seq != stored[i].GetSeq() {
					t.Fatalf("frame %d has seq %d, want %d (%d replayed)", i, f.Seq, stored[i].GetSeq(), len(replay))
				}
				decodeFrame(t, f)
			}
		})
	}
}

// A resend gets the original ack with Duplicate and stores nothing, inside
// JetStream's duplicate window (even with the dedup entry gone) and after
// it (from the dedup bucket), on the node that took the original or on
// another one.
func testResends(t *testing.T, c *natstest.Cluster) {
	ctx := testCtx(t)
	const window = 500 * time.Millisecond
	opts := append(names(), WithDuplicateWindow(window))
	a, b := node(t, c, 0, opts...), node(t, c, 1, opts...)
	const conv = "room:resend"
	cases := []struct {
		name      string
		resender  *Log
		conv      string
		dropEntry bool // delete the dedup entry first: only JetStream's window can answer
		afterWin  bool
		orig      router.Result
	}{
		{name: "inside the window, same node", resender: a, conv: conv},
		{name: "inside the window, other node", resender: b, conv: conv},
		{name: "inside the window, without dedup entry", resender: b, conv: conv, dropEntry: true},
		{name: "after the window, same node", resender: a, conv: conv, afterWin: true},
		{name: "after the window, other node", resender: b, conv: conv, afterWin: true},
		{name: "after the window, to another conversation", resender: b, conv: "room:other", afterWin: true},
	}
	id := func(name string) string { return strings.ReplaceAll(name, " ", "-") }
	for i := range cases {
		cases[i].orig = publish(t, a, post(conv, "alice", id(cases[i].name)))
	}
	// The repairer would write a dropped entry again: let it finish first.
	waitFor(t, ctx, "the repairer", func() bool {
		cons, err := a.stream.Consumer(ctx, a.opts.stream+"_REPAIR")
		if err != nil {
			return false
		}
		info, err := cons.Info(ctx)
		return err == nil && info.AckFloor.Stream >= cases[len(cases)-1].orig.Seq
	})
	for _, tc := range cases {
		if tc.dropEntry {
			if err := a.dedup.Purge(ctx, dedupKey("alice", id(tc.name))); err != nil {
				t.Fatal(err)
			}
			if _, ok, err := a.Dedup("alice", id(tc.name)); err != nil || ok {
				t.Fatalf("dedup entry still there: %v, %v", ok, err)
			}
		}
	}
	windowOver := time.Now().Add(2 * window)
	for _, afterWin := range []bool{false, true} {
		if afterWin {
			time.Sleep(time.Until(windowOver)) // let JetStream forget the ids
		}
		for _, tc := range cases {
			if tc.afterWin != afterWin {
				continue
			}
			t.Run(tc.name, func(t *testing.T) {
				again := publish(t, tc.resender, post(tc.conv, "alice", id(tc.name)))
				if !again.Duplicate || again.Seq != tc.orig.Seq || again.Conv != conv || !again.SentAt.Equal(tc.orig.SentAt) {
					t.Fatalf("resend acked with %+v, want the original %+v with Duplicate", again, tc.orig)
				}
				if rec, ok, err := b.Dedup("alice", id(tc.name)); err != nil || !ok || rec.Seq != tc.orig.Seq || rec.Conv != conv {
					t.Fatalf("Dedup: %+v, %v, %v", rec, ok, err)
				}
			})
		}
	}
	msgs := all(t, a, conv)
	checkChain(t, msgs)
	if len(msgs) != len(cases) {
		t.Fatalf("%d messages stored, want %d", len(msgs), len(cases))
	}
	if other := all(t, a, "room:other"); len(other) != 0 {
		t.Fatalf("resend to another conversation stored %d messages", len(other))
	}
}

// Edits and deletes are messages in the conversation's order, and reads on
// every node show the posts' latest text or a tombstone, as the single-node
// store does.
func testEditsAndDeletes(t *testing.T, c *natstest.Cluster) {
	opts := names()
	a, b := node(t, c, 0, opts...), node(t, c, 1, opts...)
	const conv = "group:0123456789abcdef01234567"
	p1 := publish(t, a, post(conv, "alice", "p1")).Seq
	p2 := publish(t, a, post(conv, "alice", "p2")).Seq
	p3 := publish(t, a, post(conv, "bob", "p3")).Seq
	change := func(l *Log, sender, id string, kind parleyv1.MessageKind, target uint64, body string) uint64 {
		return publish(t, l, router.Message{Conv: conv, Sender: sender, ClientMsgID: id, Body: body, Kind: kind, TargetSeq: target}).Seq
	}
	edit, del := parleyv1.MessageKind_MESSAGE_KIND_EDIT, parleyv1.MessageKind_MESSAGE_KIND_DELETE
	change(a, "alice", "e1", edit, p1, "first edit")
	change(b, "alice", "d2", del, p2, "")
	change(b, "alice", "e2", edit, p1, "second edit")
	change(a, "alice", "e3", edit, p2, "edit after delete")
	change(a, "alice", "e4", edit, p3, "not alice's post")

	for _, l := range []*Log{a, b} {
		for _, tc := range []struct {
			seq     uint64
			body    string
			edited  bool
			deleted bool
		}{
			{p1, "second edit", true, false},
			{p2, "", false, true},
			{p3, "body of p3", false, false},
		} {
			rec, ok, err := l.Get(conv, tc.seq)
			if err != nil || !ok {
				t.Fatalf("Get(%d): %v, %v", tc.seq, ok, err)
			}
			m := decode(t, rec)
			if m.GetBody() != tc.body || (m.GetEditedAt() != nil) != tc.edited || m.GetDeleted() != tc.deleted {
				t.Errorf("post %d reads %q edited=%v deleted=%v, want %q %v %v", tc.seq, m.GetBody(), m.GetEditedAt() != nil, m.GetDeleted(), tc.body, tc.edited, tc.deleted)
			}
			if tc.deleted && len(m.GetAttachments()) != 0 {
				t.Errorf("tombstone %d keeps attachments", tc.seq)
			}
		}
		msgs := all(t, l, conv)
		checkChain(t, msgs)
		if len(msgs) != 8 || msgs[0].GetBody() != "second edit" || !msgs[1].GetDeleted() || msgs[3].GetKind() != edit || msgs[3].GetBody() != "first edit" {
			t.Errorf("Range reads %v", msgs)
		}
		recs, more, err := l.Before(conv, 0, 8)
		if err != nil || more || len(recs) != 8 {
			t.Fatalf("Before(0, 8): %d records, more=%v, %v", len(recs), more, err)
		}
		if m := decode(t, recs[0]); m.GetBody() != "second edit" {
			t.Errorf("Before shows p1 as %q", m.GetBody())
		}
	}
}

// A node that dies between the stream's ack of an edit and writing its
// overlay and dedup entry leaves them to the repairer. The test plays the
// dead node by publishing straight to the stream.
func testRepairer(t *testing.T, c *natstest.Cluster) {
	ctx := testCtx(t)
	opts := names()
	a := node(t, c, 0, opts...)
	const conv = "room:repair"
	p := publish(t, a, post(conv, "alice", "p"))
	ev := &parleyv1.Message{ConversationId: conv, SenderId: "alice", ClientMessageId: "edit", Body: "edited",
		Kind: parleyv1.MessageKind_MESSAGE_KIND_EDIT, TargetSeq: p.Seq, PrevSeq: p.Seq}
	data, err := proto.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.js.PublishMsg(ctx, &nats.Msg{Subject: a.msgPrefix + conv, Data: data}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "the overlay", func() bool {
		rec, ok, err := a.Get(conv, p.Seq)
		return err == nil && ok && decode(t, rec).GetBody() == "edited"
	})
	waitFor(t, ctx, "the dedup entry", func() bool { _, ok, _ := a.Dedup("alice", "edit"); return ok })
	if a.Stats().Repaired < 1 {
		t.Errorf("repairer counted %d repairs, want at least 1", a.Stats().Repaired)
	}
}

// Events reach the conversation's subscribers on every node, not the
// subscribers of other conversations.
func testBroadcast(t *testing.T, c *natstest.Cluster) {
	ctx := testCtx(t)
	opts := names()
	a, b := node(t, c, 0, opts...), node(t, c, 1, opts...)
	var onA, onB, elsewhere recorder
	follow(t, a, "room:ev", 0, 10, &onA)
	follow(t, b, "room:ev", 0, 10, &onB)
	follow(t, b, "room:quiet", 0, 10, &elsewhere)
	f, err := router.Event("room:ev", 4, &parleyv1.Typing{ConversationId: "room:ev", UserId: "alice", Typing: true})
	if err != nil {
		t.Fatal(err)
	}
	a.Broadcast("room:ev", f)
	for _, r := range []*recorder{&onA, &onB} {
		waitFor(t, ctx, "the event", func() bool { return len(r.snapshot()) == 1 })
		if got := r.snapshot()[0]; got.Seq != 0 || string(got.Data) != string(f.Data) {
			t.Fatalf("got frame %+v, want the event", got)
		}
	}
	// A message published after the event shows the event had its turn.
	publish(t, a, post("room:quiet", "alice", "m"))
	waitFor(t, ctx, "the message", func() bool { return len(elsewhere.snapshot()) == 1 })
	if elsewhere.snapshot()[0].Seq == 0 {
		t.Fatal("an event reached another conversation's subscriber")
	}
}

// A subscriber whose Deliver returns false is forgotten.
func testRefusingSubscriber(t *testing.T, c *natstest.Cluster) {
	ctx := testCtx(t)
	opts := names()
	a := node(t, c, 0, opts...)
	const conv = "room:slow"
	rec := &recorder{limit: 1}
	follow(t, a, conv, 0, 10, rec)
	var last uint64
	for i := range 3 {
		last = publish(t, a, post(conv, "alice", fmt.Sprint(i))).Seq
	}
	waitFor(t, ctx, "the feed", func() bool { return a.Stats().FeedSeq >= last })
	if n := len(rec.snapshot()); n != 1 {
		t.Fatalf("refusing subscriber got %d frames, want 1", n)
	}
	if s := a.Stats().Subscriptions; s != 0 {
		t.Fatalf("%d subscriptions left, want 0", s)
	}
}

// The reads keep server/store's contracts.
func testReads(t *testing.T, c *natstest.Cluster) {
	opts := names()
	a, b := node(t, c, 0, opts...), node(t, c, 1, opts...)
	if a.Epoch() == "" || a.Epoch() != b.Epoch() {
		t.Fatalf("epochs %q and %q, want one", a.Epoch(), b.Epoch())
	}
	const conv = "room:reads"
	var seqs []uint64
	for i := range 10 {
		// Another conversation in between makes the seqs not contiguous.
		publish(t, a, post("room:noise", "bob", fmt.Sprint(i)))
		seqs = append(seqs, publish(t, a, post(conv, "alice", fmt.Sprint(i))).Seq)
	}
	seqsOf := func(recs []store.Record) []uint64 {
		out := make([]uint64, len(recs))
		for i, r := range recs {
			out[i] = r.Seq
		}
		return out
	}
	for _, l := range []*Log{a, b} {
		for _, tc := range []struct {
			name string
			read func() ([]store.Record, bool, error)
			want []uint64
			more bool
		}{
			{"Range all", func() ([]store.Record, bool, error) { return l.Range(conv, 0, 0, 100) }, seqs, false},
			{"Range page", func() ([]store.Record, bool, error) { return l.Range(conv, seqs[2], 0, 3) }, seqs[3:6], true},
			{"Range bounded", func() ([]store.Record, bool, error) { return l.Range(conv, seqs[2], seqs[5], 10) }, seqs[3:6], false},
			{"Range bound reached by limit", func() ([]store.Record, bool, error) { return l.Range(conv, seqs[2], seqs[5], 3) }, seqs[3:6], false},
			{"Range between seqs", func() ([]store.Record, bool, error) { return l.Range(conv, seqs[2]+1, 0, 2) }, seqs[3:5], true},
			{"Range past head", func() ([]store.Record, bool, error) { return l.Range(conv, seqs[9], 0, 10) }, nil, false},
			{"Before newest", func() ([]store.Record, bool, error) { return l.Before(conv, 0, 4) }, seqs[6:], true},
			{"Before a seq", func() ([]store.Record, bool, error) { return l.Before(conv, seqs[5], 3) }, seqs[2:5], true},
			{"Before between seqs", func() ([]store.Record, bool, error) { return l.Before(conv, seqs[5]-1, 10) }, seqs[:5], false},
			{"Before far past head", func() ([]store.Record, bool, error) { return l.Before(conv, seqs[9]+1000, 2) }, seqs[8:], true},
			{"Before the first", func() ([]store.Record, bool, error) { return l.Before(conv, seqs[0], 2) }, nil, false},
			{"unknown conversation", func() ([]store.Record, bool, error) { return l.Range("room:nobody", 0, 0, 2) }, nil, false},
		} {
			recs, more, err := tc.read()
			if err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			if got := seqsOf(recs); !slices.Equal(got, tc.want) || more != tc.more {
				t.Errorf("%s: seqs %v more=%v, want %v more=%v", tc.name, got, more, tc.want, tc.more)
			}
		}
		if rec, ok, err := l.Last(conv); err != nil || !ok || rec.Seq != seqs[9] {
			t.Errorf("Last: %d, %v, %v", rec.Seq, ok, err)
		}
		if _, ok, err := l.Get(conv, seqs[0]-1); err != nil || ok {
			t.Errorf("Get of another conversation's seq: %v, %v", ok, err)
		}
		if _, ok, err := l.Last("room:nobody"); err != nil || ok {
			t.Errorf("Last of an empty conversation: %v, %v", ok, err)
		}
		n, err := l.Count(conv, seqs[3], 100, func(data []byte) bool {
			var m parleyv1.Message
			return proto.Unmarshal(data, &m) == nil && m.GetBody() != "body of 5"
		})
		if err != nil || n != 5 {
			t.Errorf("Count: %d, %v, want 5", n, err)
		}
		if n, err := l.Count(conv, 0, 4, func([]byte) bool { return true }); err != nil || n != 4 {
			t.Errorf("Count to max: %d, %v, want 4", n, err)
		}
		if h, err := l.Head(conv); err != nil || h != seqs[9] {
			t.Errorf("Head: %d, %v, want %d", h, err, seqs[9])
		}
	}
	for _, bad := range []string{"", "room:a.b", "room:*", "room:>", "room:a b"} {
		if _, _, err := a.Range(bad, 0, 0, 1); err == nil {
			t.Errorf("Range(%q) worked; want an error", bad)
		}
		if err := a.Publish(context.Background(), post(bad, "alice", "x"), func(router.Result, error) {}); err == nil {
			t.Errorf("Publish to %q worked; want an error", bad)
		}
	}
	if _, ok, err := a.Dedup("alice", "no such id"); err != nil || ok {
		t.Errorf("Dedup of an unknown id: %v, %v", ok, err)
	}
}

// After Close, Publish and Catchup fail with ErrClosed, which the services
// treat as a closed router.
func testClosed(t *testing.T, c *natstest.Cluster) {
	l := node(t, c, 0, names()...)
	l.Close()
	err := l.Publish(context.Background(), post("room:x", "alice", "1"), func(router.Result, error) {})
	if !errors.Is(err, ErrClosed) || !errors.Is(err, router.ErrClosed) {
		t.Fatalf("Publish after Close: %v", err)
	}
	if _, _, _, err := l.Catchup("room:x", 0, 10, &recorder{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Catchup after Close: %v", err)
	}
}

// Paging back with Before from the newest message reaches every message of
// a conversation once, in order, however unevenly its seqs are spaced by
// other conversations' traffic.
func testBeforePages(t *testing.T, c *natstest.Cluster) {
	opts := names()
	a, b := node(t, c, 0, opts...), node(t, c, 1, opts...)
	const conv, n = "room:paged", 150
	var pending []<-chan outcome
	for i := range n {
		pending = append(pending, publishAsync(t, a, post(conv, "alice", fmt.Sprint(i))))
		for j := range (i * 7) % 5 { // bursts of 0 to 4 messages elsewhere
			pending = append(pending, publishAsync(t, b, post(fmt.Sprintf("room:noise%d", j), "bob", fmt.Sprint(i))))
		}
	}
	for _, ch := range pending {
		if o := <-ch; o.err != nil {
			t.Fatal(o.err)
		}
	}
	stored := all(t, a, conv)
	if len(stored) != n {
		t.Fatalf("%d stored, want %d", len(stored), n)
	}
	for _, l := range []*Log{a, b} {
		for _, limit := range []int{1, 7, 37, 200} {
			var got []uint64
			var before uint64
			for {
				recs, more, err := l.Before(conv, before, limit)
				if err != nil {
					t.Fatal(err)
				}
				if len(recs) > limit || (more && len(recs) < limit) {
					t.Fatalf("Before(%d, %d): %d records, more=%v", before, limit, len(recs), more)
				}
				page := make([]uint64, len(recs))
				for i, r := range recs {
					page[i] = decode(t, r).GetSeq()
				}
				got = append(page, got...)
				if !more {
					break
				}
				before = recs[0].Seq
			}
			if len(got) != n {
				t.Fatalf("limit %d: paged back through %d messages, want %d", limit, len(got), n)
			}
			for i, m := range stored {
				if got[i] != m.GetSeq() {
					t.Fatalf("limit %d: message %d has seq %d, want %d", limit, i, got[i], m.GetSeq())
				}
			}
		}
	}
}

// A node forgets conversations nobody uses and picks them up again as if
// new: the head, catch-up and live delivery are right, including messages
// the node's feed passed while it knew nothing of the conversation.
func testForget(t *testing.T, c *natstest.Cluster) {
	ctx := testCtx(t)
	opts := names()
	a := node(t, c, 0, append(opts, WithForget(200*time.Millisecond))...)
	b := node(t, c, 1, opts...)
	const conv = "room:forgotten"
	for i := range 3 {
		publish(t, a, post(conv, "alice", fmt.Sprint(i)))
	}
	var rec recorder
	follow(t, a, conv, 0, 10, &rec)
	a.Unsubscribe(conv, &rec)
	waitFor(t, ctx, "a to forget", func() bool { return a.Stats().Conversations == 0 })
	var last uint64
	for i := 3; i < 5; i++ {
		last = publish(t, b, post(conv, "bob", fmt.Sprint(i))).Seq
	}
	waitFor(t, ctx, "a's feed", func() bool { return a.Stats().FeedSeq >= last })
	if h, err := a.Head(conv); err != nil || h != last {
		t.Fatalf("Head after forgetting: %d, %v; want %d", h, err, last)
	}
	var again recorder
	replay := follow(t, a, conv, 0, 2, &again)
	live := publish(t, b, post(conv, "bob", "5")).Seq
	waitFor(t, ctx, "the live message", func() bool { return len(again.snapshot()) == 1 })
	got := append(replay, again.snapshot()...)
	stored := all(t, b, conv)
	checkChain(t, stored)
	if len(got) != 6 || len(stored) != 6 || got[5].Seq != live {
		t.Fatalf("got %d frames, %d stored", len(got), len(stored))
	}
	for i, f := range got {
		if f.Seq != stored[i].GetSeq() {
			t.Fatalf("frame %d has seq %d, want %d", i, f.Seq, stored[i].GetSeq())
		}
	}
}

// When the feed delivers nothing, Head asks the leader, so a stalled feed
// does not hold it back (a receipt for a message read through another node
// would otherwise be refused as past the head).
func testHeadWithoutFeed(t *testing.T, c *natstest.Cluster) {
	ctx := testCtx(t)
	opts := names()
	a, b := node(t, c, 0, opts...), node(t, c, 1, opts...)
	const conv = "room:stalled"
	publish(t, a, post(conv, "alice", "1"))
	if _, err := a.Head(conv); err != nil {
		t.Fatal(err)
	}
	a.stopFeed() // as if its server had died; the watchdog restarts it within seconds
	last := publish(t, b, post(conv, "bob", "2")).Seq
	waitFor(t, ctx, "a quiet feed", func() bool { return time.Since(time.Unix(0, a.lastFed.Load())) > feedQuiet })
	if h, err := a.Head(conv); err != nil || h != last {
		t.Fatalf("Head with a stalled feed: %d, %v; want %d", h, err, last)
	}
}

// Messages without a client id are all stored: there is nothing to
// recognise a resend by.
func testNoClientID(t *testing.T, c *natstest.Cluster) {
	a := node(t, c, 0, names()...)
	const conv = "room:anonymous"
	first := publish(t, a, post(conv, "alice", ""))
	second := publish(t, a, post(conv, "alice", ""))
	if first.Duplicate || second.Duplicate || first.Seq == second.Seq {
		t.Fatalf("acks %+v and %+v, want two messages", first, second)
	}
	if msgs := all(t, a, conv); len(msgs) != 2 {
		t.Fatalf("%d stored, want 2", len(msgs))
	}
}
