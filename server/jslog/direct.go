package jslog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/parleychat/parley/server/jsget"
)

// This file talks to JetStream's message get APIs directly, because the
// client library offers neither batched direct gets nor a get that is
// answered by the stream leader on a stream that allows direct gets.
//
// Direct gets may be answered by any replica, and a replica may lag the
// leader by a few messages. Callers therefore check what they read against
// what they know (the prev_seq chain, the feed's head) and fall back to a
// leader get when a direct get cannot be trusted.

// getRequest is JetStream's message get request.
type getRequest struct {
	Seq       uint64   `json:"seq,omitempty"`
	LastFor   string   `json:"last_by_subj,omitempty"`
	NextFor   string   `json:"next_by_subj,omitempty"`
	Batch     int      `json:"batch,omitempty"`
	MultiLast []string `json:"multi_last,omitempty"`
	UpToSeq   uint64   `json:"up_to_seq,omitempty"`
}

// rawMsg is one stored message as JetStream returns it.
type rawMsg struct {
	subject string
	seq     uint64
	data    []byte // the stored payload; owned by the caller
}

// errNotFound is a get that found nothing.
var errNotFound = errors.New("jslog: no such message")

// directGet asks any replica of stream for one message.
func (l *Log) directGet(ctx context.Context, stream string, req getRequest) (rawMsg, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return rawMsg{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, l.opts.timeout)
	defer cancel()
	for backoff := 5 * time.Millisecond; ; backoff = min(2*backoff, 250*time.Millisecond) {
		resp, err := l.nc.RequestWithContext(ctx, "$JS.API.DIRECT.GET."+stream, body)
		if err == nil {
			var m rawMsg
			if m, err = parseDirect(resp); !errors.Is(err, nats.ErrNoResponders) {
				return m, err
			}
		}
		if !errors.Is(err, nats.ErrNoResponders) || !sleep(ctx, backoff) {
			return rawMsg{}, unavailable("jslog: direct get", err)
		}
	}
}

// sleep waits for d, or returns false when ctx ends first. No replica
// answers direct gets for a moment after a stream is created or while its
// replicas catch up after an election; a short wait is all they need.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func parseDirect(m *nats.Msg) (rawMsg, error) {
	switch st := m.Header.Get("Status"); st {
	case "":
	case "404":
		return rawMsg{}, errNotFound
	case "503":
		return rawMsg{}, unavailable("jslog: direct get", nats.ErrNoResponders)
	default:
		return rawMsg{}, fmt.Errorf("jslog: direct get: status %s %s", st, m.Header.Get("Description"))
	}
	seq, err := strconv.ParseUint(m.Header.Get(jetstream.SequenceHeader), 10, 64)
	if err != nil {
		return rawMsg{}, fmt.Errorf("jslog: direct get: bad sequence header: %w", err)
	}
	return rawMsg{subject: m.Header.Get(jetstream.SubjectHeader), seq: seq, data: m.Data}, nil
}

// directBatch asks any replica of stream for several messages (a batch or
// a multi-last request) and collects them until the end-of-batch marker.
// Nothing found is an empty result, not an error.
func (l *Log) directBatch(ctx context.Context, stream string, req getRequest) ([]rawMsg, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, l.opts.timeout)
	defer cancel()
	for backoff := 5 * time.Millisecond; ; backoff = min(2*backoff, 250*time.Millisecond) {
		msgs, err := l.directBatchOnce(ctx, stream, body)
		if !errors.Is(err, nats.ErrNoResponders) || !sleep(ctx, backoff) {
			return msgs, err
		}
	}
}

func (l *Log) directBatchOnce(ctx context.Context, stream string, body []byte) ([]rawMsg, error) {
	token, r := l.replies.open()
	defer l.replies.close(token)
	if err := l.nc.PublishRequest("$JS.API.DIRECT.GET."+stream, l.replies.prefix+token, body); err != nil {
		return nil, unavailable("jslog: batch get", err)
	}
	var out []rawMsg
	for {
		m, err := r.next(ctx)
		if err != nil {
			return nil, unavailable("jslog: batch get", err)
		}
		switch m.Header.Get("Status") {
		case "204": // end of batch
			return out, nil
		case "404":
			return out, nil
		case "503":
			return nil, unavailable("jslog: batch get", nats.ErrNoResponders)
		}
		r, err := parseDirect(m)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
}

// replyMux receives the answers to batched gets on one wildcard
// subscription, so that a batch costs no subscription of its own (which
// would have to reach the answering server before the answer could).
type replyMux struct {
	prefix string // "<inbox>."
	sub    *nats.Subscription
	n      atomic.Uint64

	mu      sync.Mutex // protects waiting
	waiting map[string]*replies
}

// replies collects one request's answers; the subscription's callback
// never blocks on them.
type replies struct {
	mu    sync.Mutex // protects msgs
	msgs  []*nats.Msg
	ready chan struct{} // capacity 1: msgs is not empty
}

func (x *replyMux) start(nc *nats.Conn) error {
	x.prefix = nc.NewInbox() + "."
	x.waiting = make(map[string]*replies)
	sub, err := nc.Subscribe(x.prefix+"*", func(m *nats.Msg) {
		x.mu.Lock()
		r := x.waiting[m.Subject[len(x.prefix):]]
		x.mu.Unlock()
		if r == nil {
			return // the request gave up
		}
		r.mu.Lock()
		r.msgs = append(r.msgs, m)
		r.mu.Unlock()
		select {
		case r.ready <- struct{}{}:
		default:
		}
	})
	x.sub = sub
	return err
}

func (x *replyMux) open() (string, *replies) {
	token := strconv.FormatUint(x.n.Add(1), 36)
	r := &replies{ready: make(chan struct{}, 1)}
	x.mu.Lock()
	x.waiting[token] = r
	x.mu.Unlock()
	return token, r
}

func (x *replyMux) close(token string) {
	x.mu.Lock()
	delete(x.waiting, token)
	x.mu.Unlock()
}

// next returns the next answer, in the order they arrived.
func (r *replies) next(ctx context.Context) (*nats.Msg, error) {
	for {
		r.mu.Lock()
		if len(r.msgs) > 0 {
			m := r.msgs[0]
			r.msgs[0] = nil
			r.msgs = r.msgs[1:]
			r.mu.Unlock()
			return m, nil
		}
		r.mu.Unlock()
		select {
		case <-r.ready:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// leaderGet asks the leader of stream for one message (see jsget): no
// answer, or JetStream's 503, is ErrUnavailable; no such message is
// errNotFound.
func (l *Log) leaderGet(ctx context.Context, stream string, req jsget.Request) (rawMsg, error) {
	ctx, cancel := context.WithTimeout(ctx, l.opts.timeout)
	defer cancel()
	m, err := jsget.Leader(ctx, l.nc, stream, req)
	var api *jetstream.APIError
	switch {
	case errors.Is(err, jsget.ErrNotFound):
		return rawMsg{}, errNotFound
	case errors.As(err, &api) && api.Code != 503, errors.Is(err, jsget.ErrBadReply):
		return rawMsg{}, fmt.Errorf("jslog: leader get: %w", err)
	case err != nil:
		return rawMsg{}, unavailable("jslog: leader get", err)
	}
	return rawMsg{subject: m.Subject, seq: m.Seq, data: m.Data}, nil
}

// Message fields read without decoding the whole message.
const (
	fieldSeq     protowire.Number = 2
	fieldPrevSeq protowire.Number = 7
)

// prevSeq reads prev_seq from an encoded Message (the last occurrence wins,
// as in proto.Unmarshal). Malformed data reads as 0.
func prevSeq(data []byte) uint64 {
	var prev uint64
	for len(data) > 0 {
		num, typ, n := protowire.ConsumeTag(data)
		if n < 0 {
			return prev
		}
		data = data[n:]
		if num == fieldPrevSeq && typ == protowire.VarintType {
			v, m := protowire.ConsumeVarint(data)
			if m < 0 {
				return prev
			}
			prev, data = v, data[m:]
			continue
		}
		m := protowire.ConsumeFieldValue(num, typ, data)
		if m < 0 {
			return prev
		}
		data = data[m:]
	}
	return prev
}

// seqField is the encoded seq field that reads append to a stored message:
// a field appended to an encoded message overrides any earlier value.
func seqField(seq uint64) []byte {
	b := protowire.AppendTag(nil, fieldSeq, protowire.VarintType)
	return protowire.AppendVarint(b, seq)
}

// withSeq returns the stored message with its seq filled in.
func withSeq(data []byte, seq uint64) []byte {
	out := make([]byte, 0, len(data)+1+protowire.SizeVarint(seq))
	out = append(out, data...)
	return append(out, seqField(seq)...)
}

// wrap turns an encoded Message into an encoded ChatResponse (and
// SubscribeResponse), whose field 1 is the message, with seq filled in: the
// layout router.Frame.Data has. One allocation.
func wrap(data []byte, seq uint64) []byte {
	sf := seqField(seq)
	n := len(data) + len(sf)
	b := make([]byte, 0, 1+protowire.SizeVarint(uint64(n))+n)
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(n))
	b = append(b, data...)
	return append(b, sf...)
}

// wrapBytes turns an encoded Message that already has its seq into an
// encoded ChatResponse.
func wrapBytes(msg []byte) []byte {
	b := make([]byte, 0, 1+protowire.SizeVarint(uint64(len(msg)))+len(msg))
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	return protowire.AppendBytes(b, msg)
}
