package notify

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/parleychat/parley/internal/syncbuf"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// request is what the webhook saw.
type request struct {
	method string
	header http.Header
	body   []byte
}

// hook is a webhook on a loopback port. respond answers the i-th request
// (from 0); every request is recorded before respond runs.
type hook struct {
	srv *httptest.Server
	mu  sync.Mutex
	got []request // protected by mu
}

func newHook(t *testing.T, respond func(i int, w http.ResponseWriter, r *http.Request)) *hook {
	t.Helper()
	h := &hook{}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body bytes.Buffer
		body.ReadFrom(r.Body)
		h.mu.Lock()
		i := len(h.got)
		h.got = append(h.got, request{r.Method, r.Header.Clone(), body.Bytes()})
		h.mu.Unlock()
		respond(i, w, r)
	}))
	t.Cleanup(func() {
		// The Notifier is closed by now; cutting connections matters only
		// when a failed test left a request hanging.
		h.srv.CloseClientConnections()
		h.srv.Close()
	})
	return h
}

func (h *hook) requests() []request {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.got)
}

// status answers the first n requests with code and the rest with 200.
func status(n, code int, header ...string) func(int, http.ResponseWriter, *http.Request) {
	return func(i int, w http.ResponseWriter, _ *http.Request) {
		if i < n {
			for k := 0; k+1 < len(header); k += 2 {
				w.Header().Set(header[k], header[k+1])
			}
			w.WriteHeader(code)
			return
		}
		w.WriteHeader(http.StatusOK)
	}
}

// fast keeps retries quick; tests that care about waits set their own.
var fast = []Option{
	WithBackoff(time.Millisecond, 5*time.Millisecond),
	WithLogger(slog.New(slog.DiscardHandler)),
}

// newNotifier builds a Notifier that is closed when the test ends, before
// the hook's server (cleanups run last-in first-out).
func newNotifier(t *testing.T, url string, opts ...Option) *Notifier {
	t.Helper()
	n, err := New(url, append(slices.Clone(fast), opts...)...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		// Close is bounded by its ctx; if it hangs anyway, say so rather
		// than hang the whole run.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		done := make(chan struct{})
		go func() {
			n.Close(ctx)
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("Close did not return after its context ended")
		}
	})
	return n
}

// waitFor polls cond until it holds or the test's deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// settled reports whether k events have reached a final count.
func settled(n *Notifier, k uint64) func() bool {
	return func() bool {
		s := n.Stats()
		return s.Delivered+s.Failed+s.Dropped >= k
	}
}

var testEvent = Event{
	UserIDs:        []string{"bob", "carol"},
	ConversationID: "c-42",
	Seq:            7,
	SenderID:       "alice",
	Preview:        "see you at eight",
	SentAt:         time.Date(2025, 3, 1, 12, 30, 0, 123456789, time.FixedZone("CET", 3600)),
}

func TestDeliveredBodyAndHeaders(t *testing.T) {
	for _, tc := range []struct {
		name   string
		secret string
	}{
		{"unsigned", ""},
		{"signed", "s3cret"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHook(t, status(0, 0))
			n := newNotifier(t, h.srv.URL+"/hook", WithSecret(tc.secret))

			ev := testEvent
			ev.UserIDs = slices.Clone(testEvent.UserIDs)
			if !n.Notify(ev) {
				t.Fatal("Notify = false on an empty queue")
			}
			ev.UserIDs[0] = "mallory" // Notify must have copied the slice
			waitFor(t, "delivery", settled(n, 1))

			reqs := h.requests()
			if len(reqs) != 1 {
				t.Fatalf("webhook saw %d requests, want 1", len(reqs))
			}
			r := reqs[0]
			if r.method != http.MethodPost {
				t.Errorf("method %s, want POST", r.method)
			}
			if ct := r.header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			if r.header.Get(HeaderDelivery) == "" {
				t.Errorf("no %s header", HeaderDelivery)
			}

			var body map[string]any
			if err := json.Unmarshal(r.body, &body); err != nil {
				t.Fatalf("body %q: %v", r.body, err)
			}
			want := map[string]any{
				"type":            "message",
				"recipients":      []any{"bob", "carol"},
				"conversation_id": "c-42",
				"seq":             float64(7),
				"sender_id":       "alice",
				"preview":         "see you at eight",
				"sent_at":         "2025-03-01T11:30:00.123456789Z",
			}
			if fmt.Sprint(body) != fmt.Sprint(want) {
				t.Errorf("body\n got %v\nwant %v", body, want)
			}
			at, err := time.Parse(time.RFC3339Nano, body["sent_at"].(string))
			if err != nil || !at.Equal(testEvent.SentAt) {
				t.Errorf("sent_at %v (%v), want %v", at, err, testEvent.SentAt)
			}

			sig := r.header.Get(HeaderSignature)
			if tc.secret == "" {
				if sig != "" {
					t.Errorf("unsigned notifier sent %s: %q", HeaderSignature, sig)
				}
			} else {
				m := hmac.New(sha256.New, []byte(tc.secret))
				m.Write(r.body)
				got, ok := strings.CutPrefix(sig, "sha256=")
				mac, err := hex.DecodeString(got)
				if !ok || err != nil || !hmac.Equal(mac, m.Sum(nil)) {
					t.Errorf("signature %q does not verify", sig)
				}
			}

			if s := n.Stats(); s != (Stats{Queued: 1, Delivered: 1}) {
				t.Errorf("stats %+v", s)
			}
		})
	}
}

func TestStatusHandling(t *testing.T) {
	for _, tc := range []struct {
		name    string
		respond func(int, http.ResponseWriter, *http.Request)
		retries int
		hits    int
		want    Stats
	}{
		{"500 twice then 200", status(2, 500), 5, 3, Stats{Queued: 1, Delivered: 1, Retried: 2}},
		{"503 then 200", status(1, 503), 5, 2, Stats{Queued: 1, Delivered: 1, Retried: 1}},
		{"429 then 200", status(1, 429), 5, 2, Stats{Queued: 1, Delivered: 1, Retried: 1}},
		{"500 until retries run out", status(100, 500), 2, 3, Stats{Queued: 1, Retried: 2, Dropped: 1}},
		{"no retries", status(100, 502), 0, 1, Stats{Queued: 1, Dropped: 1}},
		{"400 not retried", status(100, 400), 5, 1, Stats{Queued: 1, Failed: 1}},
		{"401 not retried", status(100, 401), 5, 1, Stats{Queued: 1, Failed: 1}},
		{"404 not retried", status(100, 404), 5, 1, Stats{Queued: 1, Failed: 1}},
		{"redirect not followed", status(100, 302, "Location", "/elsewhere"), 5, 1, Stats{Queued: 1, Failed: 1}},
		{"connection dropped then 200", func(i int, w http.ResponseWriter, r *http.Request) {
			if i == 0 {
				conn, _, err := w.(http.Hijacker).Hijack()
				if err == nil {
					conn.Close()
				}
				return
			}
			w.WriteHeader(http.StatusOK)
		}, 5, 2, Stats{Queued: 1, Delivered: 1, Retried: 1}},
		{"timeout then 200", func(i int, w http.ResponseWriter, r *http.Request) {
			if i == 0 {
				<-r.Context().Done() // hang until the client gives up
				return
			}
			w.WriteHeader(http.StatusOK)
		}, 5, 2, Stats{Queued: 1, Delivered: 1, Retried: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHook(t, tc.respond)
			n := newNotifier(t, h.srv.URL, WithRetries(tc.retries), WithTimeout(100*time.Millisecond))
			if !n.Notify(testEvent) {
				t.Fatal("Notify = false on an empty queue")
			}
			waitFor(t, "the event to settle", settled(n, 1))
			// Closing first makes the counts final: nothing is left to retry.
			if err := n.Close(context.Background()); err != nil {
				t.Fatalf("Close: %v", err)
			}

			reqs := h.requests()
			if len(reqs) != tc.hits {
				t.Errorf("webhook saw %d requests, want %d", len(reqs), tc.hits)
			}
			for _, r := range reqs {
				if id, first := r.header.Get(HeaderDelivery), reqs[0].header.Get(HeaderDelivery); id != first {
					t.Errorf("delivery id changed between attempts: %q then %q", first, id)
				}
				if !bytes.Equal(r.body, reqs[0].body) {
					t.Errorf("body changed between attempts")
				}
			}
			if s := n.Stats(); s != tc.want {
				t.Errorf("stats %+v, want %+v", s, tc.want)
			}
		})
	}
}

func TestRefusalLogged(t *testing.T) {
	h := newHook(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "unknown recipient", http.StatusBadRequest)
	})
	var logs syncbuf.Buffer
	n := newNotifier(t, h.srv.URL, WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	n.Notify(testEvent)
	waitFor(t, "the refusal", settled(n, 1))

	out := logs.String()
	for _, want := range []string{"refused", "400", "unknown recipient", "c-42"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, testEvent.Preview) {
		t.Errorf("log contains the message preview:\n%s", out)
	}
}

func TestRetryAfter(t *testing.T) {
	const lo, hi = 10 * time.Millisecond, 2 * time.Second
	for _, tc := range []struct {
		name       string
		retryAfter string
		min, max   time.Duration // bounds on the wait chosen
	}{
		{"seconds", "1", time.Second, time.Second},
		{"zero", "0", 0, 0},
		{"capped at backoff max", "3600", hi, hi},
		{"date in the past", "Mon, 02 Jan 2006 15:04:05 GMT", 0, 0},
		{"absent", "", lo, 2 * lo},
		{"garbage", "soon", lo, 2 * lo},
		{"negative", "-5", lo, 2 * lo},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHook(t, status(1, http.StatusTooManyRequests, "Retry-After", tc.retryAfter))
			var mu sync.Mutex
			var waits []time.Duration
			record := func(ctx context.Context, d time.Duration) error {
				mu.Lock()
				waits = append(waits, d)
				mu.Unlock()
				return nil
			}
			n := newNotifier(t, h.srv.URL, WithBackoff(lo, hi), withWait(record))
			n.Notify(testEvent)
			waitFor(t, "delivery", settled(n, 1))

			mu.Lock()
			defer mu.Unlock()
			if len(waits) != 1 || waits[0] < tc.min || waits[0] > tc.max {
				t.Errorf("waits %v, want one in [%v, %v]", waits, tc.min, tc.max)
			}
			if s := n.Stats(); s.Delivered != 1 {
				t.Errorf("stats %+v, want one delivered", s)
			}
		})
	}
}

// withWait replaces the sleep between attempts.
func withWait(f func(context.Context, time.Duration) error) Option {
	return func(c *config) { c.wait = f }
}

// TestRetryAfterWaits checks the real timer path: a retry asked to wait a
// second does not come sooner. Only the lower bound is asserted.
func TestRetryAfterWaits(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var at []time.Time
	h := newHook(t, func(i int, w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		at = append(at, time.Now())
		mu.Unlock()
		status(1, http.StatusServiceUnavailable, "Retry-After", "1")(i, w, r)
	})
	n := newNotifier(t, h.srv.URL, WithBackoff(time.Millisecond, 5*time.Second))
	n.Notify(testEvent)
	waitFor(t, "delivery", settled(n, 1))

	mu.Lock()
	defer mu.Unlock()
	if len(at) != 2 {
		t.Fatalf("webhook saw %d requests, want 2", len(at))
	}
	if gap := at[1].Sub(at[0]); gap < time.Second {
		t.Errorf("retried after %v despite Retry-After: 1", gap)
	}
}

func TestHangingWebhookDoesNotBlockNotify(t *testing.T) {
	const queue, workers, calls = 4, 1, 50
	entered := make(chan struct{}, calls)
	h := newHook(t, func(_ int, _ http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-r.Context().Done() // only Close's cancel ends this
	})
	n := newNotifier(t, h.srv.URL, WithQueue(queue), WithWorkers(workers), WithTimeout(time.Hour))

	n.Notify(testEvent)
	<-entered // the one worker is now stuck in a request

	// Run the calls elsewhere so that a Notify that blocks fails the test
	// instead of hanging it.
	accepted := make(chan int)
	go func() {
		k := 0
		for range calls {
			if n.Notify(testEvent) {
				k++
			}
		}
		accepted <- k
	}()
	var k int
	select {
	case k = <-accepted:
	case <-time.After(10 * time.Second):
		t.Fatal("Notify blocked on a full queue")
	}
	if k != queue {
		t.Errorf("%d events accepted behind a stuck worker, want %d (the queue)", k, queue)
	}
	s := n.Stats()
	if s.Queued != queue+1 || s.Dropped != calls-queue {
		t.Errorf("stats %+v, want Queued %d, Dropped %d", s, queue+1, calls-queue)
	}

	// Close with a context that has already ended: it must cut off the
	// hanging request and drop the queue, not wait for it.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := n.Close(ctx)
	if !errors.Is(err, ErrUndelivered) || !errors.Is(err, context.Canceled) {
		t.Errorf("Close = %v, want ErrUndelivered and context.Canceled", err)
	}
	if s := n.Stats(); s.Delivered != 0 || s.Dropped != calls+1 {
		t.Errorf("after Close, stats %+v, want all %d dropped", s, calls+1)
	}
	if n.Notify(testEvent) {
		t.Error("Notify after Close = true")
	}
}

func TestCloseDrains(t *testing.T) {
	const events = 20
	gate := make(chan struct{})
	h := newHook(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		select {
		case <-gate:
		case <-r.Context().Done():
		}
		w.WriteHeader(http.StatusOK)
	})
	n := newNotifier(t, h.srv.URL, WithQueue(events), WithTimeout(time.Hour))
	for i := range events {
		ev := testEvent
		ev.Seq = uint64(i + 1)
		if !n.Notify(ev) {
			t.Fatalf("Notify %d = false", i)
		}
	}

	closed := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		closed <- n.Close(ctx)
	}()
	waitFor(t, "Close to begin", func() bool {
		n.mu.RLock()
		defer n.mu.RUnlock()
		return n.closed
	})
	if n.Notify(testEvent) {
		t.Error("Notify during Close = true")
	}
	close(gate)

	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}
	s := n.Stats()
	if want := (Stats{Queued: events, Delivered: events, Dropped: 1}); s != want {
		t.Errorf("stats %+v, want %+v", s, want)
	}
	seqs := map[float64]bool{}
	for _, r := range h.requests() {
		var body struct{ Seq float64 }
		json.Unmarshal(r.body, &body)
		seqs[body.Seq] = true
	}
	if len(seqs) != events {
		t.Errorf("webhook saw %d distinct seqs, want %d", len(seqs), events)
	}
	if err := n.Close(context.Background()); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestConcurrentNotifyAndClose(t *testing.T) {
	h := newHook(t, status(0, 0))
	n := newNotifier(t, h.srv.URL, WithQueue(16), WithWorkers(4))

	const senders, each = 8, 200
	var calls, accepted atomic.Uint64
	var wg sync.WaitGroup
	for range senders {
		wg.Go(func() {
			for range each {
				calls.Add(1)
				if n.Notify(testEvent) {
					accepted.Add(1)
				}
			}
		})
	}
	waitFor(t, "some deliveries", func() bool { return n.Stats().Delivered > 0 })
	if err := n.Close(context.Background()); err != nil {
		t.Errorf("Close: %v", err)
	}
	wg.Wait()

	s := n.Stats()
	if s.Queued != accepted.Load() {
		t.Errorf("Queued %d, but Notify returned true %d times", s.Queued, accepted.Load())
	}
	if got := s.Delivered + s.Failed + s.Dropped; got != calls.Load() {
		t.Errorf("stats %+v account for %d events, want all %d", s, got, calls.Load())
	}
	if s.Delivered != uint64(len(h.requests())) {
		t.Errorf("Delivered %d, webhook saw %d", s.Delivered, len(h.requests()))
	}
}

func TestNewRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		url  string
		opts []Option
		want error
	}{
		{"empty url", "", nil, ErrBadURL},
		{"no scheme", "localhost:8080/hook", nil, ErrBadURL},
		{"ftp", "ftp://example.com/hook", nil, ErrBadURL},
		{"no host", "http:///hook", nil, ErrBadURL},
		{"relative", "/hook", nil, ErrBadURL},
		{"does not parse", "http://[::1/hook", nil, ErrBadURL},
		{"control character", "http://example.com/\x7f", nil, ErrBadURL},
		{"queue 0", "http://example.com", []Option{WithQueue(0)}, ErrBadOption},
		{"negative retries", "http://example.com", []Option{WithRetries(-1)}, ErrBadOption},
		{"zero backoff", "http://example.com", []Option{WithBackoff(0, time.Second)}, ErrBadOption},
		{"backoff max < min", "http://example.com", []Option{WithBackoff(time.Second, time.Millisecond)}, ErrBadOption},
		{"zero timeout", "http://example.com", []Option{WithTimeout(0)}, ErrBadOption},
		{"no workers", "http://example.com", []Option{WithWorkers(0)}, ErrBadOption},
		{"nil logger", "http://example.com", []Option{WithLogger(nil)}, ErrBadOption},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, err := New(tc.url, tc.opts...)
			if !errors.Is(err, tc.want) {
				t.Errorf("New(%q) = %v, want %v", tc.url, err, tc.want)
			}
			if n != nil {
				n.Close(context.Background())
				t.Error("New returned a Notifier with an error")
			}
		})
	}

	for _, u := range []string{"http://example.com/hook", "HTTPS://example.com:8443/hook?token=x"} {
		n, err := New(u, WithHTTPClient(&http.Client{}))
		if err != nil {
			t.Errorf("New(%q): %v", u, err)
			continue
		}
		if err := n.Close(context.Background()); err != nil {
			t.Errorf("Close: %v", err)
		}
	}
}

func TestBackoffBounds(t *testing.T) {
	for _, tc := range []struct {
		lo, hi time.Duration
	}{
		{200 * time.Millisecond, 10 * time.Second},
		{time.Millisecond, time.Millisecond},
		{time.Second, 1500 * time.Millisecond},
		{1, 1<<63 - 1}, // doubling must not overflow
	} {
		for attempt := range 70 {
			ceil := tc.hi
			if attempt < 62 && tc.lo<<(attempt+1) < tc.hi && tc.lo<<(attempt+1) > 0 {
				ceil = tc.lo << (attempt + 1)
			}
			floor := max(tc.lo, ceil/2)
			for range 50 {
				d := backoff(tc.lo, tc.hi, attempt)
				if d < floor || d > ceil {
					t.Fatalf("backoff(%v, %v, %d) = %v, want in [%v, %v]", tc.lo, tc.hi, attempt, d, floor, ceil)
				}
			}
		}
	}
}
