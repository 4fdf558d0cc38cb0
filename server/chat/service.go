// Package chat implements Parley's gRPC services (AuthService,
// ConversationService, ChatService and AttachmentService) on top of the
// router and the store.
// It is the edge where errors become gRPC status codes.
package chat

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
	"github.com/parleychat/parley/server/router"
	"github.com/parleychat/parley/server/store"
)

// Router is what the services need from message routing. *router.Router
// implements it; a clustered router may replace it.
type Router interface {
	Publish(ctx context.Context, m router.Message, ack router.AckFunc) error
	Catchup(conv string, after uint64, max int, sub router.Subscriber) (frames []*router.Frame, next uint64, live bool, err error)
	Unsubscribe(conv string, sub router.Subscriber)
	Head(conv string) (uint64, error)
	Broadcast(conv string, f *router.Frame)
}

var _ Router = (*router.Router)(nil)

// Store is what the services need from durable state. *store.Store
// implements it.
type Store interface {
	Epoch() string
	CreateUser(u store.User) error
	User(id string) (store.User, error)
	DeleteUser(id string, at time.Time) error
	SetLastSeen(seen map[string]time.Time) error
	LastSeen(user string) (time.Time, error)
	CreateConversation(c store.Conversation) error
	UpdateConversation(id string, fn func(c *store.Conversation) error) (store.Conversation, error)
	Conversation(id string) (store.Conversation, error)
	UserConversations(user string) ([]string, error)
	Range(conv string, after, upto uint64, limit int) ([]store.Record, bool, error)
	Before(conv string, before uint64, limit int) ([]store.Record, bool, error)
	Last(conv string) (store.Record, bool, error)
	Get(conv string, seq uint64) (store.Record, bool, error)
	Count(conv string, after uint64, max int, keep func(data []byte) bool) (int, error)
	UpdateReceipt(u store.ReceiptUpdate, done func(store.Receipt, error))
	Receipt(conv, user string) (store.Receipt, error)
	Receipts(conv string) ([]store.Receipt, error)
	Dedup(sender, clientMsgID string) (store.DedupRecord, bool, error)
	Blobs
}

var _ Store = (*store.Store)(nil)

// Tokens issues access tokens for users who registered or logged in.
type Tokens interface {
	Issue(userID string) (token string, expiresAt time.Time, err error)
}

type options struct {
	maxBody       int
	queue         int
	heartbeat     time.Duration
	replayPage    int
	bcryptCost    int
	maxSubs       int
	maxInflight   int
	maxStreams    int
	maxAttachment int
	sendRate      float64
	typingRate    float64
	typingTTL     time.Duration
	presenceGrace time.Duration
	presenceFan   int
	presenceBus   PresenceBus
	feedNotes     bool
	webhook       WebhookFunc
	logger        *slog.Logger
}

// WebhookFunc is told about a post for members who have no live stream. It
// must not block: delivery does not wait for it. users may be shared with
// other calls: it may keep it but must not change it.
type WebhookFunc func(users []string, conv string, seq uint64, sender, preview string, sentAt time.Time)

// Option configures New.
type Option func(*options)

// WithMaxBody sets the largest accepted message body in bytes.
func WithMaxBody(n int) Option { return func(o *options) { o.maxBody = n } }

// WithQueue sets each stream's outbound queue length in frames. A stream
// whose queue fills up is cut as a slow consumer; the bound is what keeps
// one slow reader from holding memory or the router hostage.
func WithQueue(n int) Option { return func(o *options) { o.queue = n } }

// WithHeartbeat sets the interval of Subscribe heartbeats.
func WithHeartbeat(d time.Duration) Option { return func(o *options) { o.heartbeat = d } }

// WithBcryptCost sets the bcrypt cost for new passwords (tests use the
// minimum to stay fast).
func WithBcryptCost(c int) Option { return func(o *options) { o.bcryptCost = c } }

// WithMaxSubscriptions caps the conversations one stream may follow.
func WithMaxSubscriptions(n int) Option { return func(o *options) { o.maxSubs = n } }

// WithMaxInflight caps the sends a Chat stream may have waiting for their
// acks; the stream's reader stops reading until one is answered.
func WithMaxInflight(n int) Option { return func(o *options) { o.maxInflight = n } }

// WithMaxStreams caps the streams one user may have open at once.
func WithMaxStreams(n int) Option { return func(o *options) { o.maxStreams = n } }

// WithMaxAttachment sets the largest accepted attachment in bytes.
func WithMaxAttachment(n int) Option { return func(o *options) { o.maxAttachment = n } }

// WithSendRate limits each user's sends (posts, edits, deletes) to rate per
// second, with bursts of twice that; 0 or less means no limit.
func WithSendRate(rate float64) Option { return func(o *options) { o.sendRate = rate } }

// WithTypingRate limits each user's typing updates to rate per second, with
// bursts of twice that; 0 or less means no limit.
func WithTypingRate(rate float64) Option { return func(o *options) { o.typingRate = rate } }

// WithTypingTTL sets how long a typing indicator lasts unless renewed.
func WithTypingTTL(d time.Duration) Option { return func(o *options) { o.typingTTL = d } }

// WithPresenceGrace sets how long after a user's last stream closes they are
// announced offline; a reconnect within it goes unnoticed.
func WithPresenceGrace(d time.Duration) Option { return func(o *options) { o.presenceGrace = d } }

// WithPresenceFanout caps the members a conversation may have for its
// members to be pushed each other's presence changes (default 1,000). In a
// bigger one, a large room, a stream coming online would queue a frame for
// every online member, and the room coming online N² of them: there
// presence is asked for with GetPresence, which answers for anyone who
// shares a conversation with the caller, whatever its size.
func WithPresenceFanout(n int) Option { return func(o *options) { o.presenceFan = n } }

// WithWebhook sets the function told about posts to offline members.
func WithWebhook(f WebhookFunc) Option { return func(o *options) { o.webhook = f } }

// WithLogger sets the logger.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// Service implements the gRPC services. It is safe for concurrent use.
type Service struct {
	parleyv1.UnimplementedAuthServiceServer
	parleyv1.UnimplementedConversationServiceServer
	parleyv1.UnimplementedChatServiceServer
	parleyv1.UnimplementedAttachmentServiceServer

	router  Router
	store   Store
	tokens  Tokens
	stopBus func() // ends the presence bus; nil on a single node
	opts    options

	members    *memberCache
	hub        *hub
	typing     typing
	sendRate   *rateLimiter
	typingRate *rateLimiter

	posts         chan post // durable posts waiting for notifications
	droppedNotes  atomic.Uint64
	slowConsumers atomic.Uint64
	droppedEvents atomic.Uint64
	notStoredLog  logEvery // limits the "message not stored" lines

	shutdown     chan struct{} // closed by Shutdown: streaming handlers return UNAVAILABLE
	shutdownOnce sync.Once
	// streams counts the streaming handlers and the goroutines that may
	// outlive them. A handler joins it through enter, under lifeMu, so that
	// no Add from zero can race Shutdown's Wait.
	streams sync.WaitGroup
	lifeMu  sync.Mutex // orders enter against closing shutdown

	// The hub's saver writes last-seen times until stopSaver closes.
	stopSaver chan struct{}
	saverDone chan struct{}
	stopOnce  sync.Once
}

// New returns the services over r and st, issuing tokens with tokens.
func New(r Router, st Store, tokens Tokens, opts ...Option) (*Service, error) {
	o := options{
		maxBody:       16 << 10,
		queue:         1024,
		heartbeat:     15 * time.Second,
		replayPage:    256,
		maxSubs:       maxSubscribe,
		maxInflight:   1024,
		maxStreams:    16,
		maxAttachment: 8 << 20,
		typingTTL:     6 * time.Second,
		presenceGrace: 3 * time.Second,
		presenceFan:   1000,
		logger:        slog.Default(),
	}
	for _, opt := range opts {
		opt(&o)
	}
	switch {
	case r == nil || st == nil || tokens == nil:
		return nil, errors.New("chat: router, store and tokens are required")
	case o.maxBody <= 0:
		return nil, fmt.Errorf("chat: max body must be positive, got %d", o.maxBody)
	case o.queue < 16:
		return nil, fmt.Errorf("chat: queue must be at least 16 frames, got %d", o.queue)
	case o.heartbeat <= 0:
		return nil, fmt.Errorf("chat: heartbeat interval must be positive, got %s", o.heartbeat)
	case o.maxInflight <= 0:
		return nil, fmt.Errorf("chat: max in-flight sends must be positive, got %d", o.maxInflight)
	case o.maxStreams <= 0:
		return nil, fmt.Errorf("chat: max streams per user must be positive, got %d", o.maxStreams)
	case o.maxAttachment <= 0:
		return nil, fmt.Errorf("chat: max attachment must be positive, got %d", o.maxAttachment)
	case o.typingTTL <= 0 || o.presenceGrace < 0:
		return nil, errors.New("chat: typing TTL must be positive and presence grace not negative")
	case o.maxSubs <= 0:
		return nil, fmt.Errorf("chat: max subscriptions must be positive, got %d", o.maxSubs)
	}
	s := &Service{router: r, store: st, tokens: tokens, opts: o, shutdown: make(chan struct{}),
		members:      newMemberCache(st),
		notStoredLog: logEvery{interval: time.Second},
		typing:       typing{timers: make(map[[2]string]*time.Timer)},
		sendRate:     newRateLimiter(o.sendRate, int(2*o.sendRate)),
		typingRate:   newRateLimiter(o.typingRate, int(2*o.typingRate)),
	}
	s.hub = newHub(s, o.presenceGrace, o.presenceBus)
	if o.presenceBus != nil {
		stop, err := o.presenceBus.Start(s.hub.remoteChange, s.hub.kick)
		if err != nil {
			return nil, fmt.Errorf("chat: presence bus: %w", err)
		}
		s.stopBus = stop
	}
	s.posts = make(chan post, 4096)
	s.streams.Add(1)
	go s.notifier()
	s.stopSaver, s.saverDone = make(chan struct{}), make(chan struct{})
	go s.hub.saver(s.stopSaver, s.saverDone)
	return s, nil
}

// Shutdown makes every open stream end with UNAVAILABLE, so clients
// reconnect elsewhere or later, and waits (until ctx ends) for the stream
// goroutines to exit. New streams are refused from then on.
func (s *Service) Shutdown(ctx context.Context) error {
	s.shutdownOnce.Do(func() {
		s.lifeMu.Lock()
		close(s.shutdown)
		s.lifeMu.Unlock()
		if s.stopBus != nil {
			s.stopBus()
		}
		s.hub.close()
		s.typing.close()
	})
	done := make(chan struct{})
	go func() {
		s.streams.Wait()
		// Every stream has ended and left its last-seen time: save them.
		s.stopOnce.Do(func() { close(s.stopSaver) })
		<-s.saverDone
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Stats are the services' counters and gauges, for metrics.
type Stats struct {
	Streams              int    // open Chat and Subscribe streams
	QueuedFrames         int    // frames waiting in all streams' queues
	MaxQueueDepth        int    // the fullest stream queue
	SlowConsumers        uint64 // streams cut for not keeping up, since start
	NotificationsDropped uint64 // notifications dropped because their queue was full
	EventsDropped        uint64 // receipts, typing, presence and notifications dropped on full stream queues
}

// Stats returns the current figures. It is safe for concurrent use; it
// walks every open stream, so call it at scrape time, not per message.
func (s *Service) Stats() Stats {
	st := Stats{SlowConsumers: s.slowConsumers.Load(), NotificationsDropped: s.droppedNotes.Load(), EventsDropped: s.droppedEvents.Load()}
	s.hub.mu.Lock()
	defer s.hub.mu.Unlock()
	for _, set := range s.hub.streams {
		for o := range set {
			st.Streams++
			n := o.q.len()
			st.QueuedFrames += n
			st.MaxQueueDepth = max(st.MaxQueueDepth, n)
		}
	}
	return st
}

// enter counts a streaming handler in streams unless the service is
// shutting down; a handler that entered calls streams.Done when it returns.
// While it runs, what it starts may join streams too.
func (s *Service) enter() bool {
	s.lifeMu.Lock()
	defer s.lifeMu.Unlock()
	if s.shuttingDown() {
		return false
	}
	s.streams.Add(1)
	return true
}

func (s *Service) shuttingDown() bool {
	select {
	case <-s.shutdown:
		return true
	default:
		return false
	}
}
