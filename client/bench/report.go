package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is everything one invocation measured.
type Report struct {
	Scenario string   `json:"scenario"`
	Machine  Machine  `json:"machine"`
	Config   Config   `json:"config"`
	Client   string   `json:"client"`
	Results  []Result `json:"results"`
	Ratios   []Ratio  `json:"ratios,omitempty"`
	// Rounds is what each round measured when Config.Rounds > 1; Results
	// then pool them.
	Rounds []Round `json:"rounds,omitempty"`
}

// Machine describes where the run happened, since every number depends
// on it.
type Machine struct {
	OS         string `json:"os"`
	Arch       string `json:"arch"`
	CPUs       int    `json:"cpus"`
	GOMAXPROCS int    `json:"gomaxprocs"`
	Go         string `json:"go"`
	// LoadAvg is /proc/loadavg's 1, 5 and 15 minute load at the start:
	// a load above the CPU count means other processes shared the machine.
	LoadAvg string `json:"load_avg,omitempty"`
}

func thisMachine() Machine {
	m := Machine{OS: runtime.GOOS, Arch: runtime.GOARCH, CPUs: runtime.NumCPU(), GOMAXPROCS: runtime.GOMAXPROCS(0), Go: runtime.Version()}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) >= 3 {
			m.LoadAvg = strings.Join(f[:3], " ")
		}
	}
	return m
}

// Result is one scenario run against one server.
type Result struct {
	Scenario string `json:"scenario"`
	Target   string `json:"target"` // "parley" or "baseline"
	Where    string `json:"where"`  // "in-process", "child process", "external"
	Addr     string `json:"addr"`
	Skipped  string `json:"skipped,omitempty"`

	Users       int           `json:"users"`
	Connections int           `json:"connections"`
	SetupTime   time.Duration `json:"setup_ns"`
	Measured    time.Duration `json:"measured_ns"` // the load phase, drain included

	Sent             uint64  `json:"sent"`  // first transmissions
	Acked            uint64  `json:"acked"` // durable acks (baseline: immediate acks)
	Delivered        uint64  `json:"delivered"`
	Expected         uint64  `json:"expected"` // acked messages times their subscribers
	SentPerSec       float64 `json:"sent_per_sec"`
	DeliveredPerSec  float64 `json:"delivered_per_sec"`
	Losses           uint64  `json:"losses"`
	Duplicates       uint64  `json:"duplicates"`
	Reorders         uint64  `json:"reorders"`
	UnackedDelivered uint64  `json:"unacked_delivered"`
	Resends          uint64  `json:"resends"`        // sends resent after UNAVAILABLE or CANCELED answers
	CanceledSends    uint64  `json:"canceled_sends"` // sends answered CANCELED on a stream being cut
	Notifications    uint64  `json:"notifications"`  // Notification frames (conversations not followed)
	Presence         uint64  `json:"presence"`       // Presence frames
	Foreign          uint64  `json:"foreign"`        // messages from outside the run or another conversation

	E2E     Latency `json:"e2e"`      // scheduled send time -> delivery
	Ack     Latency `json:"ack"`      // scheduled send time -> durable ack
	SendLag Latency `json:"send_lag"` // scheduled send time -> handed to gRPC (generator delay, backpressure)

	Reconnects map[string]uint64 `json:"reconnects,omitempty"` // streams cut, by status code
	Resources  *Resources        `json:"resources,omitempty"`

	Burst   *BurstResult   `json:"burst,omitempty"`
	Idle    *IdleResult    `json:"idle,omitempty"`
	History *HistoryResult `json:"history,omitempty"`
	Log     *LogResult     `json:"log,omitempty"`

	Errors []string `json:"errors,omitempty"`

	// lat holds the histograms behind E2E, Ack and SendLag, so that the
	// results of several rounds can be pooled.
	lat *latencies
}

// latencies are a run's histograms.
type latencies struct{ e2e, ack, lag Histogram }

// BurstResult is what the burst scenario adds.
type BurstResult struct {
	Messages int `json:"messages"`
	// Drain is from the burst's instant to its last delivery.
	Drain time.Duration `json:"drain_ns"`
}

// IdleResult is what the idle scenario adds.
type IdleResult struct {
	Streams int     `json:"streams"`
	Connect Latency `json:"connect"` // stream open (dial included) -> first pong
	// RSSDelta is the RSS growth from before the first stream to the end
	// of the hold; PerStream is RSSDelta / Streams.
	RSSDelta  int64 `json:"rss_delta_bytes"`
	PerStream int64 `json:"bytes_per_stream"`
}

// HistoryResult is what the history scenario adds.
type HistoryResult struct {
	Behind      int           `json:"behind"`
	Fill        time.Duration `json:"fill_ns"` // time to send and get acks for Behind messages
	FillPerSec  float64       `json:"fill_per_sec"`
	ToSubscribe Latency       `json:"to_subscribed"` // subscribe -> Subscribed, per subscriber
	// ReplayPerSec is messages replayed per second per subscriber, from
	// the slowest subscriber's time to Subscribed.
	ReplayPerSec float64 `json:"replay_per_sec"`
}

// OK reports whether the result shows no losses, duplicates, reorders,
// misdeliveries or errors.
func (r *Result) OK() bool {
	return r.Skipped != "" || (r.Losses == 0 && r.Duplicates == 0 && r.Reorders == 0 && r.Foreign == 0 && len(r.Errors) == 0)
}

// Ratio compares Parley with the baseline on one scenario.
type Ratio struct {
	Scenario string `json:"scenario"`
	// Throughput is Parley's delivered/s over the baseline's (higher is
	// better for Parley); P99 is Parley's delivery p99 over the
	// baseline's (lower is better).
	Throughput float64 `json:"throughput"`
	P99        float64 `json:"p99"`
	// Idle only: memory per stream and connect p99, Parley over baseline.
	PerStream  float64 `json:"bytes_per_stream,omitempty"`
	ConnectP99 float64 `json:"connect_p99,omitempty"`
}

// OK reports whether every result is clean.
func (rep *Report) OK() bool {
	for i := range rep.Results {
		if !rep.Results[i].OK() {
			return false
		}
	}
	return true
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

func (rep *Report) addRatios() {
	var parley, base *Result
	for i := range rep.Results {
		switch r := &rep.Results[i]; {
		case r.Skipped != "":
		case r.Target == "parley":
			parley = r
		case r.Target == "baseline":
			base = r
		}
	}
	if parley == nil || base == nil {
		return
	}
	q := Ratio{
		Scenario:   parley.Scenario,
		Throughput: ratio(parley.DeliveredPerSec, base.DeliveredPerSec),
		P99:        ratio(float64(parley.E2E.P99), float64(base.E2E.P99)),
	}
	if parley.Idle != nil && base.Idle != nil {
		q.PerStream = ratio(float64(parley.Idle.PerStream), float64(base.Idle.PerStream))
		q.ConnectP99 = ratio(float64(parley.Idle.Connect.P99), float64(base.Idle.Connect.P99))
	}
	rep.Ratios = append(rep.Ratios, q)
}

// WriteJSON writes the report to a file.
func (rep *Report) WriteJSON(path string) error { return writeJSON(path, rep) }

// writeJSON writes v as indented JSON to a file.
func writeJSON(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(data, '\n'), 0o644)
}

// Print writes the report as tables.
func (rep *Report) Print(w io.Writer) {
	m := rep.Machine
	fmt.Fprintf(w, "\nparley-bench %s: %d CPUs (GOMAXPROCS %d), %s/%s, %s", rep.Scenario, m.CPUs, m.GOMAXPROCS, m.OS, m.Arch, m.Go)
	if m.LoadAvg != "" {
		fmt.Fprintf(w, ", load average at start %s", m.LoadAvg)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "client: %s\n", rep.Client)
	for _, r := range rep.Results {
		if r.Skipped != "" {
			fmt.Fprintf(w, "%s: skipped: %s\n", r.Target, r.Skipped)
			continue
		}
		if r.Log != nil {
			fmt.Fprintf(w, "%s: %s; %d appenders\n", r.Target, r.Where, r.Users)
		} else {
			fmt.Fprintf(w, "%s: %s at %s; %d users on %d connections; setup %s\n", r.Target, r.Where, r.Addr, r.Users, r.Connections, fmtDur(r.SetupTime))
		}
		if res := r.Resources; res != nil {
			fmt.Fprintf(w, "  cpu/rss are of the %s\n", res.Scope)
		}
	}
	fmt.Fprintln(w)

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "server\tsent/s\tdelivered/s\te2e p50\tp90\tp99\tp99.9\tmax\tack p50\tack p99\tcpu\trss end\tlost\tdup\treconnects\t")
	for _, r := range rep.Results {
		if r.Skipped != "" {
			continue
		}
		cpu, rss := "-", "-"
		if res := r.Resources; res != nil {
			cpu = fmt.Sprintf("%.2f cores", res.CPUCores)
			rss = fmtBytes(int64(res.RSSEnd))
		}
		fmt.Fprintf(tw, "%s\t%.0f\t%.0f\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\t\n",
			r.Target, r.SentPerSec, r.DeliveredPerSec,
			fmtLat(r.E2E, r.E2E.P50), fmtLat(r.E2E, r.E2E.P90), fmtLat(r.E2E, r.E2E.P99), fmtLat(r.E2E, r.E2E.P999), fmtLat(r.E2E, r.E2E.Max),
			fmtLat(r.Ack, r.Ack.P50), fmtLat(r.Ack, r.Ack.P99), cpu, rss, r.Losses, r.Duplicates, fmtCuts(r.Reconnects))
	}
	tw.Flush()

	for _, r := range rep.Results {
		if r.Skipped != "" {
			continue
		}
		fmt.Fprintf(w, "%s: sent %d, acked %d, delivered %d of %d expected; send lag p99 %s (scheduled time to handed to gRPC: generator delay plus flow-control backpressure)",
			r.Target, r.Sent, r.Acked, r.Delivered, r.Expected, fmtLat(r.SendLag, r.SendLag.P99))
		if res := r.Resources; res != nil {
			fmt.Fprintf(w, "; cpu %s; rss %s -> %s (peak %s)", fmtDur(res.CPU), fmtBytes(int64(res.RSSStart)), fmtBytes(int64(res.RSSEnd)), fmtBytes(int64(res.RSSPeak)))
		}
		if r.Reorders+r.UnackedDelivered+r.Resends+r.Foreign > 0 {
			fmt.Fprintf(w, "; reorders %d, delivered-but-unacked %d, resends %d (%d answered CANCELED), foreign %d",
				r.Reorders, r.UnackedDelivered, r.Resends, r.CanceledSends, r.Foreign)
		}
		if r.Notifications+r.Presence > 0 {
			fmt.Fprintf(w, "; also received %d notification and %d presence frames", r.Notifications, r.Presence)
		}
		fmt.Fprintln(w)
		if b := r.Burst; b != nil {
			fmt.Fprintf(w, "  burst of %d: last delivery %s after the burst instant\n", b.Messages, fmtDur(b.Drain))
		}
		if h := r.History; h != nil {
			fmt.Fprintf(w, "  history: filled %d messages in %s (%.0f acked/s); caught up at %.0f messages/s per subscriber; time to Subscribed p50 %s max %s\n",
				h.Behind, fmtDur(h.Fill), h.FillPerSec, h.ReplayPerSec, fmtDur(h.ToSubscribe.P50), fmtDur(h.ToSubscribe.Max))
		}
		if l := r.Log; l != nil {
			fmt.Fprintf(w, "  log: %.0f durable appends/s from %d conversations (%d in flight, %dB entries); %d group commits, %.1f messages each, commit p50 %s p99 %s\n",
				l.AckedPerSec, l.Conversations, l.InFlight, l.Bytes, l.Commits, l.PerCommit, fmtLat(l.Commit, l.Commit.P50), fmtLat(l.Commit, l.Commit.P99))
		}
		if id := r.Idle; id != nil {
			fmt.Fprintf(w, "  idle: %d streams; connect p50 %s p99 %s max %s; rss +%s = %s per stream\n",
				id.Streams, fmtDur(id.Connect.P50), fmtDur(id.Connect.P99), fmtDur(id.Connect.Max), fmtBytes(id.RSSDelta), fmtBytes(id.PerStream))
		}
		for _, e := range r.Errors {
			fmt.Fprintf(w, "  error: %s\n", e)
		}
	}
	for _, q := range rep.Ratios {
		if q.Scenario == "idle" {
			fmt.Fprintf(w, "parley/baseline (idle): memory per stream %.2fx, connect p99 %.2fx\n", q.PerStream, q.ConnectP99)
			continue
		}
		fmt.Fprintf(w, "parley/baseline (%s): throughput (delivered/s) %.2fx, e2e p99 %.2fx\n", q.Scenario, q.Throughput, q.P99)
	}
	if len(rep.Rounds) > 0 {
		fmt.Fprintf(w, "the %d rounds pooled above (%s each, a fresh server every time), parley vs baseline:\n", len(rep.Rounds), fmtDur(rep.Config.Duration))
		for i, r := range rep.Rounds {
			fmt.Fprintf(w, "  round %d, %s first: %s\n", i+1, r.First, r.String())
		}
	}
	if rep.OK() {
		fmt.Fprintln(w, "result: OK (0 losses, 0 duplicates)")
	} else {
		fmt.Fprintln(w, "result: FAILED (losses, duplicates, reorders or errors above)")
	}
}

func fmtLat(l Latency, d time.Duration) string {
	if l.Count == 0 {
		return "-"
	}
	return fmtDur(d)
}

func fmtDur(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%.0fµs", float64(d)/float64(time.Microsecond))
	case d < time.Second:
		return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.2fs", d.Seconds())
	}
}

func fmtBytes(n int64) string {
	neg := ""
	if n < 0 {
		neg, n = "-", -n
	}
	switch {
	case n < 10<<10:
		return fmt.Sprintf("%s%dB", neg, n)
	case n < 10<<20:
		return fmt.Sprintf("%s%.1fKiB", neg, float64(n)/(1<<10))
	default:
		return fmt.Sprintf("%s%.1fMiB", neg, float64(n)/(1<<20))
	}
}

func fmtCuts(m map[string]uint64) string {
	if len(m) == 0 {
		return "0"
	}
	var parts []string
	for _, k := range sortedKeys(m) {
		parts = append(parts, fmt.Sprintf("%d %s", m[k], k))
	}
	return strings.Join(parts, ", ")
}
