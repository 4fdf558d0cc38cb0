package chat

import (
	"slices"
	"sync"
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
// a conversation with them.
type hub struct {
	svc   *Service
	grace time.Duration

	mu       sync.Mutex // protects everything below
	streams  map[string]map[*outbound]struct{}
	lastSeen map[string]time.Time
	offline  map[string]*time.Timer // pending offline transitions
	closed   bool
}

func newHub(s *Service, grace time.Duration) *hub {
	return &hub{svc: s, grace: grace, streams: make(map[string]map[*outbound]struct{}),
		lastSeen: make(map[string]time.Time), offline: make(map[string]*time.Timer)}
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
	first := len(set) == 1
	pending := h.offline[user]
	delete(h.offline, user)
	h.mu.Unlock()
	if pending != nil && pending.Stop() {
		return nil // back within the grace period: nobody saw them leave
	}
	if first {
		h.announce(user, &parleyv1.Presence{UserId: user, Online: true})
	}
	return nil
}

// remove unregisters o; the user goes offline after the grace period if it
// was their last stream.
func (h *hub) remove(user string, o *outbound) {
	h.mu.Lock()
	defer h.mu.Unlock()
	set := h.streams[user]
	delete(set, o)
	if len(set) > 0 {
		return
	}
	delete(h.streams, user)
	now := time.Now()
	h.lastSeen[user] = now
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
		h.mu.Unlock()
		h.announce(user, &parleyv1.Presence{UserId: user, LastSeen: timestamppb.New(now)})
	})
	h.offline[user] = t // before the callback can look: h.mu is held
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
	if _, pending := h.offline[user]; pending {
		p.Online = true
	}
	if seen, ok := h.lastSeen[user]; ok && !p.Online {
		p.LastSeen = timestamppb.New(seen)
	}
	return p
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
	for _, peer := range h.svc.peers(user) {
		for _, o := range h.outbounds(peer) {
			o.offer(f)
		}
	}
}

// peers returns the users who share a conversation with user, user
// included, sorted.
func (s *Service) peers(user string) []string {
	convs, err := s.store.UserConversations(user)
	if err != nil {
		s.opts.logger.Warn("presence: list conversations", "user", user, "err", err)
		return nil
	}
	seen := map[string]bool{user: true}
	for _, id := range convs {
		c, err := s.members.get(id)
		if err != nil {
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
