package client

import (
	"context"
	"fmt"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
)

// HistoryQuery selects one page of History. Set at most one of AfterSeq and
// BeforeSeq. AfterSeq pages forward (the oldest messages after it);
// BeforeSeq pages backward. With neither, the newest page is returned,
// unless Forward is set: then the page starts at the very first message,
// which AfterSeq 0 alone cannot ask for. Limit 0 means the server's default
// page size.
type HistoryQuery struct {
	AfterSeq  uint64
	BeforeSeq uint64
	Limit     int32
	// Forward pages forward from AfterSeq even when it is 0. It is implied
	// by a non-zero AfterSeq and cannot be combined with BeforeSeq.
	Forward bool
}

// History returns one page of a conversation's stored messages, oldest
// first. Its Epoch belongs with the seqs it returns: pass both to
// Session.SubscribeAt to follow on from the page.
//
// Posts come in their latest state: with the edited body and EditedAt set,
// or as tombstones (Deleted, no body). The edit and delete events that
// changed them are in the pages too, at their own seqs.
func (c *Client) History(ctx context.Context, conversationID string, q HistoryQuery) (*parleyv1.HistoryResponse, error) {
	resp, err := c.chat.History(ctx, &parleyv1.HistoryRequest{
		ConversationId: conversationID,
		AfterSeq:       q.AfterSeq,
		BeforeSeq:      q.BeforeSeq,
		Limit:          q.Limit,
		Forward:        q.Forward,
	})
	if err != nil {
		return nil, fmt.Errorf("history of %s: %w", conversationID, err)
	}
	return resp, nil
}

// Send posts one message with the unary Send RPC and returns its
// acknowledgement, which means it is durable. It makes one attempt under a
// fresh client_message_id; a caller that wants to retry safely must reuse an
// id, through ChatService().Send. A Session does that by itself. body may
// be empty only when WithAttachments gives at least one file.
func (c *Client) Send(ctx context.Context, conversationID, body string, opts ...SendOption) (*parleyv1.SendResponse, error) {
	resp, err := c.chat.Send(ctx, newSendRequest(conversationID, body, opts))
	if err != nil {
		return nil, fmt.Errorf("send to %s: %w", conversationID, err)
	}
	return resp, nil
}

// Edit replaces the body of the caller's own post at seq with the unary
// EditMessage RPC and returns the acknowledgement of the edit event (its
// own seq) once it is durable. Like Send, it makes one attempt; a Session's
// Edit resends until answered.
func (c *Client) Edit(ctx context.Context, conversationID string, seq uint64, body string) (*parleyv1.SendResponse, error) {
	resp, err := c.chat.EditMessage(ctx, &parleyv1.EditMessageRequest{
		ConversationId: conversationID, Seq: seq, ClientMessageId: NewClientMessageID(), Body: body,
	})
	if err != nil {
		return nil, fmt.Errorf("edit %s#%d: %w", conversationID, seq, err)
	}
	return resp.GetAck(), nil
}

// Delete turns the caller's own post at seq into a tombstone with the
// unary DeleteMessage RPC and returns the acknowledgement of the delete
// event once it is durable.
func (c *Client) Delete(ctx context.Context, conversationID string, seq uint64) (*parleyv1.SendResponse, error) {
	resp, err := c.chat.DeleteMessage(ctx, &parleyv1.DeleteMessageRequest{
		ConversationId: conversationID, Seq: seq, ClientMessageId: NewClientMessageID(),
	})
	if err != nil {
		return nil, fmt.Errorf("delete %s#%d: %w", conversationID, seq, err)
	}
	return resp.GetAck(), nil
}

// MarkDelivered moves the caller's delivered position in a conversation
// forward to seq (it never moves back) and returns the caller's receipt
// after the change. A Session's MarkDelivered does the same over its
// stream, without a round trip per call.
func (c *Client) MarkDelivered(ctx context.Context, conversationID string, seq uint64) (*parleyv1.Receipt, error) {
	resp, err := c.chat.MarkDelivered(ctx, &parleyv1.MarkDeliveredRequest{ConversationId: conversationID, Seq: seq})
	if err != nil {
		return nil, fmt.Errorf("mark %s delivered up to #%d: %w", conversationID, seq, err)
	}
	return resp.GetReceipt(), nil
}

// MarkRead moves the caller's read (and delivered) position in a
// conversation forward to seq, which may not pass the conversation's head
// (INVALID_ARGUMENT), and returns the caller's receipt after the change.
// It drives the conversation's unread count.
func (c *Client) MarkRead(ctx context.Context, conversationID string, seq uint64) (*parleyv1.Receipt, error) {
	resp, err := c.chat.MarkRead(ctx, &parleyv1.MarkReadRequest{ConversationId: conversationID, Seq: seq})
	if err != nil {
		return nil, fmt.Errorf("mark %s read up to #%d: %w", conversationID, seq, err)
	}
	return resp.GetReceipt(), nil
}

// GetReceipts returns the delivered and read positions of every member of a
// conversation who has any, sorted by user id. Pass them to NewReceipts.
func (c *Client) GetReceipts(ctx context.Context, conversationID string) ([]*parleyv1.Receipt, error) {
	resp, err := c.chat.GetReceipts(ctx, &parleyv1.GetReceiptsRequest{ConversationId: conversationID})
	if err != nil {
		return nil, fmt.Errorf("receipts of %s: %w", conversationID, err)
	}
	return resp.GetReceipts(), nil
}

// SetTyping starts or stops the caller's typing indicator in a
// conversation with the unary RPC. A Session's SetTyping throttles repeats.
func (c *Client) SetTyping(ctx context.Context, conversationID string, typing bool) error {
	if _, err := c.chat.SetTyping(ctx, &parleyv1.SetTypingRequest{ConversationId: conversationID, Typing: typing}); err != nil {
		return fmt.Errorf("typing in %s: %w", conversationID, err)
	}
	return nil
}

// GetPresence reports which of the given users are online (at most 1000).
// Users who share no conversation with the caller are left out of the
// answer, as are unknown ones; the caller is always reported.
func (c *Client) GetPresence(ctx context.Context, userIDs ...string) ([]*parleyv1.Presence, error) {
	resp, err := c.chat.GetPresence(ctx, &parleyv1.GetPresenceRequest{UserIds: userIDs})
	if err != nil {
		return nil, fmt.Errorf("presence: %w", err)
	}
	return resp.GetPresences(), nil
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
