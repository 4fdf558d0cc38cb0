// Package natspresence carries presence between the parleyd nodes of a
// cluster over core NATS. Each node publishes its users' transitions (a user
// now has streams here, or has had none for the grace period) and, every
// interval, a heartbeat listing every user it has streams for. A node that
// misses three heartbeats is taken as gone and its users as offline there;
// a heartbeat also repairs a transition that was missed.
//
// Everything a node publishes goes on one subject, so its messages reach
// the other nodes in the order it sent them. What other nodes publish is
// handled on one goroutine, the one that calls the Start callback.
package natspresence

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

type options struct {
	subject  string
	interval time.Duration
	node     string
	logger   *slog.Logger
}

// Option configures New.
type Option func(*options)

// WithSubject sets the subject every node publishes on (default
// "parley.presence"); nodes of one cluster must agree on it.
func WithSubject(s string) Option { return func(o *options) { o.subject = s } }

// WithInterval sets the heartbeat interval (default 2 s); a node is taken
// as gone after three intervals without one.
func WithInterval(d time.Duration) Option { return func(o *options) { o.interval = d } }

// WithNode sets this node's id (default: random). Ids must be unique in the
// cluster; a restarted node should take a new one.
func WithNode(id string) Option { return func(o *options) { o.node = id } }

// WithLogger sets the logger for undecodable messages and publish errors.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// Bus is one node's end of the presence bus. It implements
// chat.PresenceBus.
type Bus struct {
	nc   *nats.Conn
	opts options

	mu    sync.Mutex      // protects local and orders what is sent
	local map[string]bool // users with streams on this node
}

// message is what travels on the subject: a transition (User set) or a
// heartbeat (Users, the whole list).
type message struct {
	Node   string    `json:"node"`
	User   string    `json:"user,omitempty"`
	Online bool      `json:"online,omitempty"`
	Seen   time.Time `json:"seen,omitzero"`
	Beat   bool      `json:"beat,omitempty"`
	Users  []string  `json:"users,omitempty"`
	// Gone says User's account was deleted: every node ends its streams.
	Gone bool `json:"gone,omitempty"`
}

// New returns a bus on nc. Nothing is received until Start.
func New(nc *nats.Conn, opts ...Option) (*Bus, error) {
	o := options{subject: "parley.presence", interval: 2 * time.Second, logger: slog.Default()}
	for _, opt := range opts {
		opt(&o)
	}
	if nc == nil {
		return nil, errors.New("natspresence: nil NATS connection")
	}
	if o.interval <= 0 {
		return nil, fmt.Errorf("natspresence: interval must be positive, got %s", o.interval)
	}
	if o.node == "" {
		o.node = nats.NewInbox()[len(nats.InboxPrefix):]
	}
	return &Bus{nc: nc, opts: o, local: make(map[string]bool)}, nil
}

// Node is this node's id on the bus.
func (b *Bus) Node() string { return b.opts.node }

// Publish records and tells the other nodes that user has streams on this
// node (online) or no longer has (offline, last seen at seen). It does not
// block on the network; a lost message is repaired by the next heartbeat.
func (b *Bus) Publish(user string, online bool, seen time.Time) {
	// Sent under the lock, like heartbeats, so that a heartbeat never
	// overtakes the transition it already reflects (or the other way).
	b.mu.Lock()
	defer b.mu.Unlock()
	if online {
		b.local[user] = true
	} else {
		delete(b.local, user)
	}
	b.send(message{Node: b.opts.node, User: user, Online: online, Seen: seen})
}

// Deleted tells the other nodes that user's account was deleted, so that
// they end the user's streams. Like Publish it does not block on the
// network; unlike a transition nothing repairs a lost one (the user's
// tokens are refused on every node anyway).
func (b *Bus) Deleted(user string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.send(message{Node: b.opts.node, User: user, Gone: true})
}

func (b *Bus) send(m message) {
	data, err := json.Marshal(m)
	if err == nil {
		err = b.nc.Publish(b.opts.subject, data)
	}
	if err != nil {
		b.opts.logger.Warn("presence: publish", "err", err)
	}
}

// peer is what this node knows of another one.
type peer struct {
	users map[string]bool
	beat  time.Time // last message from it
}

// Start subscribes to the other nodes' messages and starts heartbeats; it
// returns once the subscription is in place. fn
// is called on one goroutine for every change another node reports, and
// with online false for every user of a node that stopped answering; gone,
// on the same goroutine, for every account another node deleted. stop
// ends it all and waits for fn and gone to return for the last time.
func (b *Bus) Start(fn func(node, user string, online bool, seen time.Time), gone func(user string)) (stop func(), err error) {
	in := make(chan *nats.Msg, 4096)
	sub, err := b.nc.ChanSubscribe(b.opts.subject, in)
	if err != nil {
		return nil, fmt.Errorf("natspresence: subscribe %s: %w", b.opts.subject, err)
	}
	// Return only once the server has the subscription, so that what
	// other nodes publish from now on reaches this one.
	if err := b.nc.Flush(); err != nil {
		sub.Unsubscribe()
		return nil, fmt.Errorf("natspresence: subscribe %s: %w", b.opts.subject, err)
	}
	done, exited := make(chan struct{}), make(chan struct{})
	go b.run(in, fn, gone, done, exited)
	var once sync.Once
	return func() {
		once.Do(func() {
			sub.Unsubscribe()
			close(done)
			<-exited
		})
	}, nil
}

func (b *Bus) run(in <-chan *nats.Msg, fn func(node, user string, online bool, seen time.Time), gone func(user string), done <-chan struct{}, exited chan<- struct{}) {
	defer close(exited)
	peers := make(map[string]*peer)
	tick := time.NewTicker(b.opts.interval)
	defer tick.Stop()
	b.heartbeat()
	for {
		select {
		case <-done:
			return
		case now := <-tick.C:
			b.heartbeat()
			for node, p := range peers {
				if now.Sub(p.beat) < 3*b.opts.interval {
					continue
				}
				delete(peers, node)
				for _, u := range slices.Sorted(maps.Keys(p.users)) {
					fn(node, u, false, p.beat)
				}
			}
		case msg := <-in:
			var m message
			if err := json.Unmarshal(msg.Data, &m); err != nil || m.Node == "" {
				b.opts.logger.Warn("presence: undecodable message", "err", err)
				continue
			}
			if m.Node == b.opts.node {
				continue
			}
			if m.Gone {
				gone(m.User)
				continue
			}
			p := peers[m.Node]
			if p == nil {
				p = &peer{users: make(map[string]bool)}
				peers[m.Node] = p
			}
			p.beat = time.Now()
			if !m.Beat {
				if m.Online != p.users[m.User] {
					if m.Online {
						p.users[m.User] = true
					} else {
						delete(p.users, m.User)
					}
					fn(m.Node, m.User, m.Online, m.Seen)
				}
				continue
			}
			// A heartbeat is the node's whole list: apply the difference.
			now := make(map[string]bool, len(m.Users))
			for _, u := range m.Users {
				now[u] = true
				if !p.users[u] {
					p.users[u] = true
					fn(m.Node, u, true, time.Time{})
				}
			}
			for _, u := range slices.Sorted(maps.Keys(p.users)) {
				if !now[u] {
					delete(p.users, u)
					fn(m.Node, u, false, p.beat)
				}
			}
		}
	}
}

func (b *Bus) heartbeat() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.send(message{Node: b.opts.node, Beat: true, Users: slices.Sorted(maps.Keys(b.local))})
}
