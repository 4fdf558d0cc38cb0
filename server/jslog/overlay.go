package jslog

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
	"github.com/parleychat/parley/server/store"
)

// patch is what edits and deletes did to one post. Stream messages are
// immutable, so reads apply it to the stored post. Applying a change is
// idempotent and, but for edited_at on a tombstone, independent of order,
// so that any node may apply any change again at any time: the newest edit
// gives the body, and the first delete makes a tombstone that no edit
// after it changes (as in the single-node store).
type patch struct {
	EditSeq   uint64 `json:"e,omitempty"` // seq of the newest edit applied
	Body      string `json:"b,omitempty"` // that edit's body
	EditedAt  int64  `json:"t,omitempty"` // that edit's sent_at, Unix nanoseconds
	DeleteSeq uint64 `json:"d,omitempty"` // seq of the first delete
}

// apply folds the change at seq into p and reports whether p changed.
func (p *patch) apply(seq uint64, ev *parleyv1.Message) bool {
	switch ev.GetKind() {
	case parleyv1.MessageKind_MESSAGE_KIND_EDIT:
		if seq <= p.EditSeq || (p.DeleteSeq != 0 && seq > p.DeleteSeq) {
			return false
		}
		p.EditSeq, p.Body, p.EditedAt = seq, ev.GetBody(), ev.GetSentAt().AsTime().UnixNano()
		return true
	case parleyv1.MessageKind_MESSAGE_KIND_DELETE:
		if p.DeleteSeq != 0 && p.DeleteSeq <= seq {
			return false
		}
		p.DeleteSeq = seq
		return true
	}
	return false
}

// render shows post as p leaves it.
func (p *patch) render(post *parleyv1.Message) {
	if p.EditSeq != 0 && (p.DeleteSeq == 0 || p.EditSeq < p.DeleteSeq) {
		post.Body = p.Body
		post.EditedAt = timestamppb.New(time.Unix(0, p.EditedAt))
	}
	if p.DeleteSeq != 0 {
		post.Body, post.Attachments, post.Deleted = "", nil, true
	}
}

// overlayKey is the overlay bucket's key for conv#seq. KV keys may not
// hold ':', and conversation ids hold nothing else a key may not, so ':'
// becomes '.', which keeps the kind, the names and the seq apart.
func overlayKey(conv string, seq uint64) string {
	return strings.ReplaceAll(conv, ":", ".") + "." + strconv.FormatUint(seq, 10)
}

func (l *Log) overlaySubject(conv string, seq uint64) string {
	return "$KV." + l.opts.stream + "_EDITS." + overlayKey(conv, seq)
}

// applyChange folds the edit or delete ev, stored at conv#seq, into the
// overlay of its target post, with a compare-and-set so that concurrent
// writers lose nothing. A change of a missing post, of something that is
// not a post, or by someone other than its sender changes nothing.
func (l *Log) applyChange(ctx context.Context, conv string, seq uint64, ev *parleyv1.Message) (bool, error) {
	target, err := l.getSeq(ctx, ev.GetTargetSeq(), true)
	if errors.Is(err, errNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	var post parleyv1.Message
	if target.subject != l.msgPrefix+conv || proto.Unmarshal(target.data, &post) != nil ||
		(post.GetKind() != parleyv1.MessageKind_MESSAGE_KIND_POST && post.GetKind() != parleyv1.MessageKind_MESSAGE_KIND_UNSPECIFIED) ||
		post.GetSenderId() != ev.GetSenderId() {
		return false, nil
	}
	key := overlayKey(conv, ev.GetTargetSeq())
	for {
		var p patch
		var rev uint64
		e, err := l.edits.Get(ctx, key)
		switch {
		case err == nil:
			if err := json.Unmarshal(e.Value(), &p); err != nil {
				return false, fmt.Errorf("jslog: overlay %s: %w", key, err)
			}
			rev = e.Revision()
		case !errors.Is(err, jetstream.ErrKeyNotFound):
			return false, unavailable("jslog: overlay "+key, err)
		}
		if !p.apply(seq, ev) {
			return false, nil
		}
		data, err := json.Marshal(&p)
		if err != nil {
			return false, err
		}
		if rev == 0 {
			_, err = l.edits.Create(ctx, key, data)
		} else {
			_, err = l.edits.Update(ctx, key, data, rev)
		}
		switch {
		case err == nil:
			return true, nil
		case isWrongLast(err):
			// Someone else wrote it first (or this replica was behind):
			// read it again and fold the change into theirs.
			if ctx.Err() != nil {
				return false, unavailable("jslog: overlay "+key, ctx.Err())
			}
			continue
		default:
			return false, unavailable("jslog: overlay "+key, err)
		}
	}
}

// overlays returns the patches of conv's posts at seqs, in one direct get
// of the overlay bucket per 256 seqs.
func (l *Log) overlays(ctx context.Context, conv string, seqs []uint64) (map[uint64]*patch, error) {
	var out map[uint64]*patch
	for len(seqs) > 0 {
		n := min(len(seqs), 256)
		subjects := make([]string, n)
		for i, s := range seqs[:n] {
			subjects[i] = l.overlaySubject(conv, s)
		}
		seqs = seqs[n:]
		msgs, err := l.directBatch(ctx, l.editsStream, getRequest{MultiLast: subjects})
		if err != nil {
			return nil, fmt.Errorf("jslog: overlays of %s: %w", conv, err)
		}
		for _, m := range msgs {
			i := strings.LastIndexByte(m.subject, '.')
			seq, err := strconv.ParseUint(m.subject[i+1:], 10, 64)
			if err != nil || len(m.data) == 0 {
				continue // a deleted key, or not one of ours
			}
			p := &patch{}
			if err := json.Unmarshal(m.data, p); err != nil {
				return nil, fmt.Errorf("jslog: overlay %s: %w", m.subject, err)
			}
			if out == nil {
				out = make(map[uint64]*patch)
			}
			out[seq] = p
		}
	}
	return out, nil
}

// dedupKey is the dedup bucket's key for (sender, client_message_id):
// client ids may hold characters keys may not, so the pair is hashed.
func dedupKey(sender, clientMsgID string) string {
	h := sha256.Sum256([]byte(sender + "\x00" + clientMsgID))
	return hex.EncodeToString(h[:])
}

// dedupGet looks up where an accepted (sender, client_message_id) went.
func (l *Log) dedupGet(ctx context.Context, key string) (store.DedupRecord, bool, error) {
	var e jetstream.KeyValueEntry
	err := l.retry(ctx, func(ctx context.Context) error {
		var err error
		e, err = l.dedup.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil
		}
		return err
	})
	if err == nil && e == nil {
		return store.DedupRecord{}, false, nil
	}
	if err != nil {
		return store.DedupRecord{}, false, unavailable("jslog: dedup lookup", err)
	}
	seqText, conv, ok := strings.Cut(string(e.Value()), " ")
	seq, err := strconv.ParseUint(seqText, 10, 64)
	if !ok || err != nil {
		return store.DedupRecord{}, false, fmt.Errorf("jslog: dedup entry %s is malformed: %q", key, e.Value())
	}
	return store.DedupRecord{Conv: conv, Seq: seq}, true, nil
}

// ensureDedup records that key went to conv#seq unless it already went
// somewhere: the first message stored under a key keeps it. check looks
// first, which is cheaper than a write when the entry is usually there.
func (l *Log) ensureDedup(ctx context.Context, key, conv string, seq uint64, check bool) (bool, error) {
	if check {
		if _, ok, err := l.dedupGet(ctx, key); err != nil || ok {
			return false, err
		}
	}
	_, err := l.dedup.Create(ctx, key, []byte(strconv.FormatUint(seq, 10)+" "+conv))
	switch {
	case err == nil:
		return true, nil
	case isWrongLast(err):
		return false, nil
	}
	return false, unavailable("jslog: dedup entry", err)
}

// startRepairer joins the shared durable consumer that goes over every
// message once more, whichever node takes it.
func (l *Log) startRepairer(ctx context.Context) error {
	cons, err := l.stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:       l.opts.stream + "_REPAIR",
		Description:   "Parley: dedup entries and edit overlays of every message",
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       30 * time.Second,
		MaxAckPending: 1024,
		FilterSubject: l.msgPrefix + ">",
	})
	if err != nil {
		return unavailable("jslog: create repairer", err)
	}
	l.repair, err = cons.Consume(l.repairOne,
		jetstream.PullExpiry(5*time.Second),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			l.opts.logger.Debug("jslog: repairer", "err", err)
		}))
	if err != nil {
		return unavailable("jslog: start repairer", err)
	}
	return nil
}

// repairOne makes sure one message has its dedup entry and, for an edit or
// a delete, its overlay. Both are idempotent, so a message taken twice
// (after a node died holding it) does no harm.
func (l *Log) repairOne(m jetstream.Msg) {
	meta, err := m.Metadata()
	if err != nil {
		_ = m.Term()
		return
	}
	var msg parleyv1.Message
	if err := proto.Unmarshal(m.Data(), &msg); err != nil {
		l.opts.logger.Error("jslog: undecodable message in the stream", "subject", m.Subject(), "seq", meta.Sequence.Stream, "err", err)
		_ = m.Term()
		return
	}
	conv, seq := strings.TrimPrefix(m.Subject(), l.msgPrefix), meta.Sequence.Stream
	ctx, cancel := context.WithTimeout(l.ctx, l.opts.timeout)
	defer cancel()
	var wrote bool
	if msg.GetClientMessageId() != "" {
		wrote, err = l.ensureDedup(ctx, dedupKey(msg.GetSenderId(), msg.GetClientMessageId()), conv, seq, true)
	}
	if err == nil && isChange(&msg) {
		var changed bool
		changed, err = l.applyChange(ctx, conv, seq, &msg)
		wrote = wrote || changed
	}
	if err != nil {
		l.opts.logger.Debug("jslog: repair failed; will retry", "conv", conv, "seq", seq, "err", err)
		_ = m.NakWithDelay(time.Second)
		return
	}
	if wrote {
		l.repaired.Add(1)
	}
	_ = m.Ack()
}
