package store

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Receipt is one member's positions in a conversation. Both only grow, and
// Read <= Delivered always holds.
type Receipt struct {
	Conv      string    `json:"-"`
	User      string    `json:"-"`
	Delivered uint64    `json:"delivered"`
	Read      uint64    `json:"read"`
	UpdatedAt time.Time `json:"updated_at"`
	// Changed reports, on a receipt returned by UpdateReceipt, whether the
	// update moved a position.
	Changed bool `json:"-"`
}

// ReceiptUpdate moves a member's positions forward; a lower value than the
// stored one changes nothing.
type ReceiptUpdate struct {
	Conv      string
	User      string
	Delivered uint64
	Read      uint64 // implies Delivered >= Read
	At        time.Time
}

// Apply moves r's positions forward to u's (a lower position changes
// nothing; a read position implies delivery up to it) and reports whether
// anything moved, setting UpdatedAt and Changed if so. Every store of
// receipts applies updates this way, so positions only grow.
func (r *Receipt) Apply(u ReceiptUpdate) bool {
	changed := false
	if u.Read > r.Read {
		r.Read, changed = u.Read, true
	}
	if d := max(u.Delivered, u.Read); d > r.Delivered {
		r.Delivered, changed = d, true
	}
	if changed {
		r.UpdatedAt, r.Changed = u.At.UTC(), true
	}
	return changed
}

// receiptKey is conv NUL user, so a cursor lists a conversation's receipts.
func receiptKey(conv, user string) []byte {
	k := make([]byte, 0, len(conv)+1+len(user))
	k = append(k, conv...)
	k = append(k, 0)
	return append(k, user...)
}

// UpdateReceipt queues u with the next group commit (receipts are frequent,
// and a transaction of their own each would cost an fsync each) and calls
// done with the stored receipt once it is durable. done runs on the writer
// goroutine and must be quick.
func (s *Store) UpdateReceipt(u ReceiptUpdate, done func(Receipt, error)) {
	if err := s.enqueue(job{receipt: &u, onReceipt: done}); err != nil {
		done(Receipt{}, err)
	}
}

func putReceipt(tx *bolt.Tx, u ReceiptUpdate) (Receipt, error) {
	b := tx.Bucket(bucketReceipts)
	k := receiptKey(u.Conv, u.User)
	r := Receipt{Conv: u.Conv, User: u.User}
	if v := b.Get(k); v != nil {
		if err := json.Unmarshal(v, &r); err != nil {
			return r, fmt.Errorf("receipt %s/%s: decode: %w", u.Conv, u.User, err)
		}
	}
	if !r.Apply(u) {
		return r, nil
	}
	v, err := json.Marshal(r)
	if err != nil {
		return r, err
	}
	return r, b.Put(k, v)
}

// Receipt returns user's positions in conv (zero if none).
func (s *Store) Receipt(conv, user string) (Receipt, error) {
	r := Receipt{Conv: conv, User: user}
	err := s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketReceipts).Get(receiptKey(conv, user)); v != nil {
			return json.Unmarshal(v, &r)
		}
		return nil
	})
	return r, err
}

// Receipts returns every stored receipt of conv, sorted by user.
func (s *Store) Receipts(conv string) ([]Receipt, error) {
	var out []Receipt
	prefix := receiptKey(conv, "")
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketReceipts).Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			r := Receipt{Conv: conv, User: string(k[len(prefix):])}
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("receipt %s: decode: %w", k, err)
			}
			out = append(out, r)
		}
		return nil
	})
	return out, err
}
