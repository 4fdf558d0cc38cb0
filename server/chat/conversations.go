package chat

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
	"github.com/parleychat/parley/server/auth"
	"github.com/parleychat/parley/server/store"
)

// directID derives the id of the direct conversation between a and b; both
// sides derive the same one.
func directID(a, b string) string {
	if b < a {
		a, b = b, a
	}
	return "dm:" + a + ":" + b
}

var kinds = map[string]parleyv1.ConversationKind{
	store.KindDirect: parleyv1.ConversationKind_CONVERSATION_KIND_DIRECT,
	store.KindRoom:   parleyv1.ConversationKind_CONVERSATION_KIND_ROOM,
	store.KindGroup:  parleyv1.ConversationKind_CONVERSATION_KIND_GROUP,
}

// member returns conversation id if user is a member, and the same
// PERMISSION_DENIED for "not a member" and "does not exist". It reads the
// member cache: the returned Members slice must not be modified.
func (s *Service) member(user, id string) (store.Conversation, error) {
	if err := validConvID(id); err != nil {
		return store.Conversation{}, err
	}
	c, err := s.members.get(id)
	if errors.Is(err, store.ErrNotFound) {
		return c, denied(id)
	}
	if err != nil {
		return c, err
	}
	if !c.IsMember(user) {
		return c, denied(id)
	}
	return c, nil
}

// createConversation stores a new conversation and caches it.
func (s *Service) createConversation(c store.Conversation) error {
	if err := s.store.CreateConversation(c); err != nil {
		return err
	}
	s.members.forget(c.ID) // the store sorted and compacted the members
	return nil
}

// updateConversation changes a conversation, keeps the cache in step, and
// detaches the streams of members who left from it, so they stop
// receiving at once rather than at their next reconnect.
func (s *Service) updateConversation(id string, fn func(c *store.Conversation) error) (store.Conversation, error) {
	var before []string
	c, err := s.store.UpdateConversation(id, func(c *store.Conversation) error {
		before = slices.Clone(c.Members)
		return fn(c)
	})
	if err != nil {
		return c, err
	}
	// Forget rather than set: two changes may finish their commits in one
	// order and reach this line in the other, and the older value must not
	// win. The next reader loads what the store has.
	s.members.forget(id)
	_, removed := store.DiffMembers(before, c.Members)
	for _, u := range removed {
		for _, o := range s.hub.outbounds(u) {
			o.drop(id)
		}
	}
	return c, nil
}

// describe turns a stored conversation into what user sees of it: head
// seq, last post, read position and unread count.
func (s *Service) describe(c store.Conversation, user string) (*parleyv1.Conversation, error) {
	pc := &parleyv1.Conversation{
		Id:        c.ID,
		Kind:      kinds[c.Kind],
		Title:     c.Title,
		OwnerId:   c.Owner,
		MemberIds: c.Members,
		CreatedAt: timestamppb.New(c.CreatedAt),
	}
	head, err := s.router.Head(c.ID)
	if err != nil {
		return nil, err
	}
	pc.HeadSeq = head
	if pc.LastMessage, err = s.lastPost(c.ID); err != nil {
		return nil, err
	}
	r, err := s.store.Receipt(c.ID, user)
	if err != nil {
		return nil, err
	}
	pc.ReadSeq = r.Read
	n, err := s.store.Count(c.ID, r.Read, maxUnread, func(data []byte) bool {
		var m parleyv1.Message
		return proto.Unmarshal(data, &m) == nil && isPost(&m) && !m.GetDeleted() && m.GetSenderId() != user
	})
	if err != nil {
		return nil, err
	}
	pc.UnreadCount = uint64(n)
	return pc, nil
}

// maxUnread caps the unread count, so a long-unread room costs a bounded
// scan.
const maxUnread = 1000

func isPost(m *parleyv1.Message) bool {
	k := m.GetKind()
	return k == parleyv1.MessageKind_MESSAGE_KIND_POST || k == parleyv1.MessageKind_MESSAGE_KIND_UNSPECIFIED
}

// lastPost is the newest post of conv in its current state (edit and
// delete events are skipped: the list shows what was said, not that it
// changed), or nil.
func (s *Service) lastPost(conv string) (*parleyv1.Message, error) {
	var before uint64
	for range 5 {
		recs, more, err := s.store.Before(conv, before, 20)
		if err != nil {
			return nil, err
		}
		for i := len(recs) - 1; i >= 0; i-- {
			m := &parleyv1.Message{}
			if err := proto.Unmarshal(recs[i].Data, m); err != nil {
				return nil, fmt.Errorf("decode message %s#%d: %w", conv, recs[i].Seq, err)
			}
			if isPost(m) {
				return m, nil
			}
		}
		if !more || len(recs) == 0 {
			return nil, nil
		}
		before = recs[0].Seq
	}
	return nil, nil
}

// CreateDirect implements parleyv1.ConversationServiceServer.
func (s *Service) CreateDirect(ctx context.Context, req *parleyv1.CreateDirectRequest) (*parleyv1.CreateDirectResponse, error) {
	me := auth.UserID(ctx)
	peer := req.GetUserId()
	if peer == me {
		return nil, toStatus(invalid("a direct conversation needs another user; use a group to talk to yourself"))
	}
	if err := s.existing(peer); err != nil {
		return nil, toStatus(err)
	}
	id := directID(me, peer)
	err := s.createConversation(store.Conversation{ID: id, Kind: store.KindDirect, Members: []string{me, peer}, CreatedAt: time.Now().UTC()})
	if err != nil && !errors.Is(err, store.ErrExists) {
		return nil, toStatus(err)
	}
	c, err := s.store.Conversation(id)
	if err != nil {
		return nil, toStatus(err)
	}
	pc, err := s.describe(c, me)
	return &parleyv1.CreateDirectResponse{Conversation: pc}, toStatus(err)
}

// CreateRoom implements parleyv1.ConversationServiceServer.
func (s *Service) CreateRoom(ctx context.Context, req *parleyv1.CreateRoomRequest) (*parleyv1.CreateRoomResponse, error) {
	me := auth.UserID(ctx)
	title := cmp.Or(strings.TrimSpace(req.GetTitle()), req.GetName())
	c := store.Conversation{ID: "room:" + req.GetName(), Kind: store.KindRoom, Title: title, Owner: me, Members: []string{me}, CreatedAt: time.Now().UTC()}
	if err := s.createConversation(c); err != nil {
		if errors.Is(err, store.ErrExists) {
			return nil, toStatus(fmt.Errorf("%w: room %q exists; join it instead", errExists, req.GetName()))
		}
		return nil, toStatus(err)
	}
	pc, err := s.describe(c, me)
	return &parleyv1.CreateRoomResponse{Conversation: pc}, toStatus(err)
}

// JoinRoom implements parleyv1.ConversationServiceServer.
func (s *Service) JoinRoom(ctx context.Context, req *parleyv1.JoinRoomRequest) (*parleyv1.JoinRoomResponse, error) {
	me := auth.UserID(ctx)
	id := req.GetConversationId()
	if !strings.HasPrefix(id, "room:") {
		return nil, toStatus(fmt.Errorf("%w: only rooms can be joined; %q is not a room", errPrecondition, id))
	}
	c, err := s.updateConversation(id, func(c *store.Conversation) error {
		c.Members = append(c.Members, me)
		return nil
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil, toStatus(fmt.Errorf("%w: room %q does not exist", errNotFound, id))
	}
	if err != nil {
		return nil, toStatus(err)
	}
	pc, err := s.describe(c, me)
	return &parleyv1.JoinRoomResponse{Conversation: pc}, toStatus(err)
}

// CreateGroup implements parleyv1.ConversationServiceServer.
func (s *Service) CreateGroup(ctx context.Context, req *parleyv1.CreateGroupRequest) (*parleyv1.CreateGroupResponse, error) {
	me := auth.UserID(ctx)
	title := strings.TrimSpace(req.GetTitle())
	members := []string{me}
	for _, m := range req.GetMemberIds() {
		if err := s.existing(m); err != nil {
			return nil, toStatus(err)
		}
		members = append(members, m)
	}
	var id [12]byte
	rand.Read(id[:])
	c := store.Conversation{ID: "group:" + hex.EncodeToString(id[:]), Kind: store.KindGroup, Title: title, Owner: me, Members: members, CreatedAt: time.Now().UTC()}
	if err := s.createConversation(c); err != nil {
		return nil, toStatus(err)
	}
	c, err := s.store.Conversation(c.ID)
	if err != nil {
		return nil, toStatus(err)
	}
	pc, err := s.describe(c, me)
	return &parleyv1.CreateGroupResponse{Conversation: pc}, toStatus(err)
}

// changeGroup applies fn to a group the caller owns.
func (s *Service) changeGroup(ctx context.Context, id, user string, fn func(c *store.Conversation) error) (*parleyv1.Conversation, error) {
	me := auth.UserID(ctx)
	if _, err := s.member(me, id); err != nil {
		return nil, err
	}
	c, err := s.updateConversation(id, func(c *store.Conversation) error {
		if c.Kind != store.KindGroup {
			return fmt.Errorf("%w: members are managed only in groups; %q is a %s", errPrecondition, id, c.Kind)
		}
		if c.Owner != me {
			return fmt.Errorf("%w: only the group's owner (%s) manages its members", errDenied, c.Owner)
		}
		return fn(c)
	})
	if err != nil {
		return nil, err
	}
	return s.describe(c, me)
}

// AddMember implements parleyv1.ConversationServiceServer.
func (s *Service) AddMember(ctx context.Context, req *parleyv1.AddMemberRequest) (*parleyv1.AddMemberResponse, error) {
	if err := s.existing(req.GetUserId()); err != nil {
		return nil, toStatus(err)
	}
	pc, err := s.changeGroup(ctx, req.GetConversationId(), req.GetUserId(), func(c *store.Conversation) error {
		c.Members = append(c.Members, req.GetUserId())
		return nil
	})
	if err != nil {
		return nil, toStatus(err)
	}
	return &parleyv1.AddMemberResponse{Conversation: pc}, nil
}

// RemoveMember implements parleyv1.ConversationServiceServer.
func (s *Service) RemoveMember(ctx context.Context, req *parleyv1.RemoveMemberRequest) (*parleyv1.RemoveMemberResponse, error) {
	pc, err := s.changeGroup(ctx, req.GetConversationId(), req.GetUserId(), func(c *store.Conversation) error {
		if req.GetUserId() == c.Owner {
			return fmt.Errorf("%w: the owner cannot remove themself; leave the group instead", errPrecondition)
		}
		if !c.IsMember(req.GetUserId()) {
			return fmt.Errorf("%w: %q is not a member", errNotFound, req.GetUserId())
		}
		c.Members = slices.DeleteFunc(c.Members, func(m string) bool { return m == req.GetUserId() })
		return nil
	})
	if err != nil {
		return nil, toStatus(err)
	}
	return &parleyv1.RemoveMemberResponse{Conversation: pc}, nil
}

// LeaveConversation implements parleyv1.ConversationServiceServer.
func (s *Service) LeaveConversation(ctx context.Context, req *parleyv1.LeaveConversationRequest) (*parleyv1.LeaveConversationResponse, error) {
	me := auth.UserID(ctx)
	id := req.GetConversationId()
	if _, err := s.member(me, id); err != nil {
		return nil, toStatus(err)
	}
	_, err := s.updateConversation(id, func(c *store.Conversation) error {
		if c.Kind == store.KindDirect {
			return fmt.Errorf("%w: direct conversations cannot be left", errPrecondition)
		}
		leave(c, me)
		return nil
	})
	if err != nil {
		return nil, toStatus(err)
	}
	return &parleyv1.LeaveConversationResponse{}, nil
}

// existing fails with NOT_FOUND unless user has an account (a deleted
// one does not count).
func (s *Service) existing(user string) error {
	u, err := s.store.User(user)
	if errors.Is(err, store.ErrNotFound) || (err == nil && u.Deleted()) {
		return fmt.Errorf("%w: user %q does not exist", errNotFound, truncate(user))
	}
	return err
}

// leave takes user out of c's members; a group they owned passes to its
// first remaining member.
func leave(c *store.Conversation, user string) {
	c.Members = slices.DeleteFunc(c.Members, func(m string) bool { return m == user })
	if c.Owner == user && c.Kind == store.KindGroup && len(c.Members) > 0 {
		c.Owner = c.Members[0]
	}
}

// GetConversation implements parleyv1.ConversationServiceServer.
func (s *Service) GetConversation(ctx context.Context, req *parleyv1.GetConversationRequest) (*parleyv1.GetConversationResponse, error) {
	me := auth.UserID(ctx)
	c, err := s.member(me, req.GetConversationId())
	if err != nil {
		return nil, toStatus(err)
	}
	pc, err := s.describe(c, me)
	if err != nil {
		return nil, toStatus(err)
	}
	return &parleyv1.GetConversationResponse{Conversation: pc}, nil
}

// ListConversations implements parleyv1.ConversationServiceServer.
func (s *Service) ListConversations(ctx context.Context, req *parleyv1.ListConversationsRequest) (*parleyv1.ListConversationsResponse, error) {
	me := auth.UserID(ctx)
	ids, err := s.store.UserConversations(me)
	if err != nil {
		return nil, toStatus(err)
	}
	out := make([]*parleyv1.Conversation, 0, len(ids))
	for _, id := range ids {
		c, err := s.store.Conversation(id)
		if err != nil {
			return nil, toStatus(err)
		}
		pc, err := s.describe(c, me)
		if err != nil {
			return nil, toStatus(err)
		}
		out = append(out, pc)
	}
	activity := func(c *parleyv1.Conversation) time.Time {
		if c.GetLastMessage() != nil {
			return c.GetLastMessage().GetSentAt().AsTime()
		}
		return c.GetCreatedAt().AsTime()
	}
	slices.SortStableFunc(out, func(a, b *parleyv1.Conversation) int {
		return cmp.Or(activity(b).Compare(activity(a)), strings.Compare(a.GetId(), b.GetId()))
	})
	return &parleyv1.ListConversationsResponse{Conversations: out}, nil
}
