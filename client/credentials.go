package client

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"strings"
	"sync"

	"google.golang.org/grpc/credentials"
)

// tokenCredentials puts the current bearer token on every call. It reads the
// token per call rather than once at dial time so that SetToken, Register
// and Login take effect without a new connection.
type tokenCredentials struct {
	mu      sync.RWMutex // protects token and subject
	token   string
	subject string // the token's "sub" claim, read once per token
}

var _ credentials.PerRPCCredentials = (*tokenCredentials)(nil)

func (t *tokenCredentials) set(token string) {
	sub := tokenSubject(token)
	t.mu.Lock()
	t.token, t.subject = token, sub
	t.mu.Unlock()
}

// getSubject returns the user id the current token names, empty if it
// names none.
func (t *tokenCredentials) getSubject() string {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.subject
}

// tokenSubject reads the "sub" claim of a JWT without checking its
// signature: the token is our own, and the claim only tells the client who
// it is (to recognise its own receipts, typing and presence). It returns ""
// for anything that is not a JWT with a subject.
func tokenSubject(token string) string {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return ""
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return ""
	}
	var claims struct {
		Subject string `json:"sub"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		return ""
	}
	return claims.Subject
}

func (t *tokenCredentials) get() string {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.token
}

// GetRequestMetadata sends no header at all without a token, so that
// Register and Login work before there is one.
func (t *tokenCredentials) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	tok := t.get()
	if tok == "" {
		return nil, nil
	}
	return map[string]string{"authorization": "Bearer " + tok}, nil
}

// RequireTransportSecurity is false because plaintext h2c is Parley's
// embedded default (TLS is often terminated by a proxy in front of it);
// refusing to send the token over it would make the default unusable.
func (t *tokenCredentials) RequireTransportSecurity() bool { return false }
