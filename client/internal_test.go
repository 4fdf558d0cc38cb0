package client

import (
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
	d := newDedup(2)
	d.add("a")
	d.add("b")
	if !d.seen("a") { // a is now the most recent
		t.Fatal("a forgotten too early")
	}
	d.add("c") // evicts b
	for key, want := range map[string]bool{"a": true, "b": false, "c": true} {
		if got := d.seen(key); got != want {
			t.Errorf("seen(%q) = %v, want %v", key, got, want)
		}
	}
	if d.order.Len() != 2 || len(d.index) != 2 {
		t.Errorf("dedup holds %d/%d keys, want 2", d.order.Len(), len(d.index))
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
