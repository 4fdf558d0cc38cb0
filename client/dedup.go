package client

import "container/list"

// dedup remembers the last size (sender_id, client_message_id) pairs
// delivered, least recently seen evicted first. Bounded because a session
// may run for weeks; duplicates come from resends after a reconnect or a
// server crash, so they arrive close to the original and a recent window is
// enough. It is not safe for concurrent use: the Session's run goroutine
// owns it.
type dedup struct {
	size  int
	order list.List // of string keys, most recent at the front
	index map[string]*list.Element
}

func newDedup(size int) *dedup {
	return &dedup{size: size, index: make(map[string]*list.Element, size)}
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
		d.order.MoveToFront(e)
	}
	return ok
}

// add remembers key, evicting the least recently seen key if full.
func (d *dedup) add(key string) {
	if d.size <= 0 {
		return
	}
	if e, ok := d.index[key]; ok {
		d.order.MoveToFront(e)
		return
	}
	d.index[key] = d.order.PushFront(key)
	if d.order.Len() > d.size {
		last := d.order.Back()
		d.order.Remove(last)
		delete(d.index, last.Value.(string))
	}
}
