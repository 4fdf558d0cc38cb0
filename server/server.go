// Package server assembles a Parley node: its backend (the embedded router
// and bbolt store, or a NATS JetStream cluster shared with other nodes), the
// gRPC services, and one port that serves native gRPC, grpc-web and plain
// HTTP. parleyd is a thin main around it; tests start it on a loopback port.
package server

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"time"

	"github.com/improbable-eng/grpc-web/go/grpcweb"
	"github.com/soheilhy/cmux"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
	"github.com/parleychat/parley/server/auth"
	"github.com/parleychat/parley/server/chat"
	"github.com/parleychat/parley/server/metrics"
	"github.com/parleychat/parley/server/notify"
)

// Config is everything a node needs. The zero value of a field means its
// default, listed with each field; parleyd exposes each one as a flag.
type Config struct {
	Addr    string // listen address; default ":8080"
	DataDir string // default "./data"; unused in cluster mode

	// NATSURL switches on cluster mode: the node keeps nothing of its own
	// and shares the log, the sequencer and all state with the other
	// nodes through the NATS JetStream cluster at these URLs
	// (comma-separated). Empty: the embedded router and bbolt store.
	NATSURL string
	// NATSReplicas is the replication of the JetStream stream and buckets
	// the first node creates; default 3.
	NATSReplicas int

	BatchSize int // messages per journal commit; default 4096
	// FlushInterval is how long a journal commit waits for more messages
	// when the last commit ended less than that long ago (sends come
	// faster than one an interval); after a quiet spell a message is
	// committed at once. Default 2 ms; negative: never wait, commit as
	// soon as the queue is empty.
	FlushInterval time.Duration
	NoSync        bool   // benchmarks only: acknowledged messages may be lost on a crash
	Window        uint64 // W: how far seqs may run ahead of the disk; default 4096
	// Pacing bounds how long a send into a saturated conversation (most of
	// its subscribers backlogged but draining) waits for the fan-out to
	// catch up; 0 means 250 ms, negative turns pacing off.
	Pacing time.Duration
	Tail   int // committed messages kept in memory per conversation; default 256

	Queue     int           // per-stream outbound queue in frames; default 1024
	MaxBody   int           // bytes; default 16384
	Heartbeat time.Duration // Subscribe heartbeat interval; default 15s

	MaxAttachment int // largest attachment in bytes; default 8 MiB

	SendRate      float64       // sends per second per user (bursts of twice that); 0: no limit
	TypingRate    float64       // typing updates per second per user; 0: no limit
	MaxStreams    int           // open streams per user; default 16
	TypingTTL     time.Duration // how long a typing indicator lasts unless renewed; default 6s
	PresenceGrace time.Duration // how long after the last stream closes a user is announced offline; default 3s
	// PresenceFanout is the most members a conversation may have for its
	// members to be pushed each other's presence changes; bigger rooms ask
	// GetPresence. Default 1,000; negative: no cap.
	PresenceFanout int

	WebhookURL    string // POSTed (JSON) for posts to members with no live stream; empty: off
	WebhookSecret string // signs webhook bodies (X-Parley-Signature: sha256=<hmac>)

	SigningKey      []byte        // HS256 key; default: generated once and kept in DataDir
	TokenTTL        time.Duration // default 24h
	ExternalIssuer  string        // iss of an external token issuer, with ExternalKeyFile
	ExternalKeyFile string        // PEM public key of the external issuer
	BcryptCost      int           // default bcrypt.DefaultCost

	CORSOrigins     []string      // origins allowed to call grpc-web from other sites; "*" for any
	ShutdownTimeout time.Duration // default 10s
	Pprof           bool          // serve net/http/pprof under /debug/pprof/
	IdleConnTimeout time.Duration // a connection that sends no request within it is closed; default 10s
	Web             fs.FS         // browser app served at /; nil serves nothing there
	Logger          *slog.Logger  // default slog.Default()
}

// Server is a running node. Start it with Start, stop it with Shutdown.
type Server struct {
	cfg    Config
	log    *slog.Logger
	store  chat.Store
	router chat.Router
	back   *backend
	stop   func() // ends the conversation watch; nil without one
	chat   *chat.Service
	hook   *notify.Notifier // nil without a webhook
	grpc   *grpc.Server
	http   *http.Server
	health *health.Server
	stats  *metrics.Metrics

	lis  net.Listener
	mux  cmux.CMux
	wg   sync.WaitGroup
	once sync.Once
	err  error
}

// New opens the store in cfg.DataDir and builds the node without listening.
func New(cfg Config) (*Server, error) {
	if cfg.Addr == "" {
		cfg.Addr = ":8080"
	}
	if cfg.DataDir == "" {
		cfg.DataDir = "./data"
	}
	if cfg.ShutdownTimeout == 0 {
		cfg.ShutdownTimeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Server{cfg: cfg, log: cfg.Logger, stats: metrics.New()}

	var err error
	if cfg.NATSURL != "" {
		s.back, err = openCluster(cfg, s.stats)
	} else {
		s.back, err = openLocal(cfg, s.window(), s.stats)
	}
	if err != nil {
		return nil, err
	}
	s.store, s.router = s.back.store, s.back.router
	if err := s.build(); err != nil {
		if s.stop != nil {
			s.stop()
		}
		s.back.close()
		return nil, err
	}
	if s.back.unclean {
		s.log.Warn("previous run did not stop cleanly; sequencing resumes past the write-behind window", "window", s.window())
	}
	return s, nil
}

func (s *Server) window() uint64 {
	if s.cfg.Window == 0 {
		return 4096
	}
	return s.cfg.Window
}

func (s *Server) maxAttachment() int {
	if s.cfg.MaxAttachment == 0 {
		return 8 << 20
	}
	return s.cfg.MaxAttachment
}

func (s *Server) build() error {
	cfg := s.cfg
	// A file is held in memory whole and written in one transaction, and
	// protobuf cannot encode a message of 2 GiB.
	if m := s.maxAttachment(); m <= 0 || m > 1<<30 {
		return fmt.Errorf("server: max attachment must be 1 byte to 1 GiB, got %d", m)
	}
	key := cfg.SigningKey
	if key == nil {
		var err error
		if key, err = s.back.signingKey(); err != nil {
			return err
		}
	}
	aopts := []auth.Option{}
	if cfg.TokenTTL != 0 {
		aopts = append(aopts, auth.WithTTL(cfg.TokenTTL))
	}
	if cfg.ExternalKeyFile != "" || cfg.ExternalIssuer != "" {
		if cfg.ExternalKeyFile == "" || cfg.ExternalIssuer == "" {
			return errors.New("server: an external issuer needs both its name and its public key file")
		}
		pub, err := auth.LoadPublicKey(cfg.ExternalKeyFile)
		if err != nil {
			return err
		}
		aopts = append(aopts, auth.WithExternalIssuer(cfg.ExternalIssuer, pub))
	}
	authn, err := auth.New(key, aopts...)
	if err != nil {
		return err
	}

	copts := []chat.Option{chat.WithLogger(cfg.Logger), chat.WithMaxAttachment(s.maxAttachment())}
	if cfg.Queue != 0 {
		copts = append(copts, chat.WithQueue(cfg.Queue))
	}
	if cfg.MaxBody != 0 {
		copts = append(copts, chat.WithMaxBody(cfg.MaxBody))
	}
	if cfg.Heartbeat != 0 {
		copts = append(copts, chat.WithHeartbeat(cfg.Heartbeat))
	}
	if cfg.BcryptCost != 0 {
		copts = append(copts, chat.WithBcryptCost(cfg.BcryptCost))
	}
	copts = append(copts, chat.WithSendRate(cfg.SendRate), chat.WithTypingRate(cfg.TypingRate))
	if cfg.WebhookURL != "" {
		nopts := []notify.Option{notify.WithLogger(cfg.Logger)}
		if cfg.WebhookSecret != "" {
			nopts = append(nopts, notify.WithSecret(cfg.WebhookSecret))
		}
		if s.hook, err = notify.New(cfg.WebhookURL, nopts...); err != nil {
			return fmt.Errorf("server: webhook: %w", err)
		}
		copts = append(copts, chat.WithWebhook(func(users []string, conv string, seq uint64, sender, preview string, sentAt time.Time) {
			s.hook.Notify(notify.Event{UserIDs: users, ConversationID: conv, Seq: seq, SenderID: sender, Preview: preview, SentAt: sentAt})
		}))
	}
	if cfg.MaxStreams != 0 {
		copts = append(copts, chat.WithMaxStreams(cfg.MaxStreams))
	}
	if cfg.TypingTTL != 0 {
		copts = append(copts, chat.WithTypingTTL(cfg.TypingTTL))
	}
	if cfg.PresenceFanout != 0 {
		copts = append(copts, chat.WithPresenceFanout(cfg.PresenceFanout))
	}
	if cfg.PresenceGrace != 0 {
		copts = append(copts, chat.WithPresenceGrace(cfg.PresenceGrace))
	}
	if s.back.presence != nil {
		copts = append(copts, chat.WithPresenceBus(s.back.presence))
	}
	if s.back.feed != nil {
		copts = append(copts, chat.WithFeedNotifications())
	}
	svc, err := chat.New(s.router, s.store, authn, copts...)
	if err != nil {
		return err
	}
	s.chat = svc
	if s.back.feed != nil {
		s.back.feed(svc)
	}
	if s.back.watch != nil {
		// The watch lives as long as the node: stop ends it.
		if s.stop, err = s.back.watch(context.Background(), svc.Forget); err != nil {
			return fmt.Errorf("server: watch conversations: %w", err)
		}
	}

	s.grpc = grpc.NewServer(
		grpc.ForceServerCodecV2(chat.Codec()),
		// An upload is one message: the file plus room for its name and type.
		grpc.MaxRecvMsgSize(s.maxAttachment()+64<<10),
		grpc.ChainUnaryInterceptor(append([]grpc.UnaryServerInterceptor{s.stats.GRPC.UnaryServerInterceptor()}, unaryInterceptors(s.log, authenticate(authn, s.store), svc.Validate)...)...),
		grpc.ChainStreamInterceptor(append([]grpc.StreamServerInterceptor{s.stats.GRPC.StreamServerInterceptor()}, streamInterceptors(s.log, authenticate(authn, s.store), svc.Validate)...)...),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		// Fixed windows turn off gRPC's bandwidth-delay estimator, which
		// pings the client after every data frame that follows a ping
		// ack: for a chat stream's small, spaced sends that is a ping
		// write and an ack read per message. A connection may then have
		// at most 1 MiB unread here (the estimator grows it to 16 MiB).
		grpc.InitialWindowSize(1<<20),
		grpc.InitialConnWindowSize(1<<20),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
	)
	parleyv1.RegisterAuthServiceServer(s.grpc, svc)
	parleyv1.RegisterConversationServiceServer(s.grpc, svc)
	parleyv1.RegisterChatServiceServer(s.grpc, svc)
	parleyv1.RegisterAttachmentServiceServer(s.grpc, svc)
	s.health = health.NewServer()
	healthpb.RegisterHealthServer(s.grpc, s.health)
	reflection.Register(s.grpc)
	s.stats.GRPC.InitializeMetrics(s.grpc)
	s.stats.Watch(svc)

	web := grpcweb.WrapServer(s.grpc,
		grpcweb.WithWebsockets(false),
		grpcweb.WithOriginFunc(originFunc(cfg.CORSOrigins)),
		grpcweb.WithAllowedRequestHeaders([]string{"authorization", "x-grpc-web", "x-user-agent", "content-type", "grpc-timeout"}),
	)
	s.http = &http.Server{
		Handler:           s.httpHandler(web),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn),
	}
	return nil
}

// originFunc allows grpc-web calls from the listed origins; same-origin
// requests carry no CORS preflight and need no entry.
func originFunc(allowed []string) func(string) bool {
	set := make(map[string]bool, len(allowed))
	for _, o := range allowed {
		set[o] = true
	}
	return func(origin string) bool { return set["*"] || set[origin] }
}

func (s *Server) httpHandler(web *grpcweb.WrappedGrpcServer) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		resp, err := s.health.Check(r.Context(), &healthpb.HealthCheckRequest{})
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			http.Error(w, "not serving", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.Handle("GET /metrics", s.stats.Handler())
	if s.cfg.Pprof {
		// Method patterns, like "GET /" for the app: a pattern without a
		// method would conflict with it.
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("POST /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	if s.cfg.Web != nil {
		mux.Handle("GET /", http.FileServerFS(s.cfg.Web))
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if web.IsGrpcWebRequest(r) || web.IsAcceptableGrpcCorsRequest(r) {
			web.ServeHTTP(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// Start listens on cfg.Addr and serves in the background.
func (s *Server) Start() error {
	l, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("server: listen on %s: %w", s.cfg.Addr, err)
	}
	s.Serve(l)
	return nil
}

// Serve serves on l in the background. Native gRPC (HTTP/2 with
// content-type application/grpc) goes to grpc-go's own transport;
// everything else (grpc-web, the app, /healthz) to net/http.
func (s *Server) Serve(l net.Listener) {
	s.lis = l
	s.mux = cmux.New(userTimeoutListener{l})
	// A connection that never sends a request must not hold a goroutine forever.
	s.mux.SetReadTimeout(cmp.Or(s.cfg.IdleConnTimeout, 10*time.Second))
	// A prefix, because "application/grpc+proto" is as valid as the bare
	// type. grpc-web comes from browsers over HTTP/1.1 and never gets here.
	grpcL := s.mux.MatchWithWriters(cmux.HTTP2MatchHeaderFieldPrefixSendSettings("content-type", "application/grpc"))
	httpL := s.mux.Match(cmux.Any())
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	s.wg.Add(3)
	go func() { defer s.wg.Done(); s.grpc.Serve(grpcL) }()
	go func() { defer s.wg.Done(); s.http.Serve(httpL) }()
	go func() { defer s.wg.Done(); s.mux.Serve() }()
	s.log.Info("parleyd serving", "addr", l.Addr().String(), "data_dir", s.cfg.DataDir, "epoch", s.store.Epoch())
}

// Addr is the address the server listens on.
func (s *Server) Addr() net.Addr { return s.lis.Addr() }

// Epoch is the store's epoch.
func (s *Server) Epoch() string { return s.store.Epoch() }

// Shutdown stops the node in stages: health goes NOT_SERVING, the listener
// closes, every stream ends with UNAVAILABLE, in-flight RPCs drain, and the
// log is flushed and the file closed, so that every acknowledged message is
// on disk. At ctx's deadline (or ShutdownTimeout) it cuts what is left.
// Shutdown is idempotent.
func (s *Server) Shutdown(ctx context.Context) error {
	s.once.Do(func() { s.err = s.shutdown(ctx) })
	return s.err
}

func (s *Server) shutdown(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ShutdownTimeout)
	defer cancel()
	s.health.Shutdown()
	if s.lis != nil {
		s.mux.Close()
	}
	if err := s.chat.Shutdown(ctx); err != nil {
		s.log.Warn("streams did not end in time", "err", err)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		done := make(chan struct{})
		go func() { s.grpc.GracefulStop(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
			s.grpc.Stop()
			<-done
		}
	}()
	go func() {
		defer wg.Done()
		if err := s.http.Shutdown(ctx); err != nil {
			s.http.Close()
		}
	}()
	wg.Wait()
	s.wg.Wait()
	if s.stop != nil {
		s.stop()
	}
	if s.hook != nil {
		if err := s.hook.Close(ctx); err != nil {
			s.log.Warn("webhook deliveries left undone", "err", err)
		}
	}
	if err := s.back.close(); err != nil {
		return fmt.Errorf("server: %w", err)
	}
	s.log.Info("parleyd stopped")
	return nil
}
