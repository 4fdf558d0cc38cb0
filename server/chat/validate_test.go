package chat

import (
	"regexp"
	"testing"
)

// The patterns the hand-written checks in validate.go stand for.
var (
	usernamePattern = regexp.MustCompile(`^[a-z][a-z0-9_-]{2,31}$`)
	roomNamePattern = regexp.MustCompile(`^[a-z0-9_-]{1,64}$`)
	convIDPattern   = regexp.MustCompile(`^(dm:[a-z][a-z0-9_-]{2,31}:[a-z][a-z0-9_-]{2,31}|room:[a-z0-9_-]{1,64}|group:[0-9a-f]{24})$`)
)

func TestNameShapes(t *testing.T) {
	long := func(n int) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = 'a'
		}
		return string(b)
	}
	tests := []struct {
		in                 string
		user, room, convID bool
	}{
		{in: "", user: false, room: false, convID: false},
		{in: "al", room: true},
		{in: "ali", user: true, room: true},
		{in: "9li", room: true},
		{in: "-li", room: true},
		{in: "Ali", room: false},
		{in: "al i"},
		{in: "al:i"},
		{in: "alé"},
		{in: long(32), user: true, room: true},
		{in: long(33), room: true},
		{in: long(64), room: true},
		{in: long(65)},
		{in: "dm:ali:bob", convID: true},
		{in: "dm:ali:bob:"},
		{in: "dm:ali:bo"},
		{in: "dm:ali"},
		{in: "dm::bob"},
		{in: "dm:ali:b:ob"},
		{in: "dm:" + long(32) + ":" + long(32), convID: true},
		{in: "dm:" + long(33) + ":bob"},
		{in: "room:general", convID: true},
		{in: "room:", convID: false},
		{in: "room:" + long(64), convID: true},
		{in: "room:" + long(65)},
		{in: "room:Gen"},
		{in: "room:a\n"},
		{in: "group:0123456789abcdef01234567", convID: true},
		{in: "group:0123456789abcdef0123456"},
		{in: "group:0123456789abcdef012345678"},
		{in: "group:0123456789ABCDEF01234567"},
		{in: "group:0123456789abcdeg01234567"},
		{in: "Room:general"},
		{in: " room:general"},
	}
	for _, tt := range tests {
		if got := isUsername(tt.in); got != tt.user {
			t.Errorf("isUsername(%q) = %v, want %v", tt.in, got, tt.user)
		}
		if got := isRoomName(tt.in); got != tt.room {
			t.Errorf("isRoomName(%q) = %v, want %v", tt.in, got, tt.room)
		}
		if got := isConvID(tt.in); got != tt.convID {
			t.Errorf("isConvID(%q) = %v, want %v", tt.in, got, tt.convID)
		}
		checkAgainstPatterns(t, tt.in)
	}
}

// FuzzNameShapes holds the hand-written checks to the regular expressions
// they replace, on any input.
func FuzzNameShapes(f *testing.F) {
	for _, s := range []string{"ali", "dm:ali:bob", "room:general", "group:0123456789abcdef01234567", "dm:a:b", "room:", "ü"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) { checkAgainstPatterns(t, s) })
}

func checkAgainstPatterns(t *testing.T, s string) {
	t.Helper()
	if got, want := isUsername(s), usernamePattern.MatchString(s); got != want {
		t.Errorf("isUsername(%q) = %v, pattern says %v", s, got, want)
	}
	if got, want := isRoomName(s), roomNamePattern.MatchString(s); got != want {
		t.Errorf("isRoomName(%q) = %v, pattern says %v", s, got, want)
	}
	if got, want := isConvID(s), convIDPattern.MatchString(s); got != want {
		t.Errorf("isConvID(%q) = %v, pattern says %v", s, got, want)
	}
}
