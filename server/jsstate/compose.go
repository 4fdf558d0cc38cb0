package jsstate

import (
	"context"
	"time"

	"github.com/parleychat/parley/server/store"
)

// Metadata is the part of chat.Store that State implements: everything but
// the message log. chat.Blobs is part of it.
type Metadata interface {
	CreateUser(u store.User) error
	User(id string) (store.User, error)
	DeleteUser(id string, at time.Time) error
	SetLastSeen(seen map[string]time.Time) error
	LastSeen(user string) (time.Time, error)
	CreateConversation(c store.Conversation) error
	UpdateConversation(id string, fn func(c *store.Conversation) error) (store.Conversation, error)
	Conversation(id string) (store.Conversation, error)
	UserConversations(user string) ([]string, error)
	UpdateReceipt(u store.ReceiptUpdate, done func(store.Receipt, error))
	Receipt(conv, user string) (store.Receipt, error)
	Receipts(conv string) ([]store.Receipt, error)
	PutBlob(data []byte, uploader string, l store.Label) (id string, created bool, err error)
	GrantConversation(conv string, refs []store.BlobRef) error
	MayRead(id, user string) (store.BlobInfo, bool, error)
	BlobChunks(id string, first, max int) ([][]byte, error)
	SigningKey(ctx context.Context) ([]byte, error)
	WatchConversations(ctx context.Context, fn func(id string)) (stop func(), err error)
}

// Log is the rest of chat.Store: the message log and its dedup index,
// which a clustered log provides.
type Log interface {
	Epoch() string
	Range(conv string, after, upto uint64, limit int) ([]store.Record, bool, error)
	Before(conv string, before uint64, limit int) ([]store.Record, bool, error)
	Last(conv string) (store.Record, bool, error)
	Get(conv string, seq uint64) (store.Record, bool, error)
	Count(conv string, after uint64, max int, keep func(data []byte) bool) (int, error)
	Dedup(sender, clientMsgID string) (store.DedupRecord, bool, error)
}

// Store joins a Log and a State into one chat.Store (the package's tests
// check that it is one). Both must be set.
type Store struct {
	Log
	*State
}
