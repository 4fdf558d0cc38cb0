package server

import (
	"context"
	"encoding/base64"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
)

// TestTokensThatMustNotGetIn tries tokens an attacker might hold.
func TestTokensThatMustNotGetIn(t *testing.T) {
	n := start(t, "")
	alice := register(t, n, "alice")
	conv := room(t, alice, "vault")
	gone := register(t, n, "gone")
	if _, err := parleyv1.NewAuthServiceClient(gone.conn).DeleteAccount(gone.ctx(t), &parleyv1.DeleteAccountRequest{Username: gone.id, Password: "correct horse"}); err != nil {
		t.Fatalf("DeleteAccount: %v", err)
	}
	b64 := base64.RawURLEncoding.EncodeToString
	exp := time.Now().Add(time.Hour).Unix()
	tokens := map[string]string{
		"alg none":           b64([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + b64([]byte(`{"sub":"`+alice.id+`","iss":"parley","exp":`+strconv.FormatInt(exp, 10)+`}`)) + ".",
		"forged signature":   alice.token[:strings.LastIndex(alice.token, ".")+1] + b64([]byte("not the signature")),
		"other key":          tokenFrom(t, []byte("ffffffffffffffffffffffffffffffff"), alice.id, time.Now()),
		"expired":            tokenFrom(t, testKey, alice.id, time.Now().Add(-3*time.Hour)),
		"user never existed": tokenFrom(t, testKey, "ghost", time.Now()),
		"deleted account":    gone.token,
	}
	for name, tok := range tokens {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
			_, err := alice.chat.Send(ctx, &parleyv1.SendRequest{ConversationId: conv, ClientMessageId: "x", Body: "in?"})
			if status.Code(err) != codes.Unauthenticated {
				t.Fatalf("Send = %v, want UNAUTHENTICATED", err)
			}
			_, err = alice.convs.CreateRoom(ctx, &parleyv1.CreateRoomRequest{Name: "ghost-room"})
			if status.Code(err) != codes.Unauthenticated {
				t.Fatalf("CreateRoom = %v, want UNAUTHENTICATED", err)
			}
		})
	}
	if h, err := alice.chat.History(alice.ctx(t), &parleyv1.HistoryRequest{ConversationId: conv}); err != nil || len(h.GetMessages()) != 0 {
		t.Fatalf("something got in: %v %v", h.GetMessages(), err)
	}
}

// TestClientMessageIDsArePerSender replays another user's
// client_message_id: it is a different message, not a resend of theirs.
func TestClientMessageIDsArePerSender(t *testing.T) {
	n := start(t, "")
	alice, bob := register(t, n, "alice"), register(t, n, "bob")
	conv := room(t, alice, "ids", bob)
	first := alice.send(t, conv, "same-id", "from alice")
	second := bob.send(t, conv, "same-id", "from bob")
	if second.GetDuplicate() || second.GetSeq() == first.GetSeq() {
		t.Fatalf("bob's send with alice's id was answered with her ack: %v", second)
	}
	h := historyAll(t, alice, conv)
	if len(h) != 2 || h[0].GetBody() != "from alice" || h[1].GetBody() != "from bob" {
		t.Fatalf("History = %v", h)
	}
}

// TestDeniedLooksTheSame checks that a conversation one is not in and one
// that does not exist cannot be told apart.
func TestDeniedLooksTheSame(t *testing.T) {
	n := start(t, "")
	alice, bob, mallory := register(t, n, "alice"), register(t, n, "bob"), register(t, n, "mallory")
	dm, err := alice.convs.CreateDirect(alice.ctx(t), &parleyv1.CreateDirectRequest{UserId: bob.id})
	if err != nil {
		t.Fatal(err)
	}
	real := dm.GetConversation().GetId()
	fake := "dm:" + alice.id + ":" + mallory.id + "x"
	msg := func(conv string) string {
		_, err := mallory.chat.History(mallory.ctx(t), &parleyv1.HistoryRequest{ConversationId: conv})
		st := status.Convert(err)
		if st.Code() != codes.PermissionDenied {
			t.Fatalf("History(%s) = %v, want PERMISSION_DENIED", conv, err)
		}
		return strings.ReplaceAll(st.Message(), conv, "<id>")
	}
	if a, b := msg(real), msg(fake); a != b {
		t.Fatalf("an existing conversation answers %q, a missing one %q", a, b)
	}
}
