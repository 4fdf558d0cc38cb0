package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
)

// errNotConnected cancels a stream that could not open within the ping
// timeout.
var errNotConnected = errors.New("parley client: no connection to the server")

// chatStream is the client side of one Chat stream.
type chatStream = grpc.BidiStreamingClient[parleyv1.ChatRequest, parleyv1.ChatResponse]

// run is the Session's run goroutine: it opens streams one after another,
// reads each one itself, and waits a backoff between them. It is the only
// goroutine that sends on s.events, so events keep their order.
func (s *Session) run() {
	defer s.finish()
	attempt := 0
	for {
		if s.isClosing() || !s.emit(StateEvent{State: StateConnecting, Attempt: attempt}) {
			return
		}
		worked, err := s.runStream()
		if s.ctx.Err() != nil || s.isClosing() {
			return
		}
		if status.Code(err) == codes.Unauthenticated {
			s.stop(err)
			return
		}
		// A stream that carried at least one frame proves the server takes
		// us; start the backoff over so that a routine cut (slow consumer,
		// restart) resumes quickly.
		if worked {
			attempt = 0
		}
		wait := s.cfg.backoff.delay(attempt)
		if !s.emit(StateEvent{State: StateDisconnected, Err: err, Attempt: attempt, RetryIn: wait}) {
			return
		}
		attempt++
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-s.ctx.Done():
			t.Stop()
			return
		case <-s.closing:
			t.Stop()
			return
		}
	}
}

// isClosing reports whether Close has started.
func (s *Session) isClosing() bool {
	select {
	case <-s.closing:
		return true
	default:
		return false
	}
}

// runStream opens one Chat stream, starts its writer, reads it until it
// breaks and waits for the writer to exit. worked says whether the server
// sent anything at all; the StateConnected event comes with the first
// frame.
func (s *Session) runStream() (worked bool, err error) {
	ctx, cancel := context.WithCancelCause(s.ctx)
	defer cancel(nil)
	// While gRPC redials a lost connection, a fail-fast open would only
	// return the last dial error and waste a backoff; waiting for ready
	// opens the stream the moment the connection is back. The timer bounds
	// the wait so that the application still hears about an outage.
	timer := time.AfterFunc(s.cfg.pingTimeout, func() { cancel(errNotConnected) })
	stream, err := s.c.chat.Chat(ctx, grpc.WaitForReady(true))
	timedOut := !timer.Stop()
	if err != nil {
		if timedOut && s.ctx.Err() == nil {
			return false, status.Errorf(codes.Unavailable, "not connected within %s: %s", s.cfg.pingTimeout, status.Convert(err).Message())
		}
		return false, fmt.Errorf("open chat stream: %w", err)
	}
	s.mu.Lock()
	s.resetStreamLocked()
	s.mu.Unlock()
	s.wake()

	var wg sync.WaitGroup
	wg.Go(func() { s.write(ctx, cancel, stream) })
	defer wg.Wait()
	for {
		resp, err := stream.Recv()
		if err != nil {
			// The writer's reason (a missed pong) beats Recv's, which is
			// then only "context canceled".
			cause := context.Cause(ctx)
			cancel(nil)
			switch {
			case cause != nil && !errors.Is(cause, context.Canceled) && s.ctx.Err() == nil:
				return worked, cause
			case errors.Is(err, io.EOF):
				return worked, ErrStreamEnded
			}
			return worked, fmt.Errorf("chat stream: %w", err)
		}
		if !worked {
			// Only an answer shows that the server took the stream: one
			// that refuses the token, or is shutting down, lets it open
			// and ends it at once.
			worked = true
			if !s.emit(StateEvent{State: StateConnected}) {
				return worked, ErrClosed
			}
		}
		if !s.handle(resp) {
			return worked, ErrClosed
		}
	}
}

// write is the stream's writer: the only goroutine that calls stream.Send.
// It sends queued frames when woken and pings at the configured interval,
// and cancels the stream if a pong does not come in time.
func (s *Session) write(ctx context.Context, cancel context.CancelCauseFunc, stream chatStream) {
	ticker := time.NewTicker(s.cfg.pingInterval)
	defer ticker.Stop()
	pongTimer := time.NewTimer(s.cfg.pingTimeout)
	pongTimer.Stop()
	defer pongTimer.Stop()

	send := func(req *parleyv1.ChatRequest) bool {
		err := stream.Send(req)
		switch {
		case err == nil:
			return true
		case errors.Is(err, io.EOF):
			// The stream is over and Recv has the status: let the reader
			// report it. But a writer gone while the stream stays open
			// would leave every later frame unsent and no ping to notice,
			// and Recv may block for good after such an EOF (grpc/grpc-go#4691),
			// so if Recv has not ended the stream within a pong's wait,
			// the writer does.
			t := time.NewTimer(s.cfg.pingTimeout)
			defer t.Stop()
			select {
			case <-ctx.Done():
			case <-s.closing:
				cancel(ErrStreamEnded)
			case <-t.C:
				cancel(fmt.Errorf("write chat frame: %w, yet the stream did not end within %s", err, s.cfg.pingTimeout))
			}
		default:
			cancel(fmt.Errorf("write chat frame: %w", err))
		}
		return false
	}
	ping := func() bool {
		s.mu.Lock()
		s.ping = pingState{
			outstanding: true,
			nonce:       s.ping.nonce + 1,
			sent:        time.Now(),
			stalls:      s.stalls.Load(),
			checked:     s.stalls.Load(),
		}
		req := &parleyv1.ChatRequest{Frame: &parleyv1.ChatRequest_Ping{Ping: &parleyv1.Ping{Nonce: s.ping.nonce}}}
		s.frameID++
		req.FrameId = s.frameID
		s.mu.Unlock()
		pongTimer.Reset(s.cfg.pingTimeout)
		return send(req)
	}

	// Frames queued by resetStreamLocked go first; the ping right after
	// them gives an RTT at once and proves the stream is alive.
	for _, req := range s.takeFrames() {
		if !send(req) {
			return
		}
	}
	if !ping() {
		return
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.closing:
			// A graceful end: what is queued goes out, then the server,
			// having seen the end of our frames, answers the ones it has
			// and ends the stream, which ends the reader.
			for _, req := range s.takeFrames() {
				if !send(req) {
					return
				}
			}
			if err := stream.CloseSend(); err != nil {
				cancel(fmt.Errorf("close chat stream: %w", err))
				return
			}
			<-ctx.Done()
			return
		case <-s.kick:
			for _, req := range s.takeFrames() {
				if !send(req) {
					return
				}
			}
		case <-ticker.C:
			s.mu.Lock()
			busy := s.ping.outstanding
			s.mu.Unlock()
			if !busy && !ping() {
				return
			}
		case <-pongTimer.C:
			s.mu.Lock()
			late := s.ping.outstanding
			// A reader stuck on a full Events channel cannot read the
			// pong; that is the application's doing, not a dead link.
			excused := s.stalled.Load() || s.stalls.Load() != s.ping.checked
			s.ping.checked = s.stalls.Load()
			s.mu.Unlock()
			switch {
			case !late:
			case excused:
				pongTimer.Reset(s.cfg.pingTimeout)
			default:
				cancel(ErrPingTimeout)
				return
			}
		}
	}
}

// handle acts on one frame from the server. It returns false once the
// Session is closing.
func (s *Session) handle(resp *parleyv1.ChatResponse) bool {
	switch f := resp.GetFrame().(type) {
	case *parleyv1.ChatResponse_Message:
		return s.handleMessage(f.Message)
	case *parleyv1.ChatResponse_SendAck:
		s.mu.Lock()
		p := s.outbox.take(f.SendAck.GetClientMessageId())
		s.mu.Unlock()
		if p != nil {
			s.answer(p, SendResult{Ack: f.SendAck})
		}
	case *parleyv1.ChatResponse_Subscribed:
		return s.handleSubscribed(f.Subscribed)
	case *parleyv1.ChatResponse_Pong:
		s.mu.Lock()
		if s.ping.outstanding && f.Pong.GetNonce() == s.ping.nonce {
			s.ping.outstanding = false
			if s.stalls.Load() == s.ping.stalls {
				s.rtt.Store(int64(time.Since(s.ping.sent)))
			}
		}
		s.mu.Unlock()
	case *parleyv1.ChatResponse_Error:
		return s.handleError(f.Error)
	case *parleyv1.ChatResponse_Receipt:
		s.confirmMark(f.Receipt)
		s.emitEphemeral(ReceiptEvent{Receipt: f.Receipt})
	case *parleyv1.ChatResponse_Typing:
		s.typingLapsed(f.Typing)
		s.emitEphemeral(TypingEvent{Typing: f.Typing})
	case *parleyv1.ChatResponse_Presence:
		s.emitEphemeral(PresenceEvent{Presence: f.Presence})
	case *parleyv1.ChatResponse_Notification:
		s.emitEphemeral(NotificationEvent{Notification: f.Notification})
	}
	return true
}

// emitEphemeral queues an event that can be missed without harm (receipts,
// typing, presence, notifications: each is superseded by the next, or can
// be fetched again) and drops it when the application is behind. Waiting
// for room, as messages do, would hold up the acks behind it for an
// application that never reads these.
func (s *Session) emitEphemeral(ev Event) {
	select {
	case s.events <- ev:
	default:
		s.droppedEvents.Add(1)
	}
}

// DroppedEvents counts receipt, typing, presence and notification events
// dropped because Events was full.
func (s *Session) DroppedEvents() uint64 { return s.droppedEvents.Load() }

// handleMessage delivers a message unless the Session has already
// delivered it: by seq within the conversation's epoch, or by (sender,
// client_message_id) for resends that came back under a new seq.
func (s *Session) handleMessage(m *parleyv1.Message) bool {
	conv := m.GetConversationId()
	s.mu.Lock()
	sub := s.subs[conv]
	if sub == nil {
		s.mu.Unlock()
		return true // unsubscribed while it was on its way
	}
	if sub.replaying && !sub.resetSeen && sub.from > 0 && m.GetSeq() <= sub.from {
		// A server that knows our epoch replays only seq > from. Going
		// back means it replays a new log from the start (its Subscribed
		// will say epoch_reset), so our old seqs must not filter it.
		sub.resetSeen = true
		s.positions[conv] = Position{}
	}
	old := m.GetSeq() <= s.positions[conv].Seq
	s.mu.Unlock()
	if old {
		return true
	}

	key := dedupKey(m.GetSenderId(), m.GetClientMessageId())
	dup := m.GetClientMessageId() != "" && s.dedup.seen(key)
	if !dup {
		if !s.emit(MessageEvent{Message: m}) {
			return false
		}
		if m.GetClientMessageId() != "" {
			s.dedup.add(key)
		}
	}

	// The position moves only after the event is queued, so a message
	// that never reached the application is asked for again on resume.
	s.mu.Lock()
	marked := false
	if s.subs[conv] == sub {
		if pos := s.positions[conv]; m.GetSeq() > pos.Seq {
			pos.Seq = m.GetSeq()
			s.positions[conv] = pos
		}
		if sub.replaying {
			sub.replayMax = max(sub.replayMax, m.GetSeq())
		}
		if s.cfg.autoDelivered {
			marked = s.markLocked(conv, s.positions[conv].Seq, 0)
		}
	}
	s.mu.Unlock()
	if marked {
		s.wake()
	}
	return true
}

func (s *Session) handleSubscribed(sb *parleyv1.Subscribed) bool {
	conv := sb.GetConversationId()
	s.mu.Lock()
	sub := s.subs[conv]
	if sub == nil {
		s.mu.Unlock()
		return true
	}
	pos := s.positions[conv]
	if sb.GetEpochReset() {
		// Seqs from the old log mean nothing; keep only what this replay
		// delivered from the new one.
		pos.Seq = sub.replayMax
	}
	pos.Seq = max(pos.Seq, sb.GetHeadSeq())
	pos.Epoch = sb.GetEpoch()
	s.positions[conv] = pos
	if sb.GetEpochReset() {
		// Marks in the old log's seqs would hold back (or overshoot)
		// marks in the new one.
		delete(s.marks, conv)
	}
	sub.replaying = false
	s.mu.Unlock()
	return s.emit(SubscribedEvent{Subscribed: sb})
}

func (s *Session) handleError(f *parleyv1.ErrorFrame) bool {
	code := codes.Code(f.GetCode())
	err := status.Error(code, f.GetMessage())
	var failed *pendingSend
	s.mu.Lock()
	switch f.GetFrame() {
	case "send", "edit", "delete":
		p := s.outbox.get(f.GetClientMessageId())
		if p == nil && f.GetFrameId() != 0 {
			// Some refusals (a malformed frame) name no client_message_id.
			p = s.outbox.getFrame(f.GetFrameId())
		}
		switch {
		case p == nil:
		case code == codes.Unavailable:
			// The server's word for "not stored, resend with the same
			// client_message_id": the change stays in the outbox.
			s.retryLaterLocked(p)
		default:
			failed = s.outbox.take(p.id)
		}
	case "delivered", "read":
		s.markFailedLocked(f.GetConversationId(), code)
	case "subscribe":
		if code == codes.AlreadyExists {
			break // the subscription is in place
		}
		// A refused subscription would be refused again on every
		// reconnect; forget it and let the application decide.
		for conv, sub := range s.subs {
			if conv == f.GetConversationId() || (f.GetFrameId() != 0 && sub.frameID == f.GetFrameId()) {
				delete(s.subs, conv)
			}
		}
	}
	s.mu.Unlock()
	if failed != nil {
		err = fmt.Errorf("%s %s to %s: %w", failed.kind, failed.id, failed.conv, err)
		s.answer(failed, SendResult{Err: err})
	}
	return s.emit(ErrorEvent{Frame: f, Err: err})
}

// retryLaterLocked sends p again on the current stream after a backoff,
// unless it is answered or resent on a new stream before then. s.mu must
// be held.
func (s *Session) retryLaterLocked(p *pendingSend) {
	wait := s.cfg.backoff.delay(p.retries)
	p.retries++
	frameID := p.frameID
	time.AfterFunc(wait, func() {
		s.mu.Lock()
		current := s.err == nil && s.outbox.get(p.id) == p && p.frameID == frameID
		if current {
			p.frameID = s.queueLocked(p.frame())
		}
		s.mu.Unlock()
		if current {
			s.wake()
		}
	})
}

// answer delivers a send's result and frees its outbox slot. The send must
// already be out of the outbox.
func (s *Session) answer(p *pendingSend, r SendResult) {
	<-s.room
	p.result <- r
}

// emit queues an event for the application, waiting while the channel is
// full; see Events for why it waits. It returns false if the Session ended
// first.
func (s *Session) emit(ev Event) bool {
	select {
	case s.events <- ev:
		return true
	default:
	}
	s.stalls.Add(1)
	s.stalled.Store(true)
	defer s.stalled.Store(false)
	select {
	case s.events <- ev:
		return true
	case <-s.ctx.Done():
		return false
	}
}

// stop ends the Session for good because the server refused its token.
func (s *Session) stop(cause error) {
	err := fmt.Errorf("session stopped: %w", cause)
	s.mu.Lock()
	s.err = err
	s.mu.Unlock()
	// Fail sends before reporting, so that an application blocked in Send
	// learns it even if it never reads the event.
	s.failPending(err)
	s.emit(StateEvent{State: StateStopped, Err: err})
}

// finish runs when the run goroutine exits, whatever the reason.
func (s *Session) finish() {
	s.mu.Lock()
	if s.err == nil {
		s.err = s.endErr()
	}
	err := s.err
	s.mu.Unlock()
	s.failPending(err)
	s.cancel(err)
	s.c.removeSession(s)
	close(s.events)
	close(s.done)
}

func (s *Session) failPending(err error) {
	s.mu.Lock()
	pending := s.outbox.drain()
	s.mu.Unlock()
	for _, p := range pending {
		s.answer(p, SendResult{Err: fmt.Errorf("%s %s to %s: %w", p.kind, p.id, p.conv, err)})
	}
}
