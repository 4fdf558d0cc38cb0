package chat

import (
	"sync"

	"github.com/parleychat/parley/server/store"
)

// memberCache keeps conversations' metadata in memory, because every send,
// receipt and typing event checks membership. Every change goes through
// update, which stores the new value; a load that raced a change is not
// cached, so the cache is never older than the store.
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

// set records a conversation just created or changed.
func (m *memberCache) set(c store.Conversation) {
	m.mu.Lock()
	m.gen[c.ID]++
	m.convs[c.ID] = c
	m.mu.Unlock()
}

// forget drops a conversation whose change failed half-way.
func (m *memberCache) forget(id string) {
	m.mu.Lock()
	m.gen[id]++
	delete(m.convs, id)
	m.mu.Unlock()
}
