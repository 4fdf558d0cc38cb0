package chat

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
	"github.com/parleychat/parley/server/auth"
	"github.com/parleychat/parley/server/router"
)

// outbound is one stream's bounded queue and its writer. Publishers (the
// router, the log's ack callbacks, the stream's reader) push into the queue
// and never block; only the writer calls SendMsg, and at most one writer
// goroutine runs at a time, started when there is work (see kick). A full queue
// ends the stream with RESOURCE_EXHAUSTED: the client resumes from its last
// seq, so nothing is lost, and nobody else waits for it.
type outbound struct {
	svc    *Service
	user   string
	ctx    context.Context
	cancel context.CancelCauseFunc
	q      *queue

	// following is the set of conversations this stream asked to follow; a
	// new post elsewhere earns a Notification instead.
	followMu  sync.Mutex // protects following and noted
	following map[string]bool
	// noted holds the conversations with a Notification queued and not yet
	// written: later posts there are folded into it, so a busy room costs a
	// stream that does not follow it one frame at a time, not one per post.
	noted map[string]bool

	// inflight holds a token for every send on a Chat stream whose answer
	// has not been written yet. The reader takes one before publishing, so
	// a client that pipelines faster than the disk commits is slowed down
	// instead of cut; after the client half-closes, the stream ends when
	// none is left.
	inflight chan struct{}

	// Answers to sends arrive in bursts of a whole commit batch, so they do
	// not go through q, where they would count against a slow consumer:
	// inflight already bounds them.
	ackMu sync.Mutex // protects ackQ
	ackQ  []*parleyv1.ChatResponse
	acked atomic.Bool // ackQ may not be empty

	// state holds the writer's lifecycle bits (started, writing, closed):
	// see kick. beat says a heartbeat is due; beatTimer sets it.
	state     atomic.Int32
	beat      atomic.Bool
	beatTimer *time.Timer
	// finished carries the writer's verdict when it ends the stream: an
	// error, or nil once the client half-closed and every send is answered.
	finished chan error

	// wrote is when the writer last finished writing a frame (unix ns):
	// a stream whose queue is filling while it still writes is slow
	// because the machine is busy, not stuck (see Backlogged).
	wrote atomic.Int64

	// Set before the writer first starts, then read-only.
	stream grpc.ServerStream
	kind   streamKind

	// Owned by the writer: at most one runs at a time (see kick).
	replays  []*replay
	attached map[string]bool
	eof      bool // the client half-closed
}

// Bits of outbound.state.
const (
	started int32 = 1 << iota // serve has set the stream up: writers may run
	writing                   // a writer goroutine is running
	closed                    // the stream is over: no writer starts again
)

var (
	_ router.Subscriber = (*outbound)(nil)
	_ router.Backlogger = (*outbound)(nil)
)

// drainingWindow is how recently a backlogged stream must have written a
// frame to count as draining rather than stuck.
const drainingWindow = 500 * time.Millisecond

// Backlogged implements router.Backlogger: the queue is more than half full
// and the writer wrote within drainingWindow.
func (o *outbound) Backlogged() bool {
	return o.q.len() > o.q.max/2 && time.Now().UnixNano()-o.wrote.Load() < int64(drainingWindow)
}

// Items the writer handles besides frames and responses.
type (
	// replay is a subscription catching up to live.
	replay struct {
		conv  string
		after uint64
		reset bool
	}
	unsubscribe struct{ conv string }
	// halfClosed says the client sent its last frame.
	halfClosed struct{}
)

func (s *Service) newOutbound(parent context.Context, user string) *outbound {
	ctx, cancel := context.WithCancelCause(parent)
	return &outbound{svc: s, user: user, ctx: ctx, cancel: cancel, q: newQueue(s.opts.queue), attached: make(map[string]bool),
		following: make(map[string]bool), inflight: make(chan struct{}, s.opts.maxInflight), finished: make(chan error, 1)}
}

// follow marks conv as followed; it fails if it already is or the stream
// follows the most it may.
func (o *outbound) follow(conv string) error {
	o.followMu.Lock()
	defer o.followMu.Unlock()
	if o.following[conv] {
		return fmt.Errorf("%w: already subscribed to %q on this stream", errExists, conv)
	}
	if len(o.following) >= o.svc.opts.maxSubs {
		return exhausted("subscriptions per stream", "a stream may follow at most %d conversations", o.svc.opts.maxSubs)
	}
	o.following[conv] = true
	o.svc.hub.version.Add(1)
	return nil
}

// unfollow clears conv and reports whether it was followed.
func (o *outbound) unfollow(conv string) bool {
	o.followMu.Lock()
	defer o.followMu.Unlock()
	was := o.following[conv]
	delete(o.following, conv)
	if was {
		o.svc.hub.version.Add(1)
	}
	return was
}

func (o *outbound) follows(conv string) bool {
	o.followMu.Lock()
	defer o.followMu.Unlock()
	return o.following[conv]
}

// drop stops the stream following conv, because its user left it.
func (o *outbound) drop(conv string) {
	if o.unfollow(conv) {
		o.push(unsubscribe{conv})
	}
}

// open registers the stream with the hub (presence, notifications, the
// streams-per-user limit); the returned func unregisters it.
func (o *outbound) open() (func(), error) {
	if err := o.svc.hub.add(o.user, o); err != nil {
		return nil, err
	}
	return func() { o.svc.hub.remove(o.user, o) }, nil
}

// answer queues the ack or error frame for one send. It never blocks.
func (o *outbound) answer(resp *parleyv1.ChatResponse) {
	o.ackMu.Lock()
	o.ackQ = append(o.ackQ, resp)
	o.ackMu.Unlock()
	o.acked.Store(true)
	o.kick()
}

// sendAnswers writes the queued answers and returns their inflight tokens.
func (o *outbound) sendAnswers(stream grpc.ServerStream) error {
	o.ackMu.Lock()
	answers := o.ackQ
	o.ackQ = nil
	o.ackMu.Unlock()
	for _, a := range answers {
		if err := stream.SendMsg(a); err != nil {
			return err
		}
		<-o.inflight
	}
	return nil
}

// Deliver implements router.Subscriber. Messages must not be dropped: a
// full queue cuts the stream, and the client resumes from its last seq.
// Events (Seq 0: receipts, typing) are best effort: a full queue drops them
// rather than cutting a reader that keeps up with the messages.
func (o *outbound) Deliver(f *router.Frame) bool {
	if f.Seq == 0 {
		o.offer(f)
		return true
	}
	return o.push(f)
}

// offer queues a best-effort event if there is room, and drops it (counted)
// otherwise.
func (o *outbound) offer(f *router.Frame) {
	if !o.q.put(f) {
		o.svc.droppedEvents.Add(1)
		return
	}
	o.kick()
}

// note is a queued Notification of conv.
type note struct {
	conv  string
	frame *router.Frame
}

// notify queues a Notification of conv unless one is already waiting; like
// other events it is dropped (and counted) when the queue is full.
func (o *outbound) notify(conv string, f *router.Frame) {
	o.followMu.Lock()
	if o.noted[conv] {
		o.followMu.Unlock()
		return
	}
	if o.noted == nil {
		o.noted = make(map[string]bool)
	}
	o.noted[conv] = true
	o.followMu.Unlock()
	if !o.q.put(note{conv: conv, frame: f}) {
		o.svc.droppedEvents.Add(1)
		o.noteSent(conv)
		return
	}
	o.kick()
}

func (o *outbound) noteSent(conv string) {
	o.followMu.Lock()
	delete(o.noted, conv)
	o.followMu.Unlock()
}

// push queues item without blocking, or ends the stream as a slow consumer.
func (o *outbound) push(item any) bool {
	if o.q.put(item) {
		o.kick()
		return true
	}
	if o.ctx.Err() == nil {
		o.svc.slowConsumers.Add(1)
		o.cancel(fmt.Errorf("%w: slow consumer: %d frames are waiting to be sent on this stream; reconnect and resume from your last seq",
			errExhausted, o.q.max))
	}
	return false
}

// streamKind adapts the writer to the Chat or the Subscribe stream.
type streamKind struct {
	subscribed func(*parleyv1.Subscribed) any
	heartbeat  func() any // nil: no heartbeats
}

var (
	chatStream = streamKind{
		subscribed: func(m *parleyv1.Subscribed) any {
			return &parleyv1.ChatResponse{Frame: &parleyv1.ChatResponse_Subscribed{Subscribed: m}}
		},
	}
	subscribeStream = streamKind{
		subscribed: func(m *parleyv1.Subscribed) any {
			return &parleyv1.SubscribeResponse{Frame: &parleyv1.SubscribeResponse_Subscribed{Subscribed: m}}
		},
		heartbeat: func() any {
			return &parleyv1.SubscribeResponse{Frame: &parleyv1.SubscribeResponse_Heartbeat{Heartbeat: &parleyv1.Heartbeat{ServerTime: timestamppb.Now()}}}
		},
	}
)

// serve sets the stream up for its writer and returns as soon as the
// stream is over. The writer runs on a goroutine of its own, and only
// while there is something to write (see kick), so an idle stream holds no
// writer goroutine. A client that stops reading leaves SendMsg blocked on
// flow control, and nothing else unblocks it; returning from the handler
// does (gRPC then ends the stream), so a cut slow consumer or a shutdown
// never waits for the client.
func (o *outbound) serve(stream grpc.ServerStream, kind streamKind) error {
	o.svc.streams.Add(1) // done by the stream's cleanup: see end
	o.stream, o.kind = stream, kind
	if kind.heartbeat != nil {
		o.beatTimer = time.AfterFunc(o.svc.opts.heartbeat, o.heartbeatDue)
	}
	o.state.Or(started)
	o.kick() // for what was queued before, and Subscribe's replays
	var err error
	select {
	case err = <-o.finished:
	case <-o.ctx.Done():
		err = o.reason()
	case <-o.svc.shutdown:
		err = errShutdown
	}
	if old := o.state.Or(closed); old&(writing|closed) == 0 {
		o.cleanup()
	} // else the writer cleans up as it goes
	return err
}

// heartbeatDue asks for a heartbeat; the writer sends it and sets the
// timer for the next one.
func (o *outbound) heartbeatDue() {
	o.beat.Store(true)
	o.kick()
}

// kick starts a writer unless one runs (or the stream is not started or
// over). Every producer calls it after queueing; when a writer is running
// it costs an atomic load. The writer's last look for work comes after it
// clears the writing bit, and a producer's kick after its item is queued,
// so no item is left behind with no writer.
func (o *outbound) kick() {
	for {
		st := o.state.Load()
		if st&started == 0 || st&(writing|closed) != 0 {
			return
		}
		if o.state.CompareAndSwap(st, st|writing) {
			go o.write()
			return
		}
	}
}

// write is a writer goroutine: it writes until nothing is left and exits,
// or until the stream is over. Whoever leaves the state closed and not
// writing cleans the stream up, exactly once: the handler if no writer ran
// when the stream ended, else the writer.
func (o *outbound) write() {
	for {
		over, err := o.drain()
		if over {
			select {
			case o.finished <- err:
			default:
			}
			o.state.Or(closed)
			o.cleanup()
			return
		}
		old := o.state.And(^writing)
		if old&closed != 0 {
			o.cleanup()
			return
		}
		if !o.pending() || !o.state.CompareAndSwap(old&^writing, old) {
			return // idle, or another writer took over, or the stream ended
		}
	}
}

// pending reports whether a writer has work. Replays and the end of a
// half-closed stream need no look: a writer goes idle with no replay left,
// and the last answer a half-closed stream waits for kicks a writer.
func (o *outbound) pending() bool {
	return o.q.len() > 0 || o.acked.Load() || o.beat.Load()
}

// cleanup detaches the stream from the router and the service once it is
// over; see write for who calls it.
func (o *outbound) cleanup() {
	if o.beatTimer != nil {
		o.beatTimer.Stop()
	}
	for conv := range o.attached {
		o.svc.router.Unsubscribe(conv, o)
	}
	o.svc.streams.Done()
}

// drain writes what there is to write: answers to sends first (they are
// few and a sender waits on them), then queued frames, a due heartbeat,
// and, when the queue is empty, the next page of a subscription still
// replaying, so a long catch-up of one conversation does not starve the
// live traffic of the others. It returns false when nothing is left, or
// true when the stream is over, with the reason (nil: the client
// half-closed and every send is answered).
func (o *outbound) drain() (bool, error) {
	for {
		switch {
		case o.ctx.Err() != nil:
			return true, o.reason()
		case o.eof && len(o.inflight) == 0:
			return true, nil
		}
		var err error
		if o.acked.Swap(false) {
			err = o.sendAnswers(o.stream)
		} else if item, ok := o.q.take(); ok {
			err = o.handle(item)
		} else if o.beat.Swap(false) {
			err = o.stream.SendMsg(o.kind.heartbeat())
			o.beatTimer.Reset(o.svc.opts.heartbeat)
		} else if len(o.replays) > 0 {
			err = o.replayPage()
		} else {
			return false, nil
		}
		if err != nil {
			return true, err
		}
	}
}

// handle carries out one queued item.
func (o *outbound) handle(item any) error {
	switch it := item.(type) {
	case *replay:
		o.replays = append(o.replays, it)
	case unsubscribe:
		o.replays = slices.DeleteFunc(o.replays, func(r *replay) bool { return r.conv == it.conv })
		delete(o.attached, it.conv)
		o.svc.router.Unsubscribe(it.conv, o)
	case halfClosed:
		o.eof = true
	case note:
		o.noteSent(it.conv)
		return o.stream.SendMsg(it.frame)
	default:
		if err := o.stream.SendMsg(it); err != nil {
			return err
		}
		o.wrote.Store(time.Now().UnixNano())
	}
	return nil
}

// replayPage sends the next page of the first replaying subscription, and
// the Subscribed marker once it has caught up and been attached.
func (o *outbound) replayPage() error {
	stream, kind := o.stream, o.kind
	r := o.replays[0]
	frames, next, live, err := o.svc.router.Catchup(r.conv, r.after, o.svc.opts.replayPage, o)
	if err != nil {
		return err
	}
	for _, f := range frames {
		if err := stream.SendMsg(f); err != nil {
			return err
		}
	}
	r.after = next
	o.replays = o.replays[1:]
	if !live {
		o.replays = append(o.replays, r)
		return nil
	}
	o.attached[r.conv] = true
	return stream.SendMsg(kind.subscribed(&parleyv1.Subscribed{
		ConversationId: r.conv,
		HeadSeq:        next,
		Epoch:          o.svc.store.Epoch(),
		EpochReset:     r.reset,
	}))
}

// reason says why the stream's context ended: the slow-consumer cause, or
// the client going away.
func (o *outbound) reason() error {
	if cause := context.Cause(o.ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	return o.ctx.Err()
}

// position checks a subscribe position and turns it into a replay.
func (s *Service) position(user string, p *parleyv1.SubscribePosition) (*replay, error) {
	if _, err := s.member(user, p.GetConversationId()); err != nil {
		return nil, err
	}
	r := &replay{conv: p.GetConversationId(), after: p.GetAfterSeq()}
	if p.GetEpoch() != "" && p.GetEpoch() != s.store.Epoch() {
		// The client's seqs belong to another log: replay everything.
		r.after, r.reset = 0, true
	}
	return r, nil
}

// Chat implements parleyv1.ChatServiceServer. The handler's goroutine
// waits for the stream to end; a second goroutine reads frames, and a
// writer runs while there is something to write (see serve).
func (s *Service) Chat(stream grpc.BidiStreamingServer[parleyv1.ChatRequest, parleyv1.ChatResponse]) error {
	if !s.enter() {
		return toStatus(errShutdown)
	}
	defer s.streams.Done()
	o := s.newOutbound(stream.Context(), auth.UserID(stream.Context()))
	defer o.cancel(nil)
	closeStream, err := o.open()
	if err != nil {
		return toStatus(err)
	}
	defer closeStream()
	s.streams.Add(1)
	go func() {
		defer s.streams.Done()
		o.read(stream)
	}()
	return toStatus(o.serve(stream, chatStream))
}

// read is the Chat stream's reader.
func (o *outbound) read(stream grpc.BidiStreamingServer[parleyv1.ChatRequest, parleyv1.ChatResponse]) {
	for {
		req, err := stream.Recv()
		if err == io.EOF {
			o.push(halfClosed{})
			return
		}
		if err != nil {
			return // the stream is over; the writer sees its context end
		}
		o.frame(req)
	}
}

// frame carries out one client frame. Failures become error frames; the
// stream stays open.
func (o *outbound) frame(req *parleyv1.ChatRequest) {
	s, user := o.svc, o.user
	id := req.GetFrameId()
	if undecodable(req) {
		o.push(errorFrame(id, "unknown", invalid("frame could not be decoded as a parley.v1.ChatRequest (malformed protobuf or invalid UTF-8)"), "", ""))
		return
	}
	if err := s.Validate(req); err != nil {
		o.push(errorFrame(id, frameName(req), err, frameConv(req),
			cmp.Or(req.GetSend().GetClientMessageId(), req.GetEdit().GetClientMessageId(), req.GetDelete().GetClientMessageId())))
		return
	}
	switch f := req.GetFrame().(type) {
	case *parleyv1.ChatRequest_Send:
		o.durable(id, "send", f.Send.GetConversationId(), f.Send.GetClientMessageId(), func(ack router.AckFunc) error {
			return s.publish(o.ctx, user, f.Send, ack)
		})
	case *parleyv1.ChatRequest_Edit:
		o.durable(id, "edit", f.Edit.GetConversationId(), f.Edit.GetClientMessageId(), func(ack router.AckFunc) error {
			return s.change(o.ctx, user, editMessage(f.Edit), ack)
		})
	case *parleyv1.ChatRequest_Delete:
		o.durable(id, "delete", f.Delete.GetConversationId(), f.Delete.GetClientMessageId(), func(ack router.AckFunc) error {
			return s.change(o.ctx, user, deleteMessage(f.Delete), ack)
		})
	case *parleyv1.ChatRequest_Subscribe:
		conv := f.Subscribe.GetConversationId()
		r, err := s.position(user, f.Subscribe)
		if err == nil {
			err = o.follow(conv)
		}
		if err != nil {
			o.push(errorFrame(id, "subscribe", err, conv, ""))
			return
		}
		o.push(r)
	case *parleyv1.ChatRequest_Unsubscribe:
		conv := f.Unsubscribe.GetConversationId()
		if !o.unfollow(conv) {
			o.push(errorFrame(id, "unsubscribe", fmt.Errorf("%w: not subscribed to %q on this stream", errNotFound, truncate(conv)), conv, ""))
			return
		}
		o.push(unsubscribe{conv})
	case *parleyv1.ChatRequest_Delivered:
		o.receipt(id, "delivered", f.Delivered.GetConversationId(), f.Delivered.GetSeq(), 0)
	case *parleyv1.ChatRequest_Read:
		o.receipt(id, "read", f.Read.GetConversationId(), 0, f.Read.GetSeq())
	case *parleyv1.ChatRequest_Typing:
		if err := s.setTyping(user, f.Typing.GetConversationId(), f.Typing.GetTyping()); err != nil {
			o.push(errorFrame(id, "typing", err, f.Typing.GetConversationId(), ""))
		}
	case *parleyv1.ChatRequest_Ping:
		o.push(&parleyv1.ChatResponse{Frame: &parleyv1.ChatResponse_Pong{Pong: &parleyv1.Pong{Nonce: f.Ping.GetNonce(), ServerTime: timestamppb.Now()}}})
	}
}

// durable publishes a send, edit or delete from the Chat stream: its answer
// (send_ack or an error frame) comes back through the ack queue once the
// message is on disk.
func (o *outbound) durable(id uint64, frame, conv, cmid string, pub func(router.AckFunc) error) {
	select {
	case o.inflight <- struct{}{}:
	case <-o.ctx.Done():
		return
	}
	err := pub(func(res router.Result, err error) {
		if err != nil {
			o.answer(errorFrame(id, frame, o.svc.notStored(o.user, conv, cmid, err), conv, cmid))
			return
		}
		o.answer(&parleyv1.ChatResponse{Frame: &parleyv1.ChatResponse_SendAck{SendAck: sendResponse(cmid, res)}})
	})
	if err != nil && o.ctx.Err() == nil {
		// (When the stream is over, nobody is there to answer: the client
		// resends from its outbox on its next stream.)
		o.answer(errorFrame(id, frame, err, conv, cmid))
	}
}

// receipt moves the user's positions from the Chat stream. Success is
// silent: the Receipt frame reaches every subscriber, this stream included.
func (o *outbound) receipt(id uint64, frame, conv string, delivered, read uint64) {
	o.svc.markReceipt(o.user, conv, delivered, read, func(_ *parleyv1.Receipt, err error) {
		if err != nil {
			o.push(errorFrame(id, frame, err, conv, ""))
		}
	})
}

// frameName names a frame's kind in error frames.
func frameName(req *parleyv1.ChatRequest) string {
	switch req.GetFrame().(type) {
	case *parleyv1.ChatRequest_Send:
		return "send"
	case *parleyv1.ChatRequest_Subscribe:
		return "subscribe"
	case *parleyv1.ChatRequest_Unsubscribe:
		return "unsubscribe"
	case *parleyv1.ChatRequest_Ping:
		return "ping"
	case *parleyv1.ChatRequest_Delivered:
		return "delivered"
	case *parleyv1.ChatRequest_Read:
		return "read"
	case *parleyv1.ChatRequest_Typing:
		return "typing"
	case *parleyv1.ChatRequest_Edit:
		return "edit"
	case *parleyv1.ChatRequest_Delete:
		return "delete"
	default:
		return "unknown"
	}
}

// frameConv is the conversation a frame is about, if any.
func frameConv(req *parleyv1.ChatRequest) string {
	switch f := req.GetFrame().(type) {
	case *parleyv1.ChatRequest_Send:
		return f.Send.GetConversationId()
	case *parleyv1.ChatRequest_Subscribe:
		return f.Subscribe.GetConversationId()
	case *parleyv1.ChatRequest_Unsubscribe:
		return f.Unsubscribe.GetConversationId()
	case *parleyv1.ChatRequest_Delivered:
		return f.Delivered.GetConversationId()
	case *parleyv1.ChatRequest_Read:
		return f.Read.GetConversationId()
	case *parleyv1.ChatRequest_Typing:
		return f.Typing.GetConversationId()
	case *parleyv1.ChatRequest_Edit:
		return f.Edit.GetConversationId()
	case *parleyv1.ChatRequest_Delete:
		return f.Delete.GetConversationId()
	}
	return ""
}

func errorFrame(id uint64, frame string, err error, conv, cmid string) *parleyv1.ChatResponse {
	st, _ := status.FromError(toStatus(err))
	return &parleyv1.ChatResponse{Frame: &parleyv1.ChatResponse_Error{Error: &parleyv1.ErrorFrame{
		FrameId:         id,
		Frame:           frame,
		Code:            uint32(st.Code()),
		Message:         st.Message(),
		ConversationId:  conv,
		ClientMessageId: cmid,
	}}}
}

// Subscribe implements parleyv1.ChatServiceServer: the browser's half of a
// session, following several conversations with heartbeats.
func (s *Service) Subscribe(req *parleyv1.SubscribeRequest, stream grpc.ServerStreamingServer[parleyv1.SubscribeResponse]) error {
	if !s.enter() {
		return toStatus(errShutdown)
	}
	defer s.streams.Done()
	user := auth.UserID(stream.Context())
	positions := req.GetConversations()
	if len(positions) > s.opts.maxSubs {
		return toStatus(exhausted("subscriptions per stream", "%d conversations; a stream may follow at most %d", len(positions), s.opts.maxSubs))
	}
	o := s.newOutbound(stream.Context(), user)
	defer o.cancel(nil)
	for _, p := range positions {
		r, err := s.position(user, p)
		if err != nil {
			return toStatus(err)
		}
		o.following[r.conv] = true
		o.replays = append(o.replays, r)
	}
	closeStream, err := o.open()
	if err != nil {
		return toStatus(err)
	}
	defer closeStream()
	return toStatus(o.serve(stream, subscribeStream))
}
