package jslog

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
	"github.com/parleychat/parley/server/jsget"
	"github.com/parleychat/parley/server/router"
	"github.com/parleychat/parley/server/store"
)

// pending is a publish waiting for its turn in its conversation.
type pending struct {
	m   router.Message
	ack router.AckFunc
	key string // dedup key

	looked  chan struct{} // closed once the dedup lookup below is done
	found   bool
	rec     store.DedupRecord
	lookErr error
}

// Publish stores m in the stream and calls ack once JetStream has
// acknowledged it, with router.Router's contract: a resend of an accepted
// (Sender, ClientMsgID) is not stored or delivered again, and ack gets the
// original result with Duplicate set. Delivery, to every node's
// subscribers, comes from the feeds once the message is stored.
//
// ack runs on a goroutine of the log, exactly once for every Publish that
// returned nil. An error it gets wraps ErrUnavailable (the message may or
// may not be stored: resend it with the same client_message_id) or
// ErrClosed. Publish blocks only while the conversation already has a full
// queue of publishes waiting on this node; ctx bounds that wait. The caller
// must have checked that the sender may write to the conversation; a
// message without a ClientMsgID is stored, but nothing can recognise its
// resends.
func (l *Log) Publish(ctx context.Context, m router.Message, ack router.AckFunc) error {
	p := &pending{m: m, ack: ack, key: dedupKey(m.Sender, m.ClientMsgID), looked: make(chan struct{})}
	if _, err := l.conversation(m.Conv); err != nil {
		return err
	}
	// Resends older than JetStream's duplicate window are found in the
	// dedup bucket. The lookup runs while earlier publishes of the
	// conversation are on their way.
	if !l.spawn(func() { l.lookupDedup(p) }) {
		return ErrClosed
	}
	for {
		c, err := l.conversation(m.Conv)
		if err != nil {
			return err
		}
		c.mu.Lock()
		for len(c.queue) >= l.opts.queue && !c.evicted {
			space := c.space
			c.mu.Unlock()
			select {
			case <-space:
			case <-ctx.Done():
				return fmt.Errorf("jslog: waiting for %s's publish queue: %w", m.Conv, ctx.Err())
			case <-l.ctx.Done():
				return ErrClosed
			}
			c.mu.Lock()
		}
		if c.evicted {
			c.mu.Unlock()
			continue
		}
		if !c.publishing {
			if !l.spawn(func() { l.publisher(c) }) {
				c.mu.Unlock()
				return ErrClosed
			}
			c.publishing = true
		}
		c.queue = append(c.queue, p)
		c.mu.Unlock()
		return nil
	}
}

// publisher publishes c's queue in order and exits when it is empty.
func (l *Log) publisher(c *conv) {
	for {
		c.mu.Lock()
		if len(c.queue) == 0 {
			c.publishing = false
			c.mu.Unlock()
			return
		}
		p := c.queue[0]
		c.queue[0] = nil
		c.queue = c.queue[1:]
		close(c.space)
		c.space = make(chan struct{})
		c.mu.Unlock()
		l.publishOne(c, p)
	}
}

func (l *Log) lookupDedup(p *pending) {
	defer close(p.looked)
	if p.m.ClientMsgID == "" {
		return // nothing to deduplicate by
	}
	ctx, cancel := context.WithTimeout(l.ctx, l.opts.timeout)
	defer cancel()
	p.rec, p.found, p.lookErr = l.dedupGet(ctx, p.key)
}

// publishOne stores p and hands it to settle, or acks its failure.
func (l *Log) publishOne(c *conv, p *pending) {
	select {
	case <-p.looked:
	case <-l.ctx.Done():
		p.ack(router.Result{}, ErrClosed)
		return
	}
	if p.lookErr != nil {
		p.ack(router.Result{}, fmt.Errorf("jslog: dedup lookup: %w", p.lookErr))
		return
	}
	if p.found {
		p.ack(l.duplicate(l.ctx, p.rec.Conv, p.rec.Seq), nil)
		return
	}
	msg := &parleyv1.Message{
		ConversationId:  p.m.Conv,
		SenderId:        p.m.Sender,
		ClientMessageId: p.m.ClientMsgID,
		Body:            p.m.Body,
		SentAt:          timestamppb.New(l.opts.now()),
		Attachments:     p.m.Attachments,
		Kind:            cmp.Or(p.m.Kind, parleyv1.MessageKind_MESSAGE_KIND_POST),
		TargetSeq:       p.m.TargetSeq,
	}
	res, dup, err := l.store(c, p, msg)
	if err != nil {
		p.ack(router.Result{}, err)
		return
	}
	if !l.spawn(func() { l.settle(p, msg, res, dup) }) {
		p.ack(router.Result{}, ErrClosed)
	}
}

// store publishes msg with prev_seq set to the conversation's last seq and
// JetStream told to expect exactly that, so prev_seq is right even when
// other nodes publish to the conversation at the same time: a publish that
// lost the race is refused and retried on the new head. It retries through
// leader elections and timeouts for the retry period; the message id makes
// the retries safe. dup reports that JetStream already held the message id.
func (l *Log) store(c *conv, p *pending, msg *parleyv1.Message) (res router.Result, dup bool, err error) {
	ctx, cancel := context.WithTimeout(l.ctx, l.opts.retry)
	defer cancel()
	msgID := p.m.Sender + "/" + p.m.ClientMsgID
	sent := false // an attempt reached JetStream and may have been stored
	backoff := 20 * time.Millisecond
	for {
		prev, err := l.expectedPrev(ctx, c)
		if err == nil {
			msg.PrevSeq = prev
			var data []byte
			if data, err = proto.Marshal(msg); err != nil {
				return res, false, fmt.Errorf("jslog: encode message: %w", err)
			}
			var ack *jetstream.PubAck
			actx, acancel := context.WithTimeout(ctx, l.opts.timeout)
			popts := []jetstream.PublishOpt{jetstream.WithExpectLastSequencePerSubject(prev)}
			if p.m.ClientMsgID != "" {
				popts = append(popts, jetstream.WithMsgID(msgID))
			}
			ack, err = l.js.PublishMsg(actx, &nats.Msg{Subject: c.subject, Data: data}, popts...)
			acancel()
			switch {
			case err == nil && ack.Duplicate:
				res := l.duplicate(ctx, p.m.Conv, ack.Sequence)
				if sent && res.Conv == p.m.Conv {
					// Our own earlier attempt, whose ack was lost: for the
					// sender this is the first acceptance.
					res.Duplicate = false
					res.SentAt = msg.GetSentAt().AsTime()
				}
				return res, true, nil
			case err == nil:
				c.mu.Lock()
				c.pubLast, c.pubKnown = max(c.pubLast, ack.Sequence), true
				c.mu.Unlock()
				l.published.Add(1)
				return router.Result{Conv: p.m.Conv, Seq: ack.Sequence, SentAt: msg.GetSentAt().AsTime()}, false, nil
			case isWrongLast(err):
				l.forgetHead(c)
				if ctx.Err() == nil {
					continue
				}
			case retryable(err):
				// A JetStream answer (an election, another node's copy of
				// this id still being stored) means this attempt was not
				// stored; a timeout or a lost connection may hide that it
				// was.
				if code, ec := apiCode(err); code == 0 && ec == 0 {
					sent = true
				}
			}
		}
		if !retryable(err) {
			return res, false, fmt.Errorf("jslog: publish to %s: %w", p.m.Conv, err)
		}
		l.forgetHead(c)
		select {
		case <-time.After(backoff):
			backoff = min(2*backoff, time.Second)
		case <-ctx.Done():
			if errors.Is(l.ctx.Err(), context.Canceled) {
				return res, false, ErrClosed
			}
			return res, false, unavailable("jslog: publish to "+p.m.Conv, err)
		}
	}
}

// expectedPrev is the seq the next message of c must follow: this node's
// guess, or the leader's answer after a conflict.
func (l *Log) expectedPrev(ctx context.Context, c *conv) (uint64, error) {
	c.mu.Lock()
	if c.pubKnown {
		prev := max(c.pubLast, c.fed)
		c.mu.Unlock()
		return prev, nil
	}
	c.mu.Unlock()
	m, err := l.leaderGet(ctx, l.opts.stream, jsget.Request{LastFor: c.subject})
	if errors.Is(err, errNotFound) {
		m, err = rawMsg{}, nil
	}
	if err != nil {
		return 0, err
	}
	c.mu.Lock()
	c.pubLast, c.pubKnown = max(c.pubLast, m.seq), true
	c.mu.Unlock()
	return m.seq, nil
}

func (l *Log) forgetHead(c *conv) {
	c.mu.Lock()
	c.pubKnown = false
	c.mu.Unlock()
}

// settle records the dedup entry of a stored message, applies an edit or a
// delete to the overlay, and then acks. Without the dedup entry the ack
// fails, so that a resend after JetStream's window cannot be stored twice;
// an overlay that cannot be written is left to the repairer.
func (l *Log) settle(p *pending, msg *parleyv1.Message, res router.Result, dup bool) {
	ctx, cancel := context.WithTimeout(l.ctx, l.opts.retry)
	defer cancel()
	err := l.retry(ctx, func(ctx context.Context) error {
		if p.m.ClientMsgID == "" {
			return nil
		}
		_, err := l.ensureDedup(ctx, p.key, res.Conv, res.Seq, false)
		return err
	})
	if err != nil {
		p.ack(router.Result{}, fmt.Errorf("jslog: dedup entry of %s#%d: %w", res.Conv, res.Seq, err))
		return
	}
	if !dup && isChange(msg) {
		err := l.retry(ctx, func(ctx context.Context) error {
			_, err := l.applyChange(ctx, res.Conv, res.Seq, msg)
			return err
		})
		if err != nil {
			l.opts.logger.Warn("jslog: overlay not written; the repairer will", "conv", res.Conv, "seq", res.Seq, "err", err)
		}
	}
	p.ack(res, nil)
}

// retry runs f until it succeeds, fails for good, or ctx ends.
func (l *Log) retry(ctx context.Context, f func(context.Context) error) error {
	backoff := 20 * time.Millisecond
	for {
		actx, cancel := context.WithTimeout(ctx, l.opts.timeout)
		err := f(actx)
		cancel()
		if err == nil || !retryable(err) {
			return err
		}
		select {
		case <-time.After(backoff):
			backoff = min(2*backoff, time.Second)
		case <-ctx.Done():
			if errors.Is(l.ctx.Err(), context.Canceled) {
				return ErrClosed
			}
			return unavailable("jslog", err)
		}
	}
}

// duplicate is the result of a resend: the original's conversation, seq
// and send time, read from the stream (conv is used if the read fails).
func (l *Log) duplicate(ctx context.Context, conv string, seq uint64) router.Result {
	res := router.Result{Conv: conv, Seq: seq, Duplicate: true}
	m, err := l.getSeq(ctx, seq, true)
	if err != nil {
		return res
	}
	res.Conv = strings.TrimPrefix(m.subject, l.msgPrefix)
	var stored parleyv1.Message
	if proto.Unmarshal(m.data, &stored) == nil {
		res.SentAt = stored.GetSentAt().AsTime()
	}
	return res
}

// getSeq reads the message at seq, asking the leader when a replica does
// not have it and mustExist says it should.
func (l *Log) getSeq(ctx context.Context, seq uint64, mustExist bool) (rawMsg, error) {
	m, err := l.directGet(ctx, l.opts.stream, getRequest{Seq: seq})
	if mustExist && (errors.Is(err, errNotFound) || errors.Is(err, ErrUnavailable)) {
		m, err = l.leaderGet(ctx, l.opts.stream, jsget.Request{Seq: seq})
	}
	return m, err
}

func isChange(m *parleyv1.Message) bool {
	k := m.GetKind()
	return k == parleyv1.MessageKind_MESSAGE_KIND_EDIT || k == parleyv1.MessageKind_MESSAGE_KIND_DELETE
}

// apiCode is the JetStream error code in err, 0 if none.
func apiCode(err error) (code int, errCode jetstream.ErrorCode) {
	var jerr jetstream.JetStreamError
	if errors.As(err, &jerr) && jerr.APIError() != nil {
		return jerr.APIError().Code, jerr.APIError().ErrorCode
	}
	return 0, 0
}

// isWrongLast reports a refused expected-last-sequence: someone else
// published to the subject first.
func isWrongLast(err error) bool {
	_, ec := apiCode(err)
	return ec == jetstream.JSErrCodeStreamWrongLastSequence || ec == jetstream.JSErrCodeStreamWrongLastSequenceConstant
}

// errCodeDuplicateInProcess is JetStream's answer to a message id whose
// first copy is still being stored.
const errCodeDuplicateInProcess jetstream.ErrorCode = 10158

// retryable reports whether trying again may succeed: transport failures,
// timeouts, elections, a conflicting write in flight. Other JetStream
// answers (a message too large, a missing stream) are final.
func retryable(err error) bool {
	switch {
	case err == nil:
		return false
	case errors.Is(err, ErrClosed):
		return false
	case errors.Is(err, ErrUnavailable):
		return true
	}
	code, ec := apiCode(err)
	switch {
	case ec == 0 && code == 0:
		return true
	case ec == errCodeDuplicateInProcess || isWrongLast(err) || code >= 500:
		return true
	}
	return false
}
