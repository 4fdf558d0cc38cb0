package notify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"time"
)

// Option configures a Notifier. Options are applied in order by New, which
// rejects out-of-range values with an error wrapping ErrBadOption.
type Option func(*config)

type config struct {
	queue      int
	retries    int
	backoffMin time.Duration
	backoffMax time.Duration
	timeout    time.Duration
	client     *http.Client // nil: New builds one it owns
	secret     []byte
	log        *slog.Logger
	workers    int

	// wait sleeps between attempts; tests replace it to observe the
	// durations chosen without spending them.
	wait func(ctx context.Context, d time.Duration) error
}

func defaults() config {
	return config{
		// 1024 events at a few hundred bytes each rides out a webhook
		// outage of seconds at a busy node for well under a megabyte.
		queue:      1024,
		retries:    5,
		backoffMin: 200 * time.Millisecond,
		backoffMax: 10 * time.Second,
		timeout:    5 * time.Second,
		log:        slog.Default(),
		workers:    2,
		wait:       sleep,
	}
}

func (c *config) validate() error {
	switch {
	case c.queue < 1:
		return fmt.Errorf("%w: queue %d, want at least 1", ErrBadOption, c.queue)
	case c.retries < 0:
		return fmt.Errorf("%w: retries %d, want at least 0", ErrBadOption, c.retries)
	case c.backoffMin <= 0 || c.backoffMax < c.backoffMin:
		return fmt.Errorf("%w: backoff %v..%v, want 0 < min <= max", ErrBadOption, c.backoffMin, c.backoffMax)
	case c.timeout <= 0:
		return fmt.Errorf("%w: timeout %v, want more than 0", ErrBadOption, c.timeout)
	case c.workers < 1:
		return fmt.Errorf("%w: workers %d, want at least 1", ErrBadOption, c.workers)
	case c.log == nil:
		return fmt.Errorf("%w: nil logger", ErrBadOption)
	}
	return nil
}

// WithQueue sets how many events may wait for a worker (default 1024).
// Notify drops events beyond it.
func WithQueue(n int) Option { return func(c *config) { c.queue = n } }

// WithRetries sets how many times a failed attempt is repeated before the
// event is dropped (default 5, so at most 6 attempts). Zero means one
// attempt only.
func WithRetries(n int) Option { return func(c *config) { c.retries = n } }

// WithBackoff sets the shortest and the longest wait between attempts
// (default 200ms and 10s). The waits grow exponentially from min and are
// jittered so that events failing together do not retry together. A
// Retry-After from the server replaces the computed wait but is capped at
// max, so a receiver cannot park a worker for an hour.
func WithBackoff(min, max time.Duration) Option {
	return func(c *config) { c.backoffMin, c.backoffMax = min, max }
}

// WithTimeout bounds each POST, from dialling to reading the status
// (default 5s). A timed-out attempt is retried.
func WithTimeout(d time.Duration) Option { return func(c *config) { c.timeout = d } }

// WithHTTPClient makes the Notifier send through client, for a custom
// transport, proxy or TLS configuration. The Notifier does not close the
// client's idle connections on Close, since the client may be shared; its
// Timeout, if any, applies on top of WithTimeout. A nil client means the
// default, one the Notifier owns.
func WithHTTPClient(client *http.Client) Option { return func(c *config) { c.client = client } }

// WithSecret makes every POST carry X-Parley-Signature: sha256=<hex>, the
// HMAC-SHA256 of the body under secret, so the receiver can check that the
// body came from us. An empty secret sends no signature.
func WithSecret(secret string) Option {
	return func(c *config) {
		if secret == "" {
			c.secret = nil
			return
		}
		c.secret = []byte(secret)
	}
}

// WithLogger sets where refused and dropped deliveries are logged (default
// slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.log = l } }

// WithWorkers sets how many POSTs may be in flight at once (default 2).
func WithWorkers(n int) Option { return func(c *config) { c.workers = n } }

// parseURL accepts absolute http and https URLs with a host. Its errors
// leave the URL out, because webhook URLs often carry a token.
func parseURL(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return "", fmt.Errorf("%w: %w", ErrBadURL, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", fmt.Errorf("%w: scheme %q, want http or https", ErrBadURL, u.Scheme)
	}
	if u.Host == "" {
		return "", fmt.Errorf("%w: no host", ErrBadURL)
	}
	return u.String(), nil
}
