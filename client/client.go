// Package client is the Go client for Parley: it dials a server, calls its
// RPCs and keeps a chat session over the Chat stream alive.
//
// A Client wraps one gRPC connection and the caller's access token. Its
// unary methods are thin, typed wrappers around the generated stubs, which
// stay reachable through AuthService, ChatService, ConversationService and
// AttachmentService for anything the wrappers do not cover; Upload and
// Download move attachments, and Download checks what it received against
// the file's id. A Session, made with Client.NewSession, keeps a Chat stream
// open across network failures and server restarts: it resubscribes from
// the last seq seen, resends what was not acknowledged (sends, edits and
// deletes alike), drops the duplicates that resending can produce, and
// passes on receipts, typing, presence and notifications as events.
// Receipts turns receipt events into per-message state, and Apply applies
// edit and delete events to the posts they change.
package client

import (
	"context"
	"crypto/tls"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
)

// Client is a connection to one Parley server. It is safe for concurrent
// use by multiple goroutines; its token may be changed with SetToken at any
// time and the next call (or the next reconnect of a Session) uses it.
type Client struct {
	conn  *grpc.ClientConn
	creds *tokenCredentials
	auth  parleyv1.AuthServiceClient
	chat  parleyv1.ChatServiceClient
	convs parleyv1.ConversationServiceClient
	files parleyv1.AttachmentServiceClient

	mu       sync.Mutex // protects userID, sessions and closed
	userID   string
	sessions map[*Session]struct{}
	closed   bool
}

// Option configures Dial.
type Option func(*dialConfig)

type dialConfig struct {
	token    string
	tls      *tls.Config
	dialOpts []grpc.DialOption
}

// WithToken sets the access token sent as `authorization: Bearer <token>`
// on every call. Without it, only AuthService calls succeed until Register,
// Login or SetToken provides one.
func WithToken(token string) Option {
	return func(c *dialConfig) { c.token = token }
}

// WithTLS makes Dial use TLS with cfg instead of plaintext HTTP/2 (h2c).
// A nil cfg means the system roots and default settings.
func WithTLS(cfg *tls.Config) Option {
	return func(c *dialConfig) {
		if cfg == nil {
			cfg = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		c.tls = cfg
	}
}

// WithDialOptions appends raw gRPC dial options. They are applied after the
// ones Dial sets itself, so they win where the two disagree (for example a
// custom dialer for tests, or keepalive parameters).
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(c *dialConfig) { c.dialOpts = append(c.dialOpts, opts...) }
}

// Dial returns a Client for the server at target ("host:port" or any gRPC
// target string). It speaks plaintext HTTP/2 unless WithTLS is given.
//
// Dial does not wait for the network: gRPC connects in the background and
// the first call waits for it, so a Client can be made while offline. ctx is
// only checked, so that a caller that has already given up gets no Client.
// Close the Client to release the connection.
func Dial(ctx context.Context, target string, opts ...Option) (*Client, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("dial %s: %w", target, err)
	}
	var cfg dialConfig
	for _, o := range opts {
		o(&cfg)
	}
	creds := &tokenCredentials{}
	creds.set(cfg.token)

	transport := insecure.NewCredentials()
	if cfg.tls != nil {
		transport = credentials.NewTLS(cfg.tls)
	}
	dialOpts := append([]grpc.DialOption{
		grpc.WithTransportCredentials(transport),
		grpc.WithPerRPCCredentials(creds),
		// gRPC's default redial backoff grows to two minutes, far too slow
		// for a chat client after a server restart; a Session adds its own
		// full-jitter backoff on top of this one.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: grpcbackoff.Config{
				BaseDelay:  250 * time.Millisecond,
				Multiplier: 1.6,
				Jitter:     0.2,
				MaxDelay:   10 * time.Second,
			},
			MinConnectTimeout: 10 * time.Second,
		}),
		// Fixed flow-control windows turn off gRPC's bandwidth-delay
		// estimator, which answers every data frame that follows a ping
		// ack with a new ping: for a chat stream's small, spaced frames
		// that is one ping and one ping ack per message, doubling the
		// server's socket writes. In a room of 100 at 100 msg/s it cut
		// the server's CPU by a third. The windows only bound what the
		// server may send ahead of the app reading it: memory a client
		// spends when it falls behind, not up front.
		grpc.WithInitialWindowSize(1 << 20),
		grpc.WithInitialConnWindowSize(1 << 20),
	}, cfg.dialOpts...)
	conn, err := grpc.NewClient(target, dialOpts...)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", target, err)
	}
	return &Client{
		conn:     conn,
		creds:    creds,
		auth:     parleyv1.NewAuthServiceClient(conn),
		chat:     parleyv1.NewChatServiceClient(conn),
		convs:    parleyv1.NewConversationServiceClient(conn),
		files:    parleyv1.NewAttachmentServiceClient(conn),
		sessions: make(map[*Session]struct{}),
	}, nil
}

// Close closes every Session made from c, then the connection. Calls in
// flight fail with codes.Canceled. Close is safe to call more than once.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	sessions := make([]*Session, 0, len(c.sessions))
	for s := range c.sessions {
		sessions = append(sessions, s)
	}
	c.mu.Unlock()

	// Sessions first: a Session whose connection vanished under it would
	// take the closed connection for a network failure and retry forever.
	for _, s := range sessions {
		s.Close()
	}
	if err := c.conn.Close(); err != nil {
		return fmt.Errorf("close connection: %w", err)
	}
	return nil
}

// SetToken replaces the access token. Calls started afterwards, including
// the next reconnect of every Session, send the new one; an empty token
// sends no authorization header at all. The user id from an earlier
// Register or Login is forgotten, so that UserID follows the new token.
func (c *Client) SetToken(token string) {
	c.creds.set(token)
	c.mu.Lock()
	c.userID = ""
	c.mu.Unlock()
}

// Token returns the access token in use, empty if there is none.
func (c *Client) Token() string { return c.creds.get() }

// UserID returns the user id that the last successful Register or Login
// returned or, before either, the subject of the token given to WithToken
// or SetToken (read without verification: only the server can check a
// token). It is empty when neither says.
func (c *Client) UserID() string {
	c.mu.Lock()
	id := c.userID
	c.mu.Unlock()
	if id != "" {
		return id
	}
	return c.creds.getSubject()
}

// Register creates an account, logs it in and keeps its token for every
// later call. displayName may be empty.
func (c *Client) Register(ctx context.Context, username, password, displayName string) (*parleyv1.RegisterResponse, error) {
	resp, err := c.auth.Register(ctx, &parleyv1.RegisterRequest{
		Username:    username,
		Password:    password,
		DisplayName: displayName,
	})
	if err != nil {
		return nil, fmt.Errorf("register %s: %w", username, err)
	}
	c.remember(resp.GetUserId(), resp.GetToken())
	return resp, nil
}

// Login checks the credentials and keeps the returned token for every later
// call.
func (c *Client) Login(ctx context.Context, username, password string) (*parleyv1.LoginResponse, error) {
	resp, err := c.auth.Login(ctx, &parleyv1.LoginRequest{Username: username, Password: password})
	if err != nil {
		return nil, fmt.Errorf("login %s: %w", username, err)
	}
	c.remember(resp.GetUserId(), resp.GetToken())
	return resp, nil
}

// DeleteAccount deletes an account after checking its password: it leaves
// its rooms and groups, its tokens stop working, and its name stays taken.
// If it is the account c is logged in as, c forgets its token.
func (c *Client) DeleteAccount(ctx context.Context, username, password string) error {
	if _, err := c.auth.DeleteAccount(ctx, &parleyv1.DeleteAccountRequest{Username: username, Password: password}); err != nil {
		return fmt.Errorf("delete account %s: %w", username, err)
	}
	if c.UserID() == username {
		c.remember("", nil)
	}
	return nil
}

func (c *Client) remember(userID string, tok *parleyv1.AccessToken) {
	c.creds.set(tok.GetValue())
	c.mu.Lock()
	c.userID = userID
	c.mu.Unlock()
}

// Conn returns the underlying gRPC connection, for services this package
// does not wrap (health, reflection). It is closed by Client.Close.
func (c *Client) Conn() *grpc.ClientConn { return c.conn }

// AuthService returns the generated AuthService stub on c's connection.
// Calls through it do not update c's token.
func (c *Client) AuthService() parleyv1.AuthServiceClient { return c.auth }

// ChatService returns the generated ChatService stub on c's connection. A
// Chat stream opened through it has none of a Session's reconnect, resume
// or deduplication.
func (c *Client) ChatService() parleyv1.ChatServiceClient { return c.chat }

// ConversationService returns the generated ConversationService stub on c's
// connection.
func (c *Client) ConversationService() parleyv1.ConversationServiceClient { return c.convs }

// AttachmentService returns the generated AttachmentService stub on c's
// connection. Download through it is not checked against the file's id.
func (c *Client) AttachmentService() parleyv1.AttachmentServiceClient { return c.files }

// addSession registers s so that Close can close it; it fails once c is
// closed.
func (c *Client) addSession(s *Session) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return ErrClosed
	}
	c.sessions[s] = struct{}{}
	return nil
}

func (c *Client) removeSession(s *Session) {
	c.mu.Lock()
	delete(c.sessions, s)
	c.mu.Unlock()
}
