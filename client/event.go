package client

import (
	"fmt"
	"time"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
)

// Event is one thing that happened on a Session. It is one of
// MessageEvent, SubscribedEvent, ReceiptEvent, TypingEvent, PresenceEvent,
// NotificationEvent, StateEvent and ErrorEvent; switch on the type. The set
// is closed so that a type switch can be exhaustive.
type Event interface{ event() }

// MessageEvent carries a message in a subscribed conversation. A Session
// delivers each conversation's messages in ascending seq order within an
// epoch, and never delivers a (sender_id, client_message_id) it delivered
// among the last WithDedupSize messages. The Message must not be
// modified: it is the one the Session tracks positions from.
//
// Not every message is a post. An edit or a delete of an earlier post is a
// message of its own, at its own seq, with Kind MESSAGE_KIND_EDIT or
// MESSAGE_KIND_DELETE and TargetSeq naming the post it changes; the Session
// passes it on as it is and changes nothing it delivered before. An
// application that shows posts applies it with Apply, which gives the post
// as History would return it. A replay may deliver a post already in its
// latest state (edited, or a tombstone) followed by the events that made it
// so; Apply is idempotent, so applying them again is harmless.
type MessageEvent struct {
	Message *parleyv1.Message
}

// ReceiptEvent reports a member's new delivered and read positions in a
// subscribed conversation. The caller's own receipts come too (from this
// Session's MarkDelivered and MarkRead, and from the user's other devices).
// Feed them to a Receipts to show per-message state.
type ReceiptEvent struct {
	Receipt *parleyv1.Receipt
}

// TypingEvent reports that a member started or stopped typing in a
// subscribed conversation, the caller included. An indicator that is not
// renewed lapses: the server then sends Typing=false by itself, so an
// application may simply show what the last event said. Typing events are
// live only: nothing is replayed after a reconnect.
type TypingEvent struct {
	Typing *parleyv1.Typing
}

// PresenceEvent reports that a user who shares a conversation with the
// caller came online or went offline. The server announces users going
// offline after a grace period, so a quick reconnect shows nothing. The
// caller's own presence comes too. Use Client.GetPresence for the state of
// users before the Session started.
type PresenceEvent struct {
	Presence *parleyv1.Presence
}

// NotificationEvent reports a new post in a conversation of the caller's
// that this Session does not follow, with a preview of its body. It is live
// only and best effort: the server drops notifications rather than wait,
// so unread counts (Conversation.unread_count) are the reliable tally.
type NotificationEvent struct {
	Notification *parleyv1.Notification
}

// SubscribedEvent marks the end of a conversation's replay: every stored
// message up to Subscribed.HeadSeq has been delivered and what follows is
// live. It comes once per Subscribe and again after every reconnect. When
// Subscribed.EpochReset is true the server's log was replaced: seqs kept
// from before mean nothing and the Session has forgotten them too.
type SubscribedEvent struct {
	Subscribed *parleyv1.Subscribed
}

// StateEvent reports a change in the Session's connection.
type StateEvent struct {
	// State is the new state.
	State State
	// Err is why the stream broke (StateDisconnected) or why the Session
	// stopped (StateStopped). It keeps the gRPC status when there is one.
	Err error
	// Attempt counts the connection attempts since the last stream that
	// worked: 0 for the first.
	Attempt int
	// RetryIn is how long the Session waits before the next attempt
	// (StateDisconnected only).
	RetryIn time.Duration
}

// ErrorEvent reports an ErrorFrame: a frame the server could not carry out
// while the stream stayed open. For a send, edit or delete, the same error
// also fails that change's result, except UNAVAILABLE, which the server
// uses for "not stored, resend it": that change stays in the outbox and is
// resent after a backoff under the same client_message_id. For a
// subscribe, the subscription is dropped and not retried on reconnect. For
// a delivered or read mark, the mark is retried after a backoff on
// UNAVAILABLE and otherwise forgotten. A refused typing frame (its rate
// limit) is only reported.
type ErrorEvent struct {
	// Frame is the server's ErrorFrame as received.
	Frame *parleyv1.ErrorFrame
	// Err is Frame as an error carrying its gRPC status code.
	Err error
}

func (MessageEvent) event()      {}
func (SubscribedEvent) event()   {}
func (ReceiptEvent) event()      {}
func (TypingEvent) event()       {}
func (PresenceEvent) event()     {}
func (NotificationEvent) event() {}
func (StateEvent) event()        {}
func (ErrorEvent) event()        {}

// State is the connection state of a Session.
type State int

// The states a Session moves through. A Session starts Connecting, goes to
// Connected when the server first answers on a new stream (at once, since
// the Session pings as soon as the stream opens), to Disconnected (and back
// to Connecting after a backoff) whenever the stream breaks, and ends
// Stopped when the server refuses its token. A stream that the server ends
// without a word, such as one refused during a shutdown, goes from
// Connecting straight to Disconnected. Close ends a Session without a
// Stopped event.
const (
	StateConnecting State = iota + 1
	StateConnected
	StateDisconnected
	StateStopped
)

// String returns the state's name in lower case, for logs and status lines.
func (s State) String() string {
	switch s {
	case StateConnecting:
		return "connecting"
	case StateConnected:
		return "connected"
	case StateDisconnected:
		return "disconnected"
	case StateStopped:
		return "stopped"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// SendResult is the outcome of one send, edit or delete: the
// acknowledgement, which means it is durable, or the error that ended it.
// An edit's or delete's Ack carries the seq of the event, not of the post.
type SendResult struct {
	Ack *parleyv1.SendResponse
	Err error
}

// Position is how far a Session has read a conversation: the last seq seen
// and the log epoch that seq belongs to (empty until a Subscribed says).
type Position struct {
	Seq   uint64
	Epoch string
}
