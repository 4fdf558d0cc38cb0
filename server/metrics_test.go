package server

import (
	"io"
	"net/http"
	"regexp"
	"strconv"
	"testing"
	"testing/fstest"
	"time"
)

// scrape reads /metrics and returns the value of each sample named.
func scrape(t *testing.T, n *node, names ...string) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + n.addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	out := map[string]float64{}
	for _, name := range names {
		m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` ([0-9.e+-]+)$`).FindSubmatch(body)
		if m == nil {
			t.Fatalf("/metrics has no sample %s", name)
		}
		v, _ := strconv.ParseFloat(string(m[1]), 64)
		out[name] = v
	}
	return out
}

func TestMetricsCountWhatHappened(t *testing.T) {
	n := start(t, "")
	alice, bob := register(t, n, "alice"), register(t, n, "bob")
	conv := room(t, alice, "metrics", bob)
	bs := bob.open(t)
	bs.subscribe(t, conv, 0, "")
	bs.until(t, isSubscribed(conv))
	for i := 0; i < 10; i++ {
		alice.send(t, conv, string(rune('a'+i)), "x")
	}
	bs.messages(t, 10)
	got := scrape(t, n, "parley_messages_routed_total", "parley_fanout_deliveries_total", "parley_streams",
		"parley_subscriptions", "parley_log_commit_seconds_count", "parley_ack_latency_seconds_count", "parley_write_behind_pending", "parley_index_lag_messages")
	if got["parley_messages_routed_total"] != 10 || got["parley_fanout_deliveries_total"] < 10 || got["parley_streams"] != 1 ||
		got["parley_subscriptions"] != 1 || got["parley_log_commit_seconds_count"] < 1 || got["parley_ack_latency_seconds_count"] != 10 ||
		got["parley_write_behind_pending"] != 0 {
		t.Fatalf("metrics after 10 messages to one subscriber: %v", got)
	}
	// The writer indexes the journaled messages soon after, off the ack path.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		got := scrape(t, n, "parley_index_lag_messages", "parley_index_commit_seconds_count", "parley_index_batch_size_sum")
		if got["parley_index_lag_messages"] == 0 && got["parley_index_batch_size_sum"] >= 10 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the 10 messages were not indexed: %v", got)
		}
	}
	resp, err := http.Get("http://" + n.addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !regexp.MustCompile(`grpc_server_handled_total\{grpc_code="OK",grpc_method="Send",grpc_service="parley.v1.ChatService",grpc_type="unary"\} 10`).Match(body) {
		t.Fatal("gRPC server metrics do not count the 10 Sends")
	}
}

func TestPprofBehindAFlag(t *testing.T) {
	for _, on := range []bool{false, true} {
		n := start(t, "", func(c *Config) { c.Pprof = on; c.Web = fstest.MapFS{"index.html": {Data: []byte("app")}} })
		resp, err := http.Get("http://" + n.addr + "/debug/pprof/goroutine?debug=1")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if got := resp.StatusCode == http.StatusOK && regexp.MustCompile(`goroutine profile`).Match(body); got != on {
			t.Fatalf("pprof=%v: status %d, profile served %v", on, resp.StatusCode, got)
		}
		if resp, err := http.Get("http://" + n.addr + "/"); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("pprof=%v: the app at / is gone: %v %v", on, resp, err)
		} else {
			resp.Body.Close()
		}
	}
}
