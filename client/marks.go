package client

import (
	"fmt"
	"time"

	"google.golang.org/grpc/codes"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
)

// mark is what the Session has told, or will tell, the server about the
// user's delivered and read positions in one conversation. Positions only
// grow on the server, so a frame is worth sending only when it asks for
// more than the server has been sent or is known to have.
type mark struct {
	want    receiptPos // the highest positions the application asked for
	wire    receiptPos // sent on the current stream, or known to the server
	known   receiptPos // confirmed by a receipt of the user's own
	dirty   bool       // listed in Session.dirty
	retries int        // UNAVAILABLE answers in a row, for the retry backoff
}

type receiptPos struct{ delivered, read uint64 }

func (p receiptPos) covers(q receiptPos) bool {
	return p.delivered >= q.delivered && p.read >= q.read
}

func maxPos(p, q receiptPos) receiptPos {
	return receiptPos{delivered: max(p.delivered, q.delivered), read: max(p.read, q.read)}
}

// MarkDelivered tells the server that the messages of a conversation up to
// seq have reached this device, so that their senders can show them as
// delivered. It does not wait: the mark goes out with the next write on the
// stream, and only if it moves the position forward (a seq at or below one
// already marked, here or by a receipt of the user's own, is dropped).
// Marks made faster than the stream writes are coalesced into one frame per
// conversation. A mark the server has not confirmed is sent again on the
// next stream after a reconnect; the Session recognises confirmations (the
// server's Receipt frames for the user's own id, in subscribed
// conversations) only when it knows the user (see Client.UserID) and sends
// its latest marks again on every new stream otherwise, which is harmless.
//
// seq may not exceed the conversation's newest seq: the server refuses
// that with an ErrorEvent (INVALID_ARGUMENT) and the Session forgets the
// mark. MarkDelivered fails only after the Session ended.
//
// WithAutoDelivered calls it for every message the Session delivers.
func (s *Session) MarkDelivered(conversationID string, seq uint64) error {
	return s.mark("delivered", conversationID, seq, 0)
}

// MarkRead tells the server that the user has read a conversation up to
// seq, which also marks it delivered and moves the conversation's unread
// count. It coalesces and survives reconnects like MarkDelivered.
func (s *Session) MarkRead(conversationID string, seq uint64) error {
	return s.mark("read", conversationID, 0, seq)
}

func (s *Session) mark(what, conversationID string, delivered, read uint64) error {
	s.mu.Lock()
	if s.err != nil {
		err := s.err
		s.mu.Unlock()
		return fmt.Errorf("mark %s %s: %w", conversationID, what, err)
	}
	grew := s.markLocked(conversationID, delivered, read)
	s.mu.Unlock()
	if grew {
		s.wake()
	}
	return nil
}

// markLocked raises the positions asked for in conv and reports whether
// they grew, in which case the writer has frames to send. s.mu must be
// held.
func (s *Session) markLocked(conv string, delivered, read uint64) bool {
	m := s.marks[conv]
	if m == nil {
		m = &mark{}
		s.marks[conv] = m
	}
	// Read implies delivered, on the server too.
	next := maxPos(m.want, receiptPos{delivered: max(delivered, read), read: read})
	if next == m.want {
		return false
	}
	m.want = next
	if m.wire.covers(m.want) {
		return false
	}
	s.dirtyLocked(conv, m)
	return true
}

func (s *Session) dirtyLocked(conv string, m *mark) {
	if !m.dirty {
		m.dirty = true
		s.dirty = append(s.dirty, conv)
	}
}

// markFramesLocked queues a frame for every mark that asks for more than
// the stream carried so far: one read frame (which moves the delivered
// position too) and a delivered frame only if delivered is still ahead.
// s.mu must be held.
func (s *Session) markFramesLocked() {
	for _, conv := range s.dirty {
		m := s.marks[conv]
		if m == nil || !m.dirty {
			continue // forgotten by an epoch reset, or already handled
		}
		m.dirty = false
		if m.want.read > m.wire.read {
			s.queueLocked(&parleyv1.ChatRequest{Frame: &parleyv1.ChatRequest_Read{
				Read: &parleyv1.MarkReadRequest{ConversationId: conv, Seq: m.want.read},
			}})
			m.wire.read = m.want.read
			m.wire.delivered = max(m.wire.delivered, m.want.read)
		}
		if m.want.delivered > m.wire.delivered {
			s.queueLocked(&parleyv1.ChatRequest{Frame: &parleyv1.ChatRequest_Delivered{
				Delivered: &parleyv1.MarkDeliveredRequest{ConversationId: conv, Seq: m.want.delivered},
			}})
			m.wire.delivered = m.want.delivered
		}
	}
	s.dirty = nil
}

// resetMarksLocked prepares a new stream: what the old one carried may not
// have been applied, so every mark the server has not confirmed is sent
// again; typing indicators are left to lapse. s.mu must be held.
func (s *Session) resetMarksLocked() {
	for conv, m := range s.marks {
		m.wire = m.known
		if !m.wire.covers(m.want) {
			s.dirtyLocked(conv, m)
		}
	}
	clear(s.typing)
}

// confirmMark records a receipt of the user's own, which says what the
// server has: nothing at or below it needs sending, on this stream or the
// next.
func (s *Session) confirmMark(r *parleyv1.Receipt) {
	me := s.c.UserID()
	if me == "" || r.GetUserId() != me {
		return
	}
	conv := r.GetConversationId()
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.marks[conv]
	if m == nil {
		m = &mark{}
		s.marks[conv] = m
	}
	m.known = maxPos(m.known, receiptPos{delivered: r.GetDeliveredSeq(), read: r.GetReadSeq()})
	m.want = maxPos(m.want, m.known)
	m.wire = maxPos(m.wire, m.known)
	m.retries = 0
}

// markFailedLocked handles an ErrorFrame about a delivered or read frame.
// UNAVAILABLE means the receipt was not stored: send it again after a
// backoff. Anything else would be refused again, so the Session forgets
// what it cannot confirm, and a later mark starts afresh. s.mu must be
// held.
func (s *Session) markFailedLocked(conv string, code codes.Code) {
	m := s.marks[conv]
	if m == nil {
		return
	}
	m.wire = m.known
	if code != codes.Unavailable {
		m.want = m.known
		return
	}
	wait := s.cfg.backoff.delay(m.retries)
	m.retries++
	time.AfterFunc(wait, func() {
		s.mu.Lock()
		again := s.err == nil && s.marks[conv] == m && !m.wire.covers(m.want)
		if again {
			s.dirtyLocked(conv, m)
		}
		s.mu.Unlock()
		if again {
			s.wake()
		}
	})
}

// SetTyping starts (typing true) or stops the user's typing indicator in a
// conversation, for the members following it. The indicator lapses by
// itself a few seconds after the last typing=true, so a caller may call
// SetTyping(conv, true) on every keystroke: the Session sends it at most
// once per WithTypingRenew interval, and sends typing=false only if the
// indicator is up. A send to the conversation takes the indicator down on
// the server, and the Session knows that. Typing frames are live only:
// they are not resent after a reconnect. The server rate-limits them per
// user; a refusal comes as an ErrorEvent. SetTyping fails only after the
// Session ended.
func (s *Session) SetTyping(conversationID string, typing bool) error {
	s.mu.Lock()
	if s.err != nil {
		err := s.err
		s.mu.Unlock()
		return fmt.Errorf("typing in %s: %w", conversationID, err)
	}
	last, up := s.typing[conversationID]
	now := time.Now()
	if (typing && up && now.Sub(last) < s.cfg.typingRenew) || (!typing && !up) {
		s.mu.Unlock()
		return nil
	}
	if typing {
		s.typing[conversationID] = now
	} else {
		delete(s.typing, conversationID)
	}
	s.queueLocked(&parleyv1.ChatRequest{Frame: &parleyv1.ChatRequest_Typing{
		Typing: &parleyv1.SetTypingRequest{ConversationId: conversationID, Typing: typing},
	}})
	s.mu.Unlock()
	s.wake()
	return nil
}

// typingLapsed notes that the server took the user's own indicator down
// (it expired), so that the next SetTyping(conv, true) goes out at once.
func (s *Session) typingLapsed(t *parleyv1.Typing) {
	me := s.c.UserID()
	if t.GetTyping() || me == "" || t.GetUserId() != me {
		return
	}
	s.mu.Lock()
	delete(s.typing, t.GetConversationId())
	s.mu.Unlock()
}
