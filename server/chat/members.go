package chat

import (
	"sync"

	"github.com/parleychat/parley/server/store"
)

// memberCache keeps conversations' metadata in memory, because every send,
// receipt and typing event checks membership. Every change is followed by
// forget; a load that raced a change is not cached, so the cache is never
// older than the store.
type memberCache struct {
	store Store

	mu    sync.Mutex // protects convs and gen
	convs map[string]store.Conversation
	gen   map[string]uint64 // bumped by every change of a conversation
}

func newMemberCache(st Store) *memberCache {
	return &memberCache{store: st, convs: make(map[string]store.Conversation), gen: make(map[string]uint64)}
}

// get returns conversation id; store.ErrNotFound if there is none. The
// Members slice is shared: callers must not modify it.
func (m *memberCache) get(id string) (store.Conversation, error) {
	m.mu.Lock()
	if c, ok := m.convs[id]; ok {
		m.mu.Unlock()
		return c, nil
	}
	g := m.gen[id]
	m.mu.Unlock()
	c, err := m.store.Conversation(id)
	if err != nil {
		return c, err
	}
	m.mu.Lock()
	if m.gen[id] == g {
		m.convs[id] = c
	}
	m.mu.Unlock()
	return c, nil
}

// forget drops a conversation after a change.
func (m *memberCache) forget(id string) {
	m.mu.Lock()
	m.gen[id]++
	delete(m.convs, id)
	m.mu.Unlock()
}

// Forget drops what the service caches about conversation id. In cluster
// mode other nodes change conversations too; the node calls it for each
// change they make.
func (s *Service) Forget(id string) { s.members.forget(id) }
