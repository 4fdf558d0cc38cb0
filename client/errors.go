package client

import "errors"

// Errors returned by this package. Errors that come from the server keep
// their gRPC status through any wrapping: use status.Code(err) or
// errors.As to read it.
var (
	// ErrClosed is returned by calls on a Client or Session after Close,
	// and fails the sends a Session still had pending when it was closed.
	ErrClosed = errors.New("parley client: closed")
	// ErrPingTimeout is the reason a Session gives (in a StateEvent) for
	// dropping a stream whose server did not answer a ping in time.
	ErrPingTimeout = errors.New("parley client: no pong within the ping timeout")
	// ErrStreamEnded is the reason a Session gives for reconnecting when
	// the server ended the Chat stream without an error status.
	ErrStreamEnded = errors.New("parley client: chat stream ended by the server")
	// ErrChecksum fails a Download whose content does not hash to the
	// attachment's id or is not the announced size, and an Upload the
	// server named by something other than the content's sha256.
	ErrChecksum = errors.New("parley client: attachment content does not match its id")
)
