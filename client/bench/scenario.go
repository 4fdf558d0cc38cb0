package bench

import (
	"context"
	"fmt"
	"io"
	"time"
)

// runScenario starts a target and runs cfg.Scenario against it. Errors
// end up in the Result, which is always returned.
func runScenario(ctx context.Context, cfg Config, baseline bool, stderr io.Writer) (res Result) {
	res = Result{Scenario: cfg.Scenario, Target: "parley"}
	if baseline {
		res.Target = "baseline"
		switch cfg.Scenario {
		case "history":
			res.Skipped = errBaselineUnsupported.Error()
			return res
		case "log":
			res.Skipped = "the baseline has no log"
			return res
		}
	}
	if cfg.Scenario == "log" {
		return logScenario(ctx, cfg, cfg.Progress)
	}
	tgt, err := startTarget(ctx, cfg, baseline, stderr)
	if err != nil {
		res.Errors = append(res.Errors, fmt.Sprintf("start %s: %v", res.Target, err))
		return res
	}
	defer tgt.stop()
	res.Where, res.Addr = tgt.where, tgt.addr
	if tgt.parley && cfg.Server == "" { // one this tool started
		res.Where += ", fsync on"
		if cfg.NoSync {
			res.Where = tgt.where + ", fsync off"
		}
	}
	r := newRun(cfg, tgt)
	defer r.close()
	defer func() {
		if res.Connections == 0 { // setup failed before tally
			res.Users, res.Connections = len(r.eps), len(r.clients)
		}
	}()
	switch cfg.Scenario {
	case "dm":
		err = r.dm(ctx, &res)
	case "room":
		err = r.room(ctx, &res)
	case "burst":
		err = r.burstScenario(ctx, &res)
	case "idle":
		err = r.idle(ctx, &res)
	case "history":
		err = r.history(ctx, &res)
	default:
		err = fmt.Errorf("unknown scenario %q", cfg.Scenario)
	}
	if err != nil {
		res.Errors = append(res.Errors, err.Error())
	}
	return res
}

// sample reads the target's CPU and memory, if they can be read.
func (r *run) sample() procSample {
	if len(r.tgt.pids) == 0 {
		return procSample{at: time.Now()}
	}
	return readProcs(r.tgt.pids)
}

func (r *run) label() string { return fmt.Sprintf("[%s %s]", r.cfg.Scenario, r.tgt.name) }

// users registers counts[i] users of roles[i] for each i, puts them on
// the target's nodes, and dials their connections.
func (r *run) users(ctx context.Context, roles []string, counts []int) ([]string, []string, error) {
	var names []string
	for i, role := range roles {
		for j := range counts[i] {
			names = append(names, r.userName(role, j))
		}
	}
	r.place = place(roles, counts, len(r.tgt.addrs))
	if err := r.dial(ctx); err != nil {
		return nil, nil, err
	}
	tokens, err := r.register(ctx, names)
	return names, tokens, err
}

// dm: N direct conversations, both members subscribed and sending.
func (r *run) dm(ctx context.Context, res *Result) error {
	setup := time.Now()
	n := r.cfg.Pairs
	names, tokens, err := r.users(ctx, []string{"a", "b"}, []int{n, n})
	if err != nil {
		return err
	}
	convs := make([]string, n)
	err = r.parallel(ctx, "create direct conversations", n, func(ctx context.Context, i int) error {
		c, err := r.direct(ctx, i, names[i], tokens[i], names[n+i])
		convs[i] = c
		return err
	})
	if err != nil {
		return err
	}
	for i := range n {
		r.endpoint(i, names[i], tokens[i], convs[i], true, true)
		r.endpoint(n+i, names[n+i], tokens[n+i], convs[i], true, true)
	}
	if err := r.start(ctx, r.eps); err != nil {
		return err
	}
	r.setupDur = time.Since(setup)
	res.Users = 2 * n
	return r.load(ctx, res, r.cfg.Rate, r.cfg.Duration)
}

// roomSetup makes a room with senders (who do not subscribe) and
// subscribers, and opens every stream.
func (r *run) roomSetup(ctx context.Context, res *Result, senders, subs int) error {
	setup := time.Now()
	names, tokens, err := r.users(ctx, []string{"s", "u"}, []int{senders, subs})
	if err != nil {
		return err
	}
	conv, err := r.createRoom(ctx, tokens)
	if err != nil {
		return err
	}
	for i := range names {
		r.endpoint(i, names[i], tokens[i], conv, i >= senders, i < senders)
	}
	if err := r.start(ctx, r.eps); err != nil {
		return err
	}
	r.setupDur = time.Since(setup)
	res.Users = len(names)
	return nil
}

// room: one room, M senders at a fixed aggregate rate, N subscribers.
func (r *run) room(ctx context.Context, res *Result) error {
	if err := r.roomSetup(ctx, res, r.cfg.Senders, r.cfg.Subs); err != nil {
		return err
	}
	return r.load(ctx, res, r.cfg.Rate, r.cfg.Duration)
}

// load sends at rate for d from every sender, waits for the stragglers
// and fills in res.
func (r *run) load(ctx context.Context, res *Result, rate float64, d time.Duration) error {
	p0 := r.sample()
	start := time.Now()
	pctx, pstop := context.WithCancel(ctx)
	defer pstop()
	go r.showProgress(pctx, r.label(), start)
	r.schedule(ctx, r.senders, rate, start, start.Add(d))
	r.drain(ctx, r.cfg.Drain)
	pstop()
	p1 := r.sample()
	res.Measured = p1.at.Sub(p0.at)
	r.tally(res, start, r.sendEnd(start))
	res.Resources = resources(r.tgt.scope, p0, p1)
	return ctx.Err()
}

// sendEnd is when the last message was handed to gRPC.
func (r *run) sendEnd(start time.Time) time.Time {
	if t := r.lastSend.Load(); t > 0 {
		return time.Unix(0, t)
	}
	return start
}

// burstScenario: a quiet room, then K messages at one instant.
func (r *run) burstScenario(ctx context.Context, res *Result) error {
	if err := r.roomSetup(ctx, res, r.cfg.Senders, r.cfg.Subs); err != nil {
		return err
	}
	p0 := r.sample()
	select {
	case <-time.After(r.cfg.Quiet):
	case <-ctx.Done():
		return ctx.Err()
	}
	at := time.Now()
	pctx, pstop := context.WithCancel(ctx)
	defer pstop()
	go r.showProgress(pctx, r.label(), at)
	r.burst(ctx, r.senders, r.cfg.Burst, at)
	r.drain(ctx, r.cfg.Drain)
	pstop()
	p1 := r.sample()
	res.Measured = p1.at.Sub(p0.at)
	r.tally(res, at, r.sendEnd(at))
	res.Resources = resources(r.tgt.scope, p0, p1)
	res.Burst = &BurstResult{Messages: r.cfg.Burst}
	if last := r.lastDelivery.Load(); last > 0 {
		res.Burst.Drain = time.Unix(0, last).Sub(at)
	}
	return ctx.Err()
}

// settle has the target return free memory before an RSS reading, so
// that setup garbage (password hashes, JSON) and heap slack are not
// counted as streams. An external server cannot be asked.
func (r *run) settle() {
	if r.tgt.settle != nil {
		r.tgt.settle()
	}
}

// idle: N Chat streams that only answer one ping each, held open.
func (r *run) idle(ctx context.Context, res *Result) error {
	setup := time.Now()
	n := r.cfg.Streams
	names, tokens, err := r.users(ctx, []string{"i"}, []int{n})
	if err != nil {
		return err
	}
	for i := range names {
		r.endpoint(i, names[i], tokens[i], "", false, false)
	}
	r.setupDur = time.Since(setup)
	res.Users = n
	r.settle()
	p0 := r.sample()
	if err := r.start(ctx, r.eps); err != nil {
		return err
	}
	for _, e := range r.eps {
		r.connect.Record(e.readyAfter)
	}
	fmt.Fprintf(r.progress, "%-16s %d streams open in %s; holding for %s\n", r.label(), n, fmtDur(time.Since(p0.at)), r.cfg.Duration)
	select {
	case <-time.After(r.cfg.Duration):
	case <-ctx.Done():
		return ctx.Err()
	}
	r.settle()
	p1 := r.sample()
	res.Measured = p1.at.Sub(p0.at)
	res.Resources = resources(r.tgt.scope, p0, p1)
	r.tally(res, p0.at, p0.at)
	res.Idle = &IdleResult{Streams: n, Connect: r.connect.Summary()}
	if res.Resources != nil {
		res.Idle.RSSDelta = int64(res.Resources.RSSEnd) - int64(res.Resources.RSSStart)
		res.Idle.PerStream = res.Idle.RSSDelta / int64(n)
	}
	return ctx.Err()
}

// history: a room filled with K messages, then subscribers that catch up
// from seq 0, optionally while live messages keep coming.
func (r *run) history(ctx context.Context, res *Result) error {
	setup := time.Now()
	live := 0
	if r.cfg.LiveRate > 0 {
		live = 1
	}
	names, tokens, err := r.users(ctx, []string{"f", "l", "h"}, []int{1, live, r.cfg.Subs})
	if err != nil {
		return err
	}
	conv, err := r.createRoom(ctx, tokens)
	if err != nil {
		return err
	}
	filler := r.endpoint(0, names[0], tokens[0], conv, false, true)
	filler.snd.noLatency = true
	var liveEps []*endpoint
	if live > 0 {
		liveEps = append(liveEps, r.endpoint(1, names[1], tokens[1], conv, false, true))
	}
	if err := r.start(ctx, append([]*endpoint{filler}, liveEps...)); err != nil {
		return err
	}

	fillStart := time.Now()
	stop := r.stepProgress("fill the room", r.cfg.Behind, func() int64 { return int64(filler.snd.ackedN.Load()) })
	for i := range r.cfg.Behind {
		if !filler.snd.enqueue(ctx, outMsg{n: uint64(i), ts: time.Now().UnixNano()}) {
			stop()
			return ctx.Err()
		}
	}
	close(filler.snd.out)
	r.drain(ctx, r.cfg.Drain)
	stop()
	fill := time.Since(fillStart)
	r.setupDur = time.Since(setup)
	// The fill is setup: count only what follows. The sets that losses
	// are counted from keep the filler's messages.
	r.sent.Store(0)
	r.acked.Store(0)
	r.lastSend.Store(0)
	r.lag.Reset()

	var subs []*endpoint
	for i := 1 + live; i < len(names); i++ {
		subs = append(subs, r.endpoint(i, names[i], tokens[i], conv, true, false))
	}
	res.Users = len(names)
	p0 := r.sample()
	pctx, pstop := context.WithCancel(ctx)
	defer pstop()
	go r.showProgress(pctx, r.label(), p0.at)
	lctx, lstop := context.WithCancel(ctx)
	defer lstop()
	liveDone := make(chan struct{})
	go func() {
		defer close(liveDone)
		if live > 0 {
			var senders []*sender
			for _, e := range liveEps {
				senders = append(senders, e.snd)
			}
			r.schedule(lctx, senders, r.cfg.LiveRate, time.Now(), time.Now().Add(24*time.Hour))
		}
	}()
	err = r.start(ctx, subs)
	lstop()
	<-liveDone
	if err != nil {
		return err
	}
	r.drain(ctx, r.cfg.Drain)
	pstop()
	p1 := r.sample()
	res.Measured = p1.at.Sub(p0.at)
	r.tally(res, p0.at, r.sendEnd(p0.at))
	res.Resources = resources(r.tgt.scope, p0, p1)

	var toSub Histogram
	var slowest time.Duration
	for _, e := range subs {
		toSub.Record(e.readyAfter)
		slowest = max(slowest, e.readyAfter)
	}
	res.History = &HistoryResult{Behind: r.cfg.Behind, Fill: fill, ToSubscribe: toSub.Summary()}
	if fill > 0 {
		res.History.FillPerSec = float64(r.cfg.Behind) / fill.Seconds()
	}
	if slowest > 0 {
		res.History.ReplayPerSec = float64(r.cfg.Behind) / slowest.Seconds()
	}
	return ctx.Err()
}
