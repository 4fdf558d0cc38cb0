package client_test

// End-to-end tests: the client against real Parley nodes (package
// servertest) on loopback ports, where session_test.go uses the fake
// server. They check the promises of package client's doc comment where
// the fake cannot: real restarts, a real write-behind log, a real
// slow-consumer cut-off, a real change of log.

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/parleychat/parley/client"
	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
	"github.com/parleychat/parley/internal/syncbuf"
	"github.com/parleychat/parley/server"
	"github.com/parleychat/parley/server/servertest"
	"github.com/parleychat/parley/server/store"
)

// join dials addr and registers name there; the Client keeps the token.
func join(t *testing.T, addr, name string, opts ...client.Option) *client.Client {
	t.Helper()
	ctx := testCtx(t)
	c, err := client.Dial(ctx, addr, opts...)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Register(ctx, name, "password-"+name, ""); err != nil {
		t.Fatalf("Register %s: %v", name, err)
	}
	return c
}

// openRoom creates room name as owner and has every other user join it.
func openRoom(t *testing.T, owner *client.Client, name string, others ...*client.Client) string {
	t.Helper()
	ctx := testCtx(t)
	room, err := owner.CreateRoom(ctx, name, "")
	if err != nil {
		t.Fatalf("CreateRoom: %v", err)
	}
	for _, c := range others {
		if _, err := c.JoinRoom(ctx, room.GetId()); err != nil {
			t.Fatalf("JoinRoom: %v", err)
		}
	}
	return room.GetId()
}

// messages lists the messages the application was given in conversation c,
// in the order it was given them.
func (r *recorder) messages(c string) []*parleyv1.Message {
	var out []*parleyv1.Message
	for _, ev := range r.all() {
		if m, ok := ev.(client.MessageEvent); ok && m.Message.GetConversationId() == c {
			out = append(out, m.Message)
		}
	}
	return out
}

// history reads every stored message of conv, oldest first. It pages back
// from the newest page, since after_seq 0 asks for the newest page, not for
// the first.
func history(t *testing.T, c *client.Client, conv string) []*parleyv1.Message {
	t.Helper()
	var all []*parleyv1.Message
	q := client.HistoryQuery{Limit: 500}
	for {
		page, err := c.History(testCtx(t), conv, q)
		if err != nil {
			t.Fatalf("History: %v", err)
		}
		all = append(slices.Clone(page.GetMessages()), all...)
		if !page.GetHasMore() || len(page.GetMessages()) == 0 {
			return all
		}
		q.BeforeSeq = page.GetMessages()[0].GetSeq()
	}
}

// diffMessages says how got differs from want by seq, sender and
// client_message_id, or returns "" if it does not.
func diffMessages(got, want []*parleyv1.Message) string {
	key := func(m *parleyv1.Message) string {
		return fmt.Sprintf("#%d %s/%s", m.GetSeq(), m.GetSenderId(), m.GetClientMessageId())
	}
	for i := range max(len(got), len(want)) {
		g, w := "nothing", "nothing"
		if i < len(got) {
			g = key(got[i])
		}
		if i < len(want) {
			w = key(want[i])
		}
		if g != w {
			return fmt.Sprintf("%d messages, want %d; at index %d got %s, want %s", len(got), len(want), i, g, w)
		}
	}
	return ""
}

// wiretap records every frame of every Chat stream a Client opens, so that
// a test can check what went over the wire: the positions a Session
// resubscribes from and the ids it resends under.
type wiretap struct {
	mu      sync.Mutex // protects streams and the frames of each
	streams []*tappedStream
}

type tappedStream struct {
	grpc.ClientStream
	w    *wiretap
	sent []*parleyv1.ChatRequest
	recv []*parleyv1.ChatResponse
}

// tapped is what one stream carried, as a snapshot.
type tapped struct {
	sent []*parleyv1.ChatRequest
	recv []*parleyv1.ChatResponse
}

func (w *wiretap) option() client.Option {
	return client.WithDialOptions(grpc.WithChainStreamInterceptor(w.intercept))
}

func (w *wiretap) intercept(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	cs, err := streamer(ctx, desc, cc, method, opts...)
	if err != nil || method != parleyv1.ChatService_Chat_FullMethodName {
		return cs, err
	}
	ts := &tappedStream{ClientStream: cs, w: w}
	w.mu.Lock()
	w.streams = append(w.streams, ts)
	w.mu.Unlock()
	return ts, nil
}

func (s *tappedStream) SendMsg(m any) error {
	err := s.ClientStream.SendMsg(m)
	if req, ok := m.(*parleyv1.ChatRequest); ok && err == nil {
		c := proto.Clone(req).(*parleyv1.ChatRequest)
		s.w.mu.Lock()
		s.sent = append(s.sent, c)
		s.w.mu.Unlock()
	}
	return err
}

func (s *tappedStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if resp, ok := m.(*parleyv1.ChatResponse); ok && err == nil {
		c := proto.Clone(resp).(*parleyv1.ChatResponse)
		s.w.mu.Lock()
		s.recv = append(s.recv, c)
		s.w.mu.Unlock()
	}
	return err
}

// snapshot returns the frames of every stream so far, oldest stream first.
func (w *wiretap) snapshot() []tapped {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]tapped, len(w.streams))
	for i, s := range w.streams {
		out[i] = tapped{sent: slices.Clone(s.sent), recv: slices.Clone(s.recv)}
	}
	return out
}

// checkResumes checks every subscribe to conv on the wire against what the
// streams before it received: each one asks for exactly the last seq the
// Session had, with the epoch of the last Subscribed. It returns that
// position at the end.
func checkResumes(t *testing.T, streams []tapped, conv string) client.Position {
	t.Helper()
	var pos client.Position
	for k, st := range streams {
		// A resubscribe is the first thing on a new stream, before anything
		// is received on it.
		for _, f := range st.sent {
			if sub := f.GetSubscribe(); sub != nil && sub.GetConversationId() == conv {
				if got := (client.Position{Seq: sub.GetAfterSeq(), Epoch: sub.GetEpoch()}); got != pos {
					t.Errorf("stream %d subscribed from %+v, want %+v", k, got, pos)
				}
			}
		}
		for _, f := range st.recv {
			if m := f.GetMessage(); m != nil && m.GetConversationId() == conv {
				pos.Seq = max(pos.Seq, m.GetSeq())
			}
			if sb := f.GetSubscribed(); sb != nil && sb.GetConversationId() == conv {
				pos.Seq = max(pos.Seq, sb.GetHeadSeq())
				pos.Epoch = sb.GetEpoch()
			}
		}
	}
	return pos
}

// storedHead reads the newest stored seq of conv from a stopped node's data
// dir.
func storedHead(t *testing.T, dir, conv string) uint64 {
	t.Helper()
	st, err := store.Open(dir, store.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		t.Fatalf("open the stopped node's store: %v", err)
	}
	defer st.Close()
	head, err := st.Head(conv)
	if err != nil {
		t.Fatalf("Head: %v", err)
	}
	return head
}

func TestE2EDirectConversation(t *testing.T) {
	n := servertest.Start(t, "")
	ctx := testCtx(t)
	alice, bob := join(t, n.Addr, "alice"), join(t, n.Addr, "bob")
	dm, err := alice.CreateDirect(ctx, "bob")
	if err != nil {
		t.Fatalf("CreateDirect: %v", err)
	}
	if again, err := bob.CreateDirect(ctx, "alice"); err != nil || again.GetId() != dm.GetId() {
		t.Fatalf("bob's CreateDirect = %v, %v; want %s", again.GetId(), err, dm.GetId())
	}
	conv := dm.GetId()

	sa, ra := record(t, alice, fast()...)
	sb, rb := record(t, bob, fast()...)
	for _, s := range []*client.Session{sa, sb} {
		if err := s.Subscribe(conv, 0); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "both subscribed", func() bool { return len(ra.subscribed(conv)) == 1 && len(rb.subscribed(conv)) == 1 })

	// Both write at once, each waiting for every ack.
	const each = 25
	var mu sync.Mutex
	acks := map[string]*parleyv1.SendResponse{}
	var wg sync.WaitGroup
	for name, s := range map[string]*client.Session{"alice": sa, "bob": sb} {
		wg.Go(func() {
			for i := range each {
				ack, err := s.Send(ctx, conv, fmt.Sprintf("%s %02d", name, i))
				if err != nil {
					t.Errorf("%s: Send: %v", name, err)
					return
				}
				mu.Lock()
				acks[ack.GetClientMessageId()] = ack
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	stored := history(t, alice, conv)
	if len(stored) != 2*each {
		t.Fatalf("%d messages stored, want %d", len(stored), 2*each)
	}
	bodies := map[string][]string{}
	for _, m := range stored {
		ack := acks[m.GetClientMessageId()]
		if ack == nil || ack.GetSeq() != m.GetSeq() || ack.GetDuplicate() {
			t.Errorf("stored #%d %s has ack %v", m.GetSeq(), m.GetClientMessageId(), ack)
		}
		bodies[m.GetSenderId()] = append(bodies[m.GetSenderId()], m.GetBody())
	}
	for _, name := range []string{"alice", "bob"} {
		var want []string
		for i := range each {
			want = append(want, fmt.Sprintf("%s %02d", name, i))
		}
		if !slices.Equal(bodies[name], want) {
			t.Errorf("%s's messages in seq order: %q, want %q", name, bodies[name], want)
		}
	}
	for name, r := range map[string]*recorder{"alice": ra, "bob": rb} {
		eventually(t, name+" to get every message", func() bool { return len(r.messages(conv)) >= len(stored) })
		if d := diffMessages(r.messages(conv), stored); d != "" {
			t.Errorf("%s was given %s", name, d)
		}
	}
}

// TestE2ERestartUnderSends restarts the node twice under a Session that
// keeps sending. The node in the middle commits nothing until it stops, so
// every message it took is stored by its shutdown flush after its streams
// are gone: the Session must resend those under the same
// client_message_id and get duplicate acks from the next node.
func TestE2ERestartUnderSends(t *testing.T) {
	n0 := servertest.Start(t, "")
	ctx := testCtx(t)
	tap := &wiretap{}
	alice := join(t, n0.Addr, "alice", tap.option())
	bob := join(t, n0.Addr, "bob")
	room := openRoom(t, alice, "lobby", bob)

	sa, ra := record(t, alice, fast()...)
	sb, rb := record(t, bob, fast()...)
	for _, s := range []*client.Session{sa, sb} {
		if err := s.Subscribe(room, 0); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "both subscribed", func() bool { return len(ra.subscribed(room)) == 1 && len(rb.subscribed(room)) == 1 })
	const before = 5
	for i := range before {
		if _, err := sa.Send(ctx, room, fmt.Sprintf("before %d", i)); err != nil {
			t.Fatalf("Send: %v", err)
		}
	}

	n1 := n0.Restart(func(c *server.Config) {
		c.FlushInterval = time.Hour
		c.BatchSize = 10000
	})
	eventually(t, "both back on the second node", func() bool { return len(ra.subscribed(room)) >= 2 && len(rb.subscribed(room)) >= 2 })

	type sent struct {
		id, body string
		result   <-chan client.SendResult
	}
	var (
		sends []sent // the sender's until wg.Wait returns
		wg    sync.WaitGroup
	)
	stop := make(chan struct{})
	wg.Go(func() {
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			body := fmt.Sprintf("during %d", i)
			id, result, err := sa.SendAsync(ctx, room, body)
			if err != nil {
				t.Errorf("SendAsync: %v", err)
				return
			}
			sends = append(sends, sent{id, body, result})
		}
	})
	// Registered after the Sessions' cleanups, so it runs before them.
	stopSending := sync.OnceFunc(func() { close(stop); wg.Wait() })
	t.Cleanup(stopSending)

	eventually(t, "the second node to deliver 20 messages", func() bool { return len(ra.messages(room)) >= before+20 })
	n1.Stop()
	head1 := storedHead(t, n1.Dir, room)
	servertest.StartAt(t, n1.Addr, n1.Dir)
	eventually(t, "alice back on the third node", func() bool { return len(ra.subscribed(room)) >= 3 })
	eventually(t, "20 messages sequenced by the third node", func() bool {
		return slices.IndexFunc(ra.messages(room), func(m *parleyv1.Message) bool { return m.GetSeq() >= head1+20 }) >= 0
	})
	stopSending()
	if t.Failed() {
		t.FailNow()
	}

	if head1 < before+20 {
		t.Fatalf("the second node stored up to #%d, want at least #%d: it delivered them", head1, before+20)
	}
	acks := map[string]*parleyv1.SendResponse{}
	for _, s := range sends {
		select {
		case res := <-s.result:
			if res.Err != nil {
				t.Fatalf("send %q: %v", s.body, res.Err)
			}
			if res.Ack.GetClientMessageId() != s.id || res.Ack.GetConversationId() != room {
				t.Fatalf("send %q (%s) acked as %v", s.body, s.id, res.Ack)
			}
			acks[s.id] = res.Ack
		case <-ctx.Done():
			t.Fatalf("send %q never answered", s.body)
		}
	}

	stored := history(t, alice, room)
	if len(stored) != before+len(sends) {
		t.Errorf("%d messages stored, want %d", len(stored), before+len(sends))
	}
	seen := map[string]bool{}
	dups := 0
	for _, m := range stored {
		id := m.GetClientMessageId()
		if seen[id] {
			t.Errorf("%s stored twice", id)
		}
		seen[id] = true
		ack := acks[id]
		if m.GetSeq() <= before {
			continue // acknowledged by the first node
		}
		if ack == nil || ack.GetSeq() != m.GetSeq() {
			t.Errorf("stored #%d %q has ack %v", m.GetSeq(), m.GetBody(), ack)
			continue
		}
		// The second node acknowledged nothing, so whatever it stored can
		// only have been acknowledged by the third as a duplicate.
		if want := m.GetSeq() <= head1; ack.GetDuplicate() != want {
			t.Errorf("ack of #%d (second node's head #%d): duplicate %v, want %v", m.GetSeq(), head1, ack.GetDuplicate(), want)
		}
		if ack.GetDuplicate() {
			dups++
		}
	}
	for id := range acks {
		if !seen[id] {
			t.Errorf("acknowledged %s is not stored", id)
		}
	}
	if dups == 0 {
		t.Error("no resend was answered as a duplicate")
	}

	for name, r := range map[string]*recorder{"alice": ra, "bob": rb} {
		eventually(t, name+" to get every message", func() bool { return len(r.messages(room)) >= len(stored) })
		if d := diffMessages(r.messages(room), stored); d != "" {
			t.Errorf("%s was given %s", name, d)
		}
		if n := r.count(client.StateConnected); n < 3 {
			t.Errorf("%s connected %d times, want at least 3", name, n)
		}
	}

	// On the wire: every resubscribe resumed from the last seq, and a send
	// went out again only under its own id and only while unacknowledged.
	streams := tap.snapshot()
	checkResumes(t, streams, room)
	acked := map[string]bool{}
	onStreams := map[string]int{}
	for k, st := range streams {
		for _, f := range st.sent {
			if s := f.GetSend(); s != nil {
				if acked[s.GetClientMessageId()] {
					t.Errorf("stream %d resent %s after its ack", k, s.GetClientMessageId())
				}
				onStreams[s.GetClientMessageId()]++
			}
		}
		for _, f := range st.recv {
			if a := f.GetSendAck(); a != nil {
				acked[a.GetClientMessageId()] = true
			}
		}
	}
	for id, ack := range acks {
		if ack.GetDuplicate() && onStreams[id] < 2 {
			t.Errorf("duplicate ack for %s, which went out on %d stream(s)", id, onStreams[id])
		}
	}
}

// TestE2ESlowConsumer stops reading a Session's events while another user
// writes to the conversation, so that the server cuts the stream as a slow
// consumer, and checks that the application still gets every message once.
func TestE2ESlowConsumer(t *testing.T) {
	n := servertest.Start(t, "", func(c *server.Config) { c.Queue = 16 })
	ctx := testCtx(t)
	tap := &wiretap{}
	// Fixed HTTP/2 windows (which also turn off gRPC's window growth)
	// bound what the transport buffers, so a paused reader backs up into
	// the server's queue after a known amount.
	alice := join(t, n.Addr, "alice", tap.option(), client.WithDialOptions(
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10)))
	bob := join(t, n.Addr, "bob")
	room := openRoom(t, alice, "lobby", bob)
	sa, ra := record(t, alice, fast(client.WithEventBuffer(32))...)
	if err := sa.Subscribe(room, 0); err != nil {
		t.Fatal(err)
	}
	eventually(t, "Subscribed", func() bool { return len(ra.subscribed(room)) == 1 })
	sb, _ := record(t, bob, fast()...)

	// One send at a time is slow enough for a reader that keeps up, so
	// only the pause can fill the queue. 200 messages of 16 KB are far more
	// than the 32 events, 128 KB of HTTP/2 buffers and 16 queued frames in
	// between.
	ra.pause()
	const total = 200
	filler := strings.Repeat("x", 16000)
	ids := make([]string, total)
	for i := range total {
		ack, err := sb.Send(ctx, room, fmt.Sprintf("%03d %s", i, filler))
		if err != nil {
			t.Fatalf("Send %d: %v", i, err)
		}
		ids[i] = ack.GetClientMessageId()
	}
	ra.resume()

	eventually(t, "every message", func() bool { return len(ra.messages(room)) >= total })
	var disconnects []client.StateEvent
	for _, st := range ra.states() {
		if st.State == client.StateDisconnected {
			disconnects = append(disconnects, st)
		}
	}
	if len(disconnects) == 0 || status.Code(disconnects[0].Err) != codes.ResourceExhausted {
		t.Fatalf("want a RESOURCE_EXHAUSTED disconnect, got %+v", disconnects)
	}
	if msg := status.Convert(disconnects[0].Err).Message(); !strings.Contains(msg, "slow consumer") {
		t.Errorf("cut with %q, want it to say slow consumer", msg)
	}
	stored := history(t, bob, room)
	if d := diffMessages(ra.messages(room), stored); d != "" {
		t.Errorf("alice was given %s", d)
	}
	for i, m := range ra.messages(room) {
		if i < total && m.GetClientMessageId() != ids[i] {
			t.Fatalf("message %d is %s, want %s", i, m.GetClientMessageId(), ids[i])
		}
	}
	streams := tap.snapshot()
	if len(streams) < 2 {
		t.Fatalf("%d streams, want a second one after the cut", len(streams))
	}
	checkResumes(t, streams, room)
	if sub := streams[1].sent[0].GetSubscribe(); sub.GetAfterSeq() == 0 || sub.GetAfterSeq() >= total {
		t.Errorf("resumed after #%d, want a seq inside the burst", sub.GetAfterSeq())
	}
}

// TestE2EStuckConsumerIsCut checks that a consumer that stops reading
// altogether is really disconnected, not only marked as cut, so that it
// holds nothing on the server and does not hold up its shutdown.
func TestE2EStuckConsumerIsCut(t *testing.T) {
	var logs syncbuf.Buffer
	n := servertest.Start(t, "", func(c *server.Config) {
		c.Queue = 16
		c.ShutdownTimeout = 5 * time.Second
		c.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	})
	ctx := testCtx(t)
	alice := join(t, n.Addr, "alice", client.WithDialOptions(
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10)))
	bob := join(t, n.Addr, "bob")
	room := openRoom(t, alice, "lobby", bob)
	sa, ra := record(t, alice, fast(client.WithEventBuffer(32))...)
	if err := sa.Subscribe(room, 0); err != nil {
		t.Fatal(err)
	}
	eventually(t, "Subscribed", func() bool { return len(ra.subscribed(room)) == 1 })
	sb, _ := record(t, bob, fast()...)

	ra.pause()
	filler := strings.Repeat("x", 16000)
	for i := range 100 {
		if _, err := sb.Send(ctx, room, fmt.Sprintf("%03d %s", i, filler)); err != nil {
			t.Fatalf("Send %d: %v", i, err)
		}
	}
	n.Stop()
	if strings.Contains(logs.String(), "did not end in time") {
		t.Errorf("shutdown waited for the stuck stream:\n%s", logs.String())
	}
}

// TestE2EEpochReset replaces the node with one on a new data dir at the
// same address under a subscribed Session. The old log had three messages;
// the new one fewer, none or more.
func TestE2EEpochReset(t *testing.T) {
	tests := []struct {
		name   string
		newLog int
	}{
		{"new log shorter", 2},
		{"new log empty", 0},
		{"new log longer", 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := servertest.Start(t, "")
			ctx := testCtx(t)
			alice := join(t, n.Addr, "alice")
			room := openRoom(t, alice, "lobby")
			for i := range 3 {
				if _, err := alice.Send(ctx, room, fmt.Sprintf("old %d", i)); err != nil {
					t.Fatal(err)
				}
			}
			// Without an event buffer, a paused recorder holds the Session
			// between two streams while the new node is set up.
			s, r := record(t, alice, fast(client.WithEventBuffer(0))...)
			if err := s.Subscribe(room, 0); err != nil {
				t.Fatal(err)
			}
			eventually(t, "the old log", func() bool { return len(r.subscribed(room)) == 1 })
			oldEpoch := r.subscribed(room)[0].GetEpoch()
			if got := s.Positions()[room]; got != (client.Position{Seq: 3, Epoch: oldEpoch}) {
				t.Fatalf("position on the old node %+v", got)
			}

			r.pause()
			n.Stop()
			n2 := servertest.StartAt(t, n.Addr, "")
			if n2.Epoch() == oldEpoch {
				t.Fatal("the new node has the old epoch")
			}
			// The new node knows nobody: register again, rebuild the room.
			if _, err := alice.Register(ctx, "alice", "password-alice", ""); err != nil {
				t.Fatal(err)
			}
			openRoom(t, alice, "lobby")
			for i := range tt.newLog {
				if _, err := alice.Send(ctx, room, fmt.Sprintf("new %d", i)); err != nil {
					t.Fatal(err)
				}
			}
			r.resume()

			eventually(t, "Subscribed on the new node", func() bool { return len(r.subscribed(room)) == 2 })
			sb := r.subscribed(room)[1]
			if !sb.GetEpochReset() || sb.GetEpoch() != n2.Epoch() || sb.GetHeadSeq() != uint64(tt.newLog) {
				t.Errorf("Subscribed = %v, want epoch_reset, epoch %s, head %d", sb, n2.Epoch(), tt.newLog)
			}
			if got := s.Positions()[room]; got != (client.Position{Seq: uint64(tt.newLog), Epoch: n2.Epoch()}) {
				t.Errorf("position after the reset %+v, want #%d in %s", got, tt.newLog, n2.Epoch())
			}
			// The new log is replayed from its start although its seqs
			// repeat the old ones, and live messages follow it.
			live, err := alice.Send(ctx, room, "live")
			if err != nil {
				t.Fatal(err)
			}
			if live.GetSeq() != uint64(tt.newLog+1) {
				t.Fatalf("live message got #%d, want #%d", live.GetSeq(), tt.newLog+1)
			}
			want := []string{"old 0 #1", "old 1 #2", "old 2 #3"}
			for i := range tt.newLog {
				want = append(want, fmt.Sprintf("new %d #%d", i, i+1))
			}
			want = append(want, fmt.Sprintf("live #%d", tt.newLog+1))
			var got []string
			eventually(t, "the live message", func() bool {
				got = got[:0]
				for _, m := range r.messages(room) {
					got = append(got, fmt.Sprintf("%s #%d", m.GetBody(), m.GetSeq()))
				}
				return len(got) >= len(want)
			})
			if !slices.Equal(got, want) {
				t.Errorf("the application was given %q, want %q", got, want)
			}
			// The reset comes after the new log's replay, before live ones.
			var order []string
			for _, ev := range r.all() {
				switch ev := ev.(type) {
				case client.MessageEvent:
					order = append(order, ev.Message.GetBody())
				case client.SubscribedEvent:
					order = append(order, fmt.Sprintf("subscribed reset=%v", ev.Subscribed.GetEpochReset()))
				}
			}
			if i := slices.Index(order, "subscribed reset=true"); i != 4+tt.newLog || order[len(order)-1] != "live" {
				t.Errorf("event order %q", order)
			}
		})
	}
}

// TestE2ECrash loses every message a node delivered but had not yet
// committed, as a crash does, and checks DESIGN's promise for it: the
// senders' outboxes bring the messages back with new seqs past the
// write-behind window, subscribers that showed them drop the copies, and a
// newcomer sees each once.
func TestE2ECrash(t *testing.T) {
	n1 := servertest.Start(t, "", func(c *server.Config) {
		c.FlushInterval = time.Hour
		c.BatchSize = 10000
	})
	ctx := testCtx(t)
	alice := join(t, n1.Addr, "alice")
	bob := join(t, n1.Addr, "bob")
	carol := join(t, n1.Addr, "carol")
	room := openRoom(t, alice, "lobby", bob, carol)

	sa, ra := record(t, alice, fast()...)
	sb, rb := record(t, bob, fast()...)
	for _, s := range []*client.Session{sa, sb} {
		if err := s.Subscribe(room, 0); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "both subscribed", func() bool { return len(ra.subscribed(room)) == 1 && len(rb.subscribed(room)) == 1 })
	const lost = 5
	results := make([]<-chan client.SendResult, lost)
	for i := range lost {
		var err error
		if _, results[i], err = sa.SendAsync(ctx, room, fmt.Sprintf("lost %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "the messages delivered", func() bool { return len(ra.messages(room)) == lost && len(rb.messages(room)) == lost })

	// The node has committed nothing since the room was made and its writer
	// is idle, so its file as it is now is what a crash would leave: no
	// messages, and not marked clean.
	db := filepath.Join(n1.Dir, store.FileName)
	crashed, err := os.ReadFile(db)
	if err != nil {
		t.Fatal(err)
	}
	n1.Stop()
	if err := os.WriteFile(db, crashed, 0o600); err != nil {
		t.Fatal(err)
	}
	servertest.StartAt(t, n1.Addr, n1.Dir)

	const window = 4096 // server.Config.Window's default
	for i, result := range results {
		select {
		case res := <-result:
			if res.Err != nil || res.Ack.GetDuplicate() || res.Ack.GetSeq() <= window {
				t.Errorf("lost %d answered %+v, want a new seq past %d", i, res, window)
			}
		case <-ctx.Done():
			t.Fatalf("lost %d never answered", i)
		}
	}
	// Delivery is in seq order, so once the next message is in, the
	// resent ones have been dealt with.
	after, err := sa.Send(ctx, room, "after")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"lost 0", "lost 1", "lost 2", "lost 3", "lost 4", "after"}
	for name, r := range map[string]*recorder{"alice": ra, "bob": rb} {
		eventually(t, name+" to get the next message", func() bool {
			return slices.ContainsFunc(r.messages(room), func(m *parleyv1.Message) bool { return m.GetSeq() == after.GetSeq() })
		})
		var got []string
		for _, m := range r.messages(room) {
			got = append(got, m.GetBody())
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s was given %q, want %q", name, got, want)
		}
	}

	stored := history(t, carol, room)
	if len(stored) != lost+1 || stored[0].GetSeq() <= window {
		t.Fatalf("stored %d messages from #%d, want %d past #%d", len(stored), stored[0].GetSeq(), lost+1, window)
	}
	sc, rc := record(t, carol, fast()...)
	if err := sc.Subscribe(room, 0); err != nil {
		t.Fatal(err)
	}
	eventually(t, "carol's replay", func() bool { return len(rc.subscribed(room)) == 1 })
	if d := diffMessages(rc.messages(room), stored); d != "" {
		t.Errorf("carol was given %s", d)
	}
}

// TestE2ERefusals checks that the server's refusals of single frames reach
// the application as typed errors while the stream stays up.
func TestE2ERefusals(t *testing.T) {
	n := servertest.Start(t, "")
	ctx := testCtx(t)
	alice, bob := join(t, n.Addr, "alice"), join(t, n.Addr, "bob")
	own := openRoom(t, alice, "lobby")
	private := openRoom(t, bob, "private")
	s, r := record(t, alice, fast()...)

	tests := []struct {
		conv, body string
		code       codes.Code
	}{
		{private, "let me in", codes.PermissionDenied},
		{own, "  ", codes.InvalidArgument},
		{"no such id", "hello", codes.InvalidArgument},
	}
	for _, tt := range tests {
		id, result, err := s.SendAsync(ctx, tt.conv, tt.body)
		if err != nil {
			t.Fatal(err)
		}
		res := <-result
		if status.Code(res.Err) != tt.code || res.Ack != nil {
			t.Errorf("send %q to %q: %+v, want %v", tt.body, tt.conv, res, tt.code)
		}
		eventually(t, "the error event", func() bool {
			return slices.ContainsFunc(r.errors(), func(e client.ErrorEvent) bool { return e.Frame.GetClientMessageId() == id })
		})
	}
	if err := s.Subscribe(private, 0); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the refused subscribe", func() bool {
		return slices.ContainsFunc(r.errors(), func(e client.ErrorEvent) bool {
			return e.Frame.GetFrame() == "subscribe" && status.Code(e.Err) == codes.PermissionDenied && e.Frame.GetConversationId() == private
		})
	})
	if _, err := s.Send(ctx, own, "still fine"); err != nil {
		t.Errorf("Send after the refusals: %v", err)
	}
	if n := r.count(client.StateConnected); n != 1 {
		t.Errorf("connected %d times, want once", n)
	}
}

// TestE2EKeyChangeStopsSession restarts the node with another signing key,
// so that the Session's token is refused on reconnect: it must stop for
// good and fail what it still had to send.
func TestE2EKeyChangeStopsSession(t *testing.T) {
	n := servertest.Start(t, "")
	ctx := testCtx(t)
	alice := join(t, n.Addr, "alice")
	room := openRoom(t, alice, "lobby")
	s, r := record(t, alice, fast()...)
	if err := s.Subscribe(room, 0); err != nil {
		t.Fatal(err)
	}
	eventually(t, "Subscribed", func() bool { return len(r.subscribed(room)) == 1 })

	n.Stop()
	_, result, err := s.SendAsync(ctx, room, "never")
	if err != nil {
		t.Fatal(err)
	}
	servertest.StartAt(t, n.Addr, n.Dir, func(c *server.Config) { c.SigningKey = []byte("another-signing-key-0123456789ab") })
	select {
	case res := <-result:
		if status.Code(res.Err) != codes.Unauthenticated {
			t.Errorf("pending send ended with %+v, want UNAUTHENTICATED", res)
		}
	case <-ctx.Done():
		t.Fatal("pending send never answered")
	}
	select {
	case <-r.closed:
	case <-ctx.Done():
		t.Fatal("Events not closed")
	}
	if n := r.count(client.StateStopped); n != 1 || status.Code(s.Err()) != codes.Unauthenticated {
		t.Errorf("%d Stopped events, Err %v; want one and UNAUTHENTICATED", n, s.Err())
	}
	// The refused stream opened, but the server never took it.
	if n := r.count(client.StateConnected); n != 1 {
		t.Errorf("connected %d times, want only the first", n)
	}

	// Logging in again gets a token for the new key and a working Session.
	if _, err := alice.Login(ctx, "alice", "password-alice"); err != nil {
		t.Fatal(err)
	}
	s2, _ := record(t, alice, fast()...)
	if _, err := s2.Send(ctx, room, "again"); err != nil {
		t.Errorf("Send after logging in again: %v", err)
	}
}

func TestE2ERTT(t *testing.T) {
	n := servertest.Start(t, "")
	c := join(t, n.Addr, "alice")
	// Default options: the first ping goes out as soon as the stream opens,
	// long before the 15s interval.
	s, r := record(t, c)
	eventually(t, "a round trip", func() bool { return s.RTT() > 0 })
	if n := r.count(client.StateDisconnected); n != 0 {
		t.Errorf("%d disconnects on a healthy stream", n)
	}
}
