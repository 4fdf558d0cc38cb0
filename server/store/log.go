package store

import (
	"bytes"
	"encoding/binary"
	"fmt"

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
	// Rewrite changes in the same transaction (edits and deletes). Rewrite
	// gets a copy of the stored bytes and returns the new ones, or nil to
	// leave the message as it is. It runs on the writer goroutine.
	Target  uint64
	Rewrite func(old []byte) ([]byte, error)
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
// holding it is durable (err == nil) or has failed. done runs on the writer
// goroutine: it must be quick and must not call back into the store's
// writing methods. Append blocks only while the writer's queue is full; after
// Close it calls done(ErrClosed) at once.
func (s *Store) Append(e Entry, done func(error)) {
	if err := s.enqueue(job{entry: &e, onDone: done}); err != nil {
		done(err)
	}
}

func commitBatch(tx *bolt.Tx, batch []job) error {
	msgs := tx.Bucket(bucketMsgs)
	dedup := tx.Bucket(bucketDedup)
	var conv *bolt.Bucket
	var convName string
	for i := range batch {
		j := &batch[i]
		if j.receipt != nil {
			r, err := putReceipt(tx, *j.receipt)
			if err != nil {
				return err
			}
			j.receiptOut = r
			continue
		}
		e := j.entry
		if conv == nil || convName != e.Conv {
			b, err := msgs.CreateBucketIfNotExists([]byte(e.Conv))
			if err != nil {
				return fmt.Errorf("conversation %q: %w", e.Conv, err)
			}
			conv, convName = b, e.Conv
		}
		if err := conv.Put(seqKey(e.Seq), e.Data); err != nil {
			return fmt.Errorf("message %s#%d: %w", e.Conv, e.Seq, err)
		}
		if e.Target != 0 && e.Rewrite != nil {
			if old := conv.Get(seqKey(e.Target)); old != nil {
				changed, err := e.Rewrite(bytes.Clone(old))
				if err != nil {
					return fmt.Errorf("rewrite %s#%d: %w", e.Conv, e.Target, err)
				}
				if changed != nil {
					if err := conv.Put(seqKey(e.Target), changed); err != nil {
						return fmt.Errorf("rewrite %s#%d: %w", e.Conv, e.Target, err)
					}
				}
			}
		}
		if e.ClientMsgID != "" {
			if err := dedup.Put(dedupKey(e.Sender, e.ClientMsgID), dedupValue(e.Conv, e.Seq)); err != nil {
				return fmt.Errorf("dedup %s/%s: %w", e.Sender, e.ClientMsgID, err)
			}
		}
	}
	return nil
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

// Head returns the newest committed seq of conv, 0 if it has none.
func (s *Store) Head(conv string) (uint64, error) {
	var head uint64
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketMsgs).Bucket([]byte(conv))
		if b == nil {
			return nil
		}
		if k, _ := b.Cursor().Last(); k != nil {
			head = binary.BigEndian.Uint64(k)
		}
		return nil
	})
	return head, err
}

// Last returns the newest committed message of conv, or ok == false.
func (s *Store) Last(conv string) (rec Record, ok bool, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketMsgs).Bucket([]byte(conv))
		if b == nil {
			return nil
		}
		if k, v := b.Cursor().Last(); k != nil {
			rec, ok = Record{Seq: binary.BigEndian.Uint64(k), Data: bytes.Clone(v)}, true
		}
		return nil
	})
	return rec, ok, err
}

// Range returns up to limit committed messages of conv with after < seq <=
// upto, oldest first (upto == 0 means no upper bound), and whether more lie
// beyond the last one returned within the bound.
func (s *Store) Range(conv string, after, upto uint64, limit int) (recs []Record, more bool, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketMsgs).Bucket([]byte(conv))
		if b == nil || after == ^uint64(0) {
			return nil
		}
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
			recs = append(recs, Record{Seq: seq, Data: bytes.Clone(v)})
		}
		return nil
	})
	return recs, more, err
}

// Before returns up to limit committed messages of conv with seq < before
// (before == 0 means no bound: the newest page), oldest first, and whether
// older ones exist.
func (s *Store) Before(conv string, before uint64, limit int) (recs []Record, more bool, err error) {
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
		for i, j := 0, len(recs)-1; i < j; i, j = i+1, j-1 {
			recs[i], recs[j] = recs[j], recs[i]
		}
		return nil
	})
	return recs, more, err
}

// Get returns the committed message conv#seq, or ok == false.
func (s *Store) Get(conv string, seq uint64) (rec Record, ok bool, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketMsgs).Bucket([]byte(conv))
		if b == nil {
			return nil
		}
		if v := b.Get(seqKey(seq)); v != nil {
			rec, ok = Record{Seq: seq, Data: bytes.Clone(v)}, true
		}
		return nil
	})
	return rec, ok, err
}

// Count calls keep for the committed messages of conv with seq > after,
// oldest first, and counts those it accepts, stopping at max.
func (s *Store) Count(conv string, after uint64, max int, keep func(data []byte) bool) (int, error) {
	n := 0
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketMsgs).Bucket([]byte(conv))
		if b == nil || after == ^uint64(0) {
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

// Dedup looks up where an accepted (sender, client_message_id) went.
func (s *Store) Dedup(sender, clientMsgID string) (rec DedupRecord, ok bool, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketDedup).Get(dedupKey(sender, clientMsgID))
		if len(v) < 8 {
			return nil
		}
		rec, ok = DedupRecord{Seq: binary.BigEndian.Uint64(v[:8]), Conv: string(v[8:])}, true
		return nil
	})
	return rec, ok, err
}
