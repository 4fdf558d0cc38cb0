package chat

import (
	"fmt"
	"sync"
	"time"
)

// exhausted builds a RESOURCE_EXHAUSTED error that names the limit.
func exhausted(limit, format string, args ...any) error {
	return fmt.Errorf("%w: %s limit: %s", errExhausted, limit, fmt.Sprintf(format, args...))
}

// rateLimiter is a token bucket per key (user). A nil *rateLimiter allows
// everything.
type rateLimiter struct {
	rate  float64 // tokens per second
	burst float64

	mu      sync.Mutex // protects buckets
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

// newRateLimiter returns a limiter of rate per second with room for burst;
// rate <= 0 means no limit (nil).
func newRateLimiter(rate float64, burst int) *rateLimiter {
	if rate <= 0 {
		return nil
	}
	return &rateLimiter{rate: rate, burst: float64(max(burst, 1)), buckets: make(map[string]*bucket)}
}

// allow takes a token for key if one is left.
func (l *rateLimiter) allow(key string, now time.Time) bool {
	if l == nil {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[key]
	if b == nil {
		if len(l.buckets) >= 100_000 {
			l.prune(now)
		}
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[key] = b
	}
	b.tokens = min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.rate)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// prune forgets full buckets: they behave exactly like new ones. l.mu must
// be held.
func (l *rateLimiter) prune(now time.Time) {
	for k, b := range l.buckets {
		if b.tokens+now.Sub(b.last).Seconds()*l.rate >= l.burst {
			delete(l.buckets, k)
		}
	}
}
