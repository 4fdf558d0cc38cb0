package auth

import (
	"context"
	"errors"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// GRPCAuthFunc returns a function with the signature of go-grpc-middleware
// v2's auth.AuthFunc. It reads "authorization: Bearer <token>" from the
// incoming metadata (the scheme in any case), verifies the token and returns
// ctx carrying its Claims (see FromContext).
//
// This is where this package's errors become gRPC statuses. Every failure is
// codes.Unauthenticated, with a message a person can act on:
//
//	missing authorization header: send 'authorization: Bearer <token>'
//	malformed authorization header: <what is wrong>
//	token expired at <RFC 3339 time>: log in again
//	invalid token: <short reason>
//
// The short reason names the flaw ("bad signature", "unknown issuer"), never
// the token's contents.
//
// Wire it in with go-grpc-middleware's auth interceptors. AuthService's
// Register and Login must bypass it, since their callers have no token yet.
func (a *Authenticator) GRPCAuthFunc() func(ctx context.Context) (context.Context, error) {
	return func(ctx context.Context) (context.Context, error) {
		md, _ := metadata.FromIncomingContext(ctx)
		vals := md.Get("authorization")
		switch len(vals) {
		case 0:
			return nil, status.Error(codes.Unauthenticated, "missing authorization header: send 'authorization: Bearer <token>'")
		case 1:
		default:
			return nil, status.Error(codes.Unauthenticated, "malformed authorization header: send it once, as 'Bearer <token>'")
		}
		token, err := bearerToken(vals[0])
		if err != nil {
			return nil, status.Error(codes.Unauthenticated, "malformed authorization header: "+err.Error())
		}
		c, err := a.Verify(token)
		if err != nil {
			return nil, statusOf(err)
		}
		return NewContext(ctx, c), nil
	}
}

// bearerToken extracts the token from an authorization header value.
func bearerToken(v string) (string, error) {
	v = strings.TrimSpace(v)
	scheme, token, _ := strings.Cut(v, " ")
	if !strings.EqualFold(scheme, "bearer") {
		return "", errors.New("want scheme 'Bearer', as in 'authorization: Bearer <token>'")
	}
	token = strings.TrimSpace(token)
	if token == "" {
		return "", errors.New("empty bearer token: send 'authorization: Bearer <token>'")
	}
	return token, nil
}

// statusOf turns an error from Verify into the status the client sees.
func statusOf(err error) error {
	var ee *expiredError
	var ie *invalidError
	switch {
	case errors.As(err, &ee):
		return status.Errorf(codes.Unauthenticated, "token expired at %s: log in again", ee.at.Format(time.RFC3339))
	case errors.Is(err, ErrExpired):
		return status.Error(codes.Unauthenticated, "token expired: log in again")
	case errors.Is(err, ErrNoToken):
		return status.Error(codes.Unauthenticated, "missing authorization header: send 'authorization: Bearer <token>'")
	case errors.As(err, &ie):
		return status.Error(codes.Unauthenticated, "invalid token: "+ie.reason)
	}
	return status.Error(codes.Unauthenticated, "invalid token")
}
