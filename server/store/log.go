package store

import (
	"bytes"
	"encoding/binary"
	"math"
	"slices"

	bolt "go.etcd.io/bbolt"
)

// Entry is one message to append to a conversation's log.
type Entry struct {
	// Conv is the conversation id.
	Conv string
	// Seq is the message's seq; the router assigns it and it only grows
	// within Conv.
	Seq uint64
	// Sender and ClientMsgID form the dedup key. An empty ClientMsgID is not
	// indexed.
	Sender      string
	ClientMsgID string
	// Data is the encoded parley.v1.Message, stored as is and sent as is on
	// replay. The store keeps the slice until the commit; callers must not
	// modify it.
	Data []byte
	// Target, when not 0, is the seq of an earlier message of Conv that
	// this one (an edit or a delete) changes, as the store's RewriteFunc
	// says.
	Target uint64
}

// Record is one stored message.
type Record struct {
	Seq  uint64
	Data []byte // the encoded parley.v1.Message; owned by the caller
}

// DedupRecord is where an accepted (sender, client_message_id) went.
type DedupRecord struct {
	Conv string
	Seq  uint64
}

// Append queues e for the next group commit and calls done once the batch
// holding it is durable in the journal (err == nil) or has failed; from
// then on every read sees e. done runs on the journaler goroutine: it must
// be quick and must not call back into the store's writing methods. Append
// blocks only while the journal's queue is full; after Close it calls
// done(ErrClosed) at once.
func (s *Store) Append(e Entry, done func(error)) {
	if err := s.enqueue(job{entry: &e, onDone: done, at: s.opts.now()}); err != nil {
		done(err)
	}
}

func seqKey(seq uint64) []byte {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], seq)
	return k[:]
}

// dedupKey joins sender and id with a NUL, which neither may contain.
func dedupKey(sender, id string) []byte {
	k := make([]byte, 0, len(sender)+1+len(id))
	k = append(k, sender...)
	k = append(k, 0)
	return append(k, id...)
}

func dedupValue(conv string, seq uint64) []byte {
	v := make([]byte, 8, 8+len(conv))
	binary.BigEndian.PutUint64(v, seq)
	return append(v, conv...)
}

// Reads below take a snapshot of the pending (journaled, not yet indexed)
// messages first and read the index second; see pending.

// Head returns the newest committed seq of conv, 0 if it has none.
func (s *Store) Head(conv string) (uint64, error) {
	head := s.pend.head(conv)
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketMsgs).Bucket([]byte(conv))
		if b == nil {
			return nil
		}
		if k, _ := b.Cursor().Last(); k != nil {
			head = max(head, binary.BigEndian.Uint64(k))
		}
		return nil
	})
	return head, err
}

// Last returns the newest committed message of conv, or ok == false.
func (s *Store) Last(conv string) (rec Record, ok bool, err error) {
	recs, _, err := s.Before(conv, 0, 1)
	if err != nil || len(recs) == 0 {
		return Record{}, false, err
	}
	return recs[0], true, nil
}

// Range returns up to limit committed messages of conv with after < seq <=
// upto, oldest first (upto == 0 means no upper bound), and whether more lie
// beyond the last one returned within the bound.
func (s *Store) Range(conv string, after, upto uint64, limit int) (recs []Record, more bool, err error) {
	if after == ^uint64(0) {
		return nil, false, nil
	}
	var before uint64
	if upto != 0 {
		before = upto + 1
	}
	prs, edits := s.pend.window(conv, after, before, min(limit, math.MaxInt-1)+1, false)
	err = s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketMsgs).Bucket([]byte(conv))
		if b == nil {
			return nil
		}
		var a Arena
		recs = make([]Record, 0, min(max(limit, 0), 256))
		c := b.Cursor()
		for k, v := c.Seek(seqKey(after + 1)); k != nil; k, v = c.Next() {
			seq := binary.BigEndian.Uint64(k)
			if upto != 0 && seq > upto {
				return nil
			}
			if len(recs) == limit {
				more = true
				return nil
			}
			recs = append(recs, Record{Seq: seq, Data: a.Clone(v)})
		}
		return nil
	})
	if err != nil || len(prs)+len(edits) == 0 {
		return recs, more, err
	}
	recs = merge(recs, prs)
	if len(recs) > limit {
		recs, more = recs[:max(limit, 0)], true
	}
	s.applyEdits(recs, edits)
	return recs, more, nil
}

// Before returns up to limit committed messages of conv with seq < before
// (before == 0 means no bound: the newest page), oldest first, and whether
// older ones exist.
func (s *Store) Before(conv string, before uint64, limit int) (recs []Record, more bool, err error) {
	prs, edits := s.pend.window(conv, 0, before, min(limit, math.MaxInt-1)+1, true)
	err = s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketMsgs).Bucket([]byte(conv))
		if b == nil {
			return nil
		}
		c := b.Cursor()
		var k, v []byte
		if before == 0 {
			k, v = c.Last()
		} else {
			k, v = c.Seek(seqKey(before))
			if k == nil {
				k, v = c.Last()
			} else {
				k, v = c.Prev()
			}
		}
		for ; k != nil; k, v = c.Prev() {
			if len(recs) == limit {
				more = true
				break
			}
			recs = append(recs, Record{Seq: binary.BigEndian.Uint64(k), Data: bytes.Clone(v)})
		}
		slices.Reverse(recs)
		return nil
	})
	if err != nil || len(prs)+len(edits) == 0 {
		return recs, more, err
	}
	recs = merge(recs, prs)
	if len(recs) > limit {
		recs, more = recs[len(recs)-max(limit, 0):], true
	}
	s.applyEdits(recs, edits)
	return recs, more, nil
}

// Get returns the committed message conv#seq, or ok == false.
func (s *Store) Get(conv string, seq uint64) (rec Record, ok bool, err error) {
	if seq == 0 {
		return Record{}, false, nil
	}
	recs, _, err := s.Range(conv, seq-1, seq, 1)
	if err != nil || len(recs) == 0 {
		return Record{}, false, err
	}
	return recs[0], true, nil
}

// Count calls keep for the committed messages of conv with seq > after,
// oldest first, and counts those it accepts, stopping at max.
func (s *Store) Count(conv string, after uint64, max int, keep func(data []byte) bool) (int, error) {
	if after == ^uint64(0) {
		return 0, nil
	}
	if s.pend.head(conv) > after || s.pend.hasEdits(conv) {
		// Rare (a conversation written in the last moments): page through
		// the merged view.
		return CountPages(after, max, keep, func(after uint64) ([]Record, bool, error) { return s.Range(conv, after, 0, 256) })
	}
	n := 0
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketMsgs).Bucket([]byte(conv))
		if b == nil {
			return nil
		}
		c := b.Cursor()
		for k, v := c.Seek(seqKey(after + 1)); k != nil && n < max; k, v = c.Next() {
			if keep(v) {
				n++
			}
		}
		return nil
	})
	return n, err
}

// CountPages implements Count over a reader of forward pages: page returns
// the messages after a seq, oldest first, and whether more follow.
func CountPages(after uint64, max int, keep func(data []byte) bool, page func(after uint64) ([]Record, bool, error)) (int, error) {
	n := 0
	for n < max {
		recs, more, err := page(after)
		if err != nil {
			return n, err
		}
		for _, r := range recs {
			if n < max && keep(r.Data) {
				n++
			}
		}
		if !more || len(recs) == 0 {
			break
		}
		after = recs[len(recs)-1].Seq
	}
	return n, nil
}

// Dedup looks up where an accepted (sender, client_message_id) went.
func (s *Store) Dedup(sender, clientMsgID string) (rec DedupRecord, ok bool, err error) {
	// The filter holds every key pending holds as well as the index's, so
	// a new id (nearly every send) is told apart without either lookup.
	if f := s.pend.filter; !f.mayHold(f.hash(sender, clientMsgID)) {
		return DedupRecord{}, false, nil
	}
	if rec, ok := s.pend.lookupDedup(sender, clientMsgID); ok {
		return rec, true, nil
	}
	key := dedupKey(sender, clientMsgID)
	err = s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketDedup).Get(key)
		if len(v) < 8 {
			return nil
		}
		rec, ok = DedupRecord{Seq: binary.BigEndian.Uint64(v[:8]), Conv: string(v[8:])}, true
		return nil
	})
	return rec, ok, err
}

// Arena hands out byte slices from shared chunks, so that a page of
// messages costs a few allocations rather than one per message (replays
// read many pages). A chunk stays alive while any slice of it does. The
// zero value is ready; an Arena is for one goroutine.
type Arena struct{ buf []byte }

// arenaChunk is the size of an arena's chunks.
const arenaChunk = 4 << 10

// Alloc returns an empty slice with room for n bytes, which appending up
// to n bytes fills without touching any other slice of the arena.
func (a *Arena) Alloc(n int) []byte {
	if cap(a.buf)-len(a.buf) < n {
		a.buf = make([]byte, 0, max(arenaChunk, n))
	}
	start := len(a.buf)
	a.buf = a.buf[:start+n]
	return a.buf[start : start : start+n]
}

// Clone copies v into the arena.
func (a *Arena) Clone(v []byte) []byte { return append(a.Alloc(len(v)), v...) }
