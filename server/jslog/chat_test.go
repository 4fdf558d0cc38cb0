package jslog

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
	"github.com/parleychat/parley/server/auth"
	"github.com/parleychat/parley/server/chat"
	"github.com/parleychat/parley/server/jsstate"
	"github.com/parleychat/parley/server/natstest"
	"github.com/parleychat/parley/server/router"
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
// a resend through either is a duplicate, a Subscribe stream on one gets
// the messages and typing sent through the other, and the conversation
// list counts them as unread.
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
	// bob follows the room on node b while alice posts and types on node a.
	sctx, stop := context.WithCancel(as("bob"))
	stream := &fakeStream{ctx: sctx}
	var wg sync.WaitGroup
	wg.Go(func() {
		_ = b.Subscribe(&parleyv1.SubscribeRequest{Conversations: []*parleyv1.SubscribePosition{{ConversationId: "room:lobby"}}}, stream)
	})
	defer func() { stop(); wg.Wait() }()
	waitFor(t, ctx, "the subscribed marker", func() bool { return stream.subscribed() })
	var want []uint64
	for i := range 20 {
		r, err := a.Send(as("alice"), &parleyv1.SendRequest{ConversationId: "room:lobby", ClientMessageId: fmt.Sprint("live", i), Body: "live"})
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, r.GetSeq())
	}
	if _, err := a.SetTyping(as("alice"), &parleyv1.SetTypingRequest{ConversationId: "room:lobby", Typing: true}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "live messages and typing", func() bool { m, typing := stream.seen(); return len(m) >= 22 && typing })
	if m, _ := stream.seen(); len(m) != 22 || m[0] != sent.GetSeq() || !slices.Equal(m[2:], want) {
		t.Errorf("bob's stream on b got seqs %v, want %d, the edit, then %v", m, sent.GetSeq(), want)
	}

	list, err := b.ListConversations(as("bob"), &parleyv1.ListConversationsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if cs := list.GetConversations(); len(cs) != 1 || cs[0].GetUnreadCount() != 21 || cs[0].GetLastMessage().GetBody() != "live" {
		t.Errorf("ListConversations: %v", cs)
	}
}

// fakeStream is a Subscribe stream that keeps what the service sends.
type fakeStream struct {
	grpc.ServerStream
	ctx context.Context

	mu     sync.Mutex
	frames []*parleyv1.SubscribeResponse
}

func (f *fakeStream) Context() context.Context { return f.ctx }

func (f *fakeStream) Send(m *parleyv1.SubscribeResponse) error { return f.SendMsg(m) }

func (f *fakeStream) SendMsg(m any) error {
	resp := &parleyv1.SubscribeResponse{}
	switch v := m.(type) {
	case *router.Frame:
		if err := proto.Unmarshal(v.Data, resp); err != nil {
			return err
		}
	case *parleyv1.SubscribeResponse:
		resp = proto.Clone(v).(*parleyv1.SubscribeResponse)
	default:
		return fmt.Errorf("unexpected %T", m)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.frames = append(f.frames, resp)
	return nil
}

func (f *fakeStream) subscribed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, r := range f.frames {
		if r.GetSubscribed() != nil {
			return true
		}
	}
	return false
}

// seen returns the seqs of the messages and whether a typing event came.
func (f *fakeStream) seen() (seqs []uint64, typing bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, r := range f.frames {
		if m := r.GetMessage(); m != nil {
			seqs = append(seqs, m.GetSeq())
		}
		typing = typing || r.GetTyping().GetTyping()
	}
	return seqs, typing
}
