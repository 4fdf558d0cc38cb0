package client

import (
	"context"
	"sync"

	"google.golang.org/grpc/credentials"
)

// tokenCredentials puts the current bearer token on every call. It reads the
// token per call rather than once at dial time so that SetToken, Register
// and Login take effect without a new connection.
type tokenCredentials struct {
	mu    sync.RWMutex // protects token
	token string
}

var _ credentials.PerRPCCredentials = (*tokenCredentials)(nil)

func (t *tokenCredentials) set(token string) {
	t.mu.Lock()
	t.token = token
	t.mu.Unlock()
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
