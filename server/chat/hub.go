package chat

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
	"github.com/parleychat/parley/server/router"
)

// hub knows every open stream by user: it decides presence, finds the
// streams to notify about conversations they do not follow, and enforces
// the streams-per-user limit.
//
// A user goes online with their first stream and offline a grace period
// after their last one closes, so a device that reconnects at once (a
// flapping network, a slow-consumer cut) does not storm everyone who shares
// a conversation with them. In cluster mode a PresenceBus tells the hub
// which users have streams on other nodes: a user is online while any node
// has a stream of theirs, and each node announces transitions to its own
// streams.
type hub struct {
	svc   *Service
	grace time.Duration
	bus   PresenceBus // nil on a single node

	// version changes with everything reach's answer depends on: streams
	// opened and closed here, users' streams on other nodes, and what a
	// stream follows. The notifier keeps reach's answers while it holds.
	version atomic.Uint64

	mu       sync.Mutex // protects everything below
	streams  map[string]map[*outbound]struct{}
	remote   map[string]map[string]bool // user -> other nodes with a stream of theirs
	lastSeen map[string]time.Time       // zero: looked up in the store, none there
	unsaved  map[string]time.Time       // last-seen times the store does not have yet
	offline  map[string]*time.Timer     // pending offline transitions
	closed   bool
}

// PresenceBus carries presence between the nodes of a cluster. Publish
// tells the other nodes that user now has streams on this node (online) or
// has had none for the grace period (offline, last seen at seen). The bus
// calls the function given to Start for what other nodes publish, and with
// online false for each user of a node that stopped answering.
type PresenceBus interface {
	Publish(user string, online bool, seen time.Time)
	// Deleted tells the other nodes that user's account was deleted; the
	// bus calls the gone function given to Start for what others tell.
	Deleted(user string)
	Start(fn func(node, user string, online bool, seen time.Time), gone func(user string)) (stop func(), err error)
}

// WithPresenceBus shares presence with other nodes (cluster mode).
func WithPresenceBus(b PresenceBus) Option { return func(o *options) { o.presenceBus = b } }

func newHub(s *Service, grace time.Duration, bus PresenceBus) *hub {
	return &hub{svc: s, grace: grace, bus: bus, streams: make(map[string]map[*outbound]struct{}),
		remote: make(map[string]map[string]bool), lastSeen: make(map[string]time.Time), unsaved: make(map[string]time.Time),
		offline: make(map[string]*time.Timer)}
}

// add registers o for user, or fails when the user has too many streams.
func (h *hub) add(user string, o *outbound) error {
	h.mu.Lock()
	set := h.streams[user]
	if len(set) >= h.svc.opts.maxStreams {
		h.mu.Unlock()
		return exhausted("streams per user", "%d streams are open for %s; at most %d (--max-streams)", len(set), user, h.svc.opts.maxStreams)
	}
	if set == nil {
		set = make(map[*outbound]struct{})
		h.streams[user] = set
	}
	set[o] = struct{}{}
	h.version.Add(1)
	first := len(set) == 1
	elsewhere := len(h.remote[user]) > 0
	pending := h.offline[user]
	delete(h.offline, user)
	h.mu.Unlock()
	if pending != nil && pending.Stop() {
		return nil // back within the grace period: nobody saw them leave
	}
	if first {
		if h.bus != nil {
			h.bus.Publish(user, true, time.Time{})
		}
		if !elsewhere {
			h.announce(user, &parleyv1.Presence{UserId: user, Online: true})
		}
	}
	return nil
}

// remove unregisters o; the user goes offline after the grace period if it
// was their last stream (and, in a cluster, no other node has one).
func (h *hub) remove(user string, o *outbound) {
	h.mu.Lock()
	defer h.mu.Unlock()
	set := h.streams[user]
	delete(set, o)
	h.version.Add(1)
	if len(set) > 0 {
		return
	}
	delete(h.streams, user)
	now := time.Now()
	h.lastSeen[user] = now
	h.unsaved[user] = now
	if h.closed {
		return
	}
	var t *time.Timer
	t = time.AfterFunc(h.grace, func() {
		h.mu.Lock()
		if h.offline[user] != t {
			h.mu.Unlock()
			return // superseded by a reconnect
		}
		delete(h.offline, user)
		elsewhere := len(h.remote[user]) > 0
		h.mu.Unlock()
		if h.bus != nil {
			h.bus.Publish(user, false, now)
		}
		if !elsewhere {
			h.announce(user, &parleyv1.Presence{UserId: user, LastSeen: timestamppb.New(now)})
		}
	})
	h.offline[user] = t // before the callback can look: h.mu is held
}

// remoteChange applies what another node published: user has streams on
// node (online) or no longer does. Only a change of the user's overall
// state is announced to this node's streams.
func (h *hub) remoteChange(node, user string, online bool, seen time.Time) {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return
	}
	_, local := h.streams[user]
	_, pending := h.offline[user]
	here := local || pending
	nodes := h.remote[user]
	was := here || len(nodes) > 0
	if online {
		if nodes == nil {
			nodes = make(map[string]bool)
			h.remote[user] = nodes
		}
		nodes[node] = true
	} else {
		delete(nodes, node)
		if len(nodes) == 0 {
			delete(h.remote, user)
		}
		if seen.After(h.lastSeen[user]) {
			h.lastSeen[user] = seen
		}
	}
	h.version.Add(1)
	now := here || len(h.remote[user]) > 0
	last := h.lastSeen[user]
	h.mu.Unlock()
	switch {
	case now && !was:
		h.announce(user, &parleyv1.Presence{UserId: user, Online: true})
	case !now && was:
		p := &parleyv1.Presence{UserId: user}
		if !last.IsZero() {
			p.LastSeen = timestamppb.New(last)
		}
		h.announce(user, p)
	}
}

// close stops pending offline transitions.
func (h *hub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for u, t := range h.offline {
		t.Stop()
		delete(h.offline, u)
	}
}

// presence reports user's state now.
func (h *hub) presence(user string) *parleyv1.Presence {
	h.mu.Lock()
	defer h.mu.Unlock()
	p := &parleyv1.Presence{UserId: user}
	_, p.Online = h.streams[user]
	if _, pending := h.offline[user]; pending || len(h.remote[user]) > 0 {
		p.Online = true
	}
	if seen := h.lastSeen[user]; !seen.IsZero() && !p.Online {
		p.LastSeen = timestamppb.New(seen)
	}
	return p
}

// known reports whether the hub has looked up or seen user's last-seen
// time; remember records one read from the store, unless a newer one came
// meanwhile.
func (h *hub) known(user string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	_, ok := h.lastSeen[user]
	return ok
}

func (h *hub) remember(user string, seen time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if cur, ok := h.lastSeen[user]; !ok || seen.After(cur) {
		h.lastSeen[user] = seen
	}
}

// saveLastSeen writes the last-seen times the store does not have yet.
// Those it cannot write stay for the next call.
func (h *hub) saveLastSeen() error {
	h.mu.Lock()
	batch := h.unsaved
	h.unsaved = make(map[string]time.Time)
	h.mu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	err := h.svc.store.SetLastSeen(batch)
	if err != nil {
		h.mu.Lock()
		for u, t := range batch {
			if cur, ok := h.unsaved[u]; !ok || t.After(cur) {
				h.unsaved[u] = t
			}
		}
		h.mu.Unlock()
	}
	return err
}

// lastSeenInterval is how often last-seen times are written: a crash
// loses at most this much of them, and a disconnect costs no commit of
// its own.
const lastSeenInterval = 5 * time.Second

// saver writes last-seen times every lastSeenInterval until stop closes,
// then once more (Shutdown closes stop once every stream has ended).
func (h *hub) saver(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(lastSeenInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-stop:
			if err := h.saveLastSeen(); err != nil {
				h.svc.opts.logger.Warn("presence: last seen times not saved at shutdown", "err", err)
			}
			return
		}
		if err := h.saveLastSeen(); err != nil {
			h.svc.opts.logger.Warn("presence: saving last seen times; will retry", "err", err)
		}
	}
}

// reach returns, in one look, the open streams of members that do not
// follow conv, and the members with no stream on any node. Callers leave
// out a post's sender themselves: the answer serves every post of conv
// while version stays the same.
func (h *hub) reach(conv string, members []string) (outs []*outbound, offline []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, m := range members {
		set := h.streams[m]
		if len(set) == 0 {
			if len(h.remote[m]) == 0 {
				offline = append(offline, m)
			}
			continue
		}
		for o := range set {
			if !o.follows(conv) {
				outs = append(outs, o)
			}
		}
	}
	return outs, offline
}

// kick ends user's streams on this node with UNAUTHENTICATED: the account
// was deleted.
func (h *hub) kick(user string) {
	for _, o := range h.outbounds(user) {
		o.cancel(fmt.Errorf("%w: the account was deleted", errUnauth))
	}
}

// outbounds returns user's open streams.
func (h *hub) outbounds(user string) []*outbound {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]*outbound, 0, len(h.streams[user]))
	for o := range h.streams[user] {
		out = append(out, o)
	}
	return out
}

// announce tells every user who shares a conversation with p's user.
func (h *hub) announce(user string, p *parleyv1.Presence) {
	f, err := router.Event("", fieldPresence, p)
	if err != nil {
		return
	}
	for _, peer := range h.svc.peers(user, h.svc.opts.presenceFan) {
		for _, o := range h.outbounds(peer) {
			o.offer(f)
		}
	}
}

// peers returns the users who share a conversation with user, user
// included, sorted; with limit > 0, only conversations of at most limit
// members count.
func (s *Service) peers(user string, limit int) []string {
	convs, err := s.store.UserConversations(user)
	if err != nil {
		s.opts.logger.Warn("presence: list conversations", "user", user, "err", err)
		return nil
	}
	seen := map[string]bool{user: true}
	for _, id := range convs {
		c, err := s.members.get(id)
		if err != nil || limit > 0 && len(c.Members) > limit {
			continue
		}
		for _, m := range c.Members {
			seen[m] = true
		}
	}
	out := make([]string, 0, len(seen))
	for u := range seen {
		out = append(out, u)
	}
	slices.Sort(out)
	return out
}
