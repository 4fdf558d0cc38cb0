package jslog

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
	"github.com/parleychat/parley/server/auth"
	"github.com/parleychat/parley/server/chat"
	"github.com/parleychat/parley/server/jsstate"
	"github.com/parleychat/parley/server/natstest"
)

var _ jsstate.Log = (*Log)(nil)

type fakeTokens struct{}

func (fakeTokens) Issue(user string) (string, time.Time, error) {
	return "token-of-" + user, time.Now().Add(time.Hour), nil
}

// service runs the chat services of one node on the cluster, as parleyd
// in cluster mode would: the Log as router and message log, jsstate for
// the rest of the store.
func service(t *testing.T, c *natstest.Cluster, i int, opts []Option, prefix string) *chat.Service {
	t.Helper()
	l := node(t, c, i, opts...)
	js, err := jetstream.New(l.nc)
	if err != nil {
		t.Fatal(err)
	}
	st, err := jsstate.Open(testCtx(t), js, jsstate.WithPrefix(prefix))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	svc, err := chat.New(l, jsstate.Store{Log: l, State: st}, fakeTokens{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = svc.Shutdown(ctx)
	})
	return svc
}

// The chat services run on two nodes over one log: a message sent through
// one is in the other's History, an edit through the other shows in both,
// a resend through either is a duplicate, and the conversation list counts
// it as unread.
func testChatServices(t *testing.T, c *natstest.Cluster) {
	opts := names()
	prefix := fmt.Sprintf("chat%d", streams.Load())
	a, b := service(t, c, 0, opts, prefix), service(t, c, 1, opts, prefix)
	ctx := testCtx(t)
	as := func(user string) context.Context { return auth.NewContext(ctx, auth.Claims{UserID: user}) }

	if _, err := a.CreateRoom(as("alice"), &parleyv1.CreateRoomRequest{Name: "lobby"}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.JoinRoom(as("bob"), &parleyv1.JoinRoomRequest{ConversationId: "room:lobby"}); err != nil {
		t.Fatal(err)
	}
	sent, err := a.Send(as("alice"), &parleyv1.SendRequest{ConversationId: "room:lobby", ClientMessageId: "m1", Body: "hello"})
	if err != nil {
		t.Fatal(err)
	}
	again, err := b.Send(as("alice"), &parleyv1.SendRequest{ConversationId: "room:lobby", ClientMessageId: "m1", Body: "hello"})
	if err != nil || !again.GetDuplicate() || again.GetSeq() != sent.GetSeq() {
		t.Fatalf("resend through the other node: %v, %v", again, err)
	}
	if _, err := b.EditMessage(as("alice"), &parleyv1.EditMessageRequest{ConversationId: "room:lobby", Seq: sent.GetSeq(), ClientMessageId: "e1", Body: "hello, all"}); err != nil {
		t.Fatal(err)
	}
	for name, svc := range map[string]*chat.Service{"a": a, "b": b} {
		h, err := svc.History(as("bob"), &parleyv1.HistoryRequest{ConversationId: "room:lobby"})
		if err != nil {
			t.Fatal(err)
		}
		if len(h.GetMessages()) != 2 || h.GetMessages()[0].GetBody() != "hello, all" || h.GetMessages()[0].GetSeq() != sent.GetSeq() ||
			h.GetMessages()[1].GetPrevSeq() != sent.GetSeq() || h.GetEpoch() == "" || h.GetHeadSeq() != h.GetMessages()[1].GetSeq() {
			t.Errorf("History on %s: %v", name, h)
		}
	}
	list, err := b.ListConversations(as("bob"), &parleyv1.ListConversationsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if cs := list.GetConversations(); len(cs) != 1 || cs[0].GetUnreadCount() != 1 || cs[0].GetLastMessage().GetBody() != "hello, all" {
		t.Errorf("ListConversations: %v", cs)
	}
}
