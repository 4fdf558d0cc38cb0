package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The journal is the ack path. Appends are group-committed to a bucket of
// their own in a file of their own (JournalFileName): each commit is one
// value, the whole batch, keyed by the journal id of its last message (ids
// only grow), so a commit writes its bytes and a page or two at the end of
// one small B+tree whatever the conversations are, and costs one Put
// however many messages it holds. Writing the same messages straight
// into per-conversation buckets and the dedup index dirties pages all over
// the file (measured on the 2-core test box: ~7 ms per commit of 120
// messages over 100 conversations, against ~0.7 ms for the journal).
//
// The writer goroutine then indexes journaled batches into the main file in
// large transactions, where many messages share each page, and only after
// that commit is durable may the journal drop them. Until then the messages
// live in memory too (pending) and every read merges them in, so a message
// is readable from the moment its Append is acknowledged. Open replays
// whatever the journal still holds into the index; replay is idempotent
// because the journal is always a suffix of the index's history.

// JournalFileName is the name of the journal's bbolt file inside the data
// directory.
const JournalFileName = "journal.db"

// bucketBatches holds the journal: key the big-endian journal id of a
// batch's last message, value the batch (encodeBatch).
var bucketBatches = []byte("batches")

// bucketJournal is the journal as earlier versions wrote it, one message
// per key (journal id -> appendEntry's layout). Open replays what it still holds
// and deletes it; nothing writes it any more.
var bucketJournal = []byte("journal")

// journaled is an Entry with its journal id.
type journaled struct {
	jid uint64
	e   Entry
}

// appendEntry appends e laid out as uvarint seq, target, then the lengths
// and bytes of conv, sender and client message id, then the data.
func appendEntry(b []byte, e *Entry) []byte {
	b = binary.AppendUvarint(b, e.Seq)
	b = binary.AppendUvarint(b, e.Target)
	for _, s := range []string{e.Conv, e.Sender, e.ClientMsgID} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	return append(b, e.Data...)
}

var errBadJournal = errors.New("store: malformed journal entry")

// decodeEntry is appendEntry's inverse. The returned Entry does not alias b.
func decodeEntry(b []byte) (Entry, error) {
	var e Entry
	var n int
	if e.Seq, n = binary.Uvarint(b); n <= 0 {
		return e, errBadJournal
	}
	b = b[n:]
	if e.Target, n = binary.Uvarint(b); n <= 0 {
		return e, errBadJournal
	}
	b = b[n:]
	var fields [3]string
	for i := range fields {
		l, n := binary.Uvarint(b)
		if n <= 0 || l > uint64(len(b)-n) {
			return e, errBadJournal
		}
		fields[i] = string(b[n : n+int(l)])
		b = b[n+int(l):]
	}
	e.Conv, e.Sender, e.ClientMsgID = fields[0], fields[1], fields[2]
	e.Data = slices.Clone(b)
	return e, nil
}

func jidKey(jid uint64) []byte { return seqKey(jid) }

// encodeBatch writes a journal commit's value over buf: uvarint count,
// then each entry as uvarint length and appendEntry's bytes.
func encodeBatch(buf []byte, batch []job) []byte {
	buf = binary.AppendUvarint(buf[:0], uint64(len(batch)))
	var entry []byte
	for i := range batch {
		entry = appendEntry(entry[:0], batch[i].entry)
		buf = binary.AppendUvarint(buf, uint64(len(entry)))
		buf = append(buf, entry...)
	}
	return buf
}

// decodeBatch is encodeBatch's inverse: the entries of the batch whose last
// message has journal id last. They do not alias b.
func decodeBatch(b []byte, last uint64) ([]journaled, error) {
	n, w := binary.Uvarint(b)
	if w <= 0 || n == 0 || n > uint64(len(b)) || n > last {
		return nil, errBadJournal
	}
	b = b[w:]
	out := make([]journaled, n)
	for i := range out {
		l, w := binary.Uvarint(b)
		if w <= 0 || l > uint64(len(b)-w) {
			return nil, errBadJournal
		}
		e, err := decodeEntry(b[w : w+int(l)])
		if err != nil {
			return nil, err
		}
		out[i] = journaled{jid: last - n + 1 + uint64(i), e: e}
		b = b[w+int(l):]
	}
	if len(b) != 0 {
		return nil, errBadJournal
	}
	return out, nil
}

// journaler is the only goroutine that writes the journal file. It commits
// appends in groups, makes them readable (pending), acknowledges them and
// hands them to the writer for indexing, in journal order. It exits when
// appends is closed and drained, closing index behind it.
func (s *Store) journaler(last uint64, opened time.Time) {
	defer close(s.jdone)
	defer close(s.index)
	var timer *time.Timer
	var dropped uint64 // journal ids up to here are deleted
	batch := make([]job, 0, s.opts.batchSize)
	// carry is what is journaled but not yet handed to the writer: while
	// the writer is busy, batches coalesce here instead of filling index
	// with many small ones.
	var carry []journaled
	var value []byte  // the batch's encoding, reused: bbolt needs it only until the commit
	lastEnd := opened // when the last commit ended; opening counts as one
	for {
		var j job
		var ok bool
		if carry != nil {
			select {
			case j, ok = <-s.appends:
			case s.index <- carry:
				carry = nil
				continue
			}
		} else {
			j, ok = <-s.appends
		}
		if !ok {
			if carry != nil {
				s.index <- carry
			}
			return
		}
		batch = append(batch[:0], j)
		var deadline <-chan time.Time
		// Wait for more only while appends come faster than one a flush
		// interval: a message after a quiet spell is committed at once.
		// The wait counts from when the first message came, so one that
		// queued through the last commit goes with the next at once.
		if now := s.opts.now(); s.opts.flushInterval > 0 && now.Sub(lastEnd) < s.opts.flushInterval {
			if wait := j.at.Add(s.opts.flushInterval).Sub(now); wait > 0 {
				if timer == nil {
					timer = time.NewTimer(wait)
				} else {
					timer.Reset(wait)
				}
				deadline = timer.C
			}
		}
		closed := false
	fill:
		for len(batch) < s.opts.batchSize {
			var next job
			if deadline == nil {
				select {
				case next, ok = <-s.appends:
				default:
					break fill
				}
			} else {
				select {
				case next, ok = <-s.appends:
				case <-deadline:
					break fill
				}
			}
			if !ok {
				closed = true
				break
			}
			batch = append(batch, next)
		}
		if timer != nil {
			timer.Stop() // since Go 1.23 a stopped timer delivers no stale tick
		}

		out := make([]journaled, len(batch))
		drop := s.indexed.Load()
		start := time.Now()
		var write time.Duration
		for i := range batch {
			out[i] = journaled{jid: last + 1 + uint64(i), e: *batch[i].entry}
		}
		value = encodeBatch(value, batch)
		err := s.jdb.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketBatches)
			b.FillPercent = appendFill
			if err := b.Put(jidKey(last+uint64(len(batch))), value); err != nil {
				return fmt.Errorf("journal %d messages: %w", len(batch), err)
			}
			if drop > dropped {
				if err := dropJournal(b, drop); err != nil {
					return err
				}
			}
			tx.OnCommit(func() { st := tx.Stats(); write = st.GetWriteTime() })
			return nil
		})
		lastEnd = s.opts.now()
		if s.opts.observe != nil {
			s.opts.observe(len(batch), time.Since(start), write, err)
		}
		if err != nil {
			s.opts.logger.Error("store: journal commit failed", "messages", len(batch), "err", err)
			err = fmt.Errorf("store: commit: %w", err)
			for _, b := range batch {
				b.onDone(err)
			}
		} else {
			last += uint64(len(batch))
			dropped = max(dropped, drop)
			s.pend.add(out)
			for _, b := range batch {
				b.onDone(nil)
			}
			carry = append(carry, out...)
			if len(carry) >= maxBacklog {
				s.index <- carry // the writer is far behind: backpressure
				carry = nil
			} else {
				select {
				case s.index <- carry:
					carry = nil
				default:
				}
			}
		}
		clear(batch)
		if closed {
			if carry != nil {
				s.index <- carry
			}
			return
		}
	}
}

// dropJournal deletes the journal's batches whose messages all have ids up
// to upto. A batch only partly indexed stays whole: replay indexes the
// part that is again, which changes nothing.
func dropJournal(b *bolt.Bucket, upto uint64) error {
	var keys [][]byte
	c := b.Cursor()
	for k, _ := c.First(); k != nil && binary.BigEndian.Uint64(k) <= upto; k, _ = c.Next() {
		keys = append(keys, k)
	}
	for _, k := range keys {
		if err := b.Delete(k); err != nil {
			return fmt.Errorf("journal: drop: %w", err)
		}
	}
	return nil
}

// replayJournal indexes whatever the journal holds (a previous process
// stopped before indexing it) and empties the journal. It returns the
// highest journal id seen, from which new ids continue. A journal in the
// one-message-per-key form of earlier versions is replayed first: its ids
// are all below those of any batch.
func (s *Store) replayJournal() (last uint64, err error) {
	var entries []journaled
	err = s.jdb.View(func(tx *bolt.Tx) error {
		if old := tx.Bucket(bucketJournal); old != nil {
			err := old.ForEach(func(k, v []byte) error {
				e, err := decodeEntry(v)
				if err != nil {
					return fmt.Errorf("journal entry %d: %w", binary.BigEndian.Uint64(k), err)
				}
				entries = append(entries, journaled{jid: binary.BigEndian.Uint64(k), e: e})
				return nil
			})
			if err != nil {
				return err
			}
		}
		return tx.Bucket(bucketBatches).ForEach(func(k, v []byte) error {
			batch, err := decodeBatch(v, binary.BigEndian.Uint64(k))
			if err != nil {
				return fmt.Errorf("journal batch ending at %d: %w", binary.BigEndian.Uint64(k), err)
			}
			entries = append(entries, batch...)
			return nil
		})
	})
	if err != nil || len(entries) == 0 {
		return 0, err
	}
	last = entries[len(entries)-1].jid
	for chunk := range slices.Chunk(entries, indexChunk) {
		if err := s.db.Update(func(tx *bolt.Tx) error { return s.indexEntries(tx, chunk) }); err != nil {
			return 0, fmt.Errorf("replay journal: %w", err)
		}
	}
	err = s.jdb.Update(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketJournal) != nil {
			if err := tx.DeleteBucket(bucketJournal); err != nil {
				return err
			}
		}
		return dropJournal(tx.Bucket(bucketBatches), last)
	})
	return last, err
}

// indexChunk caps the messages indexed in one transaction of the writer,
// so that metadata updates and receipts queued behind it wait at most one
// such commit: about 70 ms with the log saturated at 250,000 appends/s on
// the 2-core test box. Bigger chunks share more pages per message (the
// dedup index's keys are random): 8,192 gave the log benchmark 215,000
// appends/s, 16,384 gave 233,000-255,000.
const indexChunk = 16384

// indexEntries writes journaled messages into their conversations'
// buckets, applies edits and deletes to their targets and records the dedup
// keys, in journal order.
func (s *Store) indexEntries(tx *bolt.Tx, entries []journaled) error {
	// Visit the entries a conversation at a time (journal order within
	// each, so an edit follows its target) and the dedup keys in key
	// order: each B+tree is then walked once, left to right, instead of
	// being entered from the root for every message of an interleaved
	// batch.
	order := make([]*journaled, len(entries))
	for i := range entries {
		order[i] = &entries[i]
	}
	slices.SortStableFunc(order, func(a, b *journaled) int { return strings.Compare(a.e.Conv, b.e.Conv) })
	msgs := tx.Bucket(bucketMsgs)
	var conv *bolt.Bucket
	var convName string
	for i, j := range order {
		yieldEvery(i)
		e := &j.e
		if conv == nil || convName != e.Conv {
			b, err := msgs.CreateBucketIfNotExists([]byte(e.Conv))
			if err != nil {
				return fmt.Errorf("conversation %q: %w", e.Conv, err)
			}
			// Seqs only grow: fill pages instead of splitting them in half.
			b.FillPercent = appendFill
			conv, convName = b, e.Conv
		}
		if err := conv.Put(seqKey(e.Seq), e.Data); err != nil {
			return fmt.Errorf("message %s#%d: %w", e.Conv, e.Seq, err)
		}
		if e.Target != 0 && s.opts.rewrite != nil {
			if old := conv.Get(seqKey(e.Target)); old != nil {
				changed, err := s.opts.rewrite(slices.Clone(old), e.Data)
				if err != nil {
					// Never stall the index on one bad message: the edit
					// event itself is stored above.
					s.opts.logger.Error("store: rewrite failed", "conv", e.Conv, "seq", e.Seq, "target", e.Target, "err", err)
				} else if changed != nil {
					if err := conv.Put(seqKey(e.Target), changed); err != nil {
						return fmt.Errorf("rewrite %s#%d: %w", e.Conv, e.Target, err)
					}
				}
			}
		}
	}
	type dedupPut struct{ k, v []byte }
	puts := make([]dedupPut, 0, len(entries))
	for i := range entries {
		if e := &entries[i].e; e.ClientMsgID != "" {
			puts = append(puts, dedupPut{dedupKey(e.Sender, e.ClientMsgID), dedupValue(e.Conv, e.Seq)})
		}
	}
	slices.SortStableFunc(puts, func(a, b dedupPut) int { return bytes.Compare(a.k, b.k) })
	dedup := tx.Bucket(bucketDedup)
	for i, p := range puts {
		yieldEvery(i)
		if err := dedup.Put(p.k, p.v); err != nil {
			return fmt.Errorf("dedup %q: %w", p.k, err)
		}
	}
	return nil
}

// yieldEvery lets other goroutines run every 64th step of a long index
// commit. The index is off the ack and delivery paths; a commit of 16,384
// messages holds a processor for tens of milliseconds, and without yields
// the sends, deliveries and journal commits that become runnable meanwhile
// wait behind it (the delivery and ack p99 of a busy server).
func yieldEvery(i int) {
	if i&63 == 63 {
		runtime.Gosched()
	}
}

// appendFill is the fill percent of buckets whose keys only grow (the
// journal, a conversation's messages): bbolt splits a full page at this
// fraction, and the default of one half would leave every page of an
// append-only tree half empty, twice the pages to write and to read.
const appendFill = 0.95

// pending holds the journaled messages that the index does not hold yet.
// The journaler adds a batch before acknowledging it; the writer removes
// entries only after the index commit that holds them. A reader therefore
// snapshots pending first and reads the index second: whatever left pending
// in between is in the index by then.
type pending struct {
	mu    sync.RWMutex
	convs map[string]*pendingConv
	dedup map[senderMsg]pendingDedup
	// filter learns each dedup key as it is added, before the index can
	// hold it; set once by Open before any append.
	filter *dedupFilter
}

// senderMsg is a dedup key in memory: no bytes to build per lookup.
type senderMsg struct{ sender, id string }

type pendingConv struct {
	conv  string
	recs  []pendingRec  // ascending seq
	edits []pendingEdit // journal order
	// dropping is the last journal id of the drop that last listed this
	// conversation: a drop visits each conversation once without a set.
	dropping uint64
}

type pendingRec struct {
	seq, jid uint64
	data     []byte
}

type pendingEdit struct {
	target, jid uint64
	event       []byte
}

type pendingDedup struct {
	rec DedupRecord
	jid uint64
}

func (p *pending) add(batch []journaled) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.convs == nil {
		p.convs = make(map[string]*pendingConv)
		p.dedup = make(map[senderMsg]pendingDedup)
	}
	for i := range batch {
		e := &batch[i].e
		pc := p.convs[e.Conv]
		if pc == nil {
			pc = &pendingConv{conv: e.Conv}
			p.convs[e.Conv] = pc
		}
		r := pendingRec{seq: e.Seq, jid: batch[i].jid, data: e.Data}
		// Appends of one conversation may reach the journal slightly out of
		// seq order (the router appends outside its locks).
		at := len(pc.recs)
		for at > 0 && pc.recs[at-1].seq > r.seq {
			at--
		}
		pc.recs = slices.Insert(pc.recs, at, r)
		if e.Target != 0 {
			pc.edits = append(pc.edits, pendingEdit{target: e.Target, jid: batch[i].jid, event: e.Data})
		}
		if e.ClientMsgID != "" {
			p.filter.add(p.filter.hash(e.Sender, e.ClientMsgID))
			p.dedup[senderMsg{e.Sender, e.ClientMsgID}] = pendingDedup{rec: DedupRecord{Conv: e.Conv, Seq: e.Seq}, jid: batch[i].jid}
		}
	}
}

// drop forgets the entries of batch, which the index now holds.
func (p *pending) drop(batch []journaled) {
	if len(batch) == 0 {
		return
	}
	upto := batch[len(batch)-1].jid
	p.mu.Lock()
	defer p.mu.Unlock()
	var touched []*pendingConv
	for i := range batch {
		e := &batch[i].e
		if pc := p.convs[e.Conv]; pc != nil && pc.dropping != upto {
			pc.dropping = upto
			touched = append(touched, pc)
		}
		if e.ClientMsgID != "" {
			k := senderMsg{e.Sender, e.ClientMsgID}
			if d, ok := p.dedup[k]; ok && d.jid <= upto {
				delete(p.dedup, k)
			}
		}
	}
	for _, pc := range touched {
		pc.recs = slices.DeleteFunc(pc.recs, func(r pendingRec) bool { return r.jid <= upto })
		pc.edits = slices.DeleteFunc(pc.edits, func(e pendingEdit) bool { return e.jid <= upto })
		if len(pc.recs) == 0 && len(pc.edits) == 0 {
			delete(p.convs, pc.conv)
		}
	}
}

// window returns copies of conv's pending records with after < seq <
// before (before == 0: no bound), at most limit of them: the oldest, or
// with newest the newest, ascending either way. It also returns conv's
// pending edits (few: edits are rare next to posts).
func (p *pending) window(conv string, after, before uint64, limit int, newest bool) ([]pendingRec, []pendingEdit) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	pc := p.convs[conv]
	if pc == nil {
		return nil, nil
	}
	lo, _ := sort.Find(len(pc.recs), func(i int) int { return cmpSeq(after+1, pc.recs[i].seq) })
	hi := len(pc.recs)
	if before != 0 {
		hi, _ = sort.Find(len(pc.recs), func(i int) int { return cmpSeq(before, pc.recs[i].seq) })
	}
	if hi-lo > limit {
		if newest {
			lo = hi - limit
		} else {
			hi = lo + limit
		}
	}
	var recs []pendingRec
	if lo < hi {
		recs = slices.Clone(pc.recs[lo:hi])
	}
	return recs, slices.Clone(pc.edits)
}

// hasEdits reports whether conv has pending edits.
func (p *pending) hasEdits(conv string) bool {
	p.mu.RLock()
	defer p.mu.RUnlock()
	pc := p.convs[conv]
	return pc != nil && len(pc.edits) > 0
}

// head is the newest pending seq of conv, 0 if none.
func (p *pending) head(conv string) uint64 {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if pc := p.convs[conv]; pc != nil && len(pc.recs) > 0 {
		return pc.recs[len(pc.recs)-1].seq
	}
	return 0
}

func (p *pending) lookupDedup(sender, id string) (DedupRecord, bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	d, ok := p.dedup[senderMsg{sender, id}]
	return d.rec, ok
}

// size is the number of pending messages, for tests and metrics.
func (p *pending) size() int {
	p.mu.RLock()
	defer p.mu.RUnlock()
	n := 0
	for _, pc := range p.convs {
		n += len(pc.recs)
	}
	return n
}

// merge returns recs (from the index, ascending) and prs (pending,
// ascending) as one ascending list, once each.
func merge(recs []Record, prs []pendingRec) []Record {
	if len(prs) == 0 {
		return recs
	}
	out := make([]Record, 0, len(recs)+len(prs))
	i, j := 0, 0
	for i < len(recs) || j < len(prs) {
		switch {
		case j == len(prs) || (i < len(recs) && recs[i].Seq < prs[j].seq):
			out = append(out, recs[i])
			i++
		case i == len(recs) || prs[j].seq < recs[i].Seq:
			out = append(out, Record{Seq: prs[j].seq, Data: slices.Clone(prs[j].data)})
			j++
		default: // in both: indexed since the snapshot
			out = append(out, recs[i])
			i, j = i+1, j+1
		}
	}
	return out
}

func cmpSeq(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// applyEdits rewrites the records that pending edits target, in journal
// order. Re-applying an edit the index already holds changes nothing, since
// the pending edits are always a suffix of the conversation's edits.
func (s *Store) applyEdits(recs []Record, edits []pendingEdit) {
	if s.opts.rewrite == nil {
		return
	}
	for _, e := range edits {
		i, found := sort.Find(len(recs), func(i int) int { return cmpSeq(e.target, recs[i].Seq) })
		if !found {
			continue
		}
		changed, err := s.opts.rewrite(slices.Clone(recs[i].Data), e.event)
		if err == nil && changed != nil {
			recs[i].Data = changed
		}
	}
}
