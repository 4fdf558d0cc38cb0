package bench

import (
	"io"
	"slices"
	"strings"
	"testing"
	"time"
)

// Rounds alternate which server goes first, and the report's results pool
// every round: each message of each round is counted once.
func TestRoundsAlternateAndPool(t *testing.T) {
	cfg := Config{Scenario: "dm", Pairs: 2, Rate: 400, Duration: 100 * time.Millisecond, Baseline: true, Rounds: 3, Drain: 10 * time.Second}
	rep := Run(testCtx(t), cfg, io.Discard)
	if len(rep.Results) != 2 || len(rep.Ratios) != 1 {
		t.Fatalf("%d results and %d ratios, want 2 and 1", len(rep.Results), len(rep.Ratios))
	}
	var first []string
	for _, r := range rep.Rounds {
		first = append(first, r.First)
	}
	if want := []string{"parley", "baseline", "parley"}; !slices.Equal(first, want) {
		t.Fatalf("rounds went first %q, want %q", first, want)
	}
	for _, res := range rep.Results {
		checkClean(t, res)
		var e2e, acks uint64
		for _, r := range rep.Rounds {
			rr := r.Parley
			if res.Target == "baseline" {
				rr = r.Baseline
			}
			if rr.E2E.Count == 0 {
				t.Fatalf("%s: a round measured no delivery", res.Target)
			}
			e2e += rr.E2E.Count
			acks += rr.Ack.Count
		}
		if res.E2E.Count != e2e || res.Ack.Count != acks || res.Acked != acks || res.Delivered != 2*e2e {
			t.Fatalf("%s: pooled %d e2e and %d ack samples, %d acked, %d delivered; the rounds had %d and %d",
				res.Target, res.E2E.Count, res.Ack.Count, res.Acked, res.Delivered, e2e, acks)
		}
	}
	var out strings.Builder
	rep.Print(&out)
	if !strings.Contains(out.String(), "round 2, baseline first: e2e p99") {
		t.Fatalf("printed report does not show the rounds:\n%s", out.String())
	}
}

func TestPool(t *testing.T) {
	round := func(sent uint64, secs float64, lat time.Duration, res *Resources, errs ...string) Result {
		r := Result{Target: "parley", Sent: sent, Acked: sent, Delivered: 2 * sent, Expected: 2 * sent, SentPerSec: float64(sent) / secs,
			DeliveredPerSec: float64(2*sent) / secs, Reconnects: map[string]uint64{"Unavailable": 1}, Resources: res, Errors: errs, lat: &latencies{}}
		for range sent {
			r.lat.e2e.Record(lat)
			r.lat.ack.Record(2 * lat)
		}
		return r
	}
	a := round(100, 1, time.Millisecond, &Resources{CPU: time.Second, CPUCores: 0.5, RSSStart: 10, RSSEnd: 20, RSSPeak: 30})
	b := round(300, 3, 3*time.Millisecond, &Resources{CPU: time.Second, CPUCores: 1, RSSStart: 5, RSSEnd: 15, RSSPeak: 25}, "boom")
	tests := []struct {
		name  string
		in    []Result
		check func(t *testing.T, p Result)
	}{
		{"one round is itself", []Result{a}, func(t *testing.T, p Result) {
			if p.Sent != 100 || p.E2E != a.E2E || p.Resources != a.Resources {
				t.Fatalf("pooled one round into %+v", p)
			}
		}},
		{"two rounds", []Result{a, b}, func(t *testing.T, p Result) {
			if p.Sent != 400 || p.Acked != 400 || p.Delivered != 800 || p.Expected != 800 {
				t.Fatalf("counts %d sent, %d acked, %d delivered, %d expected", p.Sent, p.Acked, p.Delivered, p.Expected)
			}
			if p.SentPerSec != 100 || p.DeliveredPerSec != 200 {
				t.Fatalf("rates %.1f sent/s, %.1f delivered/s; want 100 and 200 (over the 4 s the rounds sent for)", p.SentPerSec, p.DeliveredPerSec)
			}
			if p.E2E.Count != 400 || p.E2E.P50 < 2900*time.Microsecond || p.E2E.P99 > 3100*time.Microsecond || p.Ack.Count != 400 {
				t.Fatalf("latency %+v, ack %+v: want 400 samples, three quarters at 3 ms", p.E2E, p.Ack)
			}
			if p.Reconnects["Unavailable"] != 2 || !slices.Equal(p.Errors, []string{"round 2: boom"}) {
				t.Fatalf("reconnects %v, errors %q", p.Reconnects, p.Errors)
			}
			r := p.Resources
			if r == nil || r.CPU != 2*time.Second || r.CPUCores < 0.666 || r.CPUCores > 0.667 || r.RSSStart != 10 || r.RSSEnd != 15 || r.RSSPeak != 30 {
				t.Fatalf("resources %+v: want 2 s of CPU over 3 s of wall time, rss from 10 to 15, peak 30", r)
			}
		}},
		{"a round without figures leaves none", []Result{a, round(10, 1, time.Millisecond, nil)}, func(t *testing.T, p Result) {
			if p.Resources != nil {
				t.Fatalf("resources %+v from rounds that did not all measure them", p.Resources)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.check(t, pool(tc.in)) })
	}
	if a.Reconnects["Unavailable"] != 1 || a.Resources.CPU != time.Second {
		t.Fatal("pool changed a round it was given")
	}
}
