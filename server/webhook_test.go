package server

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
)

// hookBody is what the webhook receives.
type hookBody struct {
	Recipients     []string `json:"recipients"`
	ConversationID string   `json:"conversation_id"`
	Seq            uint64   `json:"seq"`
	SenderID       string   `json:"sender_id"`
	Preview        string   `json:"preview"`
}

func TestWebhookForOfflineMembers(t *testing.T) {
	var attempts atomic.Int64
	got := make(chan hookBody, 10)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The first attempt fails: the notifier must retry.
		if attempts.Add(1) == 1 {
			http.Error(w, "try later", http.StatusServiceUnavailable)
			return
		}
		var b hookBody
		data, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(data, &b); err != nil {
			t.Errorf("webhook body %q: %v", data, err)
		}
		got <- b
	}))
	defer hook.Close()

	n := start(t, "", func(c *Config) { c.WebhookURL = hook.URL })
	alice, bob, carol := register(t, n, "alice"), register(t, n, "bob"), register(t, n, "carol")
	conv := room(t, alice, "hook", bob, carol)
	cs := carol.open(t) // carol is online; bob is not
	cs.subscribe(t, conv, 0, "")
	cs.until(t, isSubscribed(conv))

	ack := alice.send(t, conv, "m1", "are you there, bob?")
	select {
	case b := <-got:
		if fmt.Sprint(b.Recipients) != fmt.Sprint([]string{bob.id}) || b.ConversationID != conv || b.Seq != ack.GetSeq() || b.SenderID != alice.id || b.Preview != "are you there, bob?" {
			t.Fatalf("webhook got %+v", b)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("webhook not called (attempts: %d)", attempts.Load())
	}
	if attempts.Load() < 2 {
		t.Fatalf("attempts = %d; the failed first one was not retried", attempts.Load())
	}
}

func TestStuckWebhookNeverBlocksDelivery(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release // hangs until the test ends
	}))
	defer hook.Close()
	defer once.Do(func() { close(release) })

	// The queued webhook deliveries outlive the test; a short shutdown
	// bound cuts them instead of retrying against a closed server.
	n := start(t, "", func(c *Config) { c.WebhookURL = hook.URL; c.ShutdownTimeout = time.Second })
	alice, bob, carol := register(t, n, "alice"), register(t, n, "bob"), register(t, n, "carol")
	conv := room(t, alice, "stuck", bob, carol)
	cs := carol.open(t)
	cs.subscribe(t, conv, 0, "")
	cs.until(t, isSubscribed(conv))

	// Far more posts to the offline bob than the webhook queue holds.
	const total = 3000
	alice.pipeline(t, conv, "", total, "hello bob")
	msgs := cs.messages(t, total)
	checkOrdered(t, "carol", msgs)
	if _, err := alice.chat.History(alice.ctx(t), &parleyv1.HistoryRequest{ConversationId: conv, BeforeSeq: 0, Limit: 1}); err != nil {
		t.Fatal(err)
	}
}
