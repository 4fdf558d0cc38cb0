package auth

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// fuzzSetup returns the Authenticator FuzzVerify checks. Its key, clock and
// external issuer are fixed, so that the checked-in corpus under
// testdata/fuzz/FuzzVerify (which holds tokens it issued) stays valid.
func fuzzSetup(t testing.TB) *Authenticator {
	edKey := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{0x07}, ed25519.SeedSize))
	return mustNew(t, testKey(0x42),
		WithClock(fixedClock(t0)),
		WithExternalIssuer("ed-idp", edKey.Public()),
	)
}

// FuzzVerify checks that Verify never panics and keeps its promises on any
// input: success only with the claims it documents, failure only with one
// of its sentinels and no claims, and always UNAUTHENTICATED at the edge.
func FuzzVerify(f *testing.F) {
	a := fuzzSetup(f)
	good, _, err := a.Issue("alice")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add("")
	f.Add("..")
	authFn := a.GRPCAuthFunc()

	f.Fuzz(func(t *testing.T, token string) {
		c, err := a.Verify(token)
		if err == nil {
			switch {
			case c.UserID == "":
				t.Fatal("accepted a token without subject")
			case c.Issuer != "parley" && c.Issuer != "ed-idp":
				t.Fatalf("accepted issuer %q", c.Issuer)
			case c.ExpiresAt.IsZero():
				t.Fatal("accepted a token without expiry")
			case c.ExpiresAt.Before(t0.Add(-time.Minute)):
				t.Fatalf("accepted a token that expired at %v", c.ExpiresAt)
			case len(token) > MaxTokenSize:
				t.Fatalf("accepted a %d-byte token", len(token))
			}
		} else {
			if c != (Claims{}) {
				t.Fatalf("returned claims %+v with error %v", c, err)
			}
			n := 0
			for _, s := range []error{ErrNoToken, ErrExpired, ErrInvalidToken} {
				if errors.Is(err, s) {
					n++
				}
			}
			if n != 1 {
				t.Fatalf("error %v matches %d sentinels, want 1", err, n)
			}
		}

		ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Bearer "+token))
		if _, err := authFn(ctx); err != nil {
			if code := status.Code(err); code != codes.Unauthenticated {
				t.Fatalf("edge answered %v, want Unauthenticated", code)
			}
		}
	})
}
