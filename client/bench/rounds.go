package bench

import (
	"context"
	"fmt"
	"io"
	"time"
)

// Round is what one round of a run with Config.Rounds > 1 measured, for
// each server, before the rounds were pooled.
type Round struct {
	First    string      `json:"first"` // the server that ran first
	Parley   RoundResult `json:"parley"`
	Baseline RoundResult `json:"baseline"`
}

// RoundResult is one server's figures in one round.
type RoundResult struct {
	E2E      Latency `json:"e2e"`
	Ack      Latency `json:"ack"`
	CPUCores float64 `json:"cpu_cores,omitempty"`
}

// String gives the round's delivery and ack p99 and CPU, Parley's first.
func (r Round) String() string {
	p, b := r.Parley, r.Baseline
	s := fmt.Sprintf("e2e p99 %s vs %s (%.2fx), ack p99 %s vs %s", fmtLat(p.E2E, p.E2E.P99), fmtLat(b.E2E, b.E2E.P99),
		ratio(float64(p.E2E.P99), float64(b.E2E.P99)), fmtLat(p.Ack, p.Ack.P99), fmtLat(b.Ack, b.Ack.P99))
	if p.CPUCores > 0 && b.CPUCores > 0 {
		s += fmt.Sprintf(", cpu %.2f vs %.2f cores", p.CPUCores, b.CPUCores)
	}
	return s
}

func roundResult(r *Result) RoundResult {
	rr := RoundResult{E2E: r.E2E, Ack: r.Ack}
	if r.Resources != nil {
		rr.CPUCores = r.Resources.CPUCores
	}
	return rr
}

// runRounds runs cfg.Rounds rounds of Parley and the baseline, each server
// on a fresh start every round, Parley first in odd rounds and the
// baseline first in even ones, so that a machine that slows down or
// speeds up part-way weighs on both. The report's results pool the rounds.
func runRounds(ctx context.Context, cfg Config, rep *Report, stderr io.Writer) {
	var parley, base []Result
	for i := range cfg.Rounds {
		baselineFirst := i%2 == 1
		round := Round{First: "parley"}
		if baselineFirst {
			round.First = "baseline"
		}
		var p, b *Result
		for _, isBase := range []bool{baselineFirst, !baselineFirst} {
			if ctx.Err() != nil {
				break
			}
			if cfg.Progress != nil {
				name := "parley"
				if isBase {
					name = "baseline"
				}
				fmt.Fprintf(cfg.Progress, "[%s] round %d of %d: %s\n", cfg.Scenario, i+1, cfg.Rounds, name)
			}
			res := runScenario(ctx, cfg, isBase, stderr)
			if isBase {
				base = append(base, res)
				b = &base[len(base)-1]
			} else {
				parley = append(parley, res)
				p = &parley[len(parley)-1]
			}
		}
		if p == nil || b == nil {
			break
		}
		round.Parley, round.Baseline = roundResult(p), roundResult(b)
		rep.Rounds = append(rep.Rounds, round)
	}
	for _, rs := range [][]Result{parley, base} {
		if len(rs) > 0 {
			rep.Results = append(rep.Results, pool(rs))
		}
	}
}

// pool merges the results of several rounds against one server into one:
// counts add up, latencies come from the merged histograms, rates and CPU
// are over the rounds' time together, and memory is the highest seen.
func pool(rs []Result) Result {
	if len(rs) == 1 {
		return rs[0]
	}
	out := rs[0]
	out.lat = &latencies{}
	out.Reconnects = make(map[string]uint64)
	out.Errors = nil
	var sentTime, deliverTime float64 // seconds the rates were over
	var res Resources
	var wall time.Duration
	var withRes int
	for i := range rs {
		r := &rs[i]
		if i > 0 {
			out.Measured += r.Measured
			out.Sent += r.Sent
			out.Acked += r.Acked
			out.Delivered += r.Delivered
			out.Expected += r.Expected
			out.Losses += r.Losses
			out.Duplicates += r.Duplicates
			out.Reorders += r.Reorders
			out.UnackedDelivered += r.UnackedDelivered
			out.Resends += r.Resends
			out.CanceledSends += r.CanceledSends
			out.Notifications += r.Notifications
			out.Presence += r.Presence
			out.Foreign += r.Foreign
			out.SetupTime = max(out.SetupTime, r.SetupTime)
		}
		if r.SentPerSec > 0 {
			sentTime += float64(r.Sent) / r.SentPerSec
		}
		if r.DeliveredPerSec > 0 {
			deliverTime += float64(r.Delivered) / r.DeliveredPerSec
		}
		if r.lat != nil {
			out.lat.e2e.Merge(&r.lat.e2e)
			out.lat.ack.Merge(&r.lat.ack)
			out.lat.lag.Merge(&r.lat.lag)
		}
		for k, v := range r.Reconnects {
			out.Reconnects[k] += v
		}
		for _, e := range r.Errors {
			out.Errors = append(out.Errors, fmt.Sprintf("round %d: %s", i+1, e))
		}
		if rr := r.Resources; rr != nil {
			if withRes == 0 {
				res = *rr
			} else {
				res.CPU += rr.CPU
				res.RSSEnd = rr.RSSEnd
				res.RSSPeak = max(res.RSSPeak, rr.RSSPeak)
			}
			if rr.CPUCores > 0 {
				wall += time.Duration(float64(rr.CPU) / rr.CPUCores)
			}
			withRes++
		}
	}
	if sentTime > 0 {
		out.SentPerSec = float64(out.Sent) / sentTime
	}
	if deliverTime > 0 {
		out.DeliveredPerSec = float64(out.Delivered) / deliverTime
	}
	out.E2E = out.lat.e2e.Summary()
	out.Ack = out.lat.ack.Summary()
	out.SendLag = out.lat.lag.Summary()
	if withRes == len(rs) {
		if wall > 0 {
			res.CPUCores = float64(res.CPU) / float64(wall)
		}
		out.Resources = &res
	} else {
		out.Resources = nil // some rounds could not be measured: no figure rather than a partial one
	}
	return out
}
