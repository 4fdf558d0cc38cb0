package bench

import (
	"context"
	"errors"
	"flag"
	"io"
	"net"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/desertbit/timer.timerRoutine"))
}

// testCtx bounds a test so that a hang fails it instead of the whole run.
func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// checkClean fails t unless res has no losses, duplicates, reorders or
// errors, and every acknowledged message reached every subscriber once.
func checkClean(t *testing.T, res Result) {
	t.Helper()
	if len(res.Errors) > 0 {
		t.Fatalf("%s: errors: %q", res.Target, res.Errors)
	}
	if res.Losses != 0 || res.Duplicates != 0 || res.Reorders != 0 || res.UnackedDelivered != 0 {
		t.Fatalf("%s: lost %d, duplicates %d, reorders %d, delivered-but-unacked %d",
			res.Target, res.Losses, res.Duplicates, res.Reorders, res.UnackedDelivered)
	}
	if res.Delivered != res.Expected {
		t.Fatalf("%s: delivered %d, expected %d", res.Target, res.Delivered, res.Expected)
	}
}

// TestScenarios runs every scenario small against an in-process server
// (and the baseline where it applies) and checks that the counts add up.
// It asserts behaviour only, never speed.
func TestScenarios(t *testing.T) {
	tests := []struct {
		name  string
		cfg   Config
		check func(t *testing.T, res Result)
	}{
		{
			name: "room",
			cfg:  Config{Scenario: "room", Subs: 5, Senders: 2, Rate: 2000, Duration: 100 * time.Millisecond, Baseline: true},
			check: func(t *testing.T, res Result) {
				if res.Sent == 0 || res.Acked != res.Sent {
					t.Fatalf("%s: sent %d, acked %d", res.Target, res.Sent, res.Acked)
				}
				if res.Expected != 5*res.Acked {
					t.Fatalf("%s: expected %d deliveries for %d messages to 5 subscribers", res.Target, res.Expected, res.Acked)
				}
				if res.E2E.Count != res.Delivered || res.Ack.Count != res.Acked {
					t.Fatalf("%s: %d e2e samples for %d deliveries, %d ack samples for %d acks", res.Target, res.E2E.Count, res.Delivered, res.Ack.Count, res.Acked)
				}
			},
		},
		{
			name: "room as fast as possible",
			cfg:  Config{Scenario: "room", Subs: 3, Senders: 1, Rate: 0, Duration: 50 * time.Millisecond},
			check: func(t *testing.T, res Result) {
				if res.Sent == 0 || res.Expected != 3*res.Acked {
					t.Fatalf("sent %d, acked %d, expected %d", res.Sent, res.Acked, res.Expected)
				}
			},
		},
		{
			name: "dm",
			cfg:  Config{Scenario: "dm", Pairs: 3, Rate: 600, Duration: 100 * time.Millisecond, Baseline: true},
			check: func(t *testing.T, res Result) {
				// Both members follow their conversation, the sender's own
				// echo included.
				if res.Sent == 0 || res.Expected != 2*res.Acked {
					t.Fatalf("%s: sent %d, acked %d, expected %d", res.Target, res.Sent, res.Acked, res.Expected)
				}
				if res.E2E.Count != res.Delivered/2 {
					t.Fatalf("%s: %d latency samples for %d deliveries; only the peer's count", res.Target, res.E2E.Count, res.Delivered)
				}
			},
		},
		{
			name: "burst",
			cfg:  Config{Scenario: "burst", Subs: 5, Senders: 2, Burst: 200, Quiet: 10 * time.Millisecond, Baseline: true},
			check: func(t *testing.T, res Result) {
				if res.Sent != 200 || res.Acked != 200 || res.Delivered != 1000 {
					t.Fatalf("%s: sent %d, acked %d, delivered %d; want 200, 200, 1000", res.Target, res.Sent, res.Acked, res.Delivered)
				}
				if res.Burst == nil || res.Burst.Messages != 200 || res.Burst.Drain <= 0 {
					t.Fatalf("%s: burst result %+v", res.Target, res.Burst)
				}
			},
		},
		{
			name: "idle",
			cfg:  Config{Scenario: "idle", Streams: 20, Duration: 10 * time.Millisecond, Baseline: true},
			check: func(t *testing.T, res Result) {
				if res.Idle == nil || res.Idle.Streams != 20 || res.Idle.Connect.Count != 20 {
					t.Fatalf("%s: idle result %+v", res.Target, res.Idle)
				}
				if res.Resources == nil {
					t.Fatalf("%s: no resource figures for an in-process server", res.Target)
				}
			},
		},
		{
			name: "history",
			cfg:  Config{Scenario: "history", Behind: 3000, Subs: 2, LiveRate: 500, Baseline: true},
			check: func(t *testing.T, res Result) {
				if res.Target == "baseline" {
					if res.Skipped == "" {
						t.Fatal("the baseline has no history and must be skipped")
					}
					return
				}
				h := res.History
				if h == nil || h.Behind != 3000 || h.ToSubscribe.Count != 2 || h.ReplayPerSec <= 0 {
					t.Fatalf("history result %+v", h)
				}
				// Each subscriber gets the 3000 old messages and every live
				// one that was acknowledged.
				if res.Expected != 2*(3000+res.Acked) {
					t.Fatalf("expected %d, want 2 × (3000 + %d live)", res.Expected, res.Acked)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			cfg.Drain = 10 * time.Second
			rep := Run(testCtx(t), cfg, io.Discard)
			want := 1
			if cfg.Baseline {
				want = 2
			}
			if len(rep.Results) != want {
				t.Fatalf("%d results, want %d", len(rep.Results), want)
			}
			for _, res := range rep.Results {
				if res.Skipped == "" {
					checkClean(t, res)
				}
				tc.check(t, res)
			}
			if !rep.OK() {
				t.Fatal("report not OK")
			}
			if cfg.Baseline && cfg.Scenario != "history" && len(rep.Ratios) != 1 {
				t.Fatalf("%d ratio rows, want 1", len(rep.Ratios))
			}
			var out strings.Builder
			rep.Print(&out)
			if !strings.Contains(out.String(), "result: OK") {
				t.Fatalf("printed report does not say OK:\n%s", out.String())
			}
		})
	}
}

// TestLossesFailTheReport checks the report's verdict, which the exit code
// follows.
func TestLossesFailTheReport(t *testing.T) {
	for _, res := range []Result{{Losses: 1}, {Duplicates: 1}, {Reorders: 1}, {Errors: []string{"x"}}} {
		rep := Report{Results: []Result{{}, res}}
		if rep.OK() {
			t.Errorf("%+v passed", res)
		}
	}
	if rep := (Report{Results: []Result{{}, {Skipped: "no history"}}}); !rep.OK() {
		t.Error("a clean report failed")
	}
}

// TestBaselineDeliversToEverySubscriber drives the baseline with raw
// stubs: every subscriber gets every message once and in seq order, and
// the sender gets an ack for each.
func TestBaselineDeliversToEverySubscriber(t *testing.T) {
	ctx := testCtx(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := NewBaseline(16) // small, so that a full queue has to wait
	b.Serve(l)
	t.Cleanup(b.Stop)
	conn, err := grpc.NewClient(b.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	chat := parleyv1.NewChatServiceClient(conn)
	open := func(user string) grpc.BidiStreamingClient[parleyv1.ChatRequest, parleyv1.ChatResponse] {
		st, err := chat.Chat(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+user))
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	const conv, n = "room:base", 200
	subs := make([]grpc.BidiStreamingClient[parleyv1.ChatRequest, parleyv1.ChatResponse], 4)
	for i := range subs {
		subs[i] = open("sub")
		if err := subs[i].Send(&parleyv1.ChatRequest{Frame: &parleyv1.ChatRequest_Subscribe{Subscribe: &parleyv1.SubscribePosition{ConversationId: conv}}}); err != nil {
			t.Fatal(err)
		}
		resp, err := subs[i].Recv()
		if err != nil || resp.GetSubscribed().GetConversationId() != conv {
			t.Fatalf("want Subscribed, got %v, %v", resp, err)
		}
	}
	other := open("other") // follows another conversation: gets nothing
	if err := other.Send(&parleyv1.ChatRequest{Frame: &parleyv1.ChatRequest_Subscribe{Subscribe: &parleyv1.SubscribePosition{ConversationId: "room:else"}}}); err != nil {
		t.Fatal(err)
	}
	snd := open("alice")
	go func() {
		for i := range n {
			snd.Send(&parleyv1.ChatRequest{Frame: &parleyv1.ChatRequest_Send{Send: &parleyv1.SendRequest{
				ConversationId: conv, ClientMessageId: strconv.Itoa(i), Body: "hello",
			}}})
		}
	}()
	for i := range n {
		resp, err := snd.Recv()
		if err != nil || resp.GetSendAck().GetSeq() != uint64(i+1) {
			t.Fatalf("ack %d: %v, %v", i, resp, err)
		}
	}
	for s, st := range subs {
		for i := range n {
			resp, err := st.Recv()
			m := resp.GetMessage()
			if err != nil || m.GetSeq() != uint64(i+1) || m.GetSenderId() != "alice" || m.GetBody() != "hello" {
				t.Fatalf("subscriber %d, message %d: %v, %v", s, i, resp, err)
			}
		}
	}
	resp, err := other.Recv()
	if err != nil || resp.GetSubscribed() == nil {
		t.Fatalf("other stream: %v, %v", resp, err)
	}
	if err := other.Send(&parleyv1.ChatRequest{Frame: &parleyv1.ChatRequest_Ping{Ping: &parleyv1.Ping{Nonce: 7}}}); err != nil {
		t.Fatal(err)
	}
	if resp, err := other.Recv(); err != nil || resp.GetPong().GetNonce() != 7 {
		t.Fatalf("the stream following another conversation got %v, %v; want only the pong", resp, err)
	}
}

func TestParseArgs(t *testing.T) {
	c, err := ParseArgs([]string{"room", "--subscribers", "1000", "--rate", "0", "--baseline"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Scenario != "room" || c.Subs != 1000 || c.Rate != 0 || !c.Baseline || c.Senders != 10 || c.Duration != 10*time.Second || c.Size != 64 {
		t.Fatalf("parsed %+v", c)
	}
	c, err = ParseArgs([]string{"--scenario", "history"}, io.Discard)
	if err != nil || c.Subs != 1 || c.Behind != 100_000 {
		t.Fatalf("history defaults: %+v, %v", c, err)
	}
	c, err = ParseArgs([]string{"room", "--rate", "0", "--messages", "500"}, io.Discard)
	if err != nil || c.Messages != 500 || c.Rate != 0 {
		t.Fatalf("--messages: %+v, %v", c, err)
	}
	c, err = ParseArgs([]string{"--no-sync", "dm", "--pairs", "7"}, io.Discard)
	if err != nil || c.Scenario != "dm" || c.Pairs != 7 || !c.NoSync || c.Rate != 1000 {
		t.Fatalf("flags before the scenario: %+v, %v", c, err)
	}
	c, err = ParseArgs([]string{"dm", "--baseline", "--rounds", "3"}, io.Discard)
	if err != nil || c.Rounds != 3 {
		t.Fatalf("--rounds: %+v, %v", c, err)
	}
	for _, bad := range [][]string{{}, {"nope"}, {"room", "--size", "8"}, {"room", "--spawn", "--server", "x:1"}, {"room", "extra"},
		{"room", "--rounds", "3"}, {"idle", "--baseline", "--rounds", "2"}} {
		if _, err := ParseArgs(bad, io.Discard); err == nil {
			t.Errorf("ParseArgs(%q) succeeded", bad)
		}
	}
	if _, err := ParseArgs([]string{"--help"}, io.Discard); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("--help: %v", err)
	}
}

func TestProcParsing(t *testing.T) {
	stat := []byte("1234 (parley bench) S 1 2 3 0 -1 4194560 500 0 0 0 250 50 0 0 20 0 12 0 100 2000000 3000 18446744073709551615\n")
	cpu, err := parseStatCPU(stat)
	if err != nil || cpu != 3*time.Second {
		t.Fatalf("cpu = %v, %v; want 3s", cpu, err)
	}
	status := []byte("Name:\tparleyd\nVmHWM:\t  20480 kB\nVmRSS:\t  10240 kB\n")
	if rss := statusKB(status, "VmRSS:"); rss != 10<<20 {
		t.Fatalf("rss = %d", rss)
	}
	if peak := statusKB(status, "VmHWM:"); peak != 20<<20 {
		t.Fatalf("peak = %d", peak)
	}
	if s := readProc(0); !s.valid && runtime.GOOS == "linux" {
		t.Fatal("could not read /proc/self")
	}
}
