package server

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
)

// TestShutdownEndsStreamsAndKeepsAcked stops a node with open Chat and
// Subscribe streams and sends in flight: the streams end with UNAVAILABLE,
// and every acknowledged message is there after a restart.
func TestShutdownEndsStreamsAndKeepsAcked(t *testing.T) {
	dir := t.TempDir()
	n := start(t, dir)
	alice, bob := register(t, n, "alice"), register(t, n, "bob")
	conv := room(t, alice, "shutdown", bob)

	chat := bob.open(t)
	chat.subscribe(t, conv, 0, "")
	chat.until(t, isSubscribed(conv))
	sub, err := bob.chat.Subscribe(bob.ctx(t), &parleyv1.SubscribeRequest{Conversations: []*parleyv1.SubscribePosition{{ConversationId: conv}}})
	if err != nil {
		t.Fatal(err)
	}
	if f, err := sub.Recv(); err != nil || f.GetSubscribed() == nil {
		t.Fatalf("Subscribe first frame = %v, %v", f, err)
	}

	// Keep sending while the node stops; remember what was acknowledged.
	acked := make(chan *parleyv1.SendResponse, 10000)
	stopped := make(chan struct{})
	go func() {
		defer close(acked)
		for i := 0; ; i++ {
			ctx, cancel := context.WithTimeout(alice.ctx(t), 5*time.Second)
			resp, err := alice.chat.Send(ctx, &parleyv1.SendRequest{ConversationId: conv, ClientMessageId: fmt.Sprint(i), Body: "x"})
			cancel()
			if err != nil {
				return
			}
			acked <- resp
			select {
			case <-stopped:
				return
			default:
			}
		}
	}()
	// Let a few through first.
	for i := 0; i < 5; i++ {
		if m := chat.messages(t, 1); len(m) != 1 {
			t.Fatal("no message")
		}
	}
	n.stop(t)
	close(stopped)

	for {
		if _, err := sub.Recv(); err != nil {
			if status.Code(err) != codes.Unavailable {
				t.Fatalf("Subscribe ended with %v, want UNAVAILABLE", err)
			}
			break
		}
	}
	for range chat.frames {
	}
	if err := <-chat.done; status.Code(err) != codes.Unavailable {
		t.Fatalf("Chat ended with %v, want UNAVAILABLE", err)
	}

	var acks []*parleyv1.SendResponse
	for a := range acked {
		acks = append(acks, a)
	}
	n = start(t, dir)
	bob.reconnect(t, n)
	h, err := bob.chat.History(bob.ctx(t), &parleyv1.HistoryRequest{ConversationId: conv, Limit: 500})
	if err != nil {
		t.Fatal(err)
	}
	stored := make(map[uint64]string, len(h.GetMessages()))
	for _, m := range h.GetMessages() {
		stored[m.GetSeq()] = m.GetClientMessageId()
	}
	for _, a := range acks {
		if stored[a.GetSeq()] != a.GetClientMessageId() {
			t.Fatalf("acknowledged %s #%d lost in shutdown", a.GetClientMessageId(), a.GetSeq())
		}
	}
	if len(acks) < 5 {
		t.Fatalf("only %d acks before shutdown; the test did not send under load", len(acks))
	}
}
