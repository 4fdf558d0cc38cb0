package server

import (
	"context"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
)

// TestDeleteAccount deletes an account with an open stream, a room, a group
// it owns and a direct conversation, and checks what is left of it.
func TestDeleteAccount(t *testing.T) {
	n := start(t, "")
	alice, bob := register(t, n, "alice"), register(t, n, "bob")
	lobby := room(t, bob, "lobby", alice)
	g, err := alice.convs.CreateGroup(alice.ctx(t), &parleyv1.CreateGroupRequest{Title: "plans", MemberIds: []string{bob.id}})
	if err != nil {
		t.Fatal(err)
	}
	group := g.GetConversation().GetId()
	d, err := bob.convs.CreateDirect(bob.ctx(t), &parleyv1.CreateDirectRequest{UserId: alice.id})
	if err != nil {
		t.Fatal(err)
	}
	dm := d.GetConversation().GetId()
	said := alice.send(t, lobby, "last-words", "goodbye")
	s := alice.open(t)
	s.subscribe(t, lobby, 0, "")
	s.until(t, isSubscribed(lobby))

	accounts := parleyv1.NewAuthServiceClient(alice.conn)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err = accounts.DeleteAccount(ctx, &parleyv1.DeleteAccountRequest{Username: alice.id, Password: "wrong horse"})
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("DeleteAccount with a wrong password = %v, want UNAUTHENTICATED", err)
	}
	alice.send(t, lobby, "still-here", "a wrong password deletes nothing")
	if _, err := accounts.DeleteAccount(ctx, &parleyv1.DeleteAccountRequest{Username: alice.id, Password: "correct horse"}); err != nil {
		t.Fatalf("DeleteAccount: %v", err)
	}

	// The open stream ends with UNAUTHENTICATED.
	for range s.frames {
	}
	if err := <-s.done; status.Code(err) != codes.Unauthenticated {
		t.Fatalf("alice's stream ended with %v, want UNAUTHENTICATED", err)
	}
	// Her token is refused everywhere.
	if _, err := alice.convs.ListConversations(alice.ctx(t), &parleyv1.ListConversationsRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("ListConversations with the deleted account's token = %v, want UNAUTHENTICATED", err)
	}
	// She cannot log in, be deleted again, or be registered anew.
	if _, err := accounts.Login(ctx, &parleyv1.LoginRequest{Username: alice.id, Password: "correct horse"}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("Login = %v, want UNAUTHENTICATED", err)
	}
	if _, err := accounts.DeleteAccount(ctx, &parleyv1.DeleteAccountRequest{Username: alice.id, Password: "correct horse"}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("second DeleteAccount = %v, want UNAUTHENTICATED", err)
	}
	if _, err := accounts.Register(ctx, &parleyv1.RegisterRequest{Username: alice.id, Password: "another horse"}); status.Code(err) != codes.AlreadyExists {
		t.Fatalf("Register of the deleted name = %v, want ALREADY_EXISTS", err)
	}

	// She left the room and the group, whose ownership passed to bob; the
	// direct conversation is still bob's to read.
	for _, id := range []string{lobby, group} {
		c, err := bob.convs.GetConversation(bob.ctx(t), &parleyv1.GetConversationRequest{ConversationId: id})
		if err != nil {
			t.Fatal(err)
		}
		if slices.Contains(c.GetConversation().GetMemberIds(), alice.id) {
			t.Fatalf("%s still lists %s: %v", id, alice.id, c.GetConversation().GetMemberIds())
		}
		if id == group && c.GetConversation().GetOwnerId() != bob.id {
			t.Fatalf("group owner is %q, want %s", c.GetConversation().GetOwnerId(), bob.id)
		}
	}
	if _, err := bob.chat.History(bob.ctx(t), &parleyv1.HistoryRequest{ConversationId: dm}); err != nil {
		t.Fatalf("bob's History of the direct conversation: %v", err)
	}
	// Her messages stay, under her id.
	h, err := bob.chat.History(bob.ctx(t), &parleyv1.HistoryRequest{ConversationId: lobby})
	if err != nil {
		t.Fatal(err)
	}
	if len(h.GetMessages()) != 2 || h.GetMessages()[0].GetSeq() != said.GetSeq() || h.GetMessages()[0].GetSenderId() != alice.id {
		t.Fatalf("lobby history = %v, want alice's two messages", h.GetMessages())
	}
	// Nobody can start a conversation with her or add her.
	if _, err := bob.convs.CreateDirect(bob.ctx(t), &parleyv1.CreateDirectRequest{UserId: alice.id}); status.Code(err) != codes.NotFound {
		t.Fatalf("CreateDirect with the deleted user = %v, want NOT_FOUND", err)
	}
	if _, err := bob.convs.AddMember(bob.ctx(t), &parleyv1.AddMemberRequest{ConversationId: group, UserId: alice.id}); status.Code(err) != codes.NotFound {
		t.Fatalf("AddMember of the deleted user = %v, want NOT_FOUND", err)
	}
	// The deletion is durable.
	n.stop(t)
	n2 := start(t, n.dir)
	ctx2 := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+alice.token)
	if _, err := parleyv1.NewConversationServiceClient(dial(t, n2.addr)).ListConversations(ctx2, &parleyv1.ListConversationsRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("after a restart, the deleted account's token = %v, want UNAUTHENTICATED", err)
	}
}
