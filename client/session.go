package client

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
)

// Session keeps a Chat stream to the server open and carries a chat
// session over it: subscriptions, sends, edits and deletes with
// acknowledgements, delivered and read marks, typing indicators, pings; and
// the receipts, typing, presence and notifications the server reports.
//
// When the stream breaks (network failure, server restart, UNAVAILABLE on
// shutdown, RESOURCE_EXHAUSTED for a slow consumer, a missed pong, a send
// refused as if the stream were over while it stays open) the
// Session waits a backoff with full jitter and opens a new one. There it
// resubscribes every conversation from the last seq it delivered, with the
// epoch of the last Subscribed, resends every unacknowledged send, edit and
// delete under its original client_message_id (the server acknowledges an
// accepted resend as a duplicate and does not deliver it again), and sends
// again the marks the server has not confirmed. Typing indicators are not
// repeated. It stops for good only when the server answers
// UNAUTHENTICATED, or on Close.
//
// A Session keeps its positions, its outbox and its marks in memory only. An
// application that must survive its own restart saves Positions and
// resumes with SubscribeAt; sends still pending when the process exits are
// lost unless the application kept them too.
//
// All methods are safe for concurrent use. Events must be read: see Events.
type Session struct {
	c      *Client
	cfg    sessionConfig
	ctx    context.Context // ends the Session; its cause says why
	cancel context.CancelCauseFunc
	events chan Event
	done   chan struct{}
	// closing is closed when Close starts: the writer sends what is
	// queued and half-closes the stream, and run opens no other.
	closing   chan struct{}
	closeOnce sync.Once
	kick      chan struct{} // buffered 1: wakes the stream's writer
	room      chan struct{} // one token per outbox slot in use; bounds the outbox
	rtt       atomic.Int64  // nanoseconds, 0 until the first pong

	// stalls counts the times the reader had to wait for the application
	// to take an event, and stalled is true while it waits. A pong that
	// comes late because of that says nothing about the network.
	stalls        atomic.Uint64
	stalled       atomic.Bool
	droppedEvents atomic.Uint64 // ephemeral events dropped on a full Events channel

	mu        sync.Mutex // protects the fields below
	subs      map[string]*subscription
	positions map[string]Position
	outbox    *outbox
	sendq     []*parleyv1.ChatRequest // frames for the current stream's writer, in order
	frameID   uint64                  // last frame_id used
	ping      pingState
	err       error // why the Session ended; nil while it runs

	// marks are the delivered and read positions asked for per
	// conversation; dirty lists the ones with something to send, which the
	// writer turns into frames when it next takes the queue, so that many
	// marks between two writes cost one frame.
	marks map[string]*mark
	dirty []string
	// typing holds, per conversation, when typing=true was last sent;
	// absent means the indicator is down as far as the Session knows.
	typing map[string]time.Time

	// dedup is owned by the run goroutine, which is the only reader of
	// every stream.
	dedup *dedup
}

// subscription is a conversation the Session follows. A new one is made for
// every Subscribe, so the reader can tell by identity whether the one it
// looked at is still current.
type subscription struct {
	frameID   uint64 // of the subscribe frame on the current stream
	replaying bool   // subscribe sent, Subscribed not yet received
	from      uint64 // after_seq that subscribe asked for
	replayMax uint64 // highest seq seen during this replay
	resetSeen bool   // the replay went back past from: the epoch changed
}

// pingState is the ping in flight, if any.
type pingState struct {
	outstanding bool
	nonce       uint64
	sent        time.Time
	stalls      uint64 // Session.stalls when the ping went out
	checked     uint64 // Session.stalls when the pong deadline last passed
}

// SessionOption configures NewSession.
type SessionOption func(*sessionConfig)

type sessionConfig struct {
	eventBuffer   int
	backoff       backoff
	pingInterval  time.Duration
	pingTimeout   time.Duration
	dedupSize     int
	outboxSize    int
	autoDelivered bool
	typingRenew   time.Duration
}

func defaultSessionConfig() sessionConfig {
	return sessionConfig{
		eventBuffer:  256,
		backoff:      backoff{min: 250 * time.Millisecond, max: 30 * time.Second},
		pingInterval: 15 * time.Second,
		pingTimeout:  10 * time.Second,
		dedupSize:    4096,
		outboxSize:   1024,
		typingRenew:  3 * time.Second,
	}
}

// WithEventBuffer sets how many events wait for the application before the
// Session stops reading the stream (default 256).
func WithEventBuffer(n int) SessionOption {
	return func(c *sessionConfig) {
		if n >= 0 {
			c.eventBuffer = n
		}
	}
}

// WithBackoff sets the reconnect backoff: the n-th consecutive failed
// attempt waits a uniformly random time up to min(max, min·2ⁿ). The
// defaults are 250ms and 30s.
func WithBackoff(min, max time.Duration) SessionOption {
	return func(c *sessionConfig) {
		if min > 0 && max >= min {
			c.backoff = backoff{min: min, max: max}
		}
	}
}

// WithPing sets how often the Session pings the server (default 15s) and
// how long it waits for the pong before it takes the connection for dead
// and reconnects (default 10s). The timeout also bounds how long opening a
// stream waits for a connection before the attempt counts as failed.
func WithPing(interval, timeout time.Duration) SessionOption {
	return func(c *sessionConfig) {
		if interval > 0 && timeout > 0 {
			c.pingInterval, c.pingTimeout = interval, timeout
		}
	}
}

// WithDedupSize sets how many recent (sender_id, client_message_id) pairs
// the Session remembers at least, to drop duplicate deliveries (default
// 4096; 0 turns dedup by id off). Pairs seen in the last ten minutes are
// kept beyond that count, up to 100,000, so that a resend after a long
// outage is still recognised.
func WithDedupSize(n int) SessionOption {
	return func(c *sessionConfig) {
		if n >= 0 {
			c.dedupSize = n
		}
	}
}

// WithOutboxSize bounds the unacknowledged sends a Session holds (default
// 1024); Send and SendAsync wait for room beyond it.
func WithOutboxSize(n int) SessionOption {
	return func(c *sessionConfig) {
		if n > 0 {
			c.outboxSize = n
		}
	}
}

// WithAutoDelivered makes the Session mark each conversation delivered up
// to the newest seq it has handed to the application, as messages arrive
// (see MarkDelivered; marks that come faster than the stream writes are
// sent as one). It is off by default: an application that persists
// messages may prefer to mark them once they are on its disk.
func WithAutoDelivered() SessionOption {
	return func(c *sessionConfig) { c.autoDelivered = true }
}

// WithTypingRenew sets how often SetTyping(conv, true) repeated while the
// user keeps typing is actually sent (default 3s, half the server's
// default indicator lifetime of 6s). Calls in between are dropped, which
// keeps a keystroke-driven caller within the server's typing rate.
func WithTypingRenew(d time.Duration) SessionOption {
	return func(c *sessionConfig) {
		if d >= 0 {
			c.typingRenew = d
		}
	}
}

// NewSession starts a Session on c. It returns at once: the stream opens in
// the background and StateEvents report how that goes, so sends and
// subscriptions can be made while offline and go out on connect.
//
// The Session lives until Close, until ctx ends, or until the server
// refuses the token. Values of ctx (such as outgoing metadata) are passed
// to every Chat stream the Session opens.
func (c *Client) NewSession(ctx context.Context, opts ...SessionOption) (*Session, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("new session: %w", err)
	}
	cfg := defaultSessionConfig()
	for _, o := range opts {
		o(&cfg)
	}
	sctx, cancel := context.WithCancelCause(ctx)
	s := &Session{
		c:         c,
		cfg:       cfg,
		ctx:       sctx,
		cancel:    cancel,
		events:    make(chan Event, cfg.eventBuffer),
		done:      make(chan struct{}),
		closing:   make(chan struct{}),
		kick:      make(chan struct{}, 1),
		room:      make(chan struct{}, cfg.outboxSize),
		subs:      make(map[string]*subscription),
		positions: make(map[string]Position),
		outbox:    newOutbox(),
		dedup:     newDedup(cfg.dedupSize),
		marks:     make(map[string]*mark),
		typing:    make(map[string]time.Time),
	}
	if err := c.addSession(s); err != nil {
		cancel(err)
		return nil, fmt.Errorf("new session: %w", err)
	}
	go s.run()
	return s, nil
}

// Events returns the channel of the Session's events. It is closed after
// the Session ends, once every event before the end has been queued.
//
// The channel is bounded (WithEventBuffer). When it is full the Session
// stops reading the stream until the application takes an event, which
// backs up the gRPC stream to the server. That is intended: nothing is
// dropped, the server eventually cuts the stream with RESOURCE_EXHAUSTED
// ("slow consumer"), and the Session resumes from the last seq it
// delivered. That holds for messages, subscription markers, state changes
// and error frames; receipt, typing, presence and notification events are
// dropped instead when the channel is full (see DroppedEvents), so an
// application that only sends is not held up by them. An application that
// follows conversations and never reads Events gets no messages, no
// acknowledgements (they are read from the same stream) and no progress.
func (s *Session) Events() <-chan Event { return s.events }

// Done returns a channel that is closed when the Session has ended and all
// its goroutines have exited.
func (s *Session) Done() <-chan struct{} { return s.done }

// Err returns why the Session ended: nil while it runs, ErrClosed after
// Close, an error wrapping ErrClosed and the context's error when its
// context ended, or the server's UNAUTHENTICATED status error.
func (s *Session) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// closeGrace bounds how long Close waits for the server to take what the
// Session had queued.
const closeGrace = time.Second

// Close ends the Session and waits for its goroutines to exit.
//
// If a stream is open, Close first sends what is queued on it (marks,
// typing, changes not yet written) and half-closes it, and the server
// answers what it got before it ends the stream, for up to a second: so a
// MarkRead or SetTyping(conv, false) made just before Close is not lost.
// Events that come meanwhile are queued only while Events has room. Sends,
// edits and deletes still pending after that fail with ErrClosed: they may
// or may not have reached the server. Close is safe to call more than once
// and from any goroutine, including the one that reads Events.
func (s *Session) Close() error {
	s.closeOnce.Do(func() { close(s.closing) })
	t := time.NewTimer(closeGrace)
	select {
	case <-s.done:
	case <-t.C:
	}
	t.Stop()
	s.cancel(ErrClosed)
	<-s.done
	return nil
}

// RTT returns the round-trip time of the last ping, 0 before the first
// pong. Pings delayed because the application was not reading Events are
// not counted.
func (s *Session) RTT() time.Duration { return time.Duration(s.rtt.Load()) }

// Positions returns, for every conversation the Session has read, the last
// seq delivered and its epoch. The map is a copy the caller owns; saving
// it and passing an entry to SubscribeAt in a later Session resumes there.
func (s *Session) Positions() map[string]Position {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.positions)
}

// Subscribe follows a conversation, replaying stored messages with seq
// greater than afterSeq and then live ones. The epoch sent along is the one
// the Session last saw for the conversation, if any; use SubscribeAt to
// resume from a position saved elsewhere.
//
// Subscribe does not wait for the server: a SubscribedEvent marks the end
// of the replay, an ErrorEvent a refusal. Subscribing to a conversation the
// Session already follows does nothing. It fails only after the Session
// ended.
func (s *Session) Subscribe(conversationID string, afterSeq uint64) error {
	s.mu.Lock()
	epoch := s.positions[conversationID].Epoch
	s.mu.Unlock()
	return s.SubscribeAt(conversationID, Position{Seq: afterSeq, Epoch: epoch})
}

// SubscribeAt is Subscribe from a saved Position: pos.Seq is the last seq
// the application has and pos.Epoch the epoch it came with (empty if
// unknown). If the server's log changed since, it replays from the start
// and the SubscribedEvent says EpochReset.
func (s *Session) SubscribeAt(conversationID string, pos Position) error {
	s.mu.Lock()
	if s.err != nil {
		err := s.err
		s.mu.Unlock()
		return fmt.Errorf("subscribe %s: %w", conversationID, err)
	}
	if _, ok := s.subs[conversationID]; ok {
		s.mu.Unlock()
		return nil
	}
	s.positions[conversationID] = pos
	sub := &subscription{replaying: true, from: pos.Seq}
	s.subs[conversationID] = sub
	sub.frameID = s.queueLocked(subscribeFrame(conversationID, pos))
	s.mu.Unlock()
	s.wake()
	return nil
}

// Unsubscribe stops following a conversation. Messages already on their
// way are dropped. Its Position is kept, so a later Subscribe resumes
// where it stopped. Unsubscribing a conversation not followed does nothing.
func (s *Session) Unsubscribe(conversationID string) error {
	s.mu.Lock()
	if s.err != nil {
		err := s.err
		s.mu.Unlock()
		return fmt.Errorf("unsubscribe %s: %w", conversationID, err)
	}
	if _, ok := s.subs[conversationID]; !ok {
		s.mu.Unlock()
		return nil
	}
	delete(s.subs, conversationID)
	s.queueLocked(&parleyv1.ChatRequest{Frame: &parleyv1.ChatRequest_Unsubscribe{
		Unsubscribe: &parleyv1.Unsubscribe{ConversationId: conversationID},
	}})
	s.mu.Unlock()
	s.wake()
	return nil
}

// Send posts a message and blocks until the server acknowledges it, which
// means it is durable, or until ctx ends. The message survives reconnects:
// it is resent under the same client_message_id until answered.
//
// If ctx ends first, Send returns ctx's error but the message stays in the
// outbox and may still be delivered; only its result is lost. An error
// carrying a gRPC status (status.Code) is the server's refusal of this one
// message (from an ErrorFrame); the Session goes on. Acknowledgements
// arrive on the same stream as events, so Send returns only while someone
// reads Events.
//
// body may be empty only when WithAttachments gives at least one file.
func (s *Session) Send(ctx context.Context, conversationID, body string, opts ...SendOption) (*parleyv1.SendResponse, error) {
	id, result, err := s.SendAsync(ctx, conversationID, body, opts...)
	if err != nil {
		return nil, err
	}
	return s.await(ctx, "send", id, conversationID, result)
}

// SendAsync queues a message in the outbox and returns at once with its
// client_message_id and a channel that receives exactly one SendResult and
// is never closed. ctx only bounds the wait for room in a full outbox (see
// WithOutboxSize); once queued, the message is sent until answered or the
// Session ends.
func (s *Session) SendAsync(ctx context.Context, conversationID, body string, opts ...SendOption) (string, <-chan SendResult, error) {
	req := newSendRequest(conversationID, body, opts)
	id, result, err := s.enqueue(ctx, &pendingSend{
		kind:  "send",
		conv:  conversationID,
		id:    req.ClientMessageId,
		frame: func() *parleyv1.ChatRequest { return sendFrame(req) },
	})
	if err == nil {
		// The server takes a typist's indicator down when they post.
		s.mu.Lock()
		delete(s.typing, conversationID)
		s.mu.Unlock()
	}
	return id, result, err
}

// Edit replaces the body of one of the caller's own posts, the one at seq,
// and blocks until the edit is durable. Edits go through the outbox like
// sends: they are resent under the same client_message_id across
// reconnects and answered once. The acknowledgement carries the seq of the
// edit event; subscribers (this Session included) get that event as a
// MessageEvent with Kind MESSAGE_KIND_EDIT and TargetSeq seq. The server
// refuses an edit of someone else's post (PERMISSION_DENIED), of a seq
// with no post (NOT_FOUND) and of a deleted post (FAILED_PRECONDITION).
func (s *Session) Edit(ctx context.Context, conversationID string, seq uint64, body string) (*parleyv1.SendResponse, error) {
	id, result, err := s.EditAsync(ctx, conversationID, seq, body)
	if err != nil {
		return nil, err
	}
	return s.await(ctx, "edit", id, conversationID, result)
}

// EditAsync is Edit without the wait, as SendAsync is to Send.
func (s *Session) EditAsync(ctx context.Context, conversationID string, seq uint64, body string) (string, <-chan SendResult, error) {
	req := &parleyv1.EditMessageRequest{ConversationId: conversationID, Seq: seq, ClientMessageId: NewClientMessageID(), Body: body}
	return s.enqueue(ctx, &pendingSend{
		kind: "edit",
		conv: conversationID,
		id:   req.ClientMessageId,
		frame: func() *parleyv1.ChatRequest {
			return &parleyv1.ChatRequest{Frame: &parleyv1.ChatRequest_Edit{Edit: req}}
		},
	})
}

// Delete turns one of the caller's own posts, the one at seq, into a
// tombstone and blocks until that is durable. Like Edit, it goes through
// the outbox, and subscribers get a MessageEvent with Kind
// MESSAGE_KIND_DELETE and TargetSeq seq.
//
// When a stream breaks after the server applied a delete but before its
// ack arrived, the resend may be refused with FAILED_PRECONDITION (the
// post is already a tombstone) instead of answered with the original ack:
// the server checks the post before it looks the client_message_id up. The
// post is deleted either way. The same goes for an edit resent after the
// post was deleted.
func (s *Session) Delete(ctx context.Context, conversationID string, seq uint64) (*parleyv1.SendResponse, error) {
	id, result, err := s.DeleteAsync(ctx, conversationID, seq)
	if err != nil {
		return nil, err
	}
	return s.await(ctx, "delete", id, conversationID, result)
}

// DeleteAsync is Delete without the wait, as SendAsync is to Send.
func (s *Session) DeleteAsync(ctx context.Context, conversationID string, seq uint64) (string, <-chan SendResult, error) {
	req := &parleyv1.DeleteMessageRequest{ConversationId: conversationID, Seq: seq, ClientMessageId: NewClientMessageID()}
	return s.enqueue(ctx, &pendingSend{
		kind: "delete",
		conv: conversationID,
		id:   req.ClientMessageId,
		frame: func() *parleyv1.ChatRequest {
			return &parleyv1.ChatRequest{Frame: &parleyv1.ChatRequest_Delete{Delete: req}}
		},
	})
}

// await waits for the result of a change queued by enqueue.
func (s *Session) await(ctx context.Context, kind, id, conversationID string, result <-chan SendResult) (*parleyv1.SendResponse, error) {
	select {
	case r := <-result:
		return r.Ack, r.Err
	case <-ctx.Done():
		return nil, fmt.Errorf("%s %s to %s: waiting for ack: %w", kind, id, conversationID, ctx.Err())
	}
}

// enqueue puts p in the outbox, waiting for room, and queues its first
// transmission.
func (s *Session) enqueue(ctx context.Context, p *pendingSend) (string, <-chan SendResult, error) {
	select {
	case s.room <- struct{}{}:
	case <-ctx.Done():
		return "", nil, fmt.Errorf("%s to %s: waiting for room in the outbox: %w", p.kind, p.conv, ctx.Err())
	case <-s.ctx.Done():
		return "", nil, fmt.Errorf("%s to %s: %w", p.kind, p.conv, s.endErr())
	}
	p.result = make(chan SendResult, 1)
	s.mu.Lock()
	if s.err != nil {
		err := s.err
		s.mu.Unlock()
		<-s.room
		return "", nil, fmt.Errorf("%s to %s: %w", p.kind, p.conv, err)
	}
	s.outbox.add(p)
	p.frameID = s.queueLocked(p.frame())
	s.mu.Unlock()
	s.wake()
	return p.id, p.result, nil
}

// endErr is the error for a Session whose context has ended; run records
// the same one in s.err.
func (s *Session) endErr() error {
	cause := context.Cause(s.ctx)
	if cause == nil || cause == ErrClosed {
		return ErrClosed
	}
	return fmt.Errorf("%w: %w", ErrClosed, cause)
}

// queueLocked appends a frame for the current stream's writer, giving it a
// frame_id, which it returns. If there is no stream, the frame waits for
// the next one, where resetStreamLocked replaces the queue anyway. s.mu
// must be held.
func (s *Session) queueLocked(req *parleyv1.ChatRequest) uint64 {
	s.frameID++
	req.FrameId = s.frameID
	s.sendq = append(s.sendq, req)
	return s.frameID
}

// wake tells the writer there are frames; it never blocks.
func (s *Session) wake() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// takeFrames hands the writer everything queued so far, with the frames of
// the marks made since it last asked.
func (s *Session) takeFrames() []*parleyv1.ChatRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.markFramesLocked()
	q := s.sendq
	s.sendq = nil
	return q
}

func subscribeFrame(conversationID string, pos Position) *parleyv1.ChatRequest {
	return &parleyv1.ChatRequest{Frame: &parleyv1.ChatRequest_Subscribe{
		Subscribe: &parleyv1.SubscribePosition{
			ConversationId: conversationID,
			AfterSeq:       pos.Seq,
			Epoch:          pos.Epoch,
		},
	}}
}

// SendOption adds to a message what Session.Send, Session.SendAsync and
// Client.Send put in it.
type SendOption func(*parleyv1.SendRequest)

// WithAttachments attaches files uploaded with Client.Upload (at most 10 per
// message). Only each Attachment's id, name and content type are sent; the
// server fills in the size. Members of the conversation may download a
// file as soon as the message reaches them.
func WithAttachments(atts ...*parleyv1.Attachment) SendOption {
	return func(r *parleyv1.SendRequest) {
		for _, a := range atts {
			r.Attachments = append(r.Attachments, &parleyv1.Attachment{
				Id: a.GetId(), Name: a.GetName(), ContentType: a.GetContentType(),
			})
		}
	}
}

// newSendRequest builds a send under a fresh client_message_id.
func newSendRequest(conversationID, body string, opts []SendOption) *parleyv1.SendRequest {
	req := &parleyv1.SendRequest{
		ConversationId:  conversationID,
		ClientMessageId: NewClientMessageID(),
		Body:            body,
	}
	for _, o := range opts {
		o(req)
	}
	return req
}

func sendFrame(req *parleyv1.SendRequest) *parleyv1.ChatRequest {
	return &parleyv1.ChatRequest{Frame: &parleyv1.ChatRequest_Send{Send: req}}
}

// resetStreamLocked rebuilds the writer's queue for a new stream from the
// Session's state: a subscribe for every followed conversation from its
// position, then every pending send, edit and delete in order, then the
// delivered and read marks the server has not confirmed. Frames queued for
// the old stream are discarded because this state already covers them;
// typing frames are not repeated, since an indicator lapses by itself.
// s.mu must be held.
func (s *Session) resetStreamLocked() {
	s.sendq = nil
	for _, conv := range slices.Sorted(maps.Keys(s.subs)) {
		sub := s.subs[conv]
		pos := s.positions[conv]
		sub.replaying, sub.from, sub.replayMax, sub.resetSeen = true, pos.Seq, 0, false
		sub.frameID = s.queueLocked(subscribeFrame(conv, pos))
	}
	s.outbox.each(func(p *pendingSend) {
		p.frameID = s.queueLocked(p.frame())
	})
	s.resetMarksLocked()
	s.ping = pingState{}
}
