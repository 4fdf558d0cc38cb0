package client

import (
	"fmt"
	"maps"
	"slices"
	"sync"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
)

// Status is how far a message has got, as its sender sees it.
type Status int

// The statuses of a message, each implying the ones before it.
const (
	// StatusSent: the server stored it.
	StatusSent Status = iota + 1
	// StatusDelivered: it reached a device of every recipient.
	StatusDelivered
	// StatusRead: every recipient read it.
	StatusRead
)

// String returns the status in lower case: "sent", "delivered", "read".
func (s Status) String() string {
	switch s {
	case StatusSent:
		return "sent"
	case StatusDelivered:
		return "delivered"
	case StatusRead:
		return "read"
	}
	return fmt.Sprintf("Status(%d)", int(s))
}

// MessageState is one message's progress: a Status for a tick mark, and
// who has it, for a "read by" list in a group.
type MessageState struct {
	// Status is the least advanced state over all recipients: read only
	// once everyone has read it.
	Status Status
	// DeliveredTo lists the recipients who have the message on a device,
	// readers included, sorted.
	DeliveredTo []string
	// ReadBy lists the recipients who have read it, sorted.
	ReadBy []string
	// Recipients is how many users Status was judged over: the members
	// other than the sender if known (SetMembers), else every other user
	// with a receipt.
	Recipients int
}

// Receipts tracks the delivered and read positions of a conversation's
// members, from GetReceipts and then ReceiptEvents, and tells the state of
// any message from them. Positions only move forward, as on the server, so
// updates may come in any order and more than once.
//
// Without SetMembers, only users who have marked something count as
// recipients, so a group message read by the one member who ever marked
// anything shows as read; give groups their member list
// (Conversation.member_ids). Receipts is safe for concurrent use.
type Receipts struct {
	conv string

	mu      sync.Mutex // protects members and pos
	members []string   // sorted; nil while unknown
	pos     map[string]receiptPos
}

// NewReceipts returns a Receipts for conversationID holding the given
// receipts (those of other conversations are ignored).
func NewReceipts(conversationID string, receipts ...*parleyv1.Receipt) *Receipts {
	r := &Receipts{conv: conversationID, pos: make(map[string]receiptPos)}
	for _, rc := range receipts {
		r.Update(rc)
	}
	return r
}

// SetMembers sets who the conversation's members are, so that members who
// never marked anything hold a message back from delivered and read.
func (r *Receipts) SetMembers(userIDs ...string) {
	m := slices.Clone(userIDs)
	slices.Sort(m)
	r.mu.Lock()
	r.members = slices.Compact(m)
	r.mu.Unlock()
}

// Update applies a receipt and reports whether it moved a position. A
// receipt of another conversation changes nothing.
func (r *Receipts) Update(rc *parleyv1.Receipt) bool {
	if rc.GetConversationId() != r.conv || rc.GetUserId() == "" {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.pos[rc.GetUserId()]
	// Read implies delivered, whatever an old server says.
	next := maxPos(old, receiptPos{delivered: max(rc.GetDeliveredSeq(), rc.GetReadSeq()), read: rc.GetReadSeq()})
	r.pos[rc.GetUserId()] = next
	return next != old
}

// Position returns a user's delivered and read positions, 0 for a user with
// no receipt.
func (r *Receipts) Position(userID string) (delivered, read uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := r.pos[userID]
	return p.delivered, p.read
}

// State returns the state of the message at seq sent by sender. The
// sender's own positions never count.
func (r *Receipts) State(seq uint64, sender string) MessageState {
	r.mu.Lock()
	defer r.mu.Unlock()
	recipients := r.members
	if recipients == nil {
		recipients = slices.Sorted(maps.Keys(r.pos))
	}
	st := MessageState{Status: StatusSent}
	for _, u := range recipients {
		if u == sender {
			continue
		}
		st.Recipients++
		p := r.pos[u]
		if p.delivered >= seq {
			st.DeliveredTo = append(st.DeliveredTo, u)
		}
		if p.read >= seq {
			st.ReadBy = append(st.ReadBy, u)
		}
	}
	switch {
	case st.Recipients == 0:
	case len(st.ReadBy) == st.Recipients:
		st.Status = StatusRead
	case len(st.DeliveredTo) == st.Recipients:
		st.Status = StatusDelivered
	}
	return st
}
