package jsstate

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"hash/maphash"
	"slices"
	"strings"

	"github.com/parleychat/parley/server/store"
)

// Receipts live in the receipts bucket under convKey(conv).token(user), as
// JSON of store.Receipt (delivered, read, updated_at). A conversation's
// receipts are listed with the filter convKey(conv).*: the user is exactly
// one token, so the filter matches this conversation's keys and no other's.

type receiptJob struct {
	u    store.ReceiptUpdate
	done func(store.Receipt, error)
}

var receiptSeed = maphash.MakeSeed()

// UpdateReceipt moves u.User's positions in u.Conv forward and calls done
// with the stored receipt: Changed reports whether this update moved a
// position, exactly as store.Store does. A lower position than the stored
// one changes nothing, and the write is a compare-and-set on the key's
// revision, so positions only grow however many nodes update them at once.
//
// UpdateReceipt returns at once, unless the writers are that far behind
// that the queue of the receipt's writer is full; done runs later on that
// writer's goroutine and must be quick. Updates of one (conversation, user)
// go through one writer, so this node applies them in the order given.
// After Close, done is called at once with an error wrapping
// store.ErrClosed.
func (s *State) UpdateReceipt(u store.ReceiptUpdate, done func(store.Receipt, error)) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		done(store.Receipt{}, fmt.Errorf("jsstate: update receipt: %w", store.ErrClosed))
		return
	}
	var h maphash.Hash
	h.SetSeed(receiptSeed)
	h.WriteString(u.Conv)
	h.WriteByte(0)
	h.WriteString(u.User)
	s.receiptQueues[h.Sum64()%uint64(len(s.receiptQueues))] <- receiptJob{u: u, done: done}
}

func (s *State) receiptWorker(q <-chan receiptJob) {
	for j := range q {
		r, err := s.updateReceipt(j.u)
		j.done(r, err)
	}
}

func receiptKey(conv, user string) string { return convKey(conv) + "." + token(user) }

// updateReceipt is UpdateReceipt's compare-and-set loop.
func (s *State) updateReceipt(u store.ReceiptUpdate) (store.Receipt, error) {
	key := receiptKey(u.Conv, u.User)
	var out store.Receipt
	var written []byte // the last value this update tried to write
	err := s.op("update receipt", func(ctx context.Context) error {
		for attempt := 1; ; attempt++ {
			r := store.Receipt{Conv: u.Conv, User: u.User}
			var rev uint64
			e, err := s.receipts.Get(ctx, key)
			switch {
			case err == nil:
				rev = e.Revision()
				// A write that failed to answer (and is being retried)
				// may have been stored after all: then it changed the
				// receipt, and Changed must say so.
				if written != nil && bytes.Equal(e.Value(), written) {
					if err := json.Unmarshal(written, &r); err != nil {
						return err
					}
					r.Changed = true
					out = r
					return nil
				}
				if err := json.Unmarshal(e.Value(), &r); err != nil {
					return fmt.Errorf("receipt %s/%s: decode: %w", u.Conv, u.User, err)
				}
			case missing(err):
			default:
				return err
			}
			if !r.Apply(u) {
				out = r
				return nil
			}
			data, err := json.Marshal(r)
			if err != nil {
				return err
			}
			written = data
			if rev == 0 {
				_, err = s.receipts.Create(ctx, key, data)
			} else {
				_, err = s.receipts.Update(ctx, key, data, rev)
			}
			if conflict(err) {
				s.casPause(ctx, attempt)
				continue
			}
			if err != nil {
				return err
			}
			out = r
			return nil
		}
	})
	if err != nil {
		return store.Receipt{}, err
	}
	return out, nil
}

// Receipt returns user's positions in conv (zero if none).
func (s *State) Receipt(conv, user string) (store.Receipt, error) {
	r := store.Receipt{Conv: conv, User: user}
	err := s.op("receipt", func(ctx context.Context) error {
		e, err := s.receipts.Get(ctx, receiptKey(conv, user))
		if missing(err) {
			return nil
		}
		if err != nil {
			return err
		}
		return json.Unmarshal(e.Value(), &r)
	})
	return r, err
}

// Receipts returns every stored receipt of conv, sorted by user.
func (s *State) Receipts(conv string) ([]store.Receipt, error) {
	var out []store.Receipt
	err := s.op("receipts", func(ctx context.Context) error {
		out = out[:0]
		prefix := convKey(conv) + "."
		entries, err := list(ctx, s.receipts, prefix+"*")
		if err != nil {
			return err
		}
		for _, e := range entries {
			user, err := untoken(strings.TrimPrefix(e.Key(), prefix))
			if err != nil {
				return fmt.Errorf("receipt key %q: %w", e.Key(), err)
			}
			r := store.Receipt{Conv: conv, User: user}
			if err := json.Unmarshal(e.Value(), &r); err != nil {
				return fmt.Errorf("receipt %s/%s: decode: %w", conv, user, err)
			}
			out = append(out, r)
		}
		return nil
	})
	slices.SortFunc(out, func(a, b store.Receipt) int { return strings.Compare(a.User, b.User) })
	return out, err
}
