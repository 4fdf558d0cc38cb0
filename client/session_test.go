package client_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/parleychat/parley/client"
	"github.com/parleychat/parley/client/internal/fakeserver"
)

func TestSendIsAcknowledged(t *testing.T) {
	srv, c := setup(t)
	s, r := record(t, c, fast()...)
	ctx := testCtx(t)

	for i, body := range []string{"one", "two", "three"} {
		ack, err := s.Send(ctx, conv, body)
		if err != nil {
			t.Fatalf("Send(%q): %v", body, err)
		}
		if ack.GetSeq() != uint64(i+1) || ack.GetDuplicate() || ack.GetConversationId() != conv {
			t.Errorf("ack for %q = %v, want seq %d, not duplicate", body, ack, i+1)
		}
	}
	id, result, err := s.SendAsync(ctx, conv, "four")
	if err != nil {
		t.Fatalf("SendAsync: %v", err)
	}
	if len(id) == 0 || len(id) > 64 {
		t.Errorf("client_message_id %q: want 1 to 64 characters", id)
	}
	select {
	case res := <-result:
		if res.Err != nil || res.Ack.GetClientMessageId() != id || res.Ack.GetSeq() != 4 {
			t.Errorf("async result = %+v, want ack of %s with seq 4", res, id)
		}
	case <-ctx.Done():
		t.Fatal("no async result")
	}
	if got := len(srv.Messages(conv)); got != 4 {
		t.Errorf("server stored %d messages, want 4", got)
	}
	eventually(t, "the Connected event", func() bool { return r.count(client.StateConnected) > 0 })
	if n := r.count(client.StateConnected); n != 1 {
		t.Errorf("connected %d times, want 1", n)
	}
}

func TestSubscribeReplaysThenGoesLive(t *testing.T) {
	tests := []struct {
		name     string
		afterSeq uint64
		replayed []uint64
	}{
		{"from the start", 0, []uint64{1, 2, 3}},
		{"from the middle", 2, []uint64{3}},
		{"from the head", 3, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, c := setup(t)
			publish(t, srv, "a", "b", "c")
			s, r := record(t, c, fast()...)
			if err := s.Subscribe(conv, tt.afterSeq); err != nil {
				t.Fatalf("Subscribe: %v", err)
			}
			eventually(t, "Subscribed", func() bool { return len(r.subscribed(conv)) == 1 })
			if got := r.seqs(conv); !slices.Equal(got, tt.replayed) {
				t.Errorf("replayed %v, want %v", got, tt.replayed)
			}
			if sb := r.subscribed(conv)[0]; sb.GetHeadSeq() != 3 || sb.GetEpoch() != srv.Epoch() {
				t.Errorf("Subscribed = %v, want head 3 epoch %s", sb, srv.Epoch())
			}

			publish(t, srv, "d")
			want := append(slices.Clone(tt.replayed), 4)
			eventually(t, "live message", func() bool { return slices.Equal(r.seqs(conv), want) })
			if got := s.Positions()[conv]; got != (client.Position{Seq: 4, Epoch: srv.Epoch()}) {
				t.Errorf("position = %+v, want seq 4 in %s", got, srv.Epoch())
			}
		})
	}
}

// TestReconnectResumes breaks the stream in each way the server or the
// network can, and checks that the Session resubscribes from the last seq
// with the last epoch and neither loses nor repeats a message.
func TestReconnectResumes(t *testing.T) {
	tests := []struct {
		name    string
		opts    []client.SessionOption
		breakIt func(t *testing.T, srv *fakeserver.Server)
	}{
		{"slow consumer", nil, func(t *testing.T, srv *fakeserver.Server) {
			srv.KillStreams(codes.ResourceExhausted, "slow consumer")
		}},
		{"server shutting down", nil, func(t *testing.T, srv *fakeserver.Server) {
			srv.KillStreams(codes.Unavailable, "server shutting down")
		}},
		{"server restart", nil, func(t *testing.T, srv *fakeserver.Server) {
			// The message published while the server is down must come
			// from the replay.
			if err := srv.Restart(func() { publish(t, srv, "while down") }); err != nil {
				t.Fatal(err)
			}
		}},
		{"missed pong", []client.SessionOption{client.WithPing(20*time.Millisecond, 200*time.Millisecond)}, func(t *testing.T, srv *fakeserver.Server) {
			srv.DropPongs(true)
			opened := srv.StreamsOpened()
			eventually(t, "a new stream", func() bool { return srv.StreamsOpened() > opened })
			srv.DropPongs(false)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, c := setup(t)
			publish(t, srv, "a", "b", "c")
			s, r := record(t, c, fast(tt.opts...)...)
			if err := s.Subscribe(conv, 0); err != nil {
				t.Fatal(err)
			}
			eventually(t, "first Subscribed", func() bool { return len(r.subscribed(conv)) == 1 })
			epoch := srv.Epoch()

			tt.breakIt(t, srv)
			eventually(t, "second Subscribed", func() bool { return len(r.subscribed(conv)) >= 2 })
			publish(t, srv, "after")

			want := make([]uint64, len(srv.Messages(conv)))
			for i := range want {
				want[i] = uint64(i + 1)
			}
			eventually(t, "every message once", func() bool { return slices.Equal(r.seqs(conv), want) })

			subs := srv.Subscribes()
			if len(subs) < 2 {
				t.Fatalf("server saw %d subscribes, want at least 2", len(subs))
			}
			resub := subs[1]
			if resub.GetAfterSeq() != 3 || resub.GetEpoch() != epoch {
				t.Errorf("resubscribe = after_seq %d epoch %q, want 3 %q", resub.GetAfterSeq(), resub.GetEpoch(), epoch)
			}
			var disconnected []client.StateEvent
			for _, st := range r.states() {
				if st.State == client.StateDisconnected {
					disconnected = append(disconnected, st)
				}
			}
			if len(disconnected) == 0 || disconnected[0].Err == nil {
				t.Errorf("want a Disconnected event with a reason, got %+v", r.states())
			}
			// Slow reader or not, the stream works again.
			if _, err := s.Send(testCtx(t), conv, "still works"); err != nil {
				t.Errorf("Send after reconnect: %v", err)
			}
		})
	}
}

func TestMissedPongReportsPingTimeout(t *testing.T) {
	srv, c := setup(t)
	srv.DropPongs(true)
	_, r := record(t, c, fast(client.WithPing(20*time.Millisecond, 100*time.Millisecond))...)
	eventually(t, "a disconnect", func() bool { return r.count(client.StateDisconnected) > 0 })
	for _, st := range r.states() {
		if st.State == client.StateDisconnected && !errors.Is(st.Err, client.ErrPingTimeout) {
			t.Errorf("Disconnected.Err = %v, want ErrPingTimeout", st.Err)
		}
	}
}

// TestOutboxResendsWithSameID loses the ack of a stored message, breaks the
// stream, and checks that the resend carries the same client_message_id,
// is answered as a duplicate and is not delivered twice.
func TestOutboxResendsWithSameID(t *testing.T) {
	srv, c := setup(t)
	s, r := record(t, c, fast()...)
	if err := s.Subscribe(conv, 0); err != nil {
		t.Fatal(err)
	}
	eventually(t, "Subscribed", func() bool { return len(r.subscribed(conv)) == 1 })

	srv.DropAcks(true)
	id, result, err := s.SendAsync(testCtx(t), conv, "hello")
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the message stored", func() bool { return len(srv.Messages(conv)) == 1 })
	srv.DropAcks(false)
	srv.KillStreams(codes.Unavailable, "going away")

	var res client.SendResult
	select {
	case res = <-result:
	case <-testCtx(t).Done():
		t.Fatal("no result after reconnect")
	}
	if res.Err != nil {
		t.Fatalf("send failed: %v", res.Err)
	}
	if !res.Ack.GetDuplicate() || res.Ack.GetSeq() != 1 || res.Ack.GetClientMessageId() != id {
		t.Errorf("ack = %v, want the original (seq 1, %s) marked duplicate", res.Ack, id)
	}
	var ids []string
	for _, f := range srv.Sends() {
		ids = append(ids, f.GetClientMessageId())
	}
	if !slices.Equal(ids, []string{id, id}) {
		t.Errorf("send frames carried ids %v, want %s twice", ids, id)
	}
	// The delivery may have been cut by the kill and come from the replay,
	// which precedes the ack; either way the recorder may lag behind.
	eventually(t, "the delivery", func() bool { return len(r.seqs(conv)) > 0 })
	if got := r.seqs(conv); !slices.Equal(got, []uint64{1}) {
		t.Errorf("delivered %v, want [1]", got)
	}
}

// TestSendsQueuedOfflineGoOutOnConnect sends while the server is down.
func TestSendsQueuedOfflineGoOutOnConnect(t *testing.T) {
	srv, c := setup(t)
	s, r := record(t, c, fast()...)
	eventually(t, "connected", func() bool { return r.count(client.StateConnected) == 1 })

	var results []<-chan client.SendResult
	if err := srv.Restart(func() {
		for i := range 3 {
			_, ch, err := s.SendAsync(testCtx(t), conv, fmt.Sprint("offline ", i))
			if err != nil {
				t.Error(err)
				return
			}
			results = append(results, ch)
		}
	}); err != nil {
		t.Fatal(err)
	}
	for i, ch := range results {
		res := <-ch
		if res.Err != nil || res.Ack.GetSeq() != uint64(i+1) {
			t.Errorf("send %d: %+v, want seq %d in order", i, res, i+1)
		}
	}
}

func TestDuplicateDeliveriesAreDropped(t *testing.T) {
	srv, c := setup(t)
	s, r := record(t, c, fast()...)
	if err := s.Subscribe(conv, 0); err != nil {
		t.Fatal(err)
	}
	eventually(t, "Subscribed", func() bool { return len(r.subscribed(conv)) == 1 })

	first, err := srv.Publish("bob", conv, "first")
	if err != nil {
		t.Fatal(err)
	}
	// The same (sender, client_message_id) under a new seq, as after a
	// crash and a resend from the sender's outbox.
	if _, err := srv.Redeliver(conv, first.GetSeq()); err != nil {
		t.Fatal(err)
	}
	// A stale seq with a new id.
	stale := proto.CloneOf(first)
	stale.ClientMessageId = "some-other-id"
	srv.Inject(stale)
	publish(t, srv, "second")

	eventually(t, "second message", func() bool { return len(r.seqs(conv)) >= 2 })
	if got := r.seqs(conv); !slices.Equal(got, []uint64{1, 3}) {
		t.Errorf("delivered %v, want [1 3] (2 is a duplicate of 1)", got)
	}

	// A replay from the start repeats nothing the Session already showed.
	if err := s.Unsubscribe(conv); err != nil {
		t.Fatal(err)
	}
	if err := s.Subscribe(conv, 0); err != nil {
		t.Fatal(err)
	}
	eventually(t, "second Subscribed", func() bool { return len(r.subscribed(conv)) == 2 })
	publish(t, srv, "third")
	eventually(t, "third message", func() bool { return len(r.seqs(conv)) >= 3 })
	if got := r.seqs(conv); !slices.Equal(got, []uint64{1, 3, 4}) {
		t.Errorf("delivered %v, want [1 3 4]", got)
	}
}

// TestEpochReset wipes the server's log while the client holds seqs from
// the old one; the new log's messages must not be filtered by them.
func TestEpochReset(t *testing.T) {
	srv, c := setup(t)
	publish(t, srv, "a", "b", "c")
	s, r := record(t, c, fast()...)
	if err := s.Subscribe(conv, 0); err != nil {
		t.Fatal(err)
	}
	eventually(t, "Subscribed", func() bool { return len(r.subscribed(conv)) == 1 })
	old := srv.Epoch()

	srv.Wipe()
	publish(t, srv, "new log")
	srv.KillStreams(codes.Unavailable, "restored from backup")

	eventually(t, "reset Subscribed", func() bool { return len(r.subscribed(conv)) == 2 })
	sb := r.subscribed(conv)[1]
	if !sb.GetEpochReset() || sb.GetEpoch() == old {
		t.Errorf("Subscribed = %v, want epoch_reset with a new epoch", sb)
	}
	if got := r.seqs(conv); !slices.Equal(got, []uint64{1, 2, 3, 1}) {
		t.Errorf("delivered %v, want [1 2 3 1]", got)
	}
	if got := s.Positions()[conv]; got != (client.Position{Seq: 1, Epoch: srv.Epoch()}) {
		t.Errorf("position = %+v, want seq 1 in the new epoch", got)
	}
	publish(t, srv, "next")
	eventually(t, "live in the new epoch", func() bool { return len(r.seqs(conv)) == 5 })
}

func TestUnauthenticatedStopsTheSession(t *testing.T) {
	srv, c := setup(t)
	s, r := record(t, c, fast()...)
	eventually(t, "connected", func() bool { return r.count(client.StateConnected) == 1 })

	srv.DropAcks(true)
	_, pending, err := s.SendAsync(testCtx(t), conv, "never acked")
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the send reached the server", func() bool { return len(srv.Sends()) == 1 })
	srv.Revoke("alice")
	srv.KillStreams(codes.Unavailable, "restart")

	res := <-pending
	if status.Code(res.Err) != codes.Unauthenticated {
		t.Errorf("pending send failed with %v, want UNAUTHENTICATED", res.Err)
	}
	select {
	case <-r.closed:
	case <-testCtx(t).Done():
		t.Fatal("events channel not closed after the stop")
	}
	<-s.Done()
	states := r.states()
	last := states[len(states)-1]
	if last.State != client.StateStopped || status.Code(last.Err) != codes.Unauthenticated {
		t.Errorf("last state = %+v, want Stopped with UNAUTHENTICATED", last)
	}
	if status.Code(s.Err()) != codes.Unauthenticated {
		t.Errorf("Err() = %v, want UNAUTHENTICATED", s.Err())
	}
	if _, err := s.Send(testCtx(t), conv, "after"); status.Code(err) != codes.Unauthenticated {
		t.Errorf("Send after stop = %v, want UNAUTHENTICATED", err)
	}
	if err := s.Subscribe(conv, 0); err == nil {
		t.Error("Subscribe after stop succeeded")
	}
	// Stopping for good means no more attempts.
	opened := srv.StreamsOpened()
	time.Sleep(50 * time.Millisecond) // proving an absence needs a wait
	if srv.StreamsOpened() != opened {
		t.Error("the Session kept reconnecting after UNAUTHENTICATED")
	}
}

func TestErrorFrames(t *testing.T) {
	t.Run("a rejected send fails alone", func(t *testing.T) {
		srv, c := setup(t)
		srv.Reject("bad", codes.InvalidArgument, 0)
		s, r := record(t, c, fast()...)
		ctx := testCtx(t)

		_, good1, err := s.SendAsync(ctx, conv, "good")
		if err != nil {
			t.Fatal(err)
		}
		_, err = s.Send(ctx, conv, "bad")
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("Send(bad) = %v, want INVALID_ARGUMENT", err)
		}
		if _, err := s.Send(ctx, conv, "good again"); err != nil {
			t.Errorf("Send after a rejected one: %v", err)
		}
		if res := <-good1; res.Err != nil {
			t.Errorf("send before the rejected one: %v", res.Err)
		}
		if n := srv.StreamsOpened(); n != 1 {
			t.Errorf("%d streams opened, want 1: an error frame must not end the stream", n)
		}
		eventually(t, "the error event", func() bool { return len(r.errors()) == 1 })
		errs := r.errors()
		if len(errs) != 1 || errs[0].Frame.GetFrame() != "send" || status.Code(errs[0].Err) != codes.InvalidArgument {
			t.Errorf("error events = %+v, want one for the send", errs)
		}
		// A failed send leaves the outbox: a reconnect does not resend it.
		srv.KillStreams(codes.Unavailable, "bye")
		eventually(t, "reconnect", func() bool { return r.count(client.StateConnected) == 2 })
		if _, err := s.Send(ctx, conv, "after reconnect"); err != nil {
			t.Fatal(err)
		}
		bad := 0
		for _, f := range srv.Sends() {
			if f.GetBody() == "bad" {
				bad++
			}
		}
		if bad != 1 {
			t.Errorf("bad message sent %d times, want 1", bad)
		}
	})
	t.Run("a send not stored is resent", func(t *testing.T) {
		srv, c := setup(t)
		srv.Reject("flaky", codes.Unavailable, 2)
		s, r := record(t, c, fast()...)
		ack, err := s.Send(testCtx(t), conv, "flaky")
		if err != nil {
			t.Fatalf("Send: %v", err)
		}
		var ids []string
		for _, f := range srv.Sends() {
			ids = append(ids, f.GetClientMessageId())
		}
		if id := ack.GetClientMessageId(); !slices.Equal(ids, []string{id, id, id}) {
			t.Errorf("send frames carried ids %v, want %s three times", ids, id)
		}
		eventually(t, "two error events", func() bool { return len(r.errors()) == 2 })
		if n := srv.StreamsOpened(); n != 1 {
			t.Errorf("%d streams opened, want 1", n)
		}
	})
	t.Run("a refused subscription is not retried", func(t *testing.T) {
		srv, c := setup(t)
		s, r := record(t, c, fast()...)
		if err := s.Subscribe("group:secret", 0); err != nil {
			t.Fatal(err)
		}
		if err := s.Subscribe(conv, 0); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the refusal", func() bool { return len(r.errors()) == 1 })
		e := r.errors()[0]
		if e.Frame.GetFrame() != "subscribe" || status.Code(e.Err) != codes.PermissionDenied {
			t.Errorf("error event = %+v, want a PERMISSION_DENIED subscribe", e)
		}
		eventually(t, "Subscribed", func() bool { return len(r.subscribed(conv)) == 1 })
		srv.KillStreams(codes.Unavailable, "bye")
		eventually(t, "resubscribed", func() bool { return len(r.subscribed(conv)) == 2 })
		for _, sub := range srv.Subscribes()[2:] {
			if sub.GetConversationId() == "group:secret" {
				t.Error("the refused subscription was retried")
			}
		}
	})
}

func TestRTTIsMeasured(t *testing.T) {
	_, c := setup(t)
	s, _ := record(t, c, fast(client.WithPing(10*time.Millisecond, time.Second))...)
	eventually(t, "an RTT", func() bool { return s.RTT() > 0 })
}

// TestSlowReaderLosesNothing reads events far slower than they come, with
// almost no buffer: the stream backs up and every message still arrives,
// once and in order.
func TestSlowReaderLosesNothing(t *testing.T) {
	srv, c := setup(t)
	s, err := c.NewSession(testCtx(t), fast(client.WithEventBuffer(1))...)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Subscribe(conv, 0); err != nil {
		t.Fatal(err)
	}
	const n = 200
	for i := range n {
		publish(t, srv, fmt.Sprint(i))
	}
	var got []uint64
	timeout := time.After(15 * time.Second)
	for len(got) < n {
		select {
		case ev := <-s.Events():
			if m, ok := ev.(client.MessageEvent); ok {
				got = append(got, m.Message.GetSeq())
			}
			if len(got)%50 == 0 {
				time.Sleep(5 * time.Millisecond)
			}
		case <-timeout:
			t.Fatalf("got %d of %d messages", len(got), n)
		}
	}
	for i, seq := range got {
		if seq != uint64(i+1) {
			t.Fatalf("message %d has seq %d", i, seq)
		}
	}
}

func TestCloseFailsPendingAndLeaksNothing(t *testing.T) {
	srv, c := setup(t)
	ignore := goleak.IgnoreCurrent()

	srv.DropAcks(true)
	s, r := record(t, c, fast()...)
	if err := s.Subscribe(conv, 0); err != nil {
		t.Fatal(err)
	}
	_, pending, err := s.SendAsync(testCtx(t), conv, "unacked")
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the send reached the server", func() bool { return len(srv.Sends()) == 1 })

	if err := c.Close(); err != nil { // closes s too
		t.Fatal(err)
	}
	if res := <-pending; !errors.Is(res.Err, client.ErrClosed) {
		t.Errorf("pending send = %v, want ErrClosed", res.Err)
	}
	<-r.closed
	if !errors.Is(s.Err(), client.ErrClosed) {
		t.Errorf("Err() = %v, want ErrClosed", s.Err())
	}
	if _, _, err := s.SendAsync(testCtx(t), conv, "late"); !errors.Is(err, client.ErrClosed) {
		t.Errorf("SendAsync after Close = %v, want ErrClosed", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	goleak.VerifyNone(t, ignore)
}

func TestClientCloseEndsSessions(t *testing.T) {
	_, c := setup(t)
	s, r := record(t, c, fast()...)
	eventually(t, "connected", func() bool { return r.count(client.StateConnected) == 1 })
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.Done():
	case <-testCtx(t).Done():
		t.Fatal("session still running after Client.Close")
	}
	if _, err := c.NewSession(testCtx(t)); !errors.Is(err, client.ErrClosed) {
		t.Errorf("NewSession after Close = %v, want ErrClosed", err)
	}
}

func TestSessionEndsWithItsContext(t *testing.T) {
	_, c := setup(t)
	ctx, cancel := context.WithCancel(testCtx(t))
	s, err := c.NewSession(ctx, fast()...)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	<-s.Done()
	if err := s.Err(); !errors.Is(err, client.ErrClosed) || !errors.Is(err, context.Canceled) {
		t.Errorf("Err() = %v, want ErrClosed and context.Canceled", err)
	}
}

func TestPositionsSurviveUnsubscribe(t *testing.T) {
	srv, c := setup(t)
	publish(t, srv, "a", "b")
	s, r := record(t, c, fast()...)
	if err := s.Subscribe(conv, 0); err != nil {
		t.Fatal(err)
	}
	eventually(t, "Subscribed", func() bool { return len(r.subscribed(conv)) == 1 })
	if err := s.Unsubscribe(conv); err != nil {
		t.Fatal(err)
	}
	publish(t, srv, "c")
	if err := s.Subscribe(conv, s.Positions()[conv].Seq); err != nil {
		t.Fatal(err)
	}
	eventually(t, "resumed", func() bool { return slices.Equal(r.seqs(conv), []uint64{1, 2, 3}) })
	subs := srv.Subscribes()
	if last := subs[len(subs)-1]; last.GetAfterSeq() != 2 || last.GetEpoch() != srv.Epoch() {
		t.Errorf("resubscribe = %v, want after_seq 2 with the epoch", last)
	}
}

func TestOutageIsReported(t *testing.T) {
	srv, c := setup(t)
	_, r := record(t, c, fast(client.WithPing(20*time.Millisecond, 100*time.Millisecond))...)
	eventually(t, "connected", func() bool { return r.count(client.StateConnected) == 1 })
	srv.Stop()
	eventually(t, "two failed attempts", func() bool { return r.count(client.StateDisconnected) >= 3 })
	for _, st := range r.states() {
		if st.State == client.StateDisconnected && status.Code(st.Err) != codes.Unavailable {
			t.Errorf("Disconnected.Err = %v, want UNAVAILABLE", st.Err)
		}
	}
}
