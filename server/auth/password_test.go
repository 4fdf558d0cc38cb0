package auth

import (
	"errors"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

func TestPassword(t *testing.T) {
	max := strings.Repeat("p", MaxPasswordLen)
	for _, tc := range []struct {
		name     string
		password string
		attempt  string
		wantErr  error
	}{
		{"right", "correct horse battery staple", "correct horse battery staple", nil},
		{"wrong", "correct horse battery staple", "correct horse battery stapler", ErrBadCredentials},
		{"case matters", "Secret-pass", "secret-pass", ErrBadCredentials},
		{"empty attempt", "secret-pass", "", ErrBadCredentials},
		{"72 bytes", max, max, nil},
		{"72 bytes, last differs", max, max[:MaxPasswordLen-1] + "q", ErrBadCredentials},
		// bcrypt would see only the first 72 bytes and say yes.
		{"73 bytes sharing the first 72", max, max + "x", ErrBadCredentials},
		{"unicode", "pässwörd-日本語", "pässwörd-日本語", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, err := HashPassword(tc.password, bcrypt.MinCost)
			if err != nil {
				t.Fatalf("HashPassword: %v", err)
			}
			if strings.Contains(string(h), tc.password) {
				t.Fatal("hash contains the password")
			}
			if err := CheckPassword(h, tc.attempt); !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
				t.Fatalf("CheckPassword = %v, want %v", err, tc.wantErr)
			}
		})
	}
}

func TestHashPasswordRejects(t *testing.T) {
	for _, tc := range []struct {
		name     string
		password string
		cost     int
		wantErr  error
	}{
		{"73 bytes", strings.Repeat("p", MaxPasswordLen+1), bcrypt.MinCost, ErrPasswordTooLong},
		{"1 KiB", strings.Repeat("p", 1024), 0, ErrPasswordTooLong},
		{"cost below minimum", "secret-pass", bcrypt.MinCost - 1, nil},
		{"negative cost", "secret-pass", -1, nil},
		{"cost above maximum", "secret-pass", bcrypt.MaxCost + 1, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, err := HashPassword(tc.password, tc.cost)
			if err == nil {
				t.Fatalf("HashPassword succeeded: %q", h)
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
		})
	}
}

func TestHashPasswordCostAndSalt(t *testing.T) {
	h1, err := HashPassword("secret-pass", 0)
	if err != nil {
		t.Fatal(err)
	}
	if c, err := bcrypt.Cost(h1); err != nil || c != bcrypt.DefaultCost {
		t.Fatalf("cost 0 gave bcrypt cost %d (%v), want %d", c, err, bcrypt.DefaultCost)
	}
	h2, err := HashPassword("secret-pass", bcrypt.MinCost+1)
	if err != nil {
		t.Fatal(err)
	}
	if c, _ := bcrypt.Cost(h2); c != bcrypt.MinCost+1 {
		t.Fatalf("cost = %d, want %d", c, bcrypt.MinCost+1)
	}
	h3, err := HashPassword("secret-pass", bcrypt.MinCost+1)
	if err != nil {
		t.Fatal(err)
	}
	if string(h2) == string(h3) {
		t.Fatal("two hashes of one password are equal: no salt")
	}
}

func TestCheckPasswordOddHashes(t *testing.T) {
	for _, tc := range []struct {
		name    string
		hash    []byte
		wantBad bool // ErrBadCredentials, as opposed to a damaged-hash error
	}{
		{"nil hash (unknown user)", nil, true},
		{"empty hash", []byte{}, true},
		{"not bcrypt", []byte("plaintext-password"), false},
		{"truncated bcrypt", []byte(unknownUserHash[:20]), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckPassword(tc.hash, "plaintext-password")
			if err == nil {
				t.Fatal("CheckPassword succeeded")
			}
			if got := errors.Is(err, ErrBadCredentials); got != tc.wantBad {
				t.Fatalf("err = %v; ErrBadCredentials = %v, want %v", err, got, tc.wantBad)
			}
		})
	}
	// The stand-in hash for unknown users must be a real DefaultCost hash,
	// or the timing it exists for would differ.
	if c, err := bcrypt.Cost([]byte(unknownUserHash)); err != nil || c != bcrypt.DefaultCost {
		t.Fatalf("unknownUserHash cost = %d (%v), want %d", c, err, bcrypt.DefaultCost)
	}
}
