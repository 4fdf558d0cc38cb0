package jslog

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
	"github.com/parleychat/parley/server/jsget"
	"github.com/parleychat/parley/server/store"
)

// The reads below have server/store's contracts, so the services can read
// the log from either. They are direct gets (batched where they can be);
// what they return has its seq filled in and edits and deletes applied.

// known loads conv and returns its state and the newest seq this node
// knows, which every read must reach.
func (l *Log) known(convID string) (*conv, uint64, error) {
	c, err := l.conversation(convID)
	if err != nil {
		return nil, 0, err
	}
	if err := l.load(c); err != nil {
		return nil, 0, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c, max(c.head(), c.pubLast), nil
}

// Range returns up to limit messages of conv with after < seq <= upto,
// oldest first (upto == 0 means no upper bound), and whether more lie
// beyond the last one returned within the bound.
func (l *Log) Range(convID string, after, upto uint64, limit int) (recs []store.Record, more bool, err error) {
	err = l.read(func() error {
		c, head, err := l.known(convID)
		if err != nil {
			return err
		}
		recs, more, err = l.forward(l.ctx, c, after, upto, head, limit)
		return err
	})
	return recs, more, err
}

// read runs one of the reads below until it succeeds, fails for a reason
// other than JetStream being unavailable, or the retry period is over. A
// read just after a stream leader is lost waits for the new leader, as a
// publish and a conversation's load do: a History or catch-up page is
// better late than failed with a status the client must retry anyway.
// Each attempt starts over, so a page is never stitched from two reads.
func (l *Log) read(f func() error) error {
	deadline := time.Now().Add(l.opts.retry)
	backoff := 20 * time.Millisecond
	for {
		err := f()
		if err == nil || !errors.Is(err, ErrUnavailable) || time.Now().Add(backoff).After(deadline) {
			return err
		}
		select {
		case <-time.After(backoff):
			backoff = min(2*backoff, time.Second)
		case <-l.ctx.Done():
			return err
		}
	}
}

// forward reads up to limit messages of c with after < seq <= upto (upto 0:
// no bound), oldest first, and whether more lie beyond within the bound.
// The page is one batched direct get, trusted only if its prev_seq chain
// starts at or before after, has no hole, and either fills the page or
// reaches want (a seq known to be stored); otherwise a replica was behind
// and the page is read from the leader instead.
func (l *Log) forward(ctx context.Context, c *conv, after, upto, want uint64, limit int) ([]store.Record, bool, error) {
	if after == ^uint64(0) || (upto != 0 && upto <= after) {
		return nil, false, nil
	}
	limit = max(limit, 0)
	msgs, err := l.directBatch(ctx, l.opts.stream, getRequest{Seq: after + 1, NextFor: c.subject, Batch: limit + 1})
	if err != nil || !chained(msgs, after, want, limit+1) {
		if msgs, err = l.leaderForward(ctx, c.subject, after, limit+1); err != nil {
			return nil, false, err
		}
	}
	if upto != 0 {
		msgs = slices.DeleteFunc(msgs, func(m rawMsg) bool { return m.seq > upto })
	}
	more := len(msgs) > limit
	if more {
		msgs = msgs[:limit]
	}
	recs, err := l.records(ctx, c.id, msgs)
	return recs, more, err
}

// chained reports whether msgs, read after after, can be trusted: see
// forward.
func chained(msgs []rawMsg, after, want uint64, full int) bool {
	last := after
	for i, m := range msgs {
		p := prevSeq(m.data)
		if (i == 0 && p > after) || (i > 0 && p != msgs[i-1].seq) {
			return false
		}
		last = m.seq
	}
	return len(msgs) == full || last >= want
}

// leaderForward reads up to n messages of subject after after from the
// stream leader, one request each.
func (l *Log) leaderForward(ctx context.Context, subject string, after uint64, n int) ([]rawMsg, error) {
	var out []rawMsg
	for seq := after + 1; len(out) < n; {
		m, err := l.leaderGet(ctx, l.opts.stream, jsget.Request{Seq: seq, NextFor: subject})
		if errors.Is(err, errNotFound) {
			break
		}
		if err != nil {
			return nil, err
		}
		out = append(out, m)
		seq = m.seq + 1
	}
	return out, nil
}

// records fills in seqs and applies the overlays of the posts among msgs.
func (l *Log) records(ctx context.Context, convID string, msgs []rawMsg) ([]store.Record, error) {
	if len(msgs) == 0 {
		return nil, nil
	}
	seqs := make([]uint64, len(msgs))
	for i, m := range msgs {
		seqs[i] = m.seq
	}
	patches, err := l.overlays(ctx, convID, seqs)
	if err != nil {
		return nil, err
	}
	recs := make([]store.Record, len(msgs))
	for i, m := range msgs {
		recs[i] = store.Record{Seq: m.seq}
		p := patches[m.seq]
		if p == nil {
			recs[i].Data = withSeq(m.data, m.seq)
			continue
		}
		var post parleyv1.Message
		if err := proto.Unmarshal(m.data, &post); err != nil {
			return nil, fmt.Errorf("jslog: decode %s#%d: %w", convID, m.seq, err)
		}
		post.Seq = m.seq
		p.render(&post)
		if recs[i].Data, err = proto.Marshal(&post); err != nil {
			return nil, fmt.Errorf("jslog: encode %s#%d: %w", convID, m.seq, err)
		}
	}
	return recs, nil
}

// Before returns up to limit messages of conv with seq < before (before ==
// 0 means no bound: the newest page), oldest first, and whether older ones
// exist.
func (l *Log) Before(convID string, before uint64, limit int) (recs []store.Record, more bool, err error) {
	err = l.read(func() error {
		recs, more, err = l.before(convID, before, limit)
		return err
	})
	return recs, more, err
}

func (l *Log) before(convID string, before uint64, limit int) ([]store.Record, bool, error) {
	c, head, err := l.known(convID)
	if err != nil {
		return nil, false, err
	}
	ctx := l.ctx
	end, err := l.newestBelow(ctx, c, before, head)
	if err != nil || end == 0 || limit <= 0 {
		return nil, end != 0, err
	}
	msgs, more, err := l.backward(ctx, c, end, limit)
	if err != nil {
		return nil, false, err
	}
	recs, err := l.records(ctx, convID, msgs)
	return recs, more, err
}

// backward returns the limit messages of c that end at end (a stored seq
// of c), oldest first, and whether older ones exist. prev_seq tells where
// each message's predecessor is but not where the page starts, so it
// guesses a start from the spacing of the messages seen so far and reads
// forward from there in batches: a few requests per page, not one per
// message.
func (l *Log) backward(ctx context.Context, c *conv, end uint64, limit int) ([]rawMsg, bool, error) {
	last, err := l.getSeq(ctx, end, true)
	if errors.Is(err, errNotFound) || (err == nil && last.subject != c.subject) {
		return nil, false, fmt.Errorf("jslog: %s#%d is missing from the stream", c.id, end)
	}
	if err != nil {
		return nil, false, err
	}
	page := []rawMsg{last}
	for len(page) < limit {
		p := prevSeq(page[0].data)
		if p == 0 {
			return page, false, nil
		}
		need := limit - len(page)
		spacing := max((end-p)/uint64(len(page)), 1)
		start := p - min(p-1, 2*spacing*uint64(need))
		older, err := l.chunk(ctx, c, start, p, need)
		if err != nil {
			return nil, false, err
		}
		if len(older) == 0 {
			// A replica was behind: take p from the leader.
			m, err := l.leaderGet(ctx, l.opts.stream, jsget.Request{Seq: p})
			if err != nil {
				return nil, false, fmt.Errorf("jslog: %s#%d: %w", c.id, p, err)
			}
			older = []rawMsg{m}
		}
		page = append(older, page...)
	}
	if len(page) > limit {
		page = page[len(page)-limit:]
	}
	return page, prevSeq(page[0].data) != 0, nil
}

// chunk returns up to need messages of c from start through p (a stored
// seq of c), the newest ones, oldest first; nil if the replica that
// answered had not got p yet.
func (l *Log) chunk(ctx context.Context, c *conv, start, p uint64, need int) ([]rawMsg, error) {
	batch := 2*need + 8
	var out []rawMsg
	for {
		msgs, err := l.directBatch(ctx, l.opts.stream, getRequest{Seq: start, NextFor: c.subject, Batch: batch})
		if err != nil {
			return nil, err
		}
		n := 0
		for n < len(msgs) && msgs[n].seq <= p {
			if (n == 0 && len(out) > 0 && prevSeq(msgs[0].data) != out[len(out)-1].seq) ||
				(n > 0 && prevSeq(msgs[n].data) != msgs[n-1].seq) {
				return nil, nil // a hole: not to be trusted
			}
			n++
		}
		out = append(out, msgs[:n]...)
		if len(out) > need {
			out = out[len(out)-need:]
		}
		switch {
		case n > 0 && msgs[n-1].seq == p:
			return out, nil
		case n < len(msgs) || len(msgs) < batch:
			return nil, nil // past p without p, or the replica ended before it
		}
		start = msgs[n-1].seq + 1 // the batch filled up before p: read on
	}
}

// newestBelow is the seq of c's newest message before before (0: none;
// before == 0: the newest of all).
func (l *Log) newestBelow(ctx context.Context, c *conv, before, head uint64) (uint64, error) {
	if before == 0 || before > head {
		// What this node knows, or a replica's newest if that is newer.
		m, err := l.directGet(ctx, l.opts.stream, getRequest{LastFor: c.subject})
		if err == nil && m.seq > head && (before == 0 || m.seq < before) {
			return m.seq, nil
		}
		return head, nil
	}
	// Usually before is a message of the conversation (the oldest one a
	// client has), and its prev_seq is the answer.
	m, err := l.getSeq(ctx, before, true)
	if err == nil && m.subject == c.subject {
		return prevSeq(m.data), nil
	}
	if err != nil && !errors.Is(err, errNotFound) {
		return 0, err
	}
	msgs, err := l.directBatch(ctx, l.opts.stream, getRequest{MultiLast: []string{c.subject}, UpToSeq: before - 1})
	if err != nil {
		return 0, err
	}
	if len(msgs) == 0 {
		return 0, nil
	}
	return msgs[0].seq, nil
}

// Last returns the newest message of conv, or ok == false.
func (l *Log) Last(convID string) (rec store.Record, ok bool, err error) {
	err = l.read(func() error {
		c, head, err := l.known(convID)
		if err != nil {
			return err
		}
		seq, err := l.newestBelow(l.ctx, c, 0, head)
		if err != nil || seq == 0 {
			rec, ok = store.Record{}, false
			return err
		}
		rec, ok, err = l.get(c, seq)
		return err
	})
	return rec, ok, err
}

// Get returns the message conv#seq, or ok == false. A seq that a replica
// does not have is asked of the leader, so a message acknowledged through
// another node a moment ago is found.
func (l *Log) Get(convID string, seq uint64) (rec store.Record, ok bool, err error) {
	err = l.read(func() error {
		c, _, err := l.known(convID)
		if err != nil {
			return err
		}
		rec, ok, err = l.get(c, seq)
		return err
	})
	return rec, ok, err
}

func (l *Log) get(c *conv, seq uint64) (store.Record, bool, error) {
	if seq == 0 {
		return store.Record{}, false, nil
	}
	m, err := l.getSeq(l.ctx, seq, true)
	if errors.Is(err, errNotFound) {
		return store.Record{}, false, nil
	}
	if err != nil {
		return store.Record{}, false, err
	}
	if m.subject != c.subject {
		return store.Record{}, false, nil
	}
	recs, err := l.records(l.ctx, c.id, []rawMsg{m})
	if err != nil {
		return store.Record{}, false, err
	}
	return recs[0], true, nil
}

// Count calls keep for the messages of conv with seq > after, oldest
// first, and counts those it accepts, stopping at max.
func (l *Log) Count(convID string, after uint64, max int, keep func(data []byte) bool) (n int, err error) {
	err = l.read(func() error {
		c, head, err := l.known(convID)
		if err != nil {
			return err
		}
		n, err = store.CountPages(after, max, keep, func(after uint64) ([]store.Record, bool, error) {
			return l.forward(l.ctx, c, after, 0, head, 256)
		})
		return err
	})
	return n, err
}

// Dedup looks up where an accepted (sender, client_message_id) went: the
// dedup bucket holds an entry for every acknowledged message.
func (l *Log) Dedup(sender, clientMsgID string) (rec store.DedupRecord, ok bool, err error) {
	err = l.read(func() error {
		ctx, cancel := context.WithTimeout(l.ctx, l.opts.timeout)
		defer cancel()
		rec, ok, err = l.dedupGet(ctx, dedupKey(sender, clientMsgID))
		return err
	})
	return rec, ok, err
}
