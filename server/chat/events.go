package chat

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
	"github.com/parleychat/parley/server/auth"
	"github.com/parleychat/parley/server/router"
	"github.com/parleychat/parley/server/store"
)

// Field numbers of the events in ChatResponse, which SubscribeResponse
// shares, so that an event is encoded once for both kinds of stream.
var (
	fieldReceipt      = eventField("receipt")
	fieldTyping       = eventField("typing")
	fieldPresence     = eventField("presence")
	fieldNotification = eventField("notification")
)

func eventField(name protoreflect.Name) protowire.Number {
	return (&parleyv1.ChatResponse{}).ProtoReflect().Descriptor().Fields().ByName(name).Number()
}

// typing remembers who is typing where, so that an indicator lapses by
// itself (typing=false is sent when it expires) and a post takes it down.
type typing struct {
	mu     sync.Mutex // protects timers and closed
	timers map[[2]string]*time.Timer
	closed bool
}

func receiptProto(r store.Receipt) *parleyv1.Receipt {
	return &parleyv1.Receipt{ConversationId: r.Conv, UserId: r.User, DeliveredSeq: r.Delivered, ReadSeq: r.Read, UpdatedAt: timestamppb.New(r.UpdatedAt)}
}

// markReceipt moves user's positions in conv, then tells the conversation's
// live subscribers. done runs once the receipt is durable.
func (s *Service) markReceipt(user string, conv string, delivered, read uint64, done func(*parleyv1.Receipt, error)) {
	if _, err := s.member(user, conv); err != nil {
		done(nil, err)
		return
	}
	head, err := s.router.Head(conv)
	if err != nil {
		done(nil, err)
		return
	}
	if seq := max(delivered, read); seq > head {
		done(nil, invalid("seq %d is past the conversation's newest message (%d)", seq, head))
		return
	}
	s.store.UpdateReceipt(store.ReceiptUpdate{Conv: conv, User: user, Delivered: delivered, Read: read, At: time.Now()}, func(r store.Receipt, err error) {
		if err != nil {
			done(nil, fmt.Errorf("%w: receipt not stored (%v); send it again", errUnavailable, err))
			return
		}
		p := receiptProto(r)
		if r.Changed {
			if f, err := router.Event(conv, fieldReceipt, p); err == nil {
				s.router.Broadcast(conv, f)
			}
		}
		done(p, nil)
	})
}

// waitReceipt is markReceipt for the unary RPCs.
func (s *Service) waitReceipt(ctx context.Context, conv string, delivered, read uint64) (*parleyv1.Receipt, error) {
	type outcome struct {
		r   *parleyv1.Receipt
		err error
	}
	ch := make(chan outcome, 1)
	s.markReceipt(auth.UserID(ctx), conv, delivered, read, func(r *parleyv1.Receipt, err error) { ch <- outcome{r, err} })
	select {
	case o := <-ch:
		return o.r, toStatus(o.err)
	case <-ctx.Done():
		return nil, toStatus(ctx.Err())
	}
}

// MarkDelivered implements parleyv1.ChatServiceServer.
func (s *Service) MarkDelivered(ctx context.Context, req *parleyv1.MarkDeliveredRequest) (*parleyv1.MarkDeliveredResponse, error) {
	r, err := s.waitReceipt(ctx, req.GetConversationId(), req.GetSeq(), 0)
	if err != nil {
		return nil, err
	}
	return &parleyv1.MarkDeliveredResponse{Receipt: r}, nil
}

// MarkRead implements parleyv1.ChatServiceServer.
func (s *Service) MarkRead(ctx context.Context, req *parleyv1.MarkReadRequest) (*parleyv1.MarkReadResponse, error) {
	r, err := s.waitReceipt(ctx, req.GetConversationId(), 0, req.GetSeq())
	if err != nil {
		return nil, err
	}
	return &parleyv1.MarkReadResponse{Receipt: r}, nil
}

// GetReceipts implements parleyv1.ChatServiceServer.
func (s *Service) GetReceipts(ctx context.Context, req *parleyv1.GetReceiptsRequest) (*parleyv1.GetReceiptsResponse, error) {
	conv := req.GetConversationId()
	if _, err := s.member(auth.UserID(ctx), conv); err != nil {
		return nil, toStatus(err)
	}
	rs, err := s.store.Receipts(conv)
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &parleyv1.GetReceiptsResponse{Receipts: make([]*parleyv1.Receipt, len(rs))}
	for i, r := range rs {
		resp.Receipts[i] = receiptProto(r)
	}
	return resp, nil
}

// setTyping broadcasts a typing indicator and arranges for it to lapse.
func (s *Service) setTyping(user, conv string, on bool) error {
	if _, err := s.member(user, conv); err != nil {
		return err
	}
	if !s.typingRate.allow(user, time.Now()) {
		return exhausted("typing rate", "at most %g typing updates per second per user (--typing-rate)", s.typingRate.rate)
	}
	s.typingEvent(user, conv, on)
	return nil
}

// typingEvent sends the indicator and (re)arms or clears its expiry.
func (s *Service) typingEvent(user, conv string, on bool) {
	key := [2]string{conv, user}
	t := &s.typing
	t.mu.Lock()
	old := t.timers[key]
	delete(t.timers, key)
	if old != nil {
		old.Stop()
	}
	if on && !t.closed {
		t.timers[key] = time.AfterFunc(s.opts.typingTTL, func() {
			t.mu.Lock()
			_, live := t.timers[key]
			delete(t.timers, key)
			t.mu.Unlock()
			if live {
				s.broadcastTyping(user, conv, false)
			}
		})
	}
	t.mu.Unlock()
	if on || old != nil {
		s.broadcastTyping(user, conv, on)
	}
}

func (s *Service) broadcastTyping(user, conv string, on bool) {
	ev := &parleyv1.Typing{ConversationId: conv, UserId: user, Typing: on}
	if on {
		ev.ExpiresAt = timestamppb.New(time.Now().Add(s.opts.typingTTL))
	}
	if f, err := router.Event(conv, fieldTyping, ev); err == nil {
		s.router.Broadcast(conv, f)
	}
}

// stopTyping takes user's indicator down in conv if it is up (they posted).
func (s *Service) stopTyping(user, conv string) {
	s.typing.mu.Lock()
	_, up := s.typing.timers[[2]string{conv, user}]
	s.typing.mu.Unlock()
	if up {
		s.typingEvent(user, conv, false)
	}
}

func (t *typing) close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
	for k, timer := range t.timers {
		timer.Stop()
		delete(t.timers, k)
	}
}

// SetTyping implements parleyv1.ChatServiceServer.
func (s *Service) SetTyping(ctx context.Context, req *parleyv1.SetTypingRequest) (*parleyv1.SetTypingResponse, error) {
	if err := s.setTyping(auth.UserID(ctx), req.GetConversationId(), req.GetTyping()); err != nil {
		return nil, toStatus(err)
	}
	return &parleyv1.SetTypingResponse{}, nil
}

// GetPresence implements parleyv1.ChatServiceServer.
func (s *Service) GetPresence(ctx context.Context, req *parleyv1.GetPresenceRequest) (*parleyv1.GetPresenceResponse, error) {
	peers := s.peers(auth.UserID(ctx), 0)
	resp := &parleyv1.GetPresenceResponse{}
	for _, u := range req.GetUserIds() {
		if _, ok := slices.BinarySearch(peers, u); !ok {
			continue
		}
		if !s.hub.known(u) {
			// Not seen since this process started: the store may know.
			seen, err := s.store.LastSeen(u)
			if err != nil {
				return nil, toStatus(err)
			}
			s.hub.remember(u, seen)
		}
		resp.Presences = append(resp.Presences, s.hub.presence(u))
	}
	return resp, nil
}

// post is a durable post waiting for its notifications. A post from the
// cluster's feed (feed set) has only the conversation's id in conv and
// notifies this node's streams; a local one notifies streams and, unless
// streams hear from the feed, nothing else; the webhook is always the
// posting node's.
type post struct {
	conv   store.Conversation
	sender string
	res    router.Result
	body   string
	feed   bool
}

// WithFeedNotifications says that every node is told of every post by its
// log (FeedPost), so Notification frames come from there, on each node for
// its own streams; posting only calls the webhook.
func WithFeedNotifications() Option { return func(o *options) { o.feedNotes = true } }

// FeedPost is told of a post by the cluster's log, on every node: this
// node's streams that do not follow the conversation get a Notification.
// Like afterPost it only queues; edits and deletes are ignored.
func (s *Service) FeedPost(conv string, m *parleyv1.Message) {
	if !s.opts.feedNotes || m.GetKind() > parleyv1.MessageKind_MESSAGE_KIND_POST {
		return
	}
	p := post{conv: store.Conversation{ID: conv}, sender: m.GetSenderId(), body: m.GetBody(), feed: true,
		res: router.Result{Conv: conv, Seq: m.GetSeq(), SentAt: m.GetSentAt().AsTime()}}
	select {
	case s.posts <- p:
	default:
		s.droppedNotes.Add(1)
	}
}

// afterPost queues the notifications of a durable post. It runs on the log's
// writer goroutine, so it only queues: the notifier goroutine does the work.
// Notifications are best effort: when the queue is full they are dropped
// (and counted), never waited for.
func (s *Service) afterPost(c store.Conversation, sender string, res router.Result, body string) {
	select {
	case s.posts <- post{conv: c, sender: sender, res: res, body: body}:
	default:
		s.droppedNotes.Add(1)
	}
}

// notifyBatch is how many queued posts the notifier takes at once.
const notifyBatch = 256

// notifier sends the queued notifications until shutdown. It takes what
// is queued in one go, so a busy conversation's posts cost one look at its
// members, not one per post.
func (s *Service) notifier() {
	defer s.streams.Done()
	batch := make([]post, 0, notifyBatch)
	reach := newReachCache(s.hub)
	for {
		select {
		case p := <-s.posts:
			batch = append(batch[:0], p)
		fill:
			for len(batch) < notifyBatch {
				select {
				case p := <-s.posts:
					batch = append(batch, p)
				default:
					break fill
				}
			}
			s.notifyAll(reach, batch)
		case <-s.shutdown:
			return
		}
	}
}

// notifyAll notifies the posts of batch, grouped by conversation and
// origin in order of arrival.
func (s *Service) notifyAll(reach *reachCache, batch []post) {
	type key struct {
		conv string
		feed bool
	}
	var order []key
	groups := make(map[key][]post)
	for _, p := range batch {
		k := key{p.conv.ID, p.feed}
		if groups[k] == nil {
			order = append(order, k)
		}
		groups[k] = append(groups[k], p)
	}
	for _, k := range order {
		posts := groups[k]
		c := posts[0].conv
		if k.feed {
			var err error
			if c, err = s.members.get(k.conv); err != nil {
				continue
			}
			s.notify(reach.get(c), c, posts, true, false)
			continue
		}
		s.notify(reach.get(c), c, posts, !s.opts.feedNotes, true)
	}
}

// notify tells members about new posts of one conversation, oldest first:
// with streams set, their streams on this node that do not follow the
// conversation get a Notification of the newest post (a stream holds one
// per conversation until it is written anyway); with hook set, members
// with no stream on any node go to the webhook, once per post.
func (s *Service) notify(r reached, c store.Conversation, posts []post, streams, hook bool) {
	last := posts[len(posts)-1]
	if streams {
		var frame *router.Frame
		for _, o := range r.outs {
			if o.user == last.sender {
				continue
			}
			if frame == nil {
				var err error
				frame, err = router.Event(c.ID, fieldNotification, &parleyv1.Notification{
					ConversationId: c.ID, Seq: last.res.Seq, SenderId: last.sender, Preview: previewOf(last.body), SentAt: timestamppb.New(last.res.SentAt)})
				if err != nil {
					return
				}
			}
			o.notify(c.ID, frame)
		}
	}
	if !hook || s.opts.webhook == nil {
		return
	}
	// offline is in member order, sorted. Posts share it; a copy is made
	// only for a post whose sender has no stream either.
	for _, p := range posts {
		to := r.offline
		if i, found := slices.BinarySearch(to, p.sender); found {
			to = slices.Delete(slices.Clone(to), i, i+1)
		}
		if len(to) > 0 {
			s.opts.webhook(to, c.ID, p.res.Seq, p.sender, previewOf(p.body), p.res.SentAt)
		}
	}
}

// reached is whom a conversation's notifications reach (hub.reach).
type reached struct {
	members []string    // the Members slice it was worked out from
	outs    []*outbound // streams of members that do not follow it
	offline []string    // members with no stream on any node
}

// reachCacheSize bounds the conversations a reachCache holds.
const reachCacheSize = 4096

// reachCache keeps hub.reach's answers while the hub's version and the
// conversation's Members slice stay the same (the member cache hands out
// one slice until the conversation changes), so a room that keeps posting
// costs its notifications a map lookup, not a walk of its members and
// their streams per batch. The whole cache goes at the first change of
// the version, which also lets go of closed streams. Only the notifier
// goroutine may use it.
type reachCache struct {
	hub     *hub
	version uint64
	convs   map[string]reached
}

func newReachCache(h *hub) *reachCache {
	return &reachCache{hub: h, convs: make(map[string]reached)}
}

// get returns whom c's notifications reach now.
func (rc *reachCache) get(c store.Conversation) reached {
	// Read the version before the hub: a change while reach runs leaves
	// an entry that the next get finds out of date.
	v := rc.hub.version.Load()
	if v != rc.version || len(rc.convs) >= reachCacheSize {
		clear(rc.convs)
		rc.version = v
	}
	if r, ok := rc.convs[c.ID]; ok && sameSlice(r.members, c.Members) {
		return r
	}
	r := reached{members: c.Members}
	r.outs, r.offline = rc.hub.reach(c.ID, c.Members)
	rc.convs[c.ID] = r
	return r
}

// sameSlice reports whether a and b are the same slice, not just equal.
func sameSlice(a, b []string) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

// previewOf is the first 100 characters of body.
func previewOf(body string) string {
	n := 0
	for i := range body {
		if n == 100 {
			return body[:i]
		}
		n++
	}
	return body
}

// editable checks that user may change the post conv#seq and returns it.
func (s *Service) editable(user, conv string, seq uint64) (*parleyv1.Message, error) {
	if _, err := s.member(user, conv); err != nil {
		return nil, err
	}
	rec, ok, err := s.store.Get(conv, seq)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("%w: no stored message at seq %d in %s", errNotFound, seq, conv)
	}
	var post parleyv1.Message
	if err := proto.Unmarshal(rec.Data, &post); err != nil {
		return nil, fmt.Errorf("decode %s#%d: %w", conv, seq, err)
	}
	switch {
	case post.GetKind() != parleyv1.MessageKind_MESSAGE_KIND_POST && post.GetKind() != parleyv1.MessageKind_MESSAGE_KIND_UNSPECIFIED:
		return nil, fmt.Errorf("%w: seq %d is an edit or delete event, not a post", errPrecondition, seq)
	case post.GetSenderId() != user:
		return nil, fmt.Errorf("%w: you can change only your own messages; seq %d is %s's", errDenied, seq, post.GetSenderId())
	case post.GetDeleted():
		return nil, fmt.Errorf("%w: seq %d was deleted", errPrecondition, seq)
	}
	return &post, nil
}

// change publishes an edit or a delete of conv#seq by user.
func (s *Service) change(ctx context.Context, user string, m router.Message, ack router.AckFunc) error {
	if _, err := s.editable(user, m.Conv, m.TargetSeq); err != nil {
		// A resend of a change that was applied finds the post already
		// changed (a delete made it a tombstone): answer it with the
		// original ack, as for any resend, not with the error.
		if _, done, lerr := s.store.Dedup(user, m.ClientMsgID); lerr != nil || !done {
			return err
		}
	}
	if !s.sendRate.allow(user, time.Now()) {
		return s.rateError()
	}
	m.Sender = user
	return s.router.Publish(ctx, m, ack)
}

func editMessage(r *parleyv1.EditMessageRequest) router.Message {
	return router.Message{Conv: r.GetConversationId(), ClientMsgID: r.GetClientMessageId(), Body: r.GetBody(),
		Kind: parleyv1.MessageKind_MESSAGE_KIND_EDIT, TargetSeq: r.GetSeq()}
}

func deleteMessage(r *parleyv1.DeleteMessageRequest) router.Message {
	return router.Message{Conv: r.GetConversationId(), ClientMsgID: r.GetClientMessageId(),
		Kind: parleyv1.MessageKind_MESSAGE_KIND_DELETE, TargetSeq: r.GetSeq()}
}

// EditMessage implements parleyv1.ChatServiceServer.
func (s *Service) EditMessage(ctx context.Context, req *parleyv1.EditMessageRequest) (*parleyv1.EditMessageResponse, error) {
	ack, err := s.waitDurable(ctx, req.GetConversationId(), req.GetClientMessageId(), func(ack router.AckFunc) error {
		return s.change(ctx, auth.UserID(ctx), editMessage(req), ack)
	})
	if err != nil {
		return nil, err
	}
	return &parleyv1.EditMessageResponse{Ack: ack}, nil
}

// DeleteMessage implements parleyv1.ChatServiceServer.
func (s *Service) DeleteMessage(ctx context.Context, req *parleyv1.DeleteMessageRequest) (*parleyv1.DeleteMessageResponse, error) {
	ack, err := s.waitDurable(ctx, req.GetConversationId(), req.GetClientMessageId(), func(ack router.AckFunc) error {
		return s.change(ctx, auth.UserID(ctx), deleteMessage(req), ack)
	})
	if err != nil {
		return nil, err
	}
	return &parleyv1.DeleteMessageResponse{Ack: ack}, nil
}
