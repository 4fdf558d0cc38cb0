package jsstate

import (
	"strings"
	"testing"
)

func TestKeyEncoding(t *testing.T) {
	tests := []struct {
		id, token, conv string
	}{
		{"alice", "alice", "alice"},
		{"dm:alice:bob", "dm=3Aalice=3Abob", "dm.alice.bob"},
		{"room:lobby", "room=3Alobby", "room.lobby"},
		{"group:0123456789abcdef01234567", "group=3A0123456789abcdef01234567", "group.0123456789abcdef01234567"},
		{"a.b", "a=2Eb", "a=2Eb"},
		{"a=b", "a=3Db", "a=3Db"},
		{"", "=", "="},
		{"dm::x", "dm=3A=3Ax", "dm.=.x"},
		{":", "=3A", "=.="},
		{"é *>", "=C3=A9=20=2A=3E", "=C3=A9=20=2A=3E"},
	}
	valid := func(k string) bool {
		for _, tok := range strings.Split(k, ".") {
			if tok == "" || strings.Trim(tok, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_=") != "" {
				return false
			}
		}
		return true
	}
	for _, tt := range tests {
		if got := token(tt.id); got != tt.token || !valid(got) || strings.Contains(got, ".") {
			t.Errorf("token(%q) = %q; want %q, one valid token", tt.id, got, tt.token)
		}
		if back, err := untoken(tt.token); err != nil || back != tt.id {
			t.Errorf("untoken(%q) = %q, %v; want %q", tt.token, back, err, tt.id)
		}
		if got := convKey(tt.id); got != tt.conv || !valid(got) {
			t.Errorf("convKey(%q) = %q; want %q, valid", tt.id, got, tt.conv)
		}
		if back, err := unconvKey(strings.Split(tt.conv, ".")); err != nil || back != tt.id {
			t.Errorf("unconvKey(%q) = %q, %v; want %q", tt.conv, back, err, tt.id)
		}
	}
	for _, bad := range []string{"=", "=4", "=zz", "a=G0"} {
		if bad == "=" {
			continue
		}
		if _, err := untoken(bad); err == nil {
			t.Errorf("untoken(%q) accepted a malformed token", bad)
		}
	}
}

func FuzzKeyEncoding(f *testing.F) {
	for _, s := range []string{"dm:alice:bob", "", "a.b", "=", "::"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		tok := token(id)
		if back, err := untoken(tok); err != nil || back != id || strings.Contains(tok, ".") {
			t.Fatalf("token(%q) = %q does not round-trip: %q, %v", id, tok, back, err)
		}
		ck := convKey(id)
		if back, err := unconvKey(strings.Split(ck, ".")); err != nil || back != id {
			t.Fatalf("convKey(%q) = %q does not round-trip: %q, %v", id, ck, back, err)
		}
	})
}
