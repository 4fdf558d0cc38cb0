package server

import (
	"cmp"
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
	"github.com/parleychat/parley/server/auth"
	"github.com/parleychat/parley/server/chat"
	"github.com/parleychat/parley/server/jslog"
	"github.com/parleychat/parley/server/jsstate"
	"github.com/parleychat/parley/server/metrics"
	"github.com/parleychat/parley/server/natspresence"
	"github.com/parleychat/parley/server/router"
	"github.com/parleychat/parley/server/store"
)

// backend is where a node keeps and routes messages: the embedded
// in-memory router over the bbolt store, or, in cluster mode, a NATS
// JetStream cluster shared with the other nodes. The services see only the
// chat.Router and chat.Store it provides.
type backend struct {
	router chat.Router
	store  chat.Store
	// signingKey is the HS256 key tokens are signed with: kept in the
	// data dir locally, shared through the cluster otherwise.
	signingKey func() ([]byte, error)
	// watch calls fn for every conversation changed by any node, so
	// caches can drop it; nil where this node makes every change itself.
	watch func(ctx context.Context, fn func(id string)) (stop func(), err error)
	// presence shares who is online with the other nodes; nil on one node.
	presence chat.PresenceBus
	// feed, in cluster mode, is told of the service so that the log's feed
	// can hand it every post for notifications; nil locally.
	feed func(svc *chat.Service)
	// unclean reports a local store that was not closed cleanly.
	unclean bool
	// close stops routing and closes the storage, flushing what was
	// acknowledged. The services must be stopped first.
	close func() error
}

// defaultFlushInterval is Config.FlushInterval's default: about one
// journal commit on the disks measured.
const defaultFlushInterval = 2 * time.Millisecond

// openLocal opens the embedded backend in cfg.DataDir.
func openLocal(cfg Config, window uint64, stats *metrics.Metrics) (*backend, error) {
	var sopts []store.Option
	if cfg.BatchSize != 0 {
		sopts = append(sopts, store.WithBatchSize(cfg.BatchSize))
	}
	sopts = append(sopts, store.WithFlushInterval(max(cmp.Or(cfg.FlushInterval, defaultFlushInterval), 0)))
	sopts = append(sopts, store.WithRewrite(router.Rewrite), store.WithNoSync(cfg.NoSync), store.WithLogger(cfg.Logger),
		store.WithCommitObserver(stats.Commit), store.WithIndexObserver(stats.Index))
	st, err := store.Open(cfg.DataDir, sopts...)
	if err != nil {
		return nil, err
	}
	pacing := cmp.Or(cfg.Pacing, 250*time.Millisecond)
	ropts := []router.Option{router.WithWindow(window), router.WithAckObserver(stats.Ack), router.WithPacing(max(pacing, 0))}
	if cfg.Tail != 0 {
		ropts = append(ropts, router.WithTail(cfg.Tail))
	}
	r, err := router.New(st, ropts...)
	if err != nil {
		st.Close()
		return nil, err
	}
	stats.WatchRouter(r.Stats)
	stats.WatchStore(st)
	return &backend{
		router:     r,
		store:      st,
		signingKey: func() ([]byte, error) { return auth.LoadOrCreateKey(cfg.DataDir) },
		unclean:    st.Unclean(),
		close: func() error {
			r.Close()
			if err := st.Close(); err != nil {
				return fmt.Errorf("close store: %w", err)
			}
			return nil
		},
	}, nil
}

// openCluster connects to the NATS cluster at cfg.NATSURL and builds the
// backend on its JetStream: the message log and sequencer (jslog) and the
// shared users, conversations, receipts and attachments (jsstate).
func openCluster(cfg Config, stats *metrics.Metrics) (*backend, error) {
	replicas := cmp.Or(cfg.NATSReplicas, 3)
	nc, err := nats.Connect(cfg.NATSURL,
		nats.Name("parleyd"),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { cfg.Logger.Warn("nats", "err", err) }),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				cfg.Logger.Warn("nats: disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) { cfg.Logger.Info("nats: reconnected", "url", c.ConnectedUrl()) }),
	)
	if err != nil {
		return nil, fmt.Errorf("server: connect to NATS at %s: %w", cfg.NATSURL, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("server: %w", err)
	}
	state, err := jsstate.Open(ctx, js, jsstate.WithReplicas(replicas))
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("server: cluster state: %w", err)
	}
	var svc atomic.Pointer[chat.Service]
	observe := func(conv string, m *parleyv1.Message) {
		if s := svc.Load(); s != nil {
			s.FeedPost(conv, m)
		}
	}
	lg, err := jslog.New(ctx, nc, jslog.WithReplicas(replicas), jslog.WithLogger(cfg.Logger), jslog.WithFeedObserver(observe))
	if err != nil {
		state.Close()
		nc.Close()
		return nil, fmt.Errorf("server: cluster log: %w", err)
	}
	bus, err := natspresence.New(nc, natspresence.WithLogger(cfg.Logger))
	if err != nil {
		lg.Close()
		state.Close()
		nc.Close()
		return nil, fmt.Errorf("server: presence bus: %w", err)
	}
	stats.WatchRouter(func() router.Stats {
		st := lg.Stats()
		return router.Stats{Routed: st.Published, Deliveries: st.Deliveries, Subscriptions: st.Subscriptions}
	})
	return &backend{
		router: lg,
		store:  jsstate.Store{Log: lg, State: state},
		signingKey: func() ([]byte, error) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			return state.SigningKey(ctx)
		},
		watch:    state.WatchConversations,
		presence: bus,
		feed:     func(s *chat.Service) { svc.Store(s) },
		close: func() error {
			// Publishes are acknowledged by JetStream before they are
			// acked to clients, so nothing is left to flush.
			lg.Close()
			err := state.Close()
			nc.Close()
			return err
		},
	}, nil
}
