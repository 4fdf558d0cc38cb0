package client_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/parleychat/parley/client"
	"github.com/parleychat/parley/client/internal/fakeserver"
	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
)

// The server that the end-to-end tests start pulls in the grpc-web wrapper,
// whose timer package starts a goroutine in its init; it is not ours.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/desertbit/timer.timerRoutine"),
		// nats.go may leave this one behind when a connection is closed
		// while it reconnects (cluster tests kill NATS servers); it ends
		// with the process.
		goleak.IgnoreTopFunction("github.com/nats-io/nats.go/jetstream.(*jetStream).resetPendingAcksOnReconnect"))
}

const conv = "room:lobby"

// testCtx is the bound on every test: long enough for a slow CI machine,
// short enough that a hang fails instead of timing out the whole run.
func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// setup starts a fake server with users alice and bob in room:lobby and
// returns a Client logged in as alice.
func setup(t *testing.T) (*fakeserver.Server, *client.Client) {
	t.Helper()
	srv := fakeserver.New(t)
	srv.AddUser("bob", "password-bob")
	tok := srv.AddUser("alice", "password-alice")
	srv.AddConversation(conv, parleyv1.ConversationKind_CONVERSATION_KIND_ROOM, "alice", "bob")
	c, err := client.Dial(testCtx(t), srv.Addr(), client.WithToken(tok))
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return srv, c
}

// fast are session options that make reconnects and pings quick enough
// for tests, without making a healthy stream look dead.
func fast(extra ...client.SessionOption) []client.SessionOption {
	return append([]client.SessionOption{
		client.WithBackoff(5*time.Millisecond, 50*time.Millisecond),
		client.WithPing(50*time.Millisecond, 2*time.Second),
	}, extra...)
}

// recorder reads a Session's events into a list that tests poll. Paused,
// it stops taking events, as an application that is busy elsewhere would.
type recorder struct {
	mu     sync.Mutex // protects events and gate
	events []client.Event
	gate   chan struct{} // non-nil while paused; closed by resume
	closed chan struct{}
}

func record(t *testing.T, c *client.Client, opts ...client.SessionOption) (*client.Session, *recorder) {
	t.Helper()
	s, err := c.NewSession(testCtx(t), opts...)
	if err != nil {
		t.Fatalf("NewSession: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	r := &recorder{closed: make(chan struct{})}
	go func() {
		defer close(r.closed)
		for {
			r.mu.Lock()
			gate := r.gate
			r.mu.Unlock()
			if gate != nil {
				<-gate
			}
			ev, ok := <-s.Events()
			if !ok {
				return
			}
			r.mu.Lock()
			r.events = append(r.events, ev)
			r.mu.Unlock()
		}
	}()
	// Cleanups run last-in first-out: this one lets a paused recorder go
	// before the Session is closed.
	t.Cleanup(r.resume)
	return s, r
}

// pause makes the recorder stop taking events after the one it may be
// waiting for already.
func (r *recorder) pause() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.gate == nil {
		r.gate = make(chan struct{})
	}
}

// resume undoes pause.
func (r *recorder) resume() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.gate != nil {
		close(r.gate)
		r.gate = nil
	}
}

func (r *recorder) all() []client.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]client.Event(nil), r.events...)
}

// seqs lists the seqs of the messages delivered in conversation c.
func (r *recorder) seqs(c string) []uint64 {
	var out []uint64
	for _, ev := range r.all() {
		if m, ok := ev.(client.MessageEvent); ok && m.Message.GetConversationId() == c {
			out = append(out, m.Message.GetSeq())
		}
	}
	return out
}

func (r *recorder) subscribed(c string) []*parleyv1.Subscribed {
	var out []*parleyv1.Subscribed
	for _, ev := range r.all() {
		if sb, ok := ev.(client.SubscribedEvent); ok && sb.Subscribed.GetConversationId() == c {
			out = append(out, sb.Subscribed)
		}
	}
	return out
}

func (r *recorder) states() []client.StateEvent {
	var out []client.StateEvent
	for _, ev := range r.all() {
		if st, ok := ev.(client.StateEvent); ok {
			out = append(out, st)
		}
	}
	return out
}

func (r *recorder) errors() []client.ErrorEvent {
	var out []client.ErrorEvent
	for _, ev := range r.all() {
		if e, ok := ev.(client.ErrorEvent); ok {
			out = append(out, e)
		}
	}
	return out
}

func (r *recorder) count(state client.State) int {
	n := 0
	for _, st := range r.states() {
		if st.State == state {
			n++
		}
	}
	return n
}

// eventually polls cond until it holds or the test's bound passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func publish(t *testing.T, srv *fakeserver.Server, bodies ...string) {
	t.Helper()
	for _, b := range bodies {
		if _, err := srv.Publish("bob", conv, b); err != nil {
			t.Fatalf("Publish: %v", err)
		}
	}
}
