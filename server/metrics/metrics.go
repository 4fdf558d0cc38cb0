// Package metrics holds a node's Prometheus metrics: gRPC server metrics
// from go-grpc-middleware, and the router's, the log's and the streams' own.
// The core packages know nothing of Prometheus: they expose counters and
// observer hooks, and this package turns them into collectors.
package metrics

import (
	"net/http"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/parleychat/parley/server/chat"
	"github.com/parleychat/parley/server/router"
	"github.com/parleychat/parley/server/store"
)

// Metrics is one node's registry. Its observer methods are safe for
// concurrent use and cheap enough for the hot path.
type Metrics struct {
	reg  *prometheus.Registry
	GRPC *grpcprom.ServerMetrics

	batch  prometheus.Histogram
	commit prometheus.Histogram
	fsync  prometheus.Histogram
	ack    prometheus.Histogram
	fails  prometheus.Counter

	indexBatch  prometheus.Histogram
	indexCommit prometheus.Histogram
	indexFails  prometheus.Counter
}

// latency buckets from 50µs to about 3s.
var latency = prometheus.ExponentialBuckets(50e-6, 2, 17)

// New builds the registry with Go runtime and process collectors.
func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		GRPC: grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram(
			grpcprom.WithHistogramBuckets(latency))),
		batch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "parley_log_batch_size", Help: "Messages per group commit of the journal (what acks wait for).",
			Buckets: prometheus.ExponentialBuckets(1, 2, 12),
		}),
		commit: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "parley_log_commit_seconds", Help: "Duration of a group commit transaction, fsync included.", Buckets: latency,
		}),
		fsync: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "parley_log_fsync_seconds", Help: "Time a group commit spent writing and syncing pages.", Buckets: latency,
		}),
		ack: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "parley_ack_latency_seconds", Help: "From sequencing a message to its durable commit: what the sender's ack waits.", Buckets: latency,
		}),
		fails: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "parley_log_commit_failures_total", Help: "Group commits that failed; their senders got errors, not acks.",
		}),
		indexBatch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "parley_index_batch_size", Help: "Journaled messages indexed per conversation in one commit, off the ack path.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 14),
		}),
		indexCommit: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "parley_index_commit_seconds", Help: "Duration of an index commit, fsync included.", Buckets: latency,
		}),
		indexFails: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "parley_index_commit_failures_total", Help: "Index commits that failed; the messages stay journaled and are retried.",
		}),
	}
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.GRPC, m.batch, m.commit, m.fsync, m.ack, m.fails, m.indexBatch, m.indexCommit, m.indexFails)
	return m
}

// Commit observes one group commit; it has the store.CommitObserver shape.
func (m *Metrics) Commit(jobs int, total, write time.Duration, err error) {
	if err != nil {
		m.fails.Inc()
		return
	}
	m.batch.Observe(float64(jobs))
	m.commit.Observe(total.Seconds())
	m.fsync.Observe(write.Seconds())
}

// Index observes one index commit; it has the store.IndexObserver shape.
func (m *Metrics) Index(msgs int, total time.Duration, err error) {
	if err != nil {
		m.indexFails.Inc()
		return
	}
	m.indexBatch.Observe(float64(msgs))
	m.indexCommit.Observe(total.Seconds())
}

// WatchStore registers the index lag, read from the store at scrape time.
func (m *Metrics) WatchStore(s *store.Store) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "parley_index_lag_messages", Help: "Messages acknowledged (journaled) but not yet indexed per conversation.",
	}, func() float64 { return float64(s.Unindexed()) }))
}

// Ack observes the durable wait of one message.
func (m *Metrics) Ack(d time.Duration) { m.ack.Observe(d.Seconds()) }

// WatchRouter registers the router's counters, read at scrape time from
// stats (the embedded router's, or the cluster log's in the same shape).
func (m *Metrics) WatchRouter(stats func() router.Stats) {
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	counter := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, f)
	}
	m.reg.MustRegister(
		counter("parley_messages_routed_total", "Messages sequenced by the router.", func() float64 { return float64(stats().Routed) }),
		counter("parley_fanout_deliveries_total", "Frames handed to subscribers' queues.", func() float64 { return float64(stats().Deliveries) }),
		gauge("parley_write_behind_pending", "Messages delivered but not yet committed: the write-behind lag.", func() float64 { return float64(stats().Pending) }),
		counter("parley_paced_sends_total", "Sends that waited for a saturated conversation's fan-out to drain.", func() float64 { return float64(stats().Paced) }),
		gauge("parley_subscriptions", "Live (conversation, stream) subscriptions.", func() float64 { return float64(stats().Subscriptions) }),
	)
}

// Watch registers the services' gauges and counters, read at scrape time.
func (m *Metrics) Watch(svc *chat.Service) {
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	counter := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, f)
	}
	m.reg.MustRegister(
		gauge("parley_streams", "Open Chat and Subscribe streams.", func() float64 { return float64(svc.Stats().Streams) }),
		gauge("parley_stream_queue_frames", "Frames waiting in all streams' outbound queues.", func() float64 { return float64(svc.Stats().QueuedFrames) }),
		gauge("parley_stream_queue_depth_max", "Frames waiting in the fullest stream queue.", func() float64 { return float64(svc.Stats().MaxQueueDepth) }),
		counter("parley_slow_consumer_disconnects_total", "Streams cut for not keeping up.", func() float64 { return float64(svc.Stats().SlowConsumers) }),
		counter("parley_notifications_dropped_total", "Notifications dropped because their queue was full.", func() float64 { return float64(svc.Stats().NotificationsDropped) }),
		counter("parley_events_dropped_total", "Best-effort events (receipts, typing, presence, notifications) dropped on full stream queues.", func() float64 { return float64(svc.Stats().EventsDropped) }),
	)
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}
