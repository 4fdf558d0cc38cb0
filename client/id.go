package client

import (
	"crypto/rand"
	"encoding/hex"
)

// NewClientMessageID returns a fresh client_message_id: 32 lowercase hex
// characters from 16 random bytes. Random rather than counted so that ids
// stay unique across processes and devices of the same user, which share
// the server's (sender, client_message_id) dedup index.
func NewClientMessageID() string {
	var b [16]byte
	// crypto/rand.Read never fails; it crashes the program instead.
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
