package auth

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

func TestGRPCAuthFunc(t *testing.T) {
	issuer := mustNew(t, testKey(1), WithTTL(time.Hour), WithClock(fixedClock(t0)))
	good, _, err := issuer.Issue("alice")
	if err != nil {
		t.Fatal(err)
	}
	old, oldExp, err := mustNew(t, testKey(1), WithTTL(time.Hour), WithClock(fixedClock(t0.Add(-2*time.Hour)))).Issue("alice")
	if err != nil {
		t.Fatal(err)
	}
	forged := sign(t, jwt.SigningMethodHS256, testKey(2), goodClaims("parley"), nil)
	authFn := issuer.GRPCAuthFunc()

	for _, tc := range []struct {
		name       string
		md         metadata.MD // nil: no incoming metadata at all
		wantUser   string
		wantPrefix string
	}{
		{name: "no metadata", wantPrefix: "missing authorization header: send 'authorization: Bearer <token>'"},
		{name: "no authorization header", md: metadata.Pairs("x-other", "1"), wantPrefix: "missing authorization header"},
		{name: "basic scheme", md: metadata.Pairs("authorization", "Basic x"), wantPrefix: "malformed authorization header: want scheme 'Bearer'"},
		{name: "token without scheme", md: metadata.Pairs("authorization", good), wantPrefix: "malformed authorization header"},
		{name: "bearer, empty token", md: metadata.Pairs("authorization", "Bearer "), wantPrefix: "malformed authorization header: empty bearer token"},
		{name: "bearer only", md: metadata.Pairs("authorization", "Bearer"), wantPrefix: "malformed authorization header: empty bearer token"},
		{name: "two headers", md: metadata.Pairs("authorization", "Bearer "+good, "authorization", "Bearer "+good), wantPrefix: "malformed authorization header"},
		{name: "good", md: metadata.Pairs("authorization", "Bearer "+good), wantUser: "alice"},
		{name: "scheme in lower case", md: metadata.Pairs("authorization", "bearer "+good), wantUser: "alice"},
		{name: "scheme in upper case", md: metadata.Pairs("authorization", "BEARER "+good), wantUser: "alice"},
		{name: "expired", md: metadata.Pairs("authorization", "Bearer "+old), wantPrefix: "token expired at " + oldExp.Format(time.RFC3339) + ": log in again"},
		{name: "forged", md: metadata.Pairs("authorization", "Bearer "+forged), wantPrefix: "invalid token: bad signature"},
		{name: "garbage", md: metadata.Pairs("authorization", "Bearer abc"), wantPrefix: "invalid token: malformed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			if tc.md != nil {
				ctx = metadata.NewIncomingContext(ctx, tc.md)
			}
			got, err := authFn(ctx)
			if tc.wantUser != "" {
				if err != nil {
					t.Fatalf("err = %v, want success", err)
				}
				if u := UserID(got); u != tc.wantUser {
					t.Fatalf("UserID = %q, want %q", u, tc.wantUser)
				}
				c, ok := FromContext(got)
				if !ok || c.Issuer != "parley" {
					t.Fatalf("FromContext = %+v, %v", c, ok)
				}
				return
			}
			st, ok := status.FromError(err)
			if !ok || st.Code() != codes.Unauthenticated {
				t.Fatalf("err = %v, want code Unauthenticated", err)
			}
			if !strings.HasPrefix(st.Message(), tc.wantPrefix) {
				t.Fatalf("message = %q, want prefix %q", st.Message(), tc.wantPrefix)
			}
			if got != nil {
				t.Fatal("returned a context along with an error")
			}
			if strings.Contains(st.Message(), forged) || strings.Contains(st.Message(), good) {
				t.Fatal("message echoes the token")
			}
		})
	}
}

func TestContextHelpers(t *testing.T) {
	ctx := t.Context()
	if u := UserID(ctx); u != "" {
		t.Fatalf("UserID of a bare context = %q, want empty", u)
	}
	if _, ok := FromContext(ctx); ok {
		t.Fatal("FromContext found claims in a bare context")
	}
	c := Claims{UserID: "bob", Issuer: "parley", ExpiresAt: t0}
	ctx = NewContext(ctx, c)
	if got, ok := FromContext(ctx); !ok || got != c {
		t.Fatalf("FromContext = %+v, %v; want %+v", got, ok, c)
	}
	if u := UserID(ctx); u != "bob" {
		t.Fatalf("UserID = %q, want bob", u)
	}
}
