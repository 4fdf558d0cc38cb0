package auth

import "context"

// claimsKey is the context key for verified Claims. Its type is unexported
// so that only this package can put Claims in a context, and a value found
// under it has always been through Verify or NewContext.
type claimsKey struct{}

// NewContext returns a copy of ctx that carries c. It trusts c: callers
// outside GRPCAuthFunc should only pass Claims returned by Verify (or, in
// tests, Claims they made up on purpose).
func NewContext(ctx context.Context, c Claims) context.Context {
	return context.WithValue(ctx, claimsKey{}, c)
}

// FromContext returns the Claims stored in ctx by NewContext, and whether
// there were any.
func FromContext(ctx context.Context) (Claims, bool) {
	c, ok := ctx.Value(claimsKey{}).(Claims)
	return c, ok
}

// UserID returns the authenticated user's ID from ctx, or "" when ctx
// carries no Claims. Verify never accepts a token with an empty subject, so
// "" always means unauthenticated.
func UserID(ctx context.Context) string {
	c, _ := FromContext(ctx)
	return c.UserID
}
