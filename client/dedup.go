package client

import (
	"container/list"
	"time"
)

// dedup remembers the (sender_id, client_message_id) pairs delivered: at
// least the last size of them, and beyond that every pair seen within
// minAge, up to hardCap pairs in all. Bounded because a session may run
// for weeks. Duplicates come from resends after a reconnect or a server
// crash; a sender that was cut off through a long outage may resend a
// message only after thousands of others have passed, which is why age
// keeps a pair too and not only its rank. It is not safe for concurrent
// use: the Session's run goroutine owns it.
type dedup struct {
	size  int
	order list.List // of *dedupEntry, most recently seen at the front
	index map[string]*list.Element
	now   func() time.Time
}

type dedupEntry struct {
	key  string
	seen time.Time
}

const (
	// dedupMinAge keeps a pair at least this long after it was last seen,
	// beyond the count, so that a resend after a long outage is still
	// recognised.
	dedupMinAge = 10 * time.Minute
	// dedupHardCap bounds memory whatever the rate: past it the oldest
	// pairs go even if younger than dedupMinAge.
	dedupHardCap = 100_000
)

func newDedup(size int) *dedup {
	return &dedup{size: size, index: make(map[string]*list.Element, size), now: time.Now}
}

func dedupKey(sender, clientMessageID string) string {
	// NUL cannot occur in either id (client_message_id is printable ASCII,
	// user ids are [a-z0-9_-]), so the key is unambiguous.
	return sender + "\x00" + clientMessageID
}

// seen reports whether key was added and still remembered, and marks it as
// recently seen.
func (d *dedup) seen(key string) bool {
	e, ok := d.index[key]
	if ok {
		e.Value.(*dedupEntry).seen = d.now()
		d.order.MoveToFront(e)
	}
	return ok
}

// add remembers key and forgets what the bounds allow.
func (d *dedup) add(key string) {
	if d.size <= 0 {
		return
	}
	now := d.now()
	if e, ok := d.index[key]; ok {
		e.Value.(*dedupEntry).seen = now
		d.order.MoveToFront(e)
		return
	}
	d.index[key] = d.order.PushFront(&dedupEntry{key: key, seen: now})
	for d.order.Len() > d.size {
		last := d.order.Back()
		old := last.Value.(*dedupEntry)
		if d.order.Len() <= max(dedupHardCap, d.size) && now.Sub(old.seen) < dedupMinAge {
			break
		}
		d.order.Remove(last)
		delete(d.index, old.key)
	}
}
