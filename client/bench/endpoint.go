package bench

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
)

// The load is driven through the generated ChatService stubs rather than
// client.Session: a Session's event channel, outbox and dedup window are
// costs of an application, and on a two-core machine the load generator
// must spend as little as it can. An endpoint keeps what a correct native
// client must keep, in lean form: it resubscribes from the last seq it saw
// after a cut (slow consumer, restart) and resends what was not
// acknowledged under the same client_message_id.
const clientAPI = "generated ChatService stubs (one Chat stream per simulated user; one reader goroutine, plus one writer for senders) over connections from client.Dial; client.Session is not used"

// endpoint is one simulated user: one Chat stream, reopened when it breaks.
type endpoint struct {
	r     *run
	user  string
	token string
	conn  *grpc.ClientConn
	conv  string

	subscribe bool    // follow conv from the start
	pingFirst bool    // ping when the stream opens; ready at the pong
	snd       *sender // nil unless the user sends
	self      int     // sender index of this user, -1 if it sends nothing

	// Owned by the goroutine running loop.
	lastSeq uint64
	epoch   string
	seen    map[int]*seqSet // by sender index: client_message_ids seen

	uniq       atomic.Uint64 // distinct messages received
	ready      chan struct{} // closed at the first Subscribed (or Pong)
	readyOnce  sync.Once
	readyAfter time.Duration // from the first stream open to ready
	opened     time.Time     // when the first stream was asked for
	gaveUp     atomic.Bool   // loop stopped retrying; the run has the error
}

// sender is the sending half of an endpoint.
type sender struct {
	idx       int
	conv      string
	noLatency bool // history filler: its messages are old by design

	// out carries messages from the scheduler to the stream's writer. It
	// is bounded, so a writer held up by flow control holds up the
	// scheduler, whose timestamps then fall behind the clock: the lag is
	// charged to the latency instead of hidden (no coordinated omission).
	out   chan outMsg
	retry chan uint64 // sends answered UNAVAILABLE or CANCELED, to send again

	mu      sync.Mutex        // protects pending and acked
	pending map[uint64]outMsg // sent, not yet acknowledged
	acked   seqSet            // acknowledged client_message_ids

	queued  atomic.Uint64 // handed to out by the scheduler
	ackedN  atomic.Uint64
	failedN atomic.Uint64 // refused for good
}

// outMsg is one message to send: its number (the client_message_id) and
// the time it was scheduled for, which goes in the body.
type outMsg struct {
	n  uint64
	ts int64 // unix nanoseconds
}

func newSender(idx int, conv string) *sender {
	return &sender{
		idx:     idx,
		conv:    conv,
		out:     make(chan outMsg, 1024),
		retry:   make(chan uint64, 1024),
		pending: make(map[uint64]outMsg),
	}
}

// idle reports whether everything the scheduler queued is answered.
func (s *sender) idle() bool {
	return s.queued.Load() == s.ackedN.Load()+s.failedN.Load()
}

// enqueue hands m to the writer, waiting while out is full. It reports
// false if ctx ended first.
func (s *sender) enqueue(ctx context.Context, m outMsg) bool {
	s.queued.Add(1)
	select {
	case s.out <- m:
		return true
	case <-ctx.Done():
		s.queued.Add(^uint64(0))
		return false
	}
}

// markReady records the time to the first Subscribed (or Pong) and
// releases whoever waits for the endpoint.
func (e *endpoint) markReady() {
	e.readyOnce.Do(func() {
		e.readyAfter = time.Since(e.opened)
		close(e.ready)
	})
}

// loop runs the endpoint's stream until ctx ends, reopening it when it
// breaks. It gives up after a run of failures in a row.
func (e *endpoint) loop(ctx context.Context) {
	const maxFailures = 20
	failures := 0
	for {
		worked, err := e.stream(ctx)
		if ctx.Err() != nil {
			return
		}
		e.r.countCut(e, err)
		if worked {
			failures = 0
		}
		failures++
		if failures >= maxFailures {
			e.r.fail(fmt.Errorf("%s: stream failed %d times in a row: %w", e.user, failures, err))
			e.gaveUp.Store(true)
			e.markReady() // nobody should wait for it
			return
		}
		wait := min(10*time.Millisecond<<min(failures-1, 7), time.Second)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return
		}
	}
}

// stream opens one Chat stream, (re)subscribes, starts the writer if the
// endpoint sends, and reads until the stream breaks. worked says whether
// anything came back.
func (e *endpoint) stream(ctx context.Context) (worked bool, err error) {
	ctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+e.token))
	defer cancel()
	if e.opened.IsZero() {
		e.opened = time.Now()
	}
	st, err := parleyv1.NewChatServiceClient(e.conn).Chat(ctx)
	if err != nil {
		return false, err
	}
	// Until the writer starts, this goroutine is the stream's only sender.
	if e.subscribe {
		req := &parleyv1.ChatRequest{Frame: &parleyv1.ChatRequest_Subscribe{Subscribe: &parleyv1.SubscribePosition{
			ConversationId: e.conv, AfterSeq: e.lastSeq, Epoch: e.epoch,
		}}}
		if err := st.Send(req); err != nil {
			return false, recvErr(st, err)
		}
	}
	if e.pingFirst {
		if err := st.Send(&parleyv1.ChatRequest{Frame: &parleyv1.ChatRequest_Ping{Ping: &parleyv1.Ping{Nonce: 1}}}); err != nil {
			return false, recvErr(st, err)
		}
	}
	var wg sync.WaitGroup
	if e.snd != nil {
		wg.Go(func() { e.write(ctx, cancel, st) })
	}
	defer wg.Wait()
	for {
		resp, err := st.Recv()
		if err != nil {
			cancel()
			return worked, err
		}
		worked = true
		e.handle(resp)
	}
}

// recvErr turns a failed Send into the stream's status, which Recv has.
func recvErr(st grpc.BidiStreamingClient[parleyv1.ChatRequest, parleyv1.ChatResponse], err error) error {
	if errors.Is(err, io.EOF) {
		if _, rerr := st.Recv(); rerr != nil {
			return rerr
		}
	}
	return err
}

// write is the stream's writer, the only goroutine that calls Send once it
// runs. It resends what the last stream left unanswered, in order, then
// sends what the scheduler hands it.
func (e *endpoint) write(ctx context.Context, cancel context.CancelFunc, st grpc.BidiStreamingClient[parleyv1.ChatRequest, parleyv1.ChatResponse]) {
	s := e.snd
	s.mu.Lock()
	resend := make([]outMsg, 0, len(s.pending))
	for _, m := range s.pending {
		resend = append(resend, m)
	}
	s.mu.Unlock()
	slices.SortFunc(resend, func(a, b outMsg) int { return cmp.Compare(a.n, b.n) })
	buf := make([]byte, 0, e.r.cfg.Size)
	send := func(m outMsg, first bool) bool {
		if first {
			s.mu.Lock()
			s.pending[m.n] = m
			s.mu.Unlock()
			now := time.Now().UnixNano()
			e.r.sent.Add(1)
			e.r.lastSend.Store(now)
			e.r.lag.Record(time.Duration(now - m.ts))
		}
		buf = body(buf[:0], m.ts, e.r.cfg.Size)
		err := st.Send(&parleyv1.ChatRequest{Frame: &parleyv1.ChatRequest_Send{Send: &parleyv1.SendRequest{
			ConversationId:  s.conv,
			ClientMessageId: strconv.FormatUint(m.n, 10),
			Body:            string(buf),
		}}})
		if err != nil {
			cancel() // Recv reports the status
			return false
		}
		return true
	}
	for _, m := range resend {
		if !send(m, false) {
			return
		}
	}
	out := s.out
	for {
		select {
		case <-ctx.Done():
			return
		case m, ok := <-out:
			if !ok {
				out = nil // the scheduler is done; keep the stream for the acks
				continue
			}
			if !send(m, true) {
				return
			}
		case n := <-s.retry:
			s.mu.Lock()
			m, ok := s.pending[n]
			s.mu.Unlock()
			if ok && !send(m, false) {
				return
			}
		}
	}
}

// body writes the message body: the scheduled time in decimal unix
// nanoseconds, a colon, and padding up to size bytes. It must be valid
// UTF-8, so the timestamp is text.
func body(b []byte, ts int64, size int) []byte {
	b = strconv.AppendInt(b, ts, 10)
	b = append(b, ':')
	for len(b) < size {
		b = append(b, 'x')
	}
	return b
}

// bodyTime reads the timestamp back from a body.
func bodyTime(s string) (int64, bool) {
	var ts int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == ':' {
			return ts, i > 0
		}
		if c < '0' || c > '9' {
			return 0, false
		}
		ts = ts*10 + int64(c-'0')
	}
	return 0, false
}

// handle acts on one frame from the server; it runs on the reader.
func (e *endpoint) handle(resp *parleyv1.ChatResponse) {
	switch f := resp.GetFrame().(type) {
	case *parleyv1.ChatResponse_Message:
		e.message(f.Message)
	case *parleyv1.ChatResponse_SendAck:
		e.ack(f.SendAck)
	case *parleyv1.ChatResponse_Subscribed:
		sb := f.Subscribed
		if sb.GetEpochReset() {
			e.lastSeq = 0
		}
		e.lastSeq = max(e.lastSeq, sb.GetHeadSeq())
		e.epoch = sb.GetEpoch()
		e.markReady()
	case *parleyv1.ChatResponse_Pong:
		if e.pingFirst {
			e.markReady()
		}
	case *parleyv1.ChatResponse_Error:
		e.errorFrame(f.Error)
	case *parleyv1.ChatResponse_Notification:
		e.r.notifications.Add(1)
	case *parleyv1.ChatResponse_Presence:
		e.r.presence.Add(1)
	}
}

func (e *endpoint) message(m *parleyv1.Message) {
	now := time.Now()
	r := e.r
	if m.GetSeq() <= e.lastSeq {
		r.reorders.Add(1)
	} else {
		e.lastSeq = m.GetSeq()
	}
	si, ok := r.senderIdx[m.GetSenderId()]
	n, err := strconv.ParseUint(m.GetClientMessageId(), 10, 64)
	if !ok || err != nil || m.GetConversationId() != e.conv {
		r.foreign.Add(1)
		return
	}
	set := e.seen[si]
	if set == nil {
		set = &seqSet{}
		e.seen[si] = set
	}
	if !set.add(n) {
		r.dups.Add(1)
		return
	}
	e.uniq.Add(1)
	r.delivered.Add(1)
	r.lastDelivery.Store(now.UnixNano())
	if si == e.self || r.senders[si].noLatency {
		return
	}
	if ts, ok := bodyTime(m.GetBody()); ok {
		d := time.Duration(now.UnixNano() - ts)
		r.e2e.Record(d)
		r.window.Load().Record(d)
	}
}

func (e *endpoint) ack(a *parleyv1.SendResponse) {
	s := e.snd
	if s == nil {
		return
	}
	n, err := strconv.ParseUint(a.GetClientMessageId(), 10, 64)
	if err != nil {
		return
	}
	now := time.Now().UnixNano()
	s.mu.Lock()
	m, ok := s.pending[n]
	if ok {
		delete(s.pending, n)
		s.acked.add(n)
	}
	s.mu.Unlock()
	if !ok {
		return // an answer to a resend of something already answered
	}
	s.ackedN.Add(1)
	e.r.acked.Add(1)
	if !s.noLatency {
		e.r.ackLat.Record(time.Duration(now - m.ts))
	}
}

func (e *endpoint) errorFrame(f *parleyv1.ErrorFrame) {
	r := e.r
	code := codes.Code(f.GetCode())
	if f.GetFrame() != "send" || e.snd == nil {
		r.fail(fmt.Errorf("%s: %s frame refused: %s: %s", e.user, f.GetFrame(), code, f.GetMessage()))
		e.markReady()
		return
	}
	n, err := strconv.ParseUint(f.GetClientMessageId(), 10, 64)
	if err != nil {
		r.fail(fmt.Errorf("%s: send refused: %s: %s", e.user, code, f.GetMessage()))
		return
	}
	switch code {
	case codes.Unavailable, codes.Canceled:
		// UNAVAILABLE is the server's "not stored, resend it". CANCELED
		// comes for a send still waiting in the server when its stream is
		// being cut; it was not stored either. Either way the message is
		// resent under the same id, so it is stored at most once.
		if code == codes.Canceled {
			r.canceledSends.Add(1)
		}
		r.retries.Add(1)
		select {
		case e.snd.retry <- n:
		default:
		}
		return
	case codes.ResourceExhausted:
		r.fail(fmt.Errorf("%s: send %d refused: %s: %s (a server started with a per-user --send-rate limits each sender; use more --senders or --send-rate 0 on parleyd)", e.user, n, code, f.GetMessage()))
	default:
		r.fail(fmt.Errorf("%s: send %d refused: %s: %s", e.user, n, code, f.GetMessage()))
	}
	s := e.snd
	s.mu.Lock()
	_, was := s.pending[n]
	delete(s.pending, n)
	s.mu.Unlock()
	if was {
		s.failedN.Add(1)
	}
}

// codeName names why a stream ended, for the report.
func codeName(err error) string {
	if err == nil {
		return "ended"
	}
	if errors.Is(err, io.EOF) {
		return "EOF"
	}
	return status.Code(err).String()
}
