package client

import (
	"math/rand/v2"
	"time"
)

// backoff spaces out reconnect attempts. Full jitter (a uniform delay
// between zero and the exponential ceiling) rather than a fixed schedule,
// because after a server restart every client reconnects at once and
// spreading them out is the point.
type backoff struct {
	min, max time.Duration
}

// delay returns the wait before the attempt-th retry (0-based).
func (b backoff) delay(attempt int) time.Duration {
	ceiling := b.max
	if attempt < 62 {
		if d := b.min << attempt; d > 0 && d < b.max && d>>attempt == b.min {
			ceiling = d
		}
	}
	if ceiling <= 0 {
		return 0
	}
	return rand.N(ceiling + 1)
}
