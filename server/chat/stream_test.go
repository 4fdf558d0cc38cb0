package chat

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"

	"github.com/parleychat/parley/server/router"
	"github.com/parleychat/parley/server/store"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// A stream holds at most one Notification per conversation until it is
// written; a full queue drops it without leaving the conversation muted.
func TestNotificationsCoalesceUntilWritten(t *testing.T) {
	o := &outbound{svc: &Service{}, q: newQueue(3)}
	f := &router.Frame{}
	for range 5 {
		o.notify("room:a", f)
	}
	o.notify("room:b", f)
	if o.q.len() != 2 {
		t.Fatalf("%d frames queued for 6 posts in 2 conversations, want 2", o.q.len())
	}
	// The writer writes room:a's: the next post there queues a new one.
	item, _ := o.q.take()
	if n := item.(note); n.conv != "room:a" {
		t.Fatalf("first queued note is for %s", n.conv)
	} else {
		o.noteSent(n.conv)
	}
	o.notify("room:a", f)
	o.notify("room:c", f)
	if o.q.len() != 3 {
		t.Fatalf("%d frames queued, want 3 (room:b, room:a, room:c)", o.q.len())
	}
	// Full: room:d is dropped and counted, and not left marked as queued.
	o.notify("room:d", f)
	if got := o.svc.droppedEvents.Load(); got != 1 {
		t.Fatalf("dropped events = %d, want 1", got)
	}
	o.q.take()
	o.notify("room:d", f)
	if o.q.len() != 3 {
		t.Fatal("room:d stayed muted after its notification was dropped")
	}
}

// The queue is FIFO, bounded, counts what it holds, and gives back a
// burst's memory once drained.
func TestQueue(t *testing.T) {
	q := newQueue(300)
	for i := range 300 {
		if !q.put(i) {
			t.Fatalf("put %d refused below the bound", i)
		}
	}
	if q.put(300) {
		t.Fatal("put accepted past the bound")
	}
	for i := range 300 {
		if q.len() != 300-i {
			t.Fatalf("len %d with %d items queued", q.len(), 300-i)
		}
		item, ok := q.take()
		if !ok || item != i {
			t.Fatalf("take %d = %v, %v", i, item, ok)
		}
	}
	if _, ok := q.take(); ok || q.len() != 0 {
		t.Fatal("take from an empty queue")
	}
	if q.items != nil {
		t.Fatalf("drained queue holds an array of %d", cap(q.items))
	}
}

// A batch of posts from several senders calls the webhook once per post,
// for every offline member but that post's sender (w has a stream
// elsewhere: nobody is left out, and the list its call shares is not
// changed by the calls after it).
func TestNotifyBatchWebhookPerSender(t *testing.T) {
	var calls []func() string // formatted at the end, to see the lists as they are then
	s := &Service{opts: options{webhook: func(users []string, conv string, seq uint64, sender, _ string, _ time.Time) {
		calls = append(calls, func() string { return fmt.Sprintf("#%d %s -> %v", seq, sender, users) })
	}}}
	s.hub = newHub(s, 0, nil)
	c := store.Conversation{ID: "room:r", Members: []string{"x", "y", "z"}}
	var posts []post
	for i, sender := range []string{"x", "y", "x", "w", "z"} {
		posts = append(posts, post{conv: c, sender: sender, res: router.Result{Conv: c.ID, Seq: uint64(i + 1)}})
	}
	s.notify(newReachCache(s.hub).get(c), c, posts, true, true)
	var got []string
	for _, call := range calls {
		got = append(got, call())
	}
	want := []string{"#1 x -> [y z]", "#2 y -> [x z]", "#3 x -> [y z]", "#4 w -> [x y z]", "#5 z -> [x y]"}
	if !slices.Equal(got, want) {
		t.Fatalf("webhook calls %q, want %q", got, want)
	}
}

// noConversations is a Store in which nobody is in a conversation, for
// tests of the hub: presence then announces to nobody.
type noConversations struct{ Store }

func (noConversations) UserConversations(string) ([]string, error) { return nil, nil }

// The notifier's cache of whom a conversation reaches gives the answer the
// hub would give now after each change that answer depends on, and keeps
// it while nothing changes.
func TestReachCacheFollowsChanges(t *testing.T) {
	s := &Service{store: noConversations{}, opts: options{maxStreams: 4, maxSubs: 4}}
	s.hub = newHub(s, time.Hour, nil)
	defer s.hub.close()
	newStream := func(user string) *outbound {
		return &outbound{svc: s, user: user, q: newQueue(16), following: map[string]bool{}}
	}
	x1, x2, y := newStream("x"), newStream("x"), newStream("y")
	c := store.Conversation{ID: "room:r", Members: []string{"x", "y", "z"}}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	rc := newReachCache(s.hub)
	for _, step := range []struct {
		name   string
		change func()
	}{
		{"no streams", func() {}},
		{"x opens a stream", func() { must(s.hub.add("x", x1)) }},
		{"x opens another", func() { must(s.hub.add("x", x2)) }},
		{"y opens one", func() { must(s.hub.add("y", y)) }},
		{"a stream of x follows the room", func() { must(x1.follow(c.ID)) }},
		{"it follows another conversation too", func() { must(x1.follow("room:other")) }},
		{"it stops following the room", func() { x1.unfollow(c.ID) }},
		{"z has a stream on another node", func() { s.hub.remoteChange("n2", "z", true, time.Time{}) }},
		{"z's stream there closes", func() { s.hub.remoteChange("n2", "z", false, time.Now()) }},
		{"y closes its stream", func() { s.hub.remove("y", y) }},
		{"y leaves the room", func() { c.Members = []string{"x", "z"} }},
	} {
		step.change()
		got := rc.get(c)
		outs, offline := s.hub.reach(c.ID, c.Members)
		if !sameStreams(got.outs, outs) || !slices.Equal(got.offline, offline) {
			t.Fatalf("%s: cached reach %v offline %q, the hub says %v offline %q", step.name, users(got.outs), got.offline, users(outs), offline)
		}
		if again := rc.get(c); len(got.outs) > 0 && &again.outs[0] != &got.outs[0] {
			t.Fatalf("%s: reach worked out again with nothing changed", step.name)
		}
	}
}

func sameStreams(a, b []*outbound) bool {
	count := make(map[*outbound]int)
	for _, o := range a {
		count[o]++
	}
	for _, o := range b {
		count[o]--
	}
	for _, n := range count {
		if n != 0 {
			return false
		}
	}
	return true
}

func users(outs []*outbound) []string {
	var us []string
	for _, o := range outs {
		us = append(us, o.user)
	}
	return us
}

// A send that the log refuses is answered with an error frame naming its
// frame, conversation and client message id; the log's result is empty
// then, so none of them may come from it.
func TestRefusedSendNamesItsConversation(t *testing.T) {
	s := &Service{opts: options{logger: slog.New(slog.DiscardHandler)}}
	o := &outbound{svc: s, user: "alice", ctx: context.Background(), q: newQueue(4), inflight: make(chan struct{}, 1)}
	o.durable(7, "send", "room:a", "m1", func(ack router.AckFunc) error {
		ack(router.Result{}, errors.New("disk full"))
		return nil
	})
	if len(o.ackQ) != 1 {
		t.Fatalf("%d answers queued, want 1", len(o.ackQ))
	}
	e := o.ackQ[0].GetError()
	if e.GetFrameId() != 7 || e.GetFrame() != "send" || e.GetConversationId() != "room:a" || e.GetClientMessageId() != "m1" || codes.Code(e.GetCode()) != codes.Unavailable {
		t.Fatalf("answered %v, want an UNAVAILABLE error frame for send 7, room:a, m1", o.ackQ[0])
	}
}

// The "message not stored" line comes once an interval at most, and the
// next one counts the lines left out.
func TestLogEvery(t *testing.T) {
	l := logEvery{interval: time.Second}
	t0 := time.Unix(1000, 0)
	type call struct {
		at      time.Duration
		ok      bool
		skipped int
	}
	for i, c := range []call{
		{0, true, 0},
		{10 * time.Millisecond, false, 0},
		{999 * time.Millisecond, false, 0},
		{time.Second, true, 2},
		{1500 * time.Millisecond, false, 0},
		{5 * time.Second, true, 1},
		{7 * time.Second, true, 0},
	} {
		if ok, skipped := l.allow(t0.Add(c.at)); ok != c.ok || skipped != c.skipped {
			t.Fatalf("call %d at %v: allow = %v, %d; want %v, %d", i, c.at, ok, skipped, c.ok, c.skipped)
		}
	}
}

// BenchmarkNotifyRoom notifies one post at a time in a room whose members
// all have a stream, all but four following it (the room at 100 msg/s of
// the load generator's suite, at more sizes). "cached" keeps the notifier's
// reach between posts, as it does while nothing changes; "walk" works it
// out for every post, as every post did before it was kept.
func BenchmarkNotifyRoom(b *testing.B) {
	for _, members := range []int{100, 1000, 10000} {
		s := &Service{store: noConversations{}, opts: options{maxStreams: 4, maxSubs: 4}}
		s.hub = newHub(s, time.Hour, nil)
		c := store.Conversation{ID: "room:r"}
		for i := range members {
			user := fmt.Sprintf("u%05d", i)
			c.Members = append(c.Members, user)
			o := &outbound{svc: s, user: user, q: newQueue(16), following: map[string]bool{}}
			if i >= 4 {
				o.following[c.ID] = true
			}
			if err := s.hub.add(user, o); err != nil {
				b.Fatal(err)
			}
		}
		posts := []post{{conv: c, sender: "u00009", res: router.Result{Conv: c.ID, Seq: 1}}}
		for _, bc := range []struct {
			name   string
			cached bool
		}{{"cached", true}, {"walk", false}} {
			b.Run(fmt.Sprintf("members=%d/%s", members, bc.name), func(b *testing.B) {
				reach := newReachCache(s.hub)
				for b.Loop() {
					if !bc.cached {
						reach = newReachCache(s.hub)
					}
					s.notify(reach.get(c), c, posts, true, false)
				}
			})
		}
		s.hub.close()
	}
}
