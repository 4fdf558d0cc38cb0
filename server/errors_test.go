package server

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
	"github.com/parleychat/parley/server/auth"
)

// tokenFrom issues a token for user with a key and clock of the test's choosing.
func tokenFrom(t *testing.T, key []byte, user string, now time.Time) string {
	t.Helper()
	a, err := auth.New(key, auth.WithTTL(time.Hour), auth.WithClock(func() time.Time { return now }))
	if err != nil {
		t.Fatal(err)
	}
	tok, _, err := a.Issue(user)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestBadInput(t *testing.T) {
	n := start(t, "", func(c *Config) { c.MaxBody = 1000 })
	alice, bob, mallory := register(t, n, "alice"), register(t, n, "bob"), register(t, n, "mallory")
	conv := room(t, alice, "private", bob)
	grp, err := alice.convs.CreateGroup(alice.ctx(t), &parleyv1.CreateGroupRequest{Title: "g", MemberIds: []string{bob.id}})
	if err != nil {
		t.Fatal(err)
	}
	group := grp.GetConversation().GetId()
	bs := bob.open(t)
	bs.subscribe(t, conv, 0, "")
	bs.until(t, isSubscribed(conv))

	withToken := func(tok string) context.Context {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		t.Cleanup(cancel)
		if tok == "" {
			return ctx
		}
		return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
	}
	send := func(ctx context.Context, u *user, conv, cmid, body string) error {
		_, err := u.chat.Send(ctx, &parleyv1.SendRequest{ConversationId: conv, ClientMessageId: cmid, Body: body})
		return err
	}
	otherKey := []byte("ffffffffffffffffffffffffffffffff")
	tests := []struct {
		name string
		call func() error
		code codes.Code
		msg  string // a part of the message a person would act on
	}{
		{"empty body", func() error { return send(alice.ctx(t), alice, conv, "e1", "") }, codes.InvalidArgument, "body is empty"},
		{"blank body", func() error { return send(alice.ctx(t), alice, conv, "e2", " \n\t") }, codes.InvalidArgument, "body is empty"},
		{"oversize body", func() error { return send(alice.ctx(t), alice, conv, "e3", strings.Repeat("x", 1001)) }, codes.ResourceExhausted, "at most 1000 (--max-body)"},
		{"missing client_message_id", func() error { return send(alice.ctx(t), alice, conv, "", "hi") }, codes.InvalidArgument, "client_message_id is empty"},
		{"long client_message_id", func() error { return send(alice.ctx(t), alice, conv, strings.Repeat("c", 65), "hi") }, codes.InvalidArgument, "at most 64"},
		{"malformed conversation id", func() error { return send(alice.ctx(t), alice, "room:../etc", "e4", "hi") }, codes.InvalidArgument, "malformed"},
		{"empty conversation id", func() error { return send(alice.ctx(t), alice, "", "e5", "hi") }, codes.InvalidArgument, "conversation_id is empty"},
		{"unknown conversation", func() error { return send(alice.ctx(t), alice, "room:nowhere", "e6", "hi") }, codes.PermissionDenied, "not a member"},
		{"non-member send", func() error { return send(mallory.ctx(t), mallory, conv, "e7", "hi") }, codes.PermissionDenied, "not a member"},
		{"non-member send to group", func() error { return send(mallory.ctx(t), mallory, group, "e8", "hi") }, codes.PermissionDenied, "not a member"},
		{"guessed direct conversation", func() error { return send(mallory.ctx(t), mallory, "dm:"+alice.id+":"+bob.id, "e9", "hi") }, codes.PermissionDenied, "not a member"},
		{"non-member history", func() error {
			_, err := mallory.chat.History(mallory.ctx(t), &parleyv1.HistoryRequest{ConversationId: conv})
			return err
		}, codes.PermissionDenied, "not a member"},
		{"non-member subscribe", func() error {
			s, err := mallory.chat.Subscribe(mallory.ctx(t), &parleyv1.SubscribeRequest{Conversations: []*parleyv1.SubscribePosition{{ConversationId: conv}}})
			if err != nil {
				return err
			}
			_, err = s.Recv()
			return err
		}, codes.PermissionDenied, "not a member"},
		{"negative history limit", func() error {
			_, err := alice.chat.History(alice.ctx(t), &parleyv1.HistoryRequest{ConversationId: conv, Limit: -1})
			return err
		}, codes.InvalidArgument, "limit"},
		{"history both directions", func() error {
			_, err := alice.chat.History(alice.ctx(t), &parleyv1.HistoryRequest{ConversationId: conv, AfterSeq: 1, BeforeSeq: 5})
			return err
		}, codes.InvalidArgument, "at most one"},
		{"missing token", func() error { return send(withToken(""), alice, conv, "e10", "hi") }, codes.Unauthenticated, "missing authorization"},
		{"expired token", func() error {
			return send(withToken(tokenFrom(t, testKey, alice.id, time.Now().Add(-2*time.Hour))), alice, conv, "e11", "hi")
		}, codes.Unauthenticated, "expired"},
		{"forged token", func() error {
			return send(withToken(tokenFrom(t, otherKey, alice.id, time.Now())), alice, conv, "e12", "hi")
		}, codes.Unauthenticated, "invalid token"},
		{"garbage token", func() error { return send(withToken("not.a.jwt"), alice, conv, "e13", "hi") }, codes.Unauthenticated, "invalid token"},
		{"non-owner adds a member", func() error {
			_, err := bob.convs.AddMember(bob.ctx(t), &parleyv1.AddMemberRequest{ConversationId: group, UserId: mallory.id})
			return err
		}, codes.PermissionDenied, "owner"},
		{"join a group", func() error {
			_, err := mallory.convs.JoinRoom(mallory.ctx(t), &parleyv1.JoinRoomRequest{ConversationId: group})
			return err
		}, codes.FailedPrecondition, "only rooms"},
		{"register taken name", func() error {
			_, err := parleyv1.NewAuthServiceClient(alice.conn).Register(context.Background(), &parleyv1.RegisterRequest{Username: alice.id, Password: "whatever1"})
			return err
		}, codes.AlreadyExists, "taken"},
		{"register bad name", func() error {
			_, err := parleyv1.NewAuthServiceClient(alice.conn).Register(context.Background(), &parleyv1.RegisterRequest{Username: "A B", Password: "whatever1"})
			return err
		}, codes.InvalidArgument, "not a valid user id"},
		{"wrong password", func() error {
			_, err := parleyv1.NewAuthServiceClient(alice.conn).Login(context.Background(), &parleyv1.LoginRequest{Username: alice.id, Password: "wrong password"})
			return err
		}, codes.Unauthenticated, "wrong username or password"},
		{"unknown user login", func() error {
			_, err := parleyv1.NewAuthServiceClient(alice.conn).Login(context.Background(), &parleyv1.LoginRequest{Username: "nobody", Password: "wrong password"})
			return err
		}, codes.Unauthenticated, "wrong username or password"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			st, _ := status.FromError(err)
			if st.Code() != tt.code || !strings.Contains(st.Message(), tt.msg) {
				t.Fatalf("got %v %q, want %v containing %q", st.Code(), st.Message(), tt.code, tt.msg)
			}
		})
	}

	// Nothing of the above was delivered or stored.
	h, err := alice.chat.History(alice.ctx(t), &parleyv1.HistoryRequest{ConversationId: conv})
	if err != nil {
		t.Fatal(err)
	}
	if len(h.GetMessages()) != 0 || h.GetHeadSeq() != 0 {
		t.Fatalf("rejected sends left %d messages (head %d)", len(h.GetMessages()), h.GetHeadSeq())
	}
	alice.send(t, conv, "ok", "the only message")
	if m := bs.messages(t, 1)[0]; m.GetClientMessageId() != "ok" || m.GetSeq() != 1 {
		t.Fatalf("first delivered message is %s #%d, want ok #1", m.GetClientMessageId(), m.GetSeq())
	}
}

// TestBadFramesKeepStreamOpen sends bad frames on a Chat stream: each gets an
// error frame naming it, and the stream goes on working.
func TestBadFramesKeepStreamOpen(t *testing.T) {
	n := start(t, "")
	alice, mallory := register(t, n, "alice"), register(t, n, "mallory")
	conv := room(t, alice, "frames")
	ms := mallory.open(t)
	frames := []struct {
		req   *parleyv1.ChatRequest
		frame string
		code  codes.Code
	}{
		{&parleyv1.ChatRequest{FrameId: 1}, "unknown", codes.InvalidArgument},
		{&parleyv1.ChatRequest{FrameId: 2, Frame: &parleyv1.ChatRequest_Send{Send: &parleyv1.SendRequest{ConversationId: conv, ClientMessageId: "x", Body: "hi"}}}, "send", codes.PermissionDenied},
		{&parleyv1.ChatRequest{FrameId: 3, Frame: &parleyv1.ChatRequest_Send{Send: &parleyv1.SendRequest{ConversationId: conv, ClientMessageId: "x"}}}, "send", codes.InvalidArgument},
		{&parleyv1.ChatRequest{FrameId: 4, Frame: &parleyv1.ChatRequest_Subscribe{Subscribe: &parleyv1.SubscribePosition{ConversationId: conv}}}, "subscribe", codes.PermissionDenied},
		{&parleyv1.ChatRequest{FrameId: 5, Frame: &parleyv1.ChatRequest_Subscribe{Subscribe: &parleyv1.SubscribePosition{ConversationId: "bogus"}}}, "subscribe", codes.InvalidArgument},
		{&parleyv1.ChatRequest{FrameId: 6, Frame: &parleyv1.ChatRequest_Unsubscribe{Unsubscribe: &parleyv1.Unsubscribe{ConversationId: conv}}}, "unsubscribe", codes.NotFound},
	}
	for _, f := range frames {
		if err := ms.c.Send(f.req); err != nil {
			t.Fatal(err)
		}
		got := ms.control(t).GetError()
		if got.GetFrameId() != f.req.GetFrameId() || got.GetFrame() != f.frame || codes.Code(got.GetCode()) != f.code || got.GetMessage() == "" {
			t.Fatalf("frame %d: error frame %v, want frame %q code %v", f.req.GetFrameId(), got, f.frame, f.code)
		}
	}
	if err := ms.c.Send(&parleyv1.ChatRequest{Frame: &parleyv1.ChatRequest_Ping{Ping: &parleyv1.Ping{Nonce: 42}}}); err != nil {
		t.Fatal(err)
	}
	if p := ms.control(t).GetPong(); p.GetNonce() != 42 {
		t.Fatalf("after bad frames, ping got %v", p)
	}
}
