package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/parleychat/parley/client"
	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
	"github.com/parleychat/parley/server/natstest"
)

var crashRounds = flag.Int("crash-rounds", 10, "kill -9 rounds of TestCrashLosesNothingAcked (make torture runs 200)")

// freeAddr finds a loopback port that parleyd can take across restarts, so
// that clients reconnect to the same address. It is outside the ephemeral
// range, where no test's outgoing connection can take it while parleyd is
// down.
func freeAddr(t *testing.T) string {
	t.Helper()
	return fmt.Sprintf("127.0.0.1:%d", natstest.FreePorts(t, 1)[0])
}

// kill stops parleyd the hard way: no flush, no clean mark.
func (p *proc) kill(t *testing.T) {
	t.Helper()
	p.cmd.Process.Kill()
	err := <-p.exited
	p.exited <- err
}

// crashLedger is what the clients saw, checked against the server's
// History after every round.
type crashLedger struct {
	mu        sync.Mutex
	sent      int
	acked     map[string]uint64 // sender/client_message_id -> acked seq
	received  map[string]uint64 // what the subscriber app saw, after its dedup
	dupSeen   int               // deliveries the subscriber saw twice (must be 0: the client drops them)
	dupWhere  []string          // the first few of them, for the failure message
	lastSeq   uint64
	seqBroken string         // first ordering violation seen by the subscriber
	failed    map[string]int // send errors by message
	waiting   map[string]int // sender/id -> sender index, until answered
}

// TestCrashLosesNothingAcked kills parleyd with SIGKILL at random moments
// under load from Go clients and restarts it on the same data dir. After
// every round, every acknowledged message is in History exactly once at the
// seq it was acked with, no message is in History twice, and the subscriber
// saw every stored message once, in order.
func TestCrashLosesNothingAcked(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills parleyd many times")
	}
	dir, addr := t.TempDir(), freeAddr(t)
	if path := os.Getenv("PARLEY_CRASH_LOG"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		logs = f
		defer func() { logs = nil }()
	}
	args := []string{"--data-dir", dir, "--addr", addr, "--send-rate", "0", "--window", "256", "--pprof"}
	p := startParleyd(t, args...)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	const senders = 3
	var clients []*client.Client
	var sessions []*client.Session
	for i := 0; i <= senders; i++ {
		c, err := client.Dial(ctx, addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Register(ctx, fmt.Sprintf("user%d", i), "correct horse", ""); err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
	}
	if _, err := clients[0].CreateRoom(ctx, "crash", ""); err != nil {
		t.Fatal(err)
	}
	const conv = "room:crash"
	for _, c := range clients[1:] {
		if _, err := c.JoinRoom(ctx, conv); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range clients {
		s, err := c.NewSession(ctx, client.WithBackoff(20*time.Millisecond, 200*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		sessions = append(sessions, s)
	}
	// Senders do not follow the room, so they get a notification for each
	// post: an app must read its events, or its session stops reading the
	// stream (acks included) until it does.
	for _, s := range sessions[1:] {
		go func() {
			for range s.Events() {
			}
		}()
	}

	led := &crashLedger{acked: make(map[string]uint64), received: make(map[string]uint64), failed: make(map[string]int), waiting: make(map[string]int)}
	// sessions[0] only listens.
	if err := sessions[0].Subscribe(conv, 0); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ev := range sessions[0].Events() {
			m, ok := ev.(client.MessageEvent)
			if !ok {
				continue
			}
			k := m.Message.GetSenderId() + "/" + m.Message.GetClientMessageId()
			led.mu.Lock()
			if first, dup := led.received[k]; dup {
				led.dupSeen++
				if len(led.dupWhere) < 5 {
					led.dupWhere = append(led.dupWhere, fmt.Sprintf("%s at #%d then #%d", k, first, m.Message.GetSeq()))
				}
			}
			led.received[k] = m.Message.GetSeq()
			if m.Message.GetSeq() <= led.lastSeq && led.seqBroken == "" {
				led.seqBroken = fmt.Sprintf("seq %d after %d", m.Message.GetSeq(), led.lastSeq)
			}
			led.lastSeq = m.Message.GetSeq()
			led.mu.Unlock()
		}
	}()

	stop, giveUp := make(chan struct{}), make(chan struct{})
	defer close(giveUp)
	for i := 1; i <= senders; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, sender := sessions[i], fmt.Sprintf("user%d", i)
			// A window of sends in flight, as a chat app has: enough to
			// pipeline through group commits, few enough that each round's
			// outbox resend is quick.
			window := make(chan struct{}, 32)
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				case window <- struct{}{}:
				}
				id, res, err := s.SendAsync(ctx, conv, fmt.Sprintf("%s message %d", sender, n))
				if err != nil {
					return
				}
				led.mu.Lock()
				led.sent++
				led.waiting[sender+"/"+id] = i
				led.mu.Unlock()
				go func() {
					var r client.SendResult
					select {
					case r = <-res:
						<-window
					case <-giveUp:
						return
					}
					led.mu.Lock()
					delete(led.waiting, sender+"/"+id)
					led.mu.Unlock()
					if r.Err != nil {
						led.mu.Lock()
						led.failed[r.Err.Error()]++
						led.mu.Unlock()
						return
					}
					led.mu.Lock()
					led.acked[sender+"/"+id] = r.Ack.GetSeq()
					led.mu.Unlock()
				}()
			}
		}()
	}

	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	for round := 1; round <= *crashRounds; round++ {
		time.Sleep(time.Duration(20+rng.IntN(200)) * time.Millisecond)
		p.kill(t)
		p = startParleyd(t, args...)
		// Let the clients reconnect and flush their outboxes a little.
		time.Sleep(time.Duration(rng.IntN(100)) * time.Millisecond)
	}
	close(stop)
	// Wait for every send to be acknowledged by the last incarnation.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		led.mu.Lock()
		done := len(led.acked)+sum(led.failed) == led.sent
		led.mu.Unlock()
		if done || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}

	// The stored log, read through History.
	stored := map[string]uint64{}
	duplicates := 0
	var after uint64
	for {
		// Wait for ready: the connection may still be backing off from a
		// dial made while parleyd was down.
		h, err := clients[0].ChatService().History(ctx, &parleyv1.HistoryRequest{ConversationId: conv, AfterSeq: after, Forward: true, Limit: 500}, grpc.WaitForReady(true))
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range h.GetMessages() {
			k := m.GetSenderId() + "/" + m.GetClientMessageId()
			if _, twice := stored[k]; twice {
				duplicates++
			}
			stored[k] = m.GetSeq()
			after = m.GetSeq()
		}
		if !h.GetHasMore() {
			break
		}
	}
	// Wait for the subscriber to catch up with the log.
	for time.Now().Before(deadline) {
		led.mu.Lock()
		n := len(led.received)
		led.mu.Unlock()
		if n >= len(stored) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}

	led.mu.Lock()
	defer led.mu.Unlock()
	lost, moved, missed := 0, 0, 0
	for k, seq := range led.acked {
		got, ok := stored[k]
		switch {
		case !ok:
			lost++
		case got != seq:
			moved++
		}
	}
	for k := range stored {
		if _, ok := led.received[k]; !ok {
			missed++
		}
	}
	t.Logf("crash test: rounds=%d sent=%d acked=%d stored=%d lost=%d moved=%d duplicates=%d subscriber_missed=%d subscriber_dups=%d",
		*crashRounds, led.sent, len(led.acked), len(stored), lost, moved, duplicates, missed, led.dupSeen)
	if len(led.failed) > 0 {
		t.Errorf("sends failed: %v", led.failed)
	}
	if len(led.acked)+sum(led.failed) != led.sent {
		t.Errorf("%d of %d sends never answered after the last restart", led.sent-len(led.acked)-sum(led.failed), led.sent)
		if path := os.Getenv("PARLEY_CRASH_LOG"); path != "" {
			if resp, err := http.Get("http://" + addr + "/debug/pprof/goroutine?debug=2"); err == nil {
				dump, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				os.WriteFile(path+".goroutines", dump, 0o644)
			}
		}
		probes := 0
		for k, i := range led.waiting {
			if probes++; probes > 3 {
				break
			}
			id := k[strings.Index(k, "/")+1:]
			resp, err := clients[i].ChatService().Send(ctx, &parleyv1.SendRequest{ConversationId: conv, ClientMessageId: id, Body: "probe"}, grpc.WaitForReady(true))
			t.Errorf("unanswered %s resent by hand: %v, %v", k, resp, err)
		}
		for i, s := range sessions {
			select {
			case <-s.Done():
				t.Errorf("session %d stopped: %v", i, s.Err())
			default:
				t.Errorf("session %d still running, rtt %v, positions %v", i, s.RTT(), s.Positions())
			}
		}
	}
	if lost > 0 || moved > 0 || duplicates > 0 {
		t.Errorf("acked messages lost: %d, stored at another seq than acked: %d, stored twice: %d", lost, moved, duplicates)
	}
	if missed > 0 || led.dupSeen > 0 || led.seqBroken != "" {
		t.Errorf("subscriber: missed %d stored messages, saw %d twice (%q), order: %q", missed, led.dupSeen, led.dupWhere, led.seqBroken)
	}
	if len(led.acked) < *crashRounds {
		t.Errorf("only %d messages acknowledged over %d rounds: the test did not load the server", len(led.acked), *crashRounds)
	}
	led.mu.Unlock()
	for _, s := range sessions {
		s.Close()
	}
	wg.Wait()
	led.mu.Lock()
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}
