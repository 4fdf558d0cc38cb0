package client

import (
	"fmt"
	"testing"
	"time"
)

func TestBackoffStaysWithinTheCeiling(t *testing.T) {
	b := backoff{min: 100 * time.Millisecond, max: 2 * time.Second}
	tests := []struct {
		attempt int
		ceiling time.Duration
	}{
		{0, 100 * time.Millisecond},
		{1, 200 * time.Millisecond},
		{3, 800 * time.Millisecond},
		{5, 2 * time.Second},
		{70, 2 * time.Second}, // a shift that would overflow
	}
	for _, tt := range tests {
		for range 200 {
			if d := b.delay(tt.attempt); d < 0 || d > tt.ceiling {
				t.Fatalf("delay(%d) = %v, want within [0, %v]", tt.attempt, d, tt.ceiling)
			}
		}
	}
}

func TestDedupEvictsTheLeastRecentlySeen(t *testing.T) {
	clock := time.Unix(0, 0)
	d := newDedup(2)
	d.now = func() time.Time { return clock }
	d.add("a")
	d.add("b")
	if !d.seen("a") { // a is now the most recent
		t.Fatal("a forgotten too early")
	}
	// Within the minimum age nothing is forgotten: a resend after a long
	// outage is still recognised.
	d.add("c")
	for _, key := range []string{"a", "b", "c"} {
		if !d.seen(key) {
			t.Errorf("%q forgotten within %v", key, dedupMinAge)
		}
	}
	// Past it, the count bounds the memory again, least recent first.
	clock = clock.Add(dedupMinAge + time.Second)
	d.seen("a")
	d.add("d") // b and c are old and beyond the count
	for key, want := range map[string]bool{"a": true, "b": false, "c": false, "d": true} {
		if got := d.seen(key); got != want {
			t.Errorf("seen(%q) = %v, want %v", key, got, want)
		}
	}
	if d.order.Len() != 2 || len(d.index) != 2 {
		t.Errorf("dedup holds %d/%d keys, want 2", d.order.Len(), len(d.index))
	}
}

func TestDedupHardCap(t *testing.T) {
	d := newDedup(10)
	for i := range dedupHardCap + 50 {
		d.add(fmt.Sprint(i))
	}
	if n := d.order.Len(); n != dedupHardCap {
		t.Fatalf("dedup holds %d keys, want the hard cap %d", n, dedupHardCap)
	}
	if d.seen("0") || !d.seen(fmt.Sprint(dedupHardCap+49)) {
		t.Fatal("the hard cap did not drop the oldest first")
	}
}

func TestClientMessageIDs(t *testing.T) {
	seen := make(map[string]bool)
	for range 1000 {
		id := NewClientMessageID()
		if len(id) != 32 || seen[id] {
			t.Fatalf("id %q: want 32 hex characters, never repeated", id)
		}
		seen[id] = true
	}
}

func TestTokenSubject(t *testing.T) {
	tests := []struct{ token, want string }{
		// {"alg":"HS256"}.{"sub":"alice","exp":1}.sig
		{"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6MX0.c2ln", "alice"},
		{"eyJhbGciOiJIUzI1NiJ9.eyJleHAiOjF9.c2ln", ""}, // no sub
		{"tok-alice-123", ""},
		{"a.!!!.c", ""},
		{"", ""},
	}
	for _, tt := range tests {
		if got := tokenSubject(tt.token); got != tt.want {
			t.Errorf("tokenSubject(%q) = %q, want %q", tt.token, got, tt.want)
		}
	}
}
