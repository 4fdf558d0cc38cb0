package bench

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Scenarios lists the scenarios by name, in the order the usage shows.
var Scenarios = []string{"dm", "room", "burst", "idle", "history", "log"}

// Config is one invocation of the load generator. Zero counts, sizes and
// durations, and a negative Rate, mean the scenario's default (see
// Defaults); a Rate of 0 means as fast as the streams take messages.
type Config struct {
	Scenario string `json:"scenario"`

	// Server is host:port of a running parleyd, or several
	// comma-separated host:port of the nodes of one cluster (see
	// ParseServers); empty starts one.
	Server string `json:"server,omitempty"`
	// ServerPID is the pid of the external server, for its CPU and RSS.
	// ServerPIDs, when set, are several (a cluster's nodes) whose figures
	// are summed; ServerPID is then the first of them.
	ServerPID  int   `json:"server_pid,omitempty"`
	ServerPIDs []int `json:"server_pids,omitempty"`
	// Spawn starts the server (and the baseline) as a child process of
	// this binary instead of in this process, so that their CPU and RSS
	// are theirs alone.
	Spawn bool `json:"spawn"`
	// NoSync turns fsync off in a server the tool starts.
	NoSync bool `json:"no_sync"`
	// Baseline also runs the scenario against the bare fan-out server.
	Baseline bool `json:"baseline"`
	// Rounds, with Baseline, runs dm or room this many times against each
	// server, alternating which goes first, and pools what the rounds
	// measured: both servers then see the same stretch of a noisy machine.
	Rounds int `json:"rounds,omitempty"`
	// JSON is a file to write the report to.
	JSON string `json:"-"`

	Duration time.Duration `json:"duration_ns"`   // dm, room: how long to send; idle: how long to hold
	Rate     float64       `json:"rate"`          // dm, room: messages per second in all; 0 = as fast as possible
	Messages int           `json:"messages"`      // dm, room: stop after this many messages in all; 0 = no limit
	Size     int           `json:"size"`          // message body bytes
	Pairs    int           `json:"pairs"`         // dm
	Subs     int           `json:"subscribers"`   // room, burst, history: subscribers
	Senders  int           `json:"senders"`       // room, burst
	Burst    int           `json:"burst"`         // burst: messages in the burst
	Quiet    time.Duration `json:"quiet_ns"`      // burst: quiet time before the burst
	Streams  int           `json:"streams"`       // idle
	Behind   int           `json:"behind"`        // history: messages the subscriber is behind
	LiveRate float64       `json:"live_rate"`     // history: live messages per second during the catch-up
	Convs    int           `json:"conversations"` // log: conversations, one appender each
	Window   int           `json:"window"`        // log: appends in flight per appender

	Conns       int           `json:"conns"`       // connections; 0 = one per user (capped by the fd limit)
	Concurrency int           `json:"concurrency"` // setup calls and stream opens at a time
	Drain       time.Duration `json:"drain_ns"`    // after the load: give up waiting once nothing moved for this long
	NoProgress  bool          `json:"-"`
	CPUProfile  string        `json:"-"` // write a CPU profile of this process (server included when in-process)

	// Progress receives the once-a-second progress lines; nil discards
	// them.
	Progress io.Writer `json:"-"`
}

// Defaults fills in the scenario's defaults for fields left unset.
func (c *Config) Defaults() {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	if c.Duration <= 0 {
		c.Duration = 10 * time.Second
		if c.Scenario == "idle" {
			c.Duration = 5 * time.Second
		}
	}
	if c.Rate < 0 {
		c.Rate = 1000
	}
	def(&c.Size, 64)
	def(&c.Rounds, 1)
	def(&c.Pairs, 100)
	subs := 100
	if c.Scenario == "history" {
		subs = 1
	}
	def(&c.Subs, subs)
	def(&c.Senders, 10)
	def(&c.Burst, 1000)
	if c.Quiet <= 0 {
		c.Quiet = time.Second
	}
	def(&c.Streams, 1000)
	def(&c.Behind, 100_000)
	c.LiveRate = max(c.LiveRate, 0)
	def(&c.Convs, 100)
	def(&c.Window, 64)
	def(&c.Concurrency, 64)
	if c.Drain <= 0 {
		c.Drain = 10 * time.Second
	}
}

func (c *Config) validate() error {
	if !slices.Contains(Scenarios, c.Scenario) {
		return fmt.Errorf("unknown scenario %q: want one of %s", c.Scenario, strings.Join(Scenarios, ", "))
	}
	// The body is "<unix nanos>:" and padding; it needs room for the time.
	if c.Size < 20 {
		return fmt.Errorf("--size %d: a body holds a 19-digit timestamp and a colon, so at least 20 bytes", c.Size)
	}
	if c.Scenario == "room" || c.Scenario == "burst" {
		if c.Senders < 1 {
			return errors.New("--senders must be at least 1")
		}
	}
	if c.Rounds > 1 && (!c.Baseline || c.Scenario != "dm" && c.Scenario != "room") {
		return fmt.Errorf("--rounds %d: rounds alternate Parley and the baseline, so they need --baseline and the dm or room scenario", c.Rounds)
	}
	if c.Spawn && c.Server != "" {
		return errors.New("--spawn starts a server; it cannot be combined with --server")
	}
	if c.ServerPID != 0 && c.Server == "" {
		return errors.New("--server-pid is for an external server given with --server")
	}
	if c.Server != "" {
		if _, err := ParseServers(c.Server); err != nil {
			return fmt.Errorf("--server: %w", err)
		}
	}
	return nil
}

// ParseServers splits a --server value into the nodes' addresses. A value
// without a comma is one server's gRPC target, returned as it is, as
// before clusters. Several are host:port separated by commas (spaces
// around them are allowed); each needs a numeric port (an empty host means
// this machine, as for net.Dial), and none may repeat, since a run spreads
// its users over the nodes to make traffic cross between them.
func ParseServers(s string) ([]string, error) {
	if s == "" {
		return nil, errors.New("no address")
	}
	if !strings.Contains(s, ",") {
		return []string{s}, nil
	}
	var addrs []string
	for a := range strings.SplitSeq(s, ",") {
		a = strings.TrimSpace(a)
		if a == "" {
			return nil, fmt.Errorf("%q: empty address", s)
		}
		_, port, err := net.SplitHostPort(a)
		if err != nil {
			return nil, fmt.Errorf("%q: %w", a, err)
		}
		if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
			return nil, fmt.Errorf("%q: bad port %q", a, port)
		}
		if slices.Contains(addrs, a) {
			return nil, fmt.Errorf("%q given twice", a)
		}
		addrs = append(addrs, a)
	}
	return addrs, nil
}

// pids returns the external server processes' pids, nil if none.
func (c *Config) pids() []int {
	switch {
	case len(c.ServerPIDs) > 0:
		return c.ServerPIDs
	case c.ServerPID > 0:
		return []int{c.ServerPID}
	}
	return nil
}

// parsePIDs parses a --server-pid value: one pid or several separated by
// commas.
func parsePIDs(s string) ([]int, error) {
	var pids []int
	for f := range strings.SplitSeq(s, ",") {
		pid, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || pid <= 0 {
			return nil, fmt.Errorf("bad pid %q", f)
		}
		pids = append(pids, pid)
	}
	return pids, nil
}

const usageText = `Usage: parley-bench <scenario> [flags]
       parley-bench --scenario <scenario> [flags]
       parley-bench suite [--out DIR] [--quick] [--only name,...]

Load generator for Parley. It drives a running parleyd (--server
host:port), the nodes of a cluster (--server host:port,host:port,...), or
starts one itself on 127.0.0.1 with a temp data dir (fsync on unless
--no-sync), and reports throughput, delivery latency (from the time each
message was scheduled, so a stalled sender cannot hide latency), ack
latency, server CPU and memory, and losses and duplicates, which must be 0:
it exits 1 otherwise. --baseline runs the same scenario against a bare
grpc-go fan-out server in the same run and prints Parley/baseline ratios.

The suite runs the standard set of scenarios, each against Parley and the
baseline in child processes with fsync on, and prints one table of
Parley/baseline ratios against the project's targets; "parley-bench suite
--help" says more.

Scenarios:
  dm       --pairs N direct conversations, both members sending and
           subscribed, --rate messages/s in all (open loop)
  room     one room, --subscribers N, --senders M, --rate messages/s in all
           (--rate 0: as fast as the streams take them)
  burst    a room with --subscribers N quiet for --quiet, then --burst K
           messages from --senders M at one instant
  idle     --streams N idle Chat streams held for --duration: memory per
           stream and connect time
  history  a subscriber (--subscribers) --behind K messages catches up:
           replay messages/s and time to Subscribed; --live-rate adds live
           messages during the catch-up
  log      the message log alone, no network: --conversations appenders
           (one conversation each, --window appends in flight each) append
           to a store in a temp dir for --duration; durable appends/s and
           messages per group commit (in this process; no baseline)

The server this tool starts has fsync on, no per-user send limit and the
minimum bcrypt cost (only setup hashes passwords). Against an external
parleyd, start it with --send-rate 0 (its default limits each user to 100
messages/s) and --bcrypt-cost 4 when registering thousands of users, and
pass --server-pid to get its CPU and RSS. With several --server addresses
the users are spread over the nodes so that messages cross between them: a
dm pair's two members are on different nodes, a room's senders and
subscribers go round the nodes in turn; --server-pid then takes the nodes'
pids, comma-separated, and reports their sum. --spawn runs the server (and
the baseline) in a child process so that CPU and RSS are the server's alone;
in-process figures include the load generator.

Flags:
`

// ParseArgs parses the command line (without the program name). Help
// prints the usage to out and returns flag.ErrHelp.
func ParseArgs(args []string, out io.Writer) (Config, error) {
	var c Config
	fs := flag.NewFlagSet("parley-bench", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() {
		fmt.Fprint(out, usageText)
		fs.PrintDefaults()
	}
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		c.Scenario, args = args[0], args[1:]
	}
	fs.StringVar(&c.Scenario, "scenario", c.Scenario, "scenario to run: "+strings.Join(Scenarios, ", "))
	fs.StringVar(&c.Server, "server", "", "host:port of a running parleyd, or host:port,host:port,... of a cluster's nodes (users are spread over them); empty starts one in this process")
	pids := fs.String("server-pid", "", "pid of the --server process, to report its CPU and RSS from /proc; several comma-separated pids (a cluster's nodes) are summed")
	fs.BoolVar(&c.Spawn, "spawn", false, "start the server (and baseline) in a child process, so CPU and RSS are the server's alone")
	fs.BoolVar(&c.NoSync, "no-sync", false, "turn fsync off in the server this tool starts (acks then mean less)")
	fs.BoolVar(&c.Baseline, "baseline", false, "also run the scenario against a bare grpc-go fan-out server and print ratios")
	fs.IntVar(&c.Rounds, "rounds", 1, "dm, room with --baseline: run each server this many times, --duration each, alternating which goes first, and pool the rounds")
	fs.StringVar(&c.JSON, "json", "", "write the results as JSON to this file")
	fs.DurationVar(&c.Duration, "duration", 0, "dm, room: how long to send (default 10s); idle: how long to hold the streams (default 5s)")
	fs.Float64Var(&c.Rate, "rate", -1, "dm, room: messages per second in all; 0 = as fast as the streams take them (default 1000)")
	fs.IntVar(&c.Messages, "messages", 0, "dm, room: stop sending after this many messages in all, even before --duration ends (0: no limit)")
	fs.IntVar(&c.Size, "size", 0, "message body in bytes (default 64)")
	fs.IntVar(&c.Pairs, "pairs", 0, "dm: direct conversations (default 100)")
	fs.IntVar(&c.Subs, "subscribers", 0, "room, burst: subscribers (default 100); history: subscribers catching up (default 1)")
	fs.IntVar(&c.Senders, "senders", 0, "room, burst: users sending (default 10)")
	fs.IntVar(&c.Burst, "burst", 0, "burst: messages in the burst (default 1000)")
	fs.DurationVar(&c.Quiet, "quiet", 0, "burst: quiet time before the burst (default 1s)")
	fs.IntVar(&c.Streams, "streams", 0, "idle: idle Chat streams (default 1000)")
	fs.IntVar(&c.Behind, "behind", 0, "history: messages to catch up on (default 100000)")
	fs.Float64Var(&c.LiveRate, "live-rate", 0, "history: live messages per second while the subscriber catches up")
	fs.IntVar(&c.Convs, "conversations", 0, "log: conversations, each with its own appender (default 100)")
	fs.IntVar(&c.Window, "window", 0, "log: appends in flight per appender (default 64)")
	fs.IntVar(&c.Conns, "conns", 0, "gRPC connections the users share; 0 = one per user, capped by the open file limit")
	fs.IntVar(&c.Concurrency, "concurrency", 0, "setup calls and stream opens at a time (default 64)")
	fs.DurationVar(&c.Drain, "drain", 0, "after the load, stop waiting for acks and deliveries once none came for this long (default 10s)")
	fs.BoolVar(&c.NoProgress, "no-progress", false, "do not print a progress line every second")
	fs.StringVar(&c.CPUProfile, "cpuprofile", "", "write a CPU profile of this process to this file (it includes an in-process server)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if c.Scenario == "" && fs.NArg() > 0 {
		c.Scenario = fs.Arg(0)
		if err := fs.Parse(fs.Args()[1:]); err != nil {
			return c, err
		}
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if c.Scenario == "" {
		fs.Usage()
		return c, errors.New("no scenario given")
	}
	if *pids != "" {
		p, err := parsePIDs(*pids)
		if err != nil {
			return c, fmt.Errorf("--server-pid: %w", err)
		}
		c.ServerPID = p[0]
		if len(p) > 1 {
			c.ServerPIDs = p
		}
	}
	c.Defaults()
	return c, c.validate()
}
