package jsstate

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/parleychat/parley/server/store"
)

// Conversations live in the conversations bucket under convKey(id), as
// store.Conversation JSON with Members sorted and without duplicates. That
// record is the truth about who is a member; every change to it is a
// compare-and-set on its revision, so changes made at once on different
// nodes are applied one after the other and none is lost.
//
// The memberships bucket indexes conversations by user: one key
// token(user).convKey(id) per membership, whose value is the id. One key per
// (user, conversation) rather than a list per user, because then two nodes
// adding alice to two conversations at once write different keys and never
// conflict, and listing alice's conversations is one ordered consumer on
// "alice.>". Without transactions across keys the index cannot be changed
// atomically with the record, so three rules keep it right:
//
//  1. Adding: the entries of members being added are written before the
//     record's first compare-and-set attempt (so a node that dies between
//     the two leaves the index a superset of the truth) and again after
//     the compare-and-set that succeeds.
//  2. Removing: an entry is deleted only at the revision it was read at,
//     after reading the record and finding the user gone; the record is
//     read once more afterwards and the entry restored if the user came
//     back. Rule 1's second write comes after the adder's compare-and-set,
//     so a remover that read the record before that compare-and-set finds
//     the entry's revision changed and its delete refused.
//  3. Reading: UserConversations checks every entry against the record and
//     skips (and removes, by rule 2) the ones the record does not confirm:
//     left over from an update that failed or from a node that died.
//
// So UserConversations is exact as of the records it read. What remains is
// a window of one compare-and-set's length in which a node dying at the
// wrong moment may leave an index entry missing for a member who was
// removed and added back at once on two nodes.

// CreateConversation stores a new conversation and indexes its members; an
// error wrapping store.ErrExists if the id is taken on any node. Members
// are sorted and compacted first, as store.Store does.
func (s *State) CreateConversation(c store.Conversation) error {
	c.Members = normalize(c.Members)
	data, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("jsstate: conversation %q: encode: %w", c.ID, err)
	}
	key := convKey(c.ID)
	return s.op("create conversation", func(ctx context.Context) error {
		// Creating a direct conversation that exists is common (chat tries
		// it whenever someone opens one): answer it with one read.
		if _, err := s.convs.Get(ctx, key); err == nil {
			return fmt.Errorf("conversation %q: %w", c.ID, store.ErrExists)
		} else if !missing(err) {
			return err
		}
		if err := s.index(ctx, c.ID, c.Members); err != nil {
			return err
		}
		if err := createOnce(ctx, s.convs, key, data, fmt.Sprintf("conversation %q", c.ID)); err != nil {
			return err
		}
		return s.index(ctx, c.ID, c.Members)
	})
}

// UpdateConversation reads conversation id, lets fn change it and stores the
// result if the conversation was not changed meanwhile; otherwise it reads
// it again and runs fn again, so fn may run more than once and must only
// change c. fn's error aborts the change and is returned as is. Members are
// sorted and compacted before storing. An error wrapping store.ErrNotFound
// if there is no such conversation.
func (s *State) UpdateConversation(id string, fn func(c *store.Conversation) error) (store.Conversation, error) {
	key := convKey(id)
	var out store.Conversation
	var fnErr error
	preindexed := make(map[string]bool) // rule 1's first write, once per user however often fn runs
	err := s.op("update conversation", func(ctx context.Context) error {
		for attempt := 1; ; attempt++ {
			v, rev, err := s.get(ctx, s.convs, key)
			if missing(err) {
				return fmt.Errorf("conversation %q: %w", id, store.ErrNotFound)
			}
			if err != nil {
				return err
			}
			var c store.Conversation
			if err := json.Unmarshal(v, &c); err != nil {
				return fmt.Errorf("conversation %q: decode: %w", id, err)
			}
			old := slices.Clone(c.Members)
			if err := fn(&c); err != nil {
				fnErr = err
				return nil
			}
			c.Members = normalize(c.Members)
			data, err := json.Marshal(c)
			if err != nil {
				return fmt.Errorf("conversation %q: encode: %w", id, err)
			}
			added, removed := store.DiffMembers(old, c.Members)
			fresh := slices.DeleteFunc(slices.Clone(added), func(u string) bool { return preindexed[u] })
			if err := s.index(ctx, id, fresh); err != nil {
				return err
			}
			for _, u := range fresh {
				preindexed[u] = true
			}
			// An update that changes nothing (joining a room one is in) is
			// not written, so it wakes no watcher.
			if !bytes.Equal(data, v) {
				if _, err := s.convs.Update(ctx, key, data, rev); err != nil {
					if conflict(err) {
						s.casPause(ctx, attempt)
						continue
					}
					return err
				}
			}
			// Rule 1's second write goes to everyone an attempt added who
			// is a member now: an earlier attempt may have been stored
			// without an answer, and then this one added nobody.
			var post []string
			for u := range preindexed {
				if c.IsMember(u) {
					post = append(post, u)
				}
			}
			if err := s.index(ctx, id, post); err != nil {
				return err
			}
			for _, u := range removed {
				if err := s.unindex(ctx, u, id, 0); err != nil {
					return err
				}
			}
			out = c
			return nil
		}
	})
	if fnErr != nil {
		return store.Conversation{}, fnErr
	}
	return out, err
}

// Conversation returns the conversation with id; an error wrapping
// store.ErrNotFound if there is none.
func (s *State) Conversation(id string) (store.Conversation, error) {
	var c store.Conversation
	err := s.op("conversation", func(ctx context.Context) error {
		var err error
		c, _, err = s.conversation(ctx, id)
		return err
	})
	return c, err
}

func (s *State) conversation(ctx context.Context, id string) (store.Conversation, uint64, error) {
	var c store.Conversation
	v, rev, err := s.get(ctx, s.convs, convKey(id))
	if missing(err) {
		return c, 0, fmt.Errorf("conversation %q: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return c, 0, err
	}
	if err := json.Unmarshal(v, &c); err != nil {
		return c, 0, fmt.Errorf("conversation %q: decode: %w", id, err)
	}
	return c, rev, nil
}

// UserConversations returns the ids of the conversations user is a member
// of, sorted. Each comes from the memberships index and is confirmed by the
// conversation's record (see the rules above), which costs one read per
// conversation.
func (s *State) UserConversations(user string) ([]string, error) {
	var ids []string
	err := s.op("user conversations", func(ctx context.Context) error {
		ids = ids[:0]
		entries, err := list(ctx, s.memberships, token(user)+".>")
		if err != nil {
			return err
		}
		for _, e := range entries {
			id := string(e.Value())
			c, _, err := s.conversation(ctx, id)
			if err != nil && !errors.Is(err, store.ErrNotFound) {
				return err
			}
			if err == nil && c.IsMember(user) {
				ids = append(ids, id)
				continue
			}
			// Left over from a failed update, or an add still in flight
			// (whose adder writes the entry again after its
			// compare-and-set). Best effort: the next reader tries again.
			_ = s.unindex(ctx, user, id, e.Revision())
		}
		return nil
	})
	slices.Sort(ids)
	return ids, err
}

// membershipKey is token(user).convKey(id).
func membershipKey(user, id string) string { return token(user) + "." + convKey(id) }

// indexParallel bounds the index writes in flight for one update, so that
// creating a group of a thousand members takes a few round trips' time,
// not a thousand.
const indexParallel = 16

// index writes the membership entries of users in conversation id.
func (s *State) index(ctx context.Context, id string, users []string) error {
	return parallel(ctx, users, indexParallel, func(ctx context.Context, u string) error {
		_, err := s.memberships.Put(ctx, membershipKey(u, id), []byte(id))
		return err
	})
}

// unindex removes user's entry for conversation id by rule 2. rev is the
// entry's revision if the caller read it, 0 to read it here.
func (s *State) unindex(ctx context.Context, user, id string, rev uint64) error {
	key := membershipKey(user, id)
	if rev == 0 {
		e, err := s.memberships.Get(ctx, key)
		if missing(err) {
			return nil
		}
		if err != nil {
			return err
		}
		rev = e.Revision()
	}
	c, _, err := s.conversation(ctx, id)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	if err == nil && c.IsMember(user) {
		return nil
	}
	if err := s.memberships.Delete(ctx, key, jetstream.LastRevision(rev)); err != nil {
		if conflict(err) {
			return nil // written again since: by an adder, whose record wins
		}
		return err
	}
	c, _, err = s.conversation(ctx, id)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	if err == nil && c.IsMember(user) {
		_, err = s.memberships.Put(ctx, key, []byte(id))
		return err
	}
	return nil
}

// WatchConversations calls fn with the id of a conversation after every
// change to it from now on, made on this node or any other, until stop is
// called, ctx ends or the State is closed. fn runs on one goroutine and
// should be quick (say, forget a cached copy). A change reaches fn some
// milliseconds after it is stored, so a cache that fn invalidates may
// serve the old members that long. The bucket keeps only each
// conversation's latest revision, so changes to one conversation that
// pile up while the watch catches up are reported once, after the last of
// them; that is all a cache needs.
//
// The watch is a KV watcher (an ordered consumer) that remembers the last
// revision it passed on. Once a second it compares that with the bucket's
// last revision; if the bucket stays ahead for two checks in a row, the
// consumer was lost with its server, and the watch starts again right after
// the last revision it passed on. So a lost server delays changes by a few
// seconds but skips none. stop waits until fn has returned for the last
// time.
func (s *State) WatchConversations(ctx context.Context, fn func(id string)) (stop func(), err error) {
	if s.isClosed() {
		return nil, fmt.Errorf("jsstate: watch conversations: %w", store.ErrClosed)
	}
	var stream jetstream.Stream
	err = retry(ctx, s.opts.attempt, func(ctx context.Context) error {
		var err error
		stream, err = s.js.Stream(ctx, "KV_"+s.convs.Bucket())
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("jsstate: watch conversations: %w", err)
	}
	w := &convWatch{s: s, stream: stream, fn: fn, last: stream.CachedInfo().State.LastSeq}
	wctx, cancel := context.WithCancel(ctx)
	if err := w.open(wctx); err != nil {
		cancel()
		return nil, fmt.Errorf("jsstate: watch conversations: %w", err)
	}
	done := make(chan struct{})
	// Under the lock, so that Close, once it holds it, waits for every
	// watch that started.
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		stopWatcher(w.w)
		cancel()
		return nil, fmt.Errorf("jsstate: watch conversations: %w", store.ErrClosed)
	}
	s.watchers.Go(func() {
		defer close(done)
		w.run(wctx)
	})
	s.mu.RUnlock()
	var once sync.Once
	return func() {
		once.Do(cancel)
		<-done
	}, nil
}

// watchCheck is how often a conversation watch compares its position with
// the bucket's.
const watchCheck = time.Second

// convWatch is one WatchConversations. Only its goroutine uses it after
// open.
type convWatch struct {
	s      *State
	stream jetstream.Stream
	fn     func(id string)
	w      jetstream.KeyWatcher
	last   uint64 // the last revision passed to fn, or the bucket's when the watch began
}

// open starts a KV watcher right after w.last.
func (w *convWatch) open(ctx context.Context) error {
	kw, err := w.s.convs.WatchAll(ctx, jetstream.IncludeHistory(), jetstream.MetaOnly(), jetstream.ResumeFromRevision(w.last+1))
	if err != nil {
		return err
	}
	w.w = kw
	return nil
}

func (w *convWatch) run(ctx context.Context) {
	defer func() {
		if w.w != nil {
			stopWatcher(w.w)
		}
	}()
	tick := time.NewTicker(watchCheck)
	defer tick.Stop()
	behind := 0
	for {
		var updates <-chan jetstream.KeyValueEntry
		if w.w != nil {
			updates = w.w.Updates()
		}
		select {
		case e, ok := <-updates:
			if !ok {
				w.w = nil // reopened at the next check
				continue
			}
			if e == nil || e.Revision() <= w.last {
				continue
			}
			w.last = e.Revision()
			if id, err := unconvKey(strings.Split(e.Key(), ".")); err == nil {
				w.fn(id)
			}
		case <-tick.C:
			if w.w != nil {
				head, ok := w.head(ctx)
				if !ok || head <= w.last {
					behind = 0
					continue
				}
				if behind++; behind < 2 {
					continue
				}
				stopWatcher(w.w)
				w.w = nil
			}
			behind = 0
			// ctx, not a shorter one: the watcher's subscription ends
			// with the context it was opened with.
			if err := w.open(ctx); err != nil {
				w.w = nil
			}
		case <-ctx.Done():
			return
		case <-w.s.done:
			return
		}
	}
}

// head returns the bucket's last revision.
func (w *convWatch) head(ctx context.Context) (uint64, bool) {
	ctx, cancel := context.WithTimeout(ctx, w.s.opts.attempt)
	defer cancel()
	info, err := w.stream.Info(ctx)
	if err != nil {
		return 0, false
	}
	return info.State.LastSeq, true
}

// stopWatcher stops w and drains its channel until the subscription's
// closed handler closes it, so that its goroutine is not left blocked on a
// full channel.
func stopWatcher(w jetstream.KeyWatcher) {
	_ = w.Stop()
	t := time.NewTimer(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case _, ok := <-w.Updates():
			if !ok {
				return
			}
		case <-t.C:
			return
		}
	}
}

// normalize sorts members and drops duplicates and empty ids.
func normalize(members []string) []string {
	out := slices.Clone(members)
	slices.Sort(out)
	out = slices.Compact(out)
	return slices.DeleteFunc(out, func(m string) bool { return m == "" })
}

// missing reports whether err says the key does not exist (or was deleted).
func missing(err error) bool {
	return errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted)
}

// parallel runs f for each item with at most n in flight and returns the
// first error.
func parallel(ctx context.Context, items []string, n int, f func(ctx context.Context, item string) error) error {
	if len(items) <= 1 {
		for _, it := range items {
			if err := f(ctx, it); err != nil {
				return err
			}
		}
		return nil
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	sem := make(chan struct{}, n)
	for _, it := range items {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := f(ctx, it); err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return first
}
