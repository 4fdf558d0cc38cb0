// Package auth issues and verifies access tokens and hashes passwords.
//
// Tokens are JWTs. Parley signs its own with HS256 and a key that never
// leaves the server (see LoadOrCreateKey); tokens of configured external
// issuers are verified with that issuer's public key. Which key and which
// algorithm verify a token is decided by the token's issuer and the key's
// type, never by the token's own "alg" header, so a token cannot pick a
// weaker algorithm or use a public key as an HMAC secret.
//
// Errors are the sentinels below, wrapped with %w; GRPCAuthFunc is the one
// place they become gRPC status codes.
package auth

import "errors"

// Sentinel errors. Match them with errors.Is; the wrapping error says why.
var (
	// ErrNoToken means no token was presented at all.
	ErrNoToken = errors.New("auth: no token")

	// ErrExpired means the token was genuine and well formed but its expiry,
	// plus the allowed clock skew, has passed. A new login fixes it.
	ErrExpired = errors.New("auth: token expired")

	// ErrInvalidToken means the token cannot be trusted: it is malformed,
	// forged, from an unknown issuer, signed with an algorithm its issuer's
	// key does not allow, or lacks a required claim. A new login from the
	// same client may not fix it.
	ErrInvalidToken = errors.New("auth: invalid token")

	// ErrBadCredentials means a password did not match its hash. Callers
	// should answer a wrong password and an unknown user alike, so that
	// user names cannot be probed.
	ErrBadCredentials = errors.New("auth: bad credentials")

	// ErrPasswordTooLong means a password exceeds MaxPasswordLen bytes,
	// which bcrypt would otherwise silently truncate.
	ErrPasswordTooLong = errors.New("auth: password longer than 72 bytes")
)
