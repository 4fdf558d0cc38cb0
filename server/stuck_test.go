package server

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"runtime/pprof"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
)

var soakFor = flag.Duration("soak", 3*time.Second, "how long TestSoakChurn churns (make torture runs minutes)")

// heapInUse is the live heap after a full collection.
func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// TestStuckClientsDoNotSlowOthers runs a healthy subscriber next to one that
// never reads, one that reads slowly, a grpc-web stream that stalls and a
// connection that never says anything. The healthy one gets everything,
// the stuck ones are cut or bounded, and the server does not buffer for
// them.
func TestStuckClientsDoNotSlowOthers(t *testing.T) {
	n := start(t, "", func(c *Config) {
		c.Queue = 256
		c.MaxBody = 32 << 10
		c.IdleConnTimeout = 300 * time.Millisecond
		c.ShutdownTimeout = 2 * time.Second
	})
	alice, bob, carol, dave, erin := register(t, n, "alice"), register(t, n, "bob"), register(t, n, "carol"), register(t, n, "dave"), register(t, n, "erin")
	conv := room(t, alice, "stuck", bob, carol, dave, erin)
	baseline := heapInUse()

	// A connection that never sends a byte is closed by the server.
	silent, err := net.Dial("tcp", n.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()

	// bob never reads (fixed small windows, so flow control pushes back).
	conn := dial(t, n.addr, fixedWindows...)
	never, err := parleyv1.NewChatServiceClient(conn).Chat(bob.ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	never.Send(&parleyv1.ChatRequest{Frame: &parleyv1.ChatRequest_Subscribe{Subscribe: &parleyv1.SubscribePosition{ConversationId: conv}}})

	// dave reads one frame every 20ms, on the same small windows.
	slow, err := parleyv1.NewChatServiceClient(conn).Chat(dave.ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	slow.Send(&parleyv1.ChatRequest{Frame: &parleyv1.ChatRequest_Subscribe{Subscribe: &parleyv1.SubscribePosition{ConversationId: conv}}})

	// erin's browser subscribes over grpc-web and stops reading.
	web := newWebClient(t, n)
	req, _ := proto.Marshal(&parleyv1.SubscribeRequest{Conversations: []*parleyv1.SubscribePosition{{ConversationId: conv}}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	webCtx, webCancel := context.WithCancel(context.Background())
	defer webCancel()
	stalled := web.post(webCtx, t, "/parley.v1.ChatService/Subscribe", erin.token, encodeWebFrame(webData, req))
	defer stalled.Body.Close()

	// carol is healthy.
	cs := carol.open(t)
	cs.subscribe(t, conv, 0, "")
	cs.until(t, isSubscribed(conv))

	var slowGot int
	var slowEnd error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			if _, err := slow.Recv(); err != nil {
				slowEnd = err
				return
			}
			slowGot++
			select {
			case <-time.After(20 * time.Millisecond):
			case <-ctx.Done():
				return
			}
		}
	}()

	const batches, per = 64, 32
	const total = batches * per
	body := fmt.Sprintf("%016000d", 0)
	for b := 0; b < batches; b++ {
		alice.pipeline(t, conv, fmt.Sprint(b, "-"), per, body)
	}
	checkOrdered(t, "carol", cs.messages(t, total))
	sent := uint64(total * len(body))

	// The slow reader is cut long before it could read everything.
	wg.Wait()
	if status.Code(slowEnd) != codes.ResourceExhausted || slowGot >= total {
		t.Errorf("slow reader: %d frames, then %v; want RESOURCE_EXHAUSTED before %d", slowGot, slowEnd, total)
	}
	// Buffering the whole stream for even one of the three would pass this.
	if grown := int64(heapInUse()) - int64(baseline); grown > int64(sent*3/4) {
		t.Errorf("heap grew by %d bytes while %d bytes went to each of three stuck clients: the server is buffering for them", grown, sent)
	}
	// The silent connection is gone.
	silent.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := silent.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("a connection that never sent a request is still open: %v", err)
	}
	// The stalled browser stream was cut: reading it now ends well before
	// all the messages, with RESOURCE_EXHAUSTED in its trailer or a closed body.
	got, code := 0, ""
	for {
		f, err := readWebFrame(stalled.Body)
		if err != nil {
			break
		}
		if f.flag&0x80 != 0 {
			tr, _ := parseWebTrailer(f.payload)
			code = tr["grpc-status"]
			break
		}
		got++
	}
	if got >= total || (code != "" && code != "8") {
		t.Errorf("stalled grpc-web stream: %d frames then status %q; want it cut (8, RESOURCE_EXHAUSTED) before %d", got, code, total)
	}
	t.Logf("slow reader got %d frames before the cut; stalled browser %d", slowGot, got)
}

// TestSoakChurn connects, subscribes, sends and disconnects from many
// goroutines for a while (-soak), then checks that goroutines and heap go
// back to where they were.
func TestSoakChurn(t *testing.T) {
	n := start(t, "", func(c *Config) { c.Queue = 256 })
	owner := register(t, n, "owner")
	var users []*user
	for i := 0; i < 8; i++ {
		users = append(users, register(t, n, "churn"))
	}
	conv := room(t, owner, "churn", users...)
	runtime.GC()
	baseG, baseHeap := runtime.NumGoroutine(), heapInUse()

	deadline := time.Now().Add(*soakFor)
	var wg sync.WaitGroup
	var rounds, messages int64
	var mu sync.Mutex
	for i, u := range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// One token context for the whole churn: a fresh one per round
			// would be held until the test ends and show up as heap growth.
			base := u.ctx(t)
			for r := 0; time.Now().Before(deadline); r++ {
				conn, err := grpc.NewClient(n.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
				if err != nil {
					t.Error(err)
					return
				}
				ctx, cancel := context.WithTimeout(base, 30*time.Second)
				st, err := parleyv1.NewChatServiceClient(conn).Chat(ctx)
				if err == nil {
					st.Send(&parleyv1.ChatRequest{Frame: &parleyv1.ChatRequest_Subscribe{Subscribe: &parleyv1.SubscribePosition{ConversationId: conv, AfterSeq: ^uint64(0) >> 1}}})
					for k := 0; k < 5; k++ {
						st.Send(&parleyv1.ChatRequest{Frame: &parleyv1.ChatRequest_Send{Send: &parleyv1.SendRequest{
							ConversationId: conv, ClientMessageId: fmt.Sprintf("%d-%d-%d", i, r, k), Body: "churn"}}})
					}
					acks := 0
					for acks < 5 {
						f, err := st.Recv()
						if err != nil {
							break
						}
						if f.GetSendAck() != nil {
							acks++
						}
					}
					mu.Lock()
					rounds++
					messages += int64(acks)
					mu.Unlock()
					if r%2 == 0 {
						st.CloseSend() // half the time a clean goodbye, else a cut
						for {
							if _, err := st.Recv(); err != nil {
								break
							}
						}
					}
				}
				cancel()
				conn.Close()
			}
		}()
	}
	wg.Wait()
	t.Logf("soak: %v, %d connect rounds, %d messages acked", *soakFor, rounds, messages)
	if messages == 0 {
		t.Fatal("nothing was acknowledged during the soak")
	}

	// Everything the churn started must end.
	var g int
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if g = runtime.NumGoroutine(); g <= baseG+5 {
			break
		}
	}
	if g > baseG+5 {
		buf := make([]byte, 1<<20)
		t.Fatalf("goroutines: %d before the soak, %d after:\n%s", baseG, g, buf[:runtime.Stack(buf, true)])
	}
	if path := os.Getenv("PARLEY_SOAK_HEAP"); path != "" {
		if f, err := os.Create(path); err == nil {
			runtime.GC()
			pprof.WriteHeapProfile(f)
			f.Close()
		}
	}
	if h := heapInUse(); h > baseHeap+32<<20 {
		t.Fatalf("heap in use: %d before the soak, %d after", baseHeap, h)
	}
}
