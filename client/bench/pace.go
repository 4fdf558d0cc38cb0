package bench

import (
	"context"
	"time"
)

// coarseMargin is how far before its deadline a pacing wait hands over
// from the runtime's timer to fineSleep: more than a timer is ever late
// on an idle process (about 1 ms), so that fineSleep has the last stretch.
const coarseMargin = 2 * time.Millisecond

// sleepUntil waits until t and reports true, or reports false as soon as
// ctx ends. It never returns true before t. timer is the caller's, reused
// across calls.
//
// A message carries the time it was due, so every moment the generator
// oversleeps counts in the latency it reports, Parley's and the
// baseline's alike. The runtime's timers wake an idle process through
// epoll, whose timeout counts whole milliseconds: BenchmarkPacing has a
// 100 µs timer end 1.0 ms late at p50 on the 2-core test box. At 10,000
// messages/s that sent ten messages at once every millisecond, the first
// of them already a millisecond old. So the timer only waits down to the
// last coarseMargin, and fineSleep (0.08 ms late in the same benchmark)
// waits the rest.
func sleepUntil(ctx context.Context, t time.Time, timer *time.Timer) bool {
	if d := time.Until(t) - coarseMargin; d > 0 {
		timer.Reset(d)
		select {
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
			return false
		}
	}
	if ctx.Err() != nil {
		return false
	}
	for d := time.Until(t); d > 0; d = time.Until(t) {
		fineSleep(d)
	}
	return true
}
