package bench

import (
	"context"
	"slices"
	"testing"
	"time"
)

func TestSleepUntil(t *testing.T) {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	ctx := context.Background()
	// Deadlines on both sides of coarseMargin, and one already past.
	for _, d := range []time.Duration{-time.Millisecond, 0, 50 * time.Microsecond, 700 * time.Microsecond, coarseMargin, 3 * time.Millisecond} {
		for range 20 {
			due := time.Now().Add(d)
			if !sleepUntil(ctx, due, timer) {
				t.Fatalf("sleepUntil(%v ahead) = false with a live context", d)
			}
			if early := due.Sub(time.Now()); early > 0 {
				t.Fatalf("sleepUntil(%v ahead) returned %v early", d, early)
			}
		}
	}
}

func TestSleepUntilCancelled(t *testing.T) {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	go func() { time.Sleep(10 * time.Millisecond); cancel() }()
	if sleepUntil(ctx, time.Now().Add(time.Hour), timer) {
		t.Fatal("sleepUntil an hour ahead returned true")
	}
	// The timer is reusable after a cancelled wait.
	due := time.Now().Add(coarseMargin + time.Millisecond)
	if sleepUntil(context.Background(), due, timer) != true || time.Now().Before(due) {
		t.Fatal("sleepUntil after a cancelled wait did not wait for its deadline")
	}
}

// BenchmarkPacing measures how late a 100 µs wait ends, with the runtime's
// timer alone and with sleepUntil: late-µs/op is the median lateness.
func BenchmarkPacing(b *testing.B) {
	const wait = 100 * time.Microsecond
	ctx := context.Background()
	for _, bc := range []struct {
		name  string
		sleep func(*time.Timer, time.Time)
	}{
		{"timer", func(t *time.Timer, due time.Time) { t.Reset(time.Until(due)); <-t.C }},
		{"sleepUntil", func(t *time.Timer, due time.Time) { sleepUntil(ctx, due, t) }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			timer := time.NewTimer(time.Hour)
			timer.Stop()
			late := make([]time.Duration, 0, b.N)
			for b.Loop() {
				due := time.Now().Add(wait)
				bc.sleep(timer, due)
				late = append(late, time.Since(due))
			}
			slices.Sort(late)
			b.ReportMetric(float64(late[len(late)/2])/float64(time.Microsecond), "late-µs/op")
		})
	}
}
