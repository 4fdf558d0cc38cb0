package bench

import (
	"context"
	"io"
	"testing"
	"time"
)

// BenchmarkRoomFanout posts b.N messages, all at once, into a room of 10
// subscribers on an in-process server with fsync off, next to the same on
// the baseline. ns/op is the time per message until every subscriber has
// it; deliveries/s and the delivery p99 are reported beside it.
func BenchmarkRoomFanout(b *testing.B) {
	for _, tc := range []struct {
		name     string
		baseline bool
	}{{"parley", false}, {"baseline", true}} {
		b.Run(tc.name, func(b *testing.B) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			cfg := Config{Scenario: "burst", Subs: 10, Senders: 1, NoSync: true}
			cfg.Defaults()
			tgt, err := startTarget(ctx, cfg, tc.baseline, io.Discard)
			if err != nil {
				b.Fatal(err)
			}
			defer tgt.stop()
			r := newRun(cfg, tgt)
			defer r.close()
			var res Result
			if err := r.roomSetup(ctx, &res, cfg.Senders, cfg.Subs); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			at := time.Now()
			r.burst(ctx, r.senders, b.N, at)
			r.drain(ctx, 10*time.Second)
			b.StopTimer()
			r.tally(&res, at, r.sendEnd(at))
			if !res.OK() || res.Delivered != res.Expected || res.Acked != uint64(b.N) {
				b.Fatalf("acked %d of %d, delivered %d of %d, lost %d, duplicates %d, errors %q",
					res.Acked, b.N, res.Delivered, res.Expected, res.Losses, res.Duplicates, res.Errors)
			}
			b.ReportMetric(res.DeliveredPerSec, "deliveries/s")
			b.ReportMetric(float64(res.E2E.P99.Microseconds()), "p99-us")
		})
	}
}
