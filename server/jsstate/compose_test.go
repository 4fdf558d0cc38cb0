package jsstate_test

import (
	"github.com/parleychat/parley/server/chat"
	"github.com/parleychat/parley/server/jsstate"
)

// A clustered log composed with State is a chat.Store, and State alone
// covers chat.Blobs.
var (
	_ chat.Store = jsstate.Store{}
	_ chat.Blobs = (*jsstate.State)(nil)
)
