package client

import (
	"container/list"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
)

// pendingSend is a send, edit or delete that has no answer yet. All three
// are answered the same way (send_ack, or an ErrorFrame naming the
// client_message_id), so they share the outbox and its resend rules.
type pendingSend struct {
	kind    string // "send", "edit" or "delete": the ErrorFrame.frame that names it
	conv    string
	id      string                       // client_message_id
	frame   func() *parleyv1.ChatRequest // a fresh frame for each transmission
	frameID uint64                       // frame_id of its latest transmission
	retries int                          // UNAVAILABLE answers so far, for the retry backoff
	result  chan SendResult              // buffered 1: answering never blocks the reader
	elem    *list.Element
}

// outbox holds unanswered sends in the order they were made, so that a
// reconnect resends them in that order. It is not safe for concurrent use:
// Session.mu guards it.
type outbox struct {
	order list.List // of *pendingSend
	byID  map[string]*pendingSend
}

func newOutbox() *outbox {
	return &outbox{byID: make(map[string]*pendingSend)}
}

func (o *outbox) add(p *pendingSend) {
	p.elem = o.order.PushBack(p)
	o.byID[p.id] = p
}

// get returns the send with the given client_message_id, or nil if it is
// not pending (already answered, or never ours).
func (o *outbox) get(clientMessageID string) *pendingSend {
	return o.byID[clientMessageID]
}

// getFrame is get by frame_id, for error frames that name no
// client_message_id.
func (o *outbox) getFrame(frameID uint64) *pendingSend {
	for e := o.order.Front(); e != nil; e = e.Next() {
		if p := e.Value.(*pendingSend); p.frameID == frameID {
			return p
		}
	}
	return nil
}

// take removes and returns the send with the given client_message_id, or
// nil if it is not pending.
func (o *outbox) take(clientMessageID string) *pendingSend {
	p, ok := o.byID[clientMessageID]
	if !ok {
		return nil
	}
	o.order.Remove(p.elem)
	delete(o.byID, clientMessageID)
	return p
}

// each calls f on every pending send, oldest first.
func (o *outbox) each(f func(*pendingSend)) {
	for e := o.order.Front(); e != nil; e = e.Next() {
		f(e.Value.(*pendingSend))
	}
}

// drain removes and returns every pending send, oldest first.
func (o *outbox) drain() []*pendingSend {
	var all []*pendingSend
	o.each(func(p *pendingSend) { all = append(all, p) })
	o.order.Init()
	clear(o.byID)
	return all
}
