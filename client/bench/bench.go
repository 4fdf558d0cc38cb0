// Package bench is Parley's load generator, the logic behind parley-bench:
// it simulates users over real gRPC connections against a running or
// in-process server, and measures throughput, delivery and ack latency,
// server CPU and memory, and losses and duplicates per (conversation,
// sender, client_message_id), which must both be 0. Every performance
// claim about Parley is made with it, next to a bare grpc-go fan-out
// baseline (Baseline) run in the same invocation so that Parley's cost is
// a ratio rather than an absolute.
//
// Latency is measured from the time a message was scheduled to go out by
// an open-loop schedule, not from when it went out, so a server (or a
// generator) that stalls cannot hide the stall by slowing the senders
// (coordinated omission). Sender and receivers share this machine's
// clock; the body carries the scheduled time.
//
// RunSuite ("parley-bench suite") runs the project's performance targets
// one after the other, each against Parley and the baseline, and makes of
// them one table of ratios and targets, bench.json, bench.md and two
// charts drawn as plain SVG.
package bench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
)

// Run runs cfg.Scenario against Parley and, with cfg.Baseline, against the
// baseline, and returns the report. Problems inside a scenario (a failed
// setup, losses) are in the report; see Report.OK.
func Run(ctx context.Context, cfg Config, stderr io.Writer) *Report {
	cfg.Defaults()
	rep := &Report{Scenario: cfg.Scenario, Machine: thisMachine(), Config: cfg, Client: clientAPI}
	if cfg.Baseline && cfg.Rounds > 1 {
		runRounds(ctx, cfg, rep, stderr)
		rep.addRatios()
		return rep
	}
	rep.Results = append(rep.Results, runScenario(ctx, cfg, false, stderr))
	if cfg.Baseline && ctx.Err() == nil {
		rep.Results = append(rep.Results, runScenario(ctx, cfg, true, stderr))
		rep.addRatios()
	}
	return rep
}

// Main is parley-bench: it parses args (without the program name), runs,
// prints the report to stdout and progress to stderr, and returns the exit
// code: 0 when every result is clean, 1 when there were losses,
// duplicates or errors, 2 for bad usage.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == serveChildArg {
		return serveChild(args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "suite" {
		return suiteMain(ctx, args[1:], stdout, stderr)
	}
	cfg, err := ParseArgs(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "parley-bench:", err)
		return 2
	}
	if !cfg.NoProgress {
		cfg.Progress = stderr
	}
	if cfg.CPUProfile != "" {
		f, err := os.Create(cfg.CPUProfile)
		if err != nil {
			fmt.Fprintln(stderr, "parley-bench:", err)
			return 2
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(stderr, "parley-bench:", err)
			return 2
		}
		defer pprof.StopCPUProfile()
	}
	rep := Run(ctx, cfg, stderr)
	rep.Print(stdout)
	code := 0
	if !rep.OK() {
		code = 1
	}
	if cfg.JSON != "" {
		if err := rep.WriteJSON(cfg.JSON); err != nil {
			fmt.Fprintln(stderr, "parley-bench:", err)
			code = 1
		}
	}
	if ctx.Err() != nil {
		fmt.Fprintln(stderr, "parley-bench: interrupted")
		code = 1
	}
	return code
}
