// Package chat implements Parley's gRPC services (AuthService,
// ConversationService and ChatService) on top of the router and the store.
// It is the edge where errors become gRPC status codes.
package chat

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
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
}

var _ Router = (*router.Router)(nil)

// Store is what the services need from durable state. *store.Store
// implements it.
type Store interface {
	Epoch() string
	CreateUser(u store.User) error
	User(id string) (store.User, error)
	CreateConversation(c store.Conversation) error
	UpdateConversation(id string, fn func(c *store.Conversation) error) (store.Conversation, error)
	Conversation(id string) (store.Conversation, error)
	UserConversations(user string) ([]string, error)
	Range(conv string, after, upto uint64, limit int) ([]store.Record, bool, error)
	Before(conv string, before uint64, limit int) ([]store.Record, bool, error)
	Last(conv string) (store.Record, bool, error)
}

var _ Store = (*store.Store)(nil)

// Tokens issues access tokens for users who registered or logged in.
type Tokens interface {
	Issue(userID string) (token string, expiresAt time.Time, err error)
}

type options struct {
	maxBody     int
	queue       int
	heartbeat   time.Duration
	replayPage  int
	bcryptCost  int
	maxSubs     int
	maxInflight int
	logger      *slog.Logger
}

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

// WithLogger sets the logger.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// Service implements the three gRPC services. It is safe for concurrent use.
type Service struct {
	parleyv1.UnimplementedAuthServiceServer
	parleyv1.UnimplementedConversationServiceServer
	parleyv1.UnimplementedChatServiceServer

	router Router
	store  Store
	tokens Tokens
	opts   options

	shutdown     chan struct{} // closed by Shutdown: streaming handlers return UNAVAILABLE
	shutdownOnce sync.Once
	streams      sync.WaitGroup // stream goroutines that may outlive their handler
}

// New returns the services over r and st, issuing tokens with tokens.
func New(r Router, st Store, tokens Tokens, opts ...Option) (*Service, error) {
	o := options{
		maxBody:     16 << 10,
		queue:       1024,
		heartbeat:   15 * time.Second,
		replayPage:  256,
		maxSubs:     maxSubscribe,
		maxInflight: 1024,
		logger:      slog.Default(),
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
	case o.maxSubs <= 0:
		return nil, fmt.Errorf("chat: max subscriptions must be positive, got %d", o.maxSubs)
	}
	return &Service{router: r, store: st, tokens: tokens, opts: o, shutdown: make(chan struct{})}, nil
}

// Shutdown makes every open stream end with UNAVAILABLE, so clients
// reconnect elsewhere or later, and waits (until ctx ends) for the stream
// goroutines to exit. New streams are refused from then on.
func (s *Service) Shutdown(ctx context.Context) error {
	s.shutdownOnce.Do(func() { close(s.shutdown) })
	done := make(chan struct{})
	go func() { s.streams.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *Service) shuttingDown() bool {
	select {
	case <-s.shutdown:
		return true
	default:
		return false
	}
}
