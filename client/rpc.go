package client

import (
	"context"
	"fmt"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
)

// HistoryQuery selects one page of History. Set at most one of AfterSeq and
// BeforeSeq; with neither, the newest page is returned. Limit 0 means the
// server's default page size.
type HistoryQuery struct {
	AfterSeq  uint64
	BeforeSeq uint64
	Limit     int32
}

// History returns one page of a conversation's stored messages, oldest
// first. Its Epoch belongs with the seqs it returns: pass both to
// Session.SubscribeAt to follow on from the page.
func (c *Client) History(ctx context.Context, conversationID string, q HistoryQuery) (*parleyv1.HistoryResponse, error) {
	resp, err := c.chat.History(ctx, &parleyv1.HistoryRequest{
		ConversationId: conversationID,
		AfterSeq:       q.AfterSeq,
		BeforeSeq:      q.BeforeSeq,
		Limit:          q.Limit,
	})
	if err != nil {
		return nil, fmt.Errorf("history of %s: %w", conversationID, err)
	}
	return resp, nil
}

// Send posts one message with the unary Send RPC and returns its
// acknowledgement, which means it is durable. It makes one attempt under a
// fresh client_message_id; a caller that wants to retry safely must reuse an
// id, through ChatService().Send. A Session does that by itself.
func (c *Client) Send(ctx context.Context, conversationID, body string) (*parleyv1.SendResponse, error) {
	resp, err := c.chat.Send(ctx, &parleyv1.SendRequest{
		ConversationId:  conversationID,
		ClientMessageId: NewClientMessageID(),
		Body:            body,
	})
	if err != nil {
		return nil, fmt.Errorf("send to %s: %w", conversationID, err)
	}
	return resp, nil
}

// RoomID returns the conversation id of the room with the given name.
func RoomID(name string) string { return "room:" + name }

// CreateDirect returns the direct conversation between the caller and
// userID, creating it on first use.
func (c *Client) CreateDirect(ctx context.Context, userID string) (*parleyv1.Conversation, error) {
	resp, err := c.convs.CreateDirect(ctx, &parleyv1.CreateDirectRequest{UserId: userID})
	if err != nil {
		return nil, fmt.Errorf("direct conversation with %s: %w", userID, err)
	}
	return resp.GetConversation(), nil
}

// CreateRoom creates an open room named name; title may be empty.
func (c *Client) CreateRoom(ctx context.Context, name, title string) (*parleyv1.Conversation, error) {
	resp, err := c.convs.CreateRoom(ctx, &parleyv1.CreateRoomRequest{Name: name, Title: title})
	if err != nil {
		return nil, fmt.Errorf("create room %s: %w", name, err)
	}
	return resp.GetConversation(), nil
}

// JoinRoom adds the caller to the room with the given conversation id
// (see RoomID). Joining twice is not an error.
func (c *Client) JoinRoom(ctx context.Context, conversationID string) (*parleyv1.Conversation, error) {
	resp, err := c.convs.JoinRoom(ctx, &parleyv1.JoinRoomRequest{ConversationId: conversationID})
	if err != nil {
		return nil, fmt.Errorf("join %s: %w", conversationID, err)
	}
	return resp.GetConversation(), nil
}

// CreateGroup creates a closed group owned by the caller with the given
// other members.
func (c *Client) CreateGroup(ctx context.Context, title string, memberIDs ...string) (*parleyv1.Conversation, error) {
	resp, err := c.convs.CreateGroup(ctx, &parleyv1.CreateGroupRequest{Title: title, MemberIds: memberIDs})
	if err != nil {
		return nil, fmt.Errorf("create group %q: %w", title, err)
	}
	return resp.GetConversation(), nil
}

// AddMember adds userID to a group the caller owns.
func (c *Client) AddMember(ctx context.Context, conversationID, userID string) (*parleyv1.Conversation, error) {
	resp, err := c.convs.AddMember(ctx, &parleyv1.AddMemberRequest{ConversationId: conversationID, UserId: userID})
	if err != nil {
		return nil, fmt.Errorf("add %s to %s: %w", userID, conversationID, err)
	}
	return resp.GetConversation(), nil
}

// RemoveMember removes userID from a group the caller owns.
func (c *Client) RemoveMember(ctx context.Context, conversationID, userID string) (*parleyv1.Conversation, error) {
	resp, err := c.convs.RemoveMember(ctx, &parleyv1.RemoveMemberRequest{ConversationId: conversationID, UserId: userID})
	if err != nil {
		return nil, fmt.Errorf("remove %s from %s: %w", userID, conversationID, err)
	}
	return resp.GetConversation(), nil
}

// LeaveConversation removes the caller from a room or group.
func (c *Client) LeaveConversation(ctx context.Context, conversationID string) error {
	if _, err := c.convs.LeaveConversation(ctx, &parleyv1.LeaveConversationRequest{ConversationId: conversationID}); err != nil {
		return fmt.Errorf("leave %s: %w", conversationID, err)
	}
	return nil
}

// GetConversation describes one conversation the caller is a member of.
func (c *Client) GetConversation(ctx context.Context, conversationID string) (*parleyv1.Conversation, error) {
	resp, err := c.convs.GetConversation(ctx, &parleyv1.GetConversationRequest{ConversationId: conversationID})
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", conversationID, err)
	}
	return resp.GetConversation(), nil
}

// ListConversations lists the caller's conversations, newest activity
// first, each with its head seq and last message.
func (c *Client) ListConversations(ctx context.Context) ([]*parleyv1.Conversation, error) {
	resp, err := c.convs.ListConversations(ctx, &parleyv1.ListConversationsRequest{})
	if err != nil {
		return nil, fmt.Errorf("list conversations: %w", err)
	}
	return resp.GetConversations(), nil
}
