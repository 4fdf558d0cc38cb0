package natspresence_test

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"

	"github.com/parleychat/parley/server/natspresence"
	"github.com/parleychat/parley/server/natstest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// events records what a bus reports, as "node user online|offline".
type events struct {
	mu  sync.Mutex
	got []string
}

func (e *events) fn(node, user string, online bool, _ time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	state := "offline"
	if online {
		state = "online"
	}
	e.got = append(e.got, fmt.Sprintf("%s %s %s", node, user, state))
}

func (e *events) wait(t *testing.T, want ...string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		e.mu.Lock()
		got := slices.Clone(e.got)
		e.mu.Unlock()
		if slices.Equal(got, want) {
			return
		}
		if len(got) > len(want) || time.Now().After(deadline) {
			t.Fatalf("reported %q, want %q", got, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func bus(t *testing.T, url, node string) *natspresence.Bus {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	b, err := natspresence.New(nc, natspresence.WithNode(node), natspresence.WithInterval(200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Transitions cross nodes in order; a node that joins late learns who is
// online from heartbeats; a node that dies takes its users offline with it.
func TestPresenceAcrossNodes(t *testing.T) {
	c := natstest.Start(t, natstest.Options{Nodes: 1})
	a, b := bus(t, c.URL(), "a"), bus(t, c.URL(), "b")
	var seenByB events
	stopB, err := b.Start(seenByB.fn, func(string) {})
	if err != nil {
		t.Fatal(err)
	}
	defer stopB()
	stopA, err := a.Start(func(string, string, bool, time.Time) {}, func(string) {})
	if err != nil {
		t.Fatal(err)
	}
	a.Publish("alice", true, time.Time{})
	a.Publish("bob", true, time.Time{})
	a.Publish("alice", false, time.Now())
	seenByB.wait(t, "a alice online", "a bob online", "a alice offline")

	// A late node learns bob from a's heartbeat.
	late := bus(t, c.URL(), "late")
	var seenByLate events
	stopLate, err := late.Start(seenByLate.fn, func(string) {})
	if err != nil {
		t.Fatal(err)
	}
	defer stopLate()
	seenByLate.wait(t, "a bob online")

	// a stops answering without saying goodbye: bob goes offline.
	stopA()
	seenByB.wait(t, "a alice online", "a bob online", "a alice offline", "a bob offline")
	seenByLate.wait(t, "a bob online", "a bob offline")
}

// A deleted account reaches every other node's gone function, not the
// deleting node's own.
func TestDeletedAcrossNodes(t *testing.T) {
	c := natstest.Start(t, natstest.Options{Nodes: 1})
	a, b := bus(t, c.URL(), "a"), bus(t, c.URL(), "b")
	goneAt := func(node string) (func(string), <-chan string) {
		ch := make(chan string, 4)
		return func(user string) { ch <- node + " " + user }, ch
	}
	fa, ga := goneAt("a")
	fb, gb := goneAt("b")
	stopA, err := a.Start(func(string, string, bool, time.Time) {}, fa)
	if err != nil {
		t.Fatal(err)
	}
	defer stopA()
	stopB, err := b.Start(func(string, string, bool, time.Time) {}, fb)
	if err != nil {
		t.Fatal(err)
	}
	defer stopB()
	a.Deleted("carol")
	select {
	case got := <-gb:
		if got != "b carol" {
			t.Fatalf("gone = %q, want b carol", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("b was not told that carol's account was deleted")
	}
	// The server had a's message before b's, so a, which must skip its
	// own, would have had carol before dave.
	b.Deleted("dave")
	select {
	case got := <-ga:
		if got != "a dave" {
			t.Fatalf("a's gone = %q, want a dave (a deleted carol itself)", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a was not told that dave's account was deleted")
	}
	// Likewise b, which must skip its own dave, has erin next.
	a.Deleted("erin")
	select {
	case got := <-gb:
		if got != "b erin" {
			t.Fatalf("b's gone = %q, want b erin (b deleted dave itself)", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("b was not told that erin's account was deleted")
	}
}
