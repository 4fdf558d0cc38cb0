package auth

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// t0 is the fixed "now" of most tests. It has no sub-second part, so times
// survive the trip through a JWT unchanged.
var t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

func fixedClock(t time.Time) func() time.Time { return func() time.Time { return t } }

func testKey(b byte) []byte {
	k := make([]byte, MinKeySize)
	for i := range k {
		k[i] = b
	}
	return k
}

func mustNew(t testing.TB, key []byte, opts ...Option) *Authenticator {
	t.Helper()
	a, err := New(key, opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return a
}

// sign makes a token with the given method, key and claims, and lets edit
// change the header first.
func sign(t testing.TB, m jwt.SigningMethod, key any, claims jwt.MapClaims, edit func(h map[string]any)) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, claims)
	if edit != nil {
		edit(tok.Header)
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatalf("sign %s: %v", m.Alg(), err)
	}
	return s
}

// goodClaims returns valid claims for issuer iss as of t0.
func goodClaims(iss string) jwt.MapClaims {
	return jwt.MapClaims{
		"sub": "alice",
		"iss": iss,
		"iat": t0.Unix(),
		"exp": t0.Add(time.Hour).Unix(),
	}
}

// writePublicPEM writes pub as a PKIX "PUBLIC KEY" PEM file in a temp dir
// and returns its path and contents.
func writePublicPEM(t testing.TB, pub any) (string, []byte) {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatalf("marshal public key: %v", err)
	}
	data := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	path := filepath.Join(t.TempDir(), "issuer.pub.pem")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path, data
}
