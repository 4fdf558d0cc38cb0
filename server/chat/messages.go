package chat

import (
	"context"
	"fmt"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
	"github.com/parleychat/parley/server/auth"
	"github.com/parleychat/parley/server/router"
	"github.com/parleychat/parley/server/store"
)

// publish checks a send and hands it to the router; ack runs once it is
// durable. It is shared by the unary Send and the Chat stream.
func (s *Service) publish(ctx context.Context, user string, req *parleyv1.SendRequest, ack router.AckFunc) error {
	c, err := s.member(user, req.GetConversationId())
	if err != nil {
		return err
	}
	if !s.sendRate.allow(user, time.Now()) {
		return s.rateError()
	}
	// Attachments are granted to the conversation before delivery: members
	// may download them as soon as the message reaches them.
	atts, err := s.resolveAttachments(user, req.GetAttachments())
	if err != nil {
		return err
	}
	if err := s.attachmentsSent(req.GetConversationId(), atts); err != nil {
		return err
	}
	m := router.Message{
		Conv:        req.GetConversationId(),
		Sender:      user,
		ClientMsgID: req.GetClientMessageId(),
		Body:        req.GetBody(),
		Attachments: atts,
	}
	err = s.router.Publish(ctx, m, func(res router.Result, err error) {
		if err == nil && !res.Duplicate {
			s.afterPost(c, user, res, m.Body)
		}
		ack(res, err)
	})
	if err == nil {
		s.stopTyping(user, m.Conv)
	}
	return err
}

func (s *Service) rateError() error {
	return exhausted("send rate", "at most %g messages per second per user (--send-rate); slow down and resend", s.sendRate.rate)
}

// waitDurable publishes through pub and waits for the ack: the unary RPCs
// answer only once the message is on disk.
func (s *Service) waitDurable(ctx context.Context, conv, clientMsgID string, pub func(router.AckFunc) error) (*parleyv1.SendResponse, error) {
	type outcome struct {
		res router.Result
		err error
	}
	done := make(chan outcome, 1)
	if err := pub(func(res router.Result, err error) { done <- outcome{res, err} }); err != nil {
		return nil, toStatus(err)
	}
	select {
	case o := <-done:
		if o.err != nil {
			return nil, toStatus(s.notStored(auth.UserID(ctx), conv, clientMsgID, o.err))
		}
		return sendResponse(clientMsgID, o.res), nil
	case <-ctx.Done():
		// The message is sequenced and will be committed; a resend with the
		// same client_message_id returns its ack.
		return nil, toStatus(ctx.Err())
	}
}

func sendResponse(clientMsgID string, res router.Result) *parleyv1.SendResponse {
	return &parleyv1.SendResponse{
		ConversationId:  res.Conv,
		ClientMessageId: clientMsgID,
		Seq:             res.Seq,
		SentAt:          timestamppb.New(res.SentAt),
		Duplicate:       res.Duplicate,
	}
}

// notStored is the error for a message whose commit failed: it may have been
// delivered, but it is not acknowledged, so the sender must resend it. It
// logs the failure: the client only sees UNAVAILABLE and resends, so
// without a line here a node refusing every write (a cluster log that
// cannot reach its stream, say) looks idle in its log. A failing disk
// refuses every message, often on the log's own goroutine, so it logs one
// line a second at most, counting the ones it left out.
func (s *Service) notStored(user, conv, clientMsgID string, err error) error {
	if ok, skipped := s.notStoredLog.allow(time.Now()); ok {
		s.opts.logger.Warn("chat: message not stored", "user", user, "conv", conv, "client_message_id", clientMsgID, "err", err,
			"not_stored_since_last_line", skipped)
	}
	return fmt.Errorf("%w: message not stored (%v); resend it with the same client_message_id", errUnavailable, err)
}

// logEvery lets through one log line per interval and counts the rest.
type logEvery struct {
	interval time.Duration

	mu      sync.Mutex // protects next and skipped
	next    time.Time
	skipped int
}

// allow reports whether a line may be logged at now and, if so, how many
// were left out since the last one.
func (l *logEvery) allow(now time.Time) (ok bool, skipped int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Before(l.next) {
		l.skipped++
		return false, 0
	}
	skipped, l.skipped, l.next = l.skipped, 0, now.Add(l.interval)
	return true, skipped
}

// Send implements parleyv1.ChatServiceServer. It returns once the message is
// durable.
func (s *Service) Send(ctx context.Context, req *parleyv1.SendRequest) (*parleyv1.SendResponse, error) {
	return s.waitDurable(ctx, req.GetConversationId(), req.GetClientMessageId(), func(ack router.AckFunc) error {
		return s.publish(ctx, auth.UserID(ctx), req, ack)
	})
}

// History implements parleyv1.ChatServiceServer.
func (s *Service) History(ctx context.Context, req *parleyv1.HistoryRequest) (*parleyv1.HistoryResponse, error) {
	conv := req.GetConversationId()
	limit := int(req.GetLimit())
	if limit == 0 {
		limit = defHistoryLimit
	}
	if _, err := s.member(auth.UserID(ctx), conv); err != nil {
		return nil, toStatus(err)
	}
	head, err := s.router.Head(conv)
	if err != nil {
		return nil, toStatus(err)
	}
	var recs []store.Record
	var more bool
	forward := req.GetAfterSeq() != 0 || req.GetForward()
	if forward {
		recs, more, err = s.store.Range(conv, req.GetAfterSeq(), 0, limit)
	} else {
		recs, more, err = s.store.Before(conv, req.GetBeforeSeq(), limit)
	}
	if err != nil {
		return nil, toStatus(err)
	}
	// A page must fit the client's default 4 MiB receive limit however big
	// the messages: cut it short (keeping the end nearest the cursor) and
	// say there is more.
	if cut := pageCut(recs, maxPageBytes, forward); cut != len(recs) {
		if forward {
			recs = recs[:cut]
		} else {
			recs = recs[len(recs)-cut:]
		}
		more = true
	}
	resp := &parleyv1.HistoryResponse{HasMore: more, HeadSeq: head, Epoch: s.store.Epoch(), Messages: make([]*parleyv1.Message, len(recs))}
	for i, rec := range recs {
		m := &parleyv1.Message{}
		if err := proto.Unmarshal(rec.Data, m); err != nil {
			return nil, toStatus(fmt.Errorf("decode message %s#%d: %w", conv, rec.Seq, err))
		}
		resp.Messages[i] = m
	}
	return resp, nil
}

// maxPageBytes bounds a History page.
const maxPageBytes = 2 << 20

// pageCut is how many records, taken from the front when forward and from
// the back otherwise, fit in max bytes (at least one).
func pageCut(recs []store.Record, max int, forward bool) int {
	total := 0
	for i := range recs {
		r := recs[i]
		if !forward {
			r = recs[len(recs)-1-i]
		}
		total += len(r.Data)
		if total > max && i > 0 {
			return i
		}
	}
	return len(recs)
}
