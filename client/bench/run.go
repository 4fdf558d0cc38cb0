package bench

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/parleychat/parley/client"
	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
)

// benchPassword is every simulated user's password.
const benchPassword = "parley-bench-password"

// run is one scenario against one target: its clients, its counters and
// its histograms. Counters and histograms are updated by many goroutines;
// everything else is set up before the streams start.
type run struct {
	cfg      Config
	tgt      *target
	id       string // random, so names do not collide on a long-lived server
	progress io.Writer

	clients []*client.Client // the users' connections, used by their streams only
	setup   []*client.Client // a few connections for setup calls
	// place is where each user is (by its index in the names users
	// returns), nodes the connections to each of the target's nodes.
	place   []placement
	nodes   []nodeConns
	eps     []*endpoint
	senders []*sender
	// senderIdx maps a user id to its sender index; read-only once the
	// streams start.
	senderIdx map[string]int

	e2e     Histogram // scheduled send time -> delivery
	ackLat  Histogram // scheduled send time -> durable ack
	lag     Histogram // scheduled send time -> handed to gRPC: generator delay and backpressure
	connect Histogram // stream open -> first answer (idle)
	window  atomic.Pointer[Histogram]

	sent, acked, delivered, dups, reorders, foreign, retries atomic.Uint64
	canceledSends, notifications, presence                   atomic.Uint64
	lastDelivery, lastSend                                   atomic.Int64 // unix nanoseconds

	mu    sync.Mutex // protects cuts, errs and nerrs
	cuts  map[string]uint64
	errs  []string
	nerrs int

	streams  context.Context // ends every endpoint's stream
	stop     context.CancelFunc
	wg       sync.WaitGroup // endpoint loops
	stopped  bool
	setupDur time.Duration
}

func newRun(cfg Config, tgt *target) *run {
	var b [4]byte
	_, _ = rand.Read(b[:])
	r := &run{
		cfg:       cfg,
		tgt:       tgt,
		id:        fmt.Sprintf("%08x", b),
		progress:  cfg.Progress,
		senderIdx: make(map[string]int),
		cuts:      make(map[string]uint64),
	}
	r.window.Store(new(Histogram))
	if r.progress == nil {
		r.progress = io.Discard
	}
	r.streams, r.stop = context.WithCancel(context.Background())
	return r
}

// fail records an error that makes the run fail; the first few are kept
// for the report.
func (r *run) fail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.nerrs++
	if len(r.errs) < 10 {
		r.errs = append(r.errs, err.Error())
	}
}

// countCut records a stream that ended and was reopened.
func (r *run) countCut(e *endpoint, err error) {
	role := "subscriber"
	if e.snd != nil {
		role = "sender"
	}
	r.mu.Lock()
	r.cuts[role+" "+codeName(err)]++
	r.mu.Unlock()
}

// userName returns the name of the i-th user with a role letter.
func (r *run) userName(role string, i int) string {
	return fmt.Sprintf("b%s-%s%d", r.id, role, i)
}

// nodeConns are the connections to one node: a share of r.clients and of
// r.setup.
type nodeConns struct {
	users, setup []*client.Client
}

// dial makes the connections for the users r.place puts on the target's
// nodes: one each, unless Config.Conns says otherwise or the file
// descriptor limit does not allow it, and a few more for setup calls
// (registration, joins), so that the users' connections are first used,
// and connected, by their streams. Each node gets its share of both, in
// proportion to its users.
func (r *run) dial(ctx context.Context) error {
	n := len(r.place)
	perNode := make([]int, len(r.tgt.addrs))
	for _, p := range r.place {
		perNode[p.node]++
	}
	r.nodes = make([]nodeConns, len(r.tgt.addrs))
	setup := min(r.cfg.Concurrency, n)
	for k, addr := range r.tgt.addrs {
		for range share(setup, perNode[k], n) {
			c, err := client.Dial(ctx, addr)
			if err != nil {
				return err
			}
			r.setup = append(r.setup, c)
			r.nodes[k].setup = append(r.nodes[k].setup, c)
		}
	}
	conns := r.cfg.Conns
	if conns <= 0 {
		conns = n
		perConn := 1
		if r.tgt.local {
			perConn = 2 // both ends of every connection are in this process
		}
		if limit := (fdLimit() - 512 - 2*len(r.setup)) / perConn; limit > 0 && conns > limit {
			conns = limit
		}
	}
	conns = max(1, min(conns, n))
	for k, addr := range r.tgt.addrs {
		for range share(conns, perNode[k], n) {
			c, err := client.Dial(ctx, addr)
			if err != nil {
				return err
			}
			r.clients = append(r.clients, c)
			r.nodes[k].users = append(r.nodes[k].users, c)
		}
	}
	return nil
}

// conn is user i's connection, to its node.
func (r *run) conn(i int) *grpc.ClientConn {
	p := r.place[i]
	cs := r.nodes[p.node].users
	return cs[p.rank%len(cs)].Conn()
}

// setupConn is a connection to user i's node for its setup calls, so that
// a user registers and joins on the node it then streams from.
func (r *run) setupConn(i int) *grpc.ClientConn {
	p := r.place[i]
	cs := r.nodes[p.node].setup
	return cs[p.rank%len(cs)].Conn()
}

// authed returns ctx carrying user's token.
func authed(ctx context.Context, token string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}

// register creates the users and returns their tokens. The baseline has no
// accounts: a user's token is its name.
func (r *run) register(ctx context.Context, users []string) ([]string, error) {
	tokens := make([]string, len(users))
	if !r.tgt.parley {
		copy(tokens, users)
		return tokens, nil
	}
	err := r.parallel(ctx, "register users", len(users), func(ctx context.Context, i int) error {
		resp, err := parleyv1.NewAuthServiceClient(r.setupConn(i)).Register(ctx, &parleyv1.RegisterRequest{Username: users[i], Password: benchPassword})
		if err != nil {
			return fmt.Errorf("register %s: %w", users[i], err)
		}
		tokens[i] = resp.GetToken().GetValue()
		return nil
	})
	return tokens, err
}

// createRoom creates a room owned by the first user and has every other user
// join it; it returns the room's conversation id.
func (r *run) createRoom(ctx context.Context, tokens []string) (string, error) {
	name := "bench-" + r.id
	id := client.RoomID(name)
	if !r.tgt.parley {
		return id, nil
	}
	convs := parleyv1.NewConversationServiceClient(r.setupConn(0))
	if _, err := convs.CreateRoom(authed(ctx, tokens[0]), &parleyv1.CreateRoomRequest{Name: name}); err != nil {
		return "", fmt.Errorf("create room: %w", err)
	}
	err := r.parallel(ctx, "join the room", len(tokens)-1, func(ctx context.Context, i int) error {
		_, err := parleyv1.NewConversationServiceClient(r.setupConn(i+1)).JoinRoom(authed(ctx, tokens[i+1]), &parleyv1.JoinRoomRequest{ConversationId: id})
		if err != nil {
			return fmt.Errorf("join room: %w", err)
		}
		return nil
	})
	return id, err
}

// direct returns the direct conversation of users a and b, created by a.
func (r *run) direct(ctx context.Context, i int, a, tokenA, b string) (string, error) {
	if !r.tgt.parley {
		if b < a {
			a, b = b, a
		}
		return "dm:" + a + ":" + b, nil
	}
	resp, err := parleyv1.NewConversationServiceClient(r.setupConn(i)).CreateDirect(authed(ctx, tokenA), &parleyv1.CreateDirectRequest{UserId: b})
	if err != nil {
		return "", fmt.Errorf("direct conversation %s-%s: %w", a, b, err)
	}
	return resp.GetConversation().GetId(), nil
}

// parallel runs f for 0..n-1 with Config.Concurrency at a time and returns
// the first error. A step that takes more than a second reports its
// progress once a second under name.
func (r *run) parallel(ctx context.Context, name string, n int, f func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var done atomic.Int64
	defer r.stepProgress(name, n, done.Load)()
	sem := make(chan struct{}, r.cfg.Concurrency)
	var wg sync.WaitGroup
	for i := range n {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := f(ctx, i); err != nil {
				cancel(err)
			}
			done.Add(1)
		})
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return ctx.Err()
}

// stepProgress prints "name: done/n" once a second until the returned
// function is called, and how long the step took if it took over a second.
func (r *run) stepProgress(name string, n int, done func() int64) (stop func()) {
	start := time.Now()
	quit := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-quit:
				return
			case <-t.C:
				fmt.Fprintf(r.progress, "%-16s %s: %d/%d\n", r.label(), name, done(), n)
			}
		}
	}()
	return func() {
		close(quit)
		<-finished
		if d := time.Since(start); d > time.Second {
			fmt.Fprintf(r.progress, "%-16s %s: %d of %d in %s\n", r.label(), name, done(), n, fmtDur(d))
		}
	}
}

// endpoint adds a simulated user. A sending user gets the next sender
// index.
func (r *run) endpoint(i int, user, token, conv string, subscribe, sends bool) *endpoint {
	e := &endpoint{
		r: r, user: user, token: token, conn: r.conn(i), conv: conv,
		subscribe: subscribe, self: -1, seen: make(map[int]*seqSet), ready: make(chan struct{}),
		// A user that follows nothing is ready once a ping comes back, so
		// that its stream is open before the clock starts.
		pingFirst: !subscribe,
	}
	if sends {
		e.snd = newSender(len(r.senders), conv)
		e.self = e.snd.idx
		r.senders = append(r.senders, e.snd)
		r.senderIdx[user] = e.snd.idx
	}
	r.eps = append(r.eps, e)
	return e
}

// start opens the streams of eps, Config.Concurrency at a time, and waits
// until each has its Subscribed (or Pong, or nothing to wait for).
func (r *run) start(ctx context.Context, eps []*endpoint) error {
	var ready atomic.Int64
	defer r.stepProgress("open streams", len(eps), ready.Load)()
	sem := make(chan struct{}, r.cfg.Concurrency)
	for _, e := range eps {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
		r.wg.Go(func() { e.loop(r.streams) })
		go func() {
			select {
			case <-e.ready:
				ready.Add(1)
			case <-r.streams.Done():
			}
			<-sem
		}()
	}
	for _, e := range eps {
		select {
		case <-e.ready:
		case <-ctx.Done():
			return fmt.Errorf("waiting for streams to open: %w", ctx.Err())
		}
		if e.gaveUp.Load() {
			return fmt.Errorf("%s: could not open its stream", e.user)
		}
	}
	return nil
}

// schedule runs the schedulers of senders: rate messages per second in
// all, from start until end, and no more than Config.Messages in all when
// that is set. rate 0 sends as fast as the streams take them. Each
// sender's out is closed when it is done.
func (r *run) schedule(ctx context.Context, senders []*sender, rate float64, start, end time.Time) {
	var wg sync.WaitGroup
	for i, s := range senders {
		var limit uint64 // 0: no limit
		if m := r.cfg.Messages; m > 0 {
			limit = uint64(m / len(senders))
			if i < m%len(senders) {
				limit++
			}
			if limit == 0 {
				close(s.out)
				continue
			}
		}
		first := start
		per := 0.0
		if rate > 0 {
			per = rate / float64(len(senders))
			// Stagger the senders evenly over one aggregate interval.
			first = start.Add(time.Duration(float64(i) / rate * float64(time.Second)))
		}
		wg.Go(func() {
			defer close(s.out)
			s.schedule(ctx, first, per, end, limit)
		})
	}
	wg.Wait()
}

// schedule queues messages at rate per second from first until end (as
// fast as possible when rate is 0), and stops after limit messages if
// limit is not 0. Each carries the time it was due, not the time it went
// out.
func (s *sender) schedule(ctx context.Context, first time.Time, rate float64, end time.Time, limit uint64) {
	var n uint64
	if rate <= 0 {
		for now := time.Now(); now.Before(end) && (limit == 0 || n < limit); now = time.Now() {
			if !s.enqueue(ctx, outMsg{n: n, ts: now.UnixNano()}) {
				return
			}
			n++
		}
		return
	}
	interval := float64(time.Second) / rate
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for i := 0; ; i++ {
		due := first.Add(time.Duration(float64(i) * interval))
		if !due.Before(end) || (limit != 0 && n >= limit) {
			return
		}
		if d := time.Until(due); d > 0 {
			timer.Reset(d)
			select {
			case <-timer.C:
			case <-ctx.Done():
				return
			}
		}
		if !s.enqueue(ctx, outMsg{n: n, ts: due.UnixNano()}) {
			return
		}
		n++
	}
}

// burst queues k messages over senders, all due at the same instant.
func (r *run) burst(ctx context.Context, senders []*sender, k int, at time.Time) {
	for i := range k {
		s := senders[i%len(senders)]
		s.enqueue(ctx, outMsg{n: uint64(i / len(senders)), ts: at.UnixNano()})
	}
	for _, s := range senders {
		close(s.out)
	}
}

// showProgress prints a line a second until ctx ends: elapsed time,
// messages sent and delivered so far, and the delivery p99 of the last
// second.
func (r *run) showProgress(ctx context.Context, label string, start time.Time) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			w := r.window.Swap(new(Histogram))
			p99 := "-"
			if w.Count() > 0 {
				p99 = fmtDur(w.Quantile(0.99))
			}
			r.mu.Lock()
			var cuts uint64
			for _, n := range r.cuts {
				cuts += n
			}
			r.mu.Unlock()
			fmt.Fprintf(r.progress, "%-16s %6.1fs  sent %9d  acked %9d  delivered %11d  p99 %9s  reconnects %d\n",
				label, now.Sub(start).Seconds(), r.sent.Load(), r.acked.Load(), r.delivered.Load(), p99, cuts)
		}
	}
}

// drain waits until every queued send is answered and every subscriber
// has every acknowledged message of its conversation. It gives up when
// nothing has been acknowledged or delivered for idle, so a server that is
// still catching up gets the time it needs and a stuck one does not hang
// the run. It does not fail the run itself: the loss count that follows
// says what is missing.
func (r *run) drain(ctx context.Context, idle time.Duration) {
	progress := func() uint64 { return r.acked.Load() + r.delivered.Load() + r.dups.Load() }
	last, lastAt := progress(), time.Now()
	poll := func(done func() bool) bool {
		for !done() {
			select {
			case <-ctx.Done():
				return false
			case <-time.After(5 * time.Millisecond):
			}
			if p := progress(); p != last {
				last, lastAt = p, time.Now()
			} else if time.Since(lastAt) > idle {
				return false
			}
		}
		return true
	}
	if !poll(func() bool {
		for _, s := range r.senders {
			if !s.idle() {
				return false
			}
		}
		return true
	}) {
		var open uint64
		for _, s := range r.senders {
			open += s.queued.Load() - s.ackedN.Load() - s.failedN.Load()
		}
		r.fail(fmt.Errorf("%d sends still unanswered after %s without progress", open, idle))
	}
	if !poll(func() bool {
		want := r.expectedByConv()
		for _, e := range r.eps {
			if e.subscribe && !e.gaveUp.Load() && e.uniq.Load() < want[e.conv] {
				return false
			}
		}
		return true
	}) && ctx.Err() == nil {
		fmt.Fprintf(r.progress, "%-16s deliveries stopped for %s with subscribers still missing messages\n", r.label(), idle)
	}
}

// expectedByConv sums, per conversation, the messages acknowledged so far.
func (r *run) expectedByConv() map[string]uint64 {
	want := make(map[string]uint64)
	for _, s := range r.senders {
		want[s.conv] += s.ackedN.Load()
	}
	return want
}

// shutdown ends every stream and waits for the endpoints, so their state
// may be read.
func (r *run) shutdown() {
	if r.stopped {
		return
	}
	r.stopped = true
	r.stop()
	r.wg.Wait()
}

// close releases the connections.
func (r *run) close() {
	r.shutdown()
	for _, c := range append(r.clients, r.setup...) {
		c.Close()
	}
}

// tally counts losses, duplicates and the rest once the streams are
// stopped, and fills in the common fields of res.
func (r *run) tally(res *Result, sendStart, sendEnd time.Time) {
	r.shutdown()
	bySender := make(map[string][]*sender)
	for _, s := range r.senders {
		bySender[s.conv] = append(bySender[s.conv], s)
	}
	var lost, expected, extra uint64
	for _, e := range r.eps {
		if !e.subscribe {
			continue
		}
		var want, missing uint64
		for _, s := range bySender[e.conv] {
			set := e.seen[s.idx]
			if set == nil {
				set = &seqSet{}
			}
			missing += set.missing(&s.acked)
			want += s.acked.len()
		}
		// What arrived beyond the acknowledged messages that arrived:
		// sends refused or never answered that were delivered anyway.
		if got := e.uniq.Load(); got > want-missing {
			extra += got - (want - missing)
		}
		expected += want
		lost += missing
	}
	res.Sent = r.sent.Load()
	res.Acked = r.acked.Load()
	res.Delivered = r.delivered.Load()
	res.Expected = expected
	res.Losses = lost
	res.Duplicates = r.dups.Load()
	res.Reorders = r.reorders.Load()
	res.UnackedDelivered = extra
	res.Resends = r.retries.Load()
	res.CanceledSends = r.canceledSends.Load()
	res.Notifications = r.notifications.Load()
	res.Presence = r.presence.Load()
	res.Foreign = r.foreign.Load()
	if d := sendEnd.Sub(sendStart); d > 0 {
		res.SentPerSec = float64(res.Sent) / d.Seconds()
	}
	if last := r.lastDelivery.Load(); last > 0 {
		if d := time.Unix(0, last).Sub(sendStart); d > 0 {
			res.DeliveredPerSec = float64(res.Delivered) / d.Seconds()
		}
	}
	res.lat = &latencies{}
	res.lat.e2e.Merge(&r.e2e)
	res.lat.ack.Merge(&r.ackLat)
	res.lat.lag.Merge(&r.lag)
	res.E2E = res.lat.e2e.Summary()
	res.Ack = res.lat.ack.Summary()
	res.SendLag = res.lat.lag.Summary()
	r.mu.Lock()
	res.Reconnects = make(map[string]uint64, len(r.cuts))
	for k, v := range r.cuts {
		res.Reconnects[k] = v
	}
	res.Errors = append(res.Errors, r.errs...)
	if r.nerrs > len(r.errs) {
		res.Errors = append(res.Errors, fmt.Sprintf("... and %d more errors", r.nerrs-len(r.errs)))
	}
	r.mu.Unlock()
	res.SetupTime = r.setupDur
	res.Connections = len(r.clients)
}

// sortedKeys returns m's keys in order.
func sortedKeys(m map[string]uint64) []string {
	return slices.Sorted(maps.Keys(m))
}
