package client_test

import (
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/parleychat/parley/client"
	"github.com/parleychat/parley/client/internal/fakeserver"
)

func TestRegisterAndLoginKeepTheToken(t *testing.T) {
	srv := fakeserver.New(t)
	ctx := testCtx(t)
	c, err := client.Dial(ctx, srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	if _, err := c.ListConversations(ctx); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("call without a token = %v, want UNAUTHENTICATED", err)
	}
	if _, err := c.Register(ctx, "carol", "correct horse", ""); err != nil {
		t.Fatalf("Register: %v", err)
	}
	if c.UserID() != "carol" || c.Token() == "" {
		t.Errorf("after Register: user %q token %q", c.UserID(), c.Token())
	}
	if _, err := c.ListConversations(ctx); err != nil {
		t.Errorf("call with the registered token: %v", err)
	}

	registered := c.Token()
	c.SetToken("")
	if _, err := c.Login(ctx, "carol", "wrong password"); status.Code(err) != codes.Unauthenticated {
		t.Errorf("Login with a wrong password = %v, want UNAUTHENTICATED", err)
	}
	if _, err := c.Login(ctx, "carol", "correct horse"); err != nil {
		t.Fatalf("Login: %v", err)
	}
	if c.Token() == "" || c.Token() == registered {
		t.Errorf("Login kept token %q, want a fresh one", c.Token())
	}
	if _, err := c.ListConversations(ctx); err != nil {
		t.Errorf("call with the login token: %v", err)
	}
}

func TestUnaryWrappers(t *testing.T) {
	srv, alice := setup(t)
	ctx := testCtx(t)
	bob, err := client.Dial(ctx, srv.Addr(), client.WithToken(srv.AddUser("bob", "")))
	if err != nil {
		t.Fatal(err)
	}
	defer bob.Close()

	room, err := alice.CreateRoom(ctx, "general", "")
	if err != nil || room.GetId() != client.RoomID("general") {
		t.Fatalf("CreateRoom = %v, %v", room, err)
	}
	if _, err := bob.JoinRoom(ctx, client.RoomID("general")); err != nil {
		t.Fatalf("JoinRoom: %v", err)
	}
	dm, err := alice.CreateDirect(ctx, "bob")
	if err != nil || dm.GetId() != "dm:alice:bob" {
		t.Fatalf("CreateDirect = %v, %v", dm, err)
	}
	group, err := alice.CreateGroup(ctx, "plans", "bob")
	if err != nil || len(group.GetMemberIds()) != 2 {
		t.Fatalf("CreateGroup = %v, %v", group, err)
	}
	if _, err := bob.AddMember(ctx, group.GetId(), "bob"); status.Code(err) != codes.PermissionDenied {
		t.Errorf("AddMember by a non-owner = %v, want PERMISSION_DENIED", err)
	}
	if _, err := alice.RemoveMember(ctx, group.GetId(), "bob"); err != nil {
		t.Errorf("RemoveMember: %v", err)
	}

	for _, body := range []string{"one", "two", "three"} {
		if _, err := alice.Send(ctx, room.GetId(), body); err != nil {
			t.Fatalf("Send: %v", err)
		}
	}
	page, err := bob.History(ctx, room.GetId(), client.HistoryQuery{AfterSeq: 1, Limit: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.GetMessages()) != 1 || page.GetMessages()[0].GetBody() != "two" || !page.GetHasMore() {
		t.Errorf("History after 1 limit 1 = %v", page)
	}

	list, err := bob.ListConversations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) == 0 || list[0].GetId() != room.GetId() || list[0].GetHeadSeq() != 3 {
		t.Errorf("ListConversations = %v, want the room first with head 3", list)
	}
	if err := bob.LeaveConversation(ctx, room.GetId()); err != nil {
		t.Errorf("LeaveConversation: %v", err)
	}
	if _, err := bob.GetConversation(ctx, room.GetId()); status.Code(err) != codes.PermissionDenied {
		t.Errorf("GetConversation after leaving = %v, want PERMISSION_DENIED", err)
	}
}
