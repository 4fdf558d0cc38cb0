package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const (
	// MinKeySize is the shortest HS256 signing key New accepts, in bytes:
	// the output size of SHA-256, below which the key, not the hash, is the
	// weak point.
	MinKeySize = 32

	// MaxTokenSize is the longest token Verify will look at, in bytes.
	// Parley's own tokens are a few hundred bytes; the cap keeps a hostile
	// client from making the server decode megabytes of base64 and JSON on
	// every call.
	MaxTokenSize = 8 << 10

	// minRSABits is the smallest RSA modulus accepted for an external
	// issuer; shorter keys are factorable by a determined attacker.
	minRSABits = 2048

	// ownAlg is the only algorithm Parley's own tokens use.
	ownAlg = "HS256"
)

// Claims is what a verified token says. A Claims value obtained from Verify
// always has a non-empty UserID, an Issuer that was configured, and a
// non-zero ExpiresAt.
type Claims struct {
	// UserID is the token's subject ("sub").
	UserID string
	// Issuer is the token's issuer ("iss"): the Authenticator's own name or
	// one given to WithExternalIssuer.
	Issuer string
	// ExpiresAt is the token's expiry ("exp"), in UTC, to the second.
	ExpiresAt time.Time
}

// Option configures an Authenticator in New.
type Option func(*options)

type options struct {
	ttl      time.Duration
	leeway   time.Duration
	issuer   string
	audience string
	now      func() time.Time
	external []externalIssuer
}

type externalIssuer struct {
	iss string
	key crypto.PublicKey
}

// WithTTL sets how long issued tokens stay valid. The default is 24 hours.
func WithTTL(d time.Duration) Option { return func(o *options) { o.ttl = d } }

// WithIssuerName sets the "iss" of issued tokens, and so which tokens are
// verified with the Authenticator's own key. The default is "parley".
func WithIssuerName(iss string) Option { return func(o *options) { o.issuer = iss } }

// WithExternalIssuer makes tokens whose "iss" equals iss verify with key,
// which must be an *rsa.PublicKey (at least 2048 bits; RS256, RS384 or
// RS512), an *ecdsa.PublicKey on P-256, P-384 or P-521 (ES256, ES384 or
// ES512 respectively), or an ed25519.PublicKey (EdDSA), as LoadPublicKey
// returns. It may be given several times; giving the same iss more than once
// accepts any of its keys, so an issuer can rotate keys without downtime.
// The key is checked by New.
func WithExternalIssuer(iss string, key crypto.PublicKey) Option {
	return func(o *options) { o.external = append(o.external, externalIssuer{iss, key}) }
}

// WithClock sets the source of the current time, for tests. The default is
// time.Now.
func WithClock(now func() time.Time) Option { return func(o *options) { o.now = now } }

// WithLeeway sets how far clocks may disagree: a token is still accepted
// this long after its expiry, and its "nbf" and "iat" may lie this far in
// the future. The default is 30 seconds.
func WithLeeway(d time.Duration) Option { return func(o *options) { o.leeway = d } }

// WithAudience makes issued tokens carry aud and makes Verify reject any
// token, own or external, whose "aud" does not include it. By default no
// audience is issued or checked. Set it when an external issuer also mints
// tokens for other services, so that their tokens are not accepted here.
func WithAudience(aud string) Option { return func(o *options) { o.audience = aud } }

// verifyKey is one key an issuer's tokens may be signed with, and the
// algorithms that key is allowed to verify. The algorithms follow from the
// key's type and size, never from the token.
type verifyKey struct {
	key  any
	algs []string
}

// Authenticator issues HS256 tokens with its own key and verifies both its
// own tokens and those of configured external issuers. It is safe for
// concurrent use; nothing in it changes after New.
type Authenticator struct {
	key      []byte
	issuer   string
	audience string
	ttl      time.Duration
	now      func() time.Time
	issuers  map[string][]verifyKey // by "iss"; includes the own issuer
	parser   *jwt.Parser
}

// New returns an Authenticator that signs with signingKey, which must be at
// least MinKeySize bytes (LoadOrCreateKey makes one). New copies the key.
// It returns an error for an option it cannot honour: a non-positive TTL, a
// negative leeway, an empty issuer name, an external issuer with the own
// issuer's name, or an external key of an unsupported type or size.
func New(signingKey []byte, opts ...Option) (*Authenticator, error) {
	if len(signingKey) < MinKeySize {
		return nil, fmt.Errorf("auth: signing key is %d bytes, need at least %d", len(signingKey), MinKeySize)
	}
	o := options{
		ttl:    24 * time.Hour,
		leeway: 30 * time.Second,
		issuer: "parley",
		now:    time.Now,
	}
	for _, opt := range opts {
		opt(&o)
	}
	switch {
	case o.ttl <= 0:
		return nil, fmt.Errorf("auth: token TTL must be positive, got %v", o.ttl)
	case o.leeway < 0:
		return nil, fmt.Errorf("auth: leeway must not be negative, got %v", o.leeway)
	case o.issuer == "":
		return nil, errors.New("auth: issuer name must not be empty")
	case o.now == nil:
		return nil, errors.New("auth: clock must not be nil")
	}

	a := &Authenticator{
		key:      slices.Clone(signingKey),
		issuer:   o.issuer,
		audience: o.audience,
		ttl:      o.ttl,
		now:      o.now,
		issuers:  make(map[string][]verifyKey),
	}
	a.issuers[o.issuer] = []verifyKey{{key: a.key, algs: []string{ownAlg}}}
	for _, ext := range o.external {
		if ext.iss == "" {
			return nil, errors.New("auth: external issuer name must not be empty")
		}
		if ext.iss == o.issuer {
			// Sharing a name would let the external issuer's tokens and ours
			// stand in for each other.
			return nil, fmt.Errorf("auth: external issuer %q has the same name as this server", ext.iss)
		}
		algs, err := algorithmsFor(ext.key)
		if err != nil {
			return nil, fmt.Errorf("auth: external issuer %q: %w", ext.iss, err)
		}
		a.issuers[ext.iss] = append(a.issuers[ext.iss], verifyKey{key: ext.key, algs: algs})
	}

	popts := []jwt.ParserOption{
		jwt.WithLeeway(o.leeway),
		jwt.WithTimeFunc(a.now),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
	}
	if o.audience != "" {
		popts = append(popts, jwt.WithAudience(o.audience))
	}
	// The parser is only read after this, which is what makes it safe to
	// share between goroutines.
	a.parser = jwt.NewParser(popts...)
	return a, nil
}

// algorithmsFor returns the JWS algorithms key may verify. Binding them to
// the key type is what defeats algorithm confusion: an RSA key is never
// handed to HMAC verification, whatever a token's header says.
func algorithmsFor(key crypto.PublicKey) ([]string, error) {
	switch k := key.(type) {
	case *rsa.PublicKey:
		if k == nil || k.N == nil {
			return nil, errors.New("nil RSA key")
		}
		if bits := k.N.BitLen(); bits < minRSABits {
			return nil, fmt.Errorf("RSA key is %d bits, need at least %d", bits, minRSABits)
		}
		return []string{"RS256", "RS384", "RS512"}, nil
	case *ecdsa.PublicKey:
		if k == nil || k.Curve == nil {
			return nil, errors.New("nil ECDSA key")
		}
		// Each ES algorithm is defined for exactly one curve (RFC 7518 3.4).
		switch k.Curve {
		case elliptic.P256():
			return []string{"ES256"}, nil
		case elliptic.P384():
			return []string{"ES384"}, nil
		case elliptic.P521():
			return []string{"ES512"}, nil
		}
		return nil, fmt.Errorf("unsupported ECDSA curve %s", k.Curve.Params().Name)
	case ed25519.PublicKey:
		if len(k) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("ed25519 key is %d bytes, want %d", len(k), ed25519.PublicKeySize)
		}
		return []string{"EdDSA"}, nil
	}
	return nil, fmt.Errorf("unsupported key type %T (want *rsa.PublicKey, *ecdsa.PublicKey or ed25519.PublicKey)", key)
}

// Issuer returns the name the Authenticator puts in the "iss" of its tokens.
func (a *Authenticator) Issuer() string { return a.issuer }

// Issue returns a token for userID signed with the Authenticator's key,
// carrying "sub", "iss", "iat" and "exp" (and "aud" if WithAudience was
// given), and the time it expires. expiresAt equals the ExpiresAt that
// Verify will report for the token. userID must not be empty, and a token
// Issue returns is never too large for Verify.
func (a *Authenticator) Issue(userID string) (token string, expiresAt time.Time, err error) {
	if userID == "" {
		return "", time.Time{}, errors.New("auth: issue: empty user ID")
	}
	// JWT times are whole seconds; truncating here makes expiresAt agree
	// with what the token says.
	now := a.now().UTC().Truncate(time.Second)
	exp := now.Add(a.ttl)
	claims := jwt.RegisteredClaims{
		Subject:   userID,
		Issuer:    a.issuer,
		IssuedAt:  jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(exp),
	}
	if a.audience != "" {
		claims.Audience = jwt.ClaimStrings{a.audience}
	}
	token, err = jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(a.key)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("auth: issue: %w", err)
	}
	if len(token) > MaxTokenSize {
		return "", time.Time{}, fmt.Errorf("auth: issue: user ID of %d bytes makes the token exceed %d bytes", len(userID), MaxTokenSize)
	}
	return token, exp, nil
}

// Verify checks token and returns its claims. It never panics, whatever
// token holds. An empty token is ErrNoToken; a genuine token past its expiry
// (plus leeway) is ErrExpired; anything else wrong is ErrInvalidToken:
// garbage, more than MaxTokenSize bytes, "alg" none, an algorithm the
// issuer's key does not allow, a wrong signature, an unknown or missing
// issuer, a missing or empty "sub", a missing "exp", "nbf" or "iat" in the
// future, a wrong audience, or an unknown critical header. Claims are
// returned only with a nil error.
func (a *Authenticator) Verify(token string) (Claims, error) {
	if token == "" {
		return Claims{}, ErrNoToken
	}
	if len(token) > MaxTokenSize {
		return Claims{}, invalid("token too large")
	}
	var rc jwt.RegisteredClaims
	_, err := a.parser.ParseWithClaims(token, &rc, a.keyFor)
	if err != nil {
		return Claims{}, a.classify(err, &rc)
	}
	if rc.Subject == "" {
		return Claims{}, invalid("missing subject")
	}
	if err := checkTimes(&rc); err != nil {
		return Claims{}, err
	}
	return Claims{UserID: rc.Subject, Issuer: rc.Issuer, ExpiresAt: rc.ExpiresAt.UTC()}, nil
}

// keyFor picks the key that verifies t from t's issuer, and refuses any
// algorithm that key is not meant for. It runs before the signature is
// checked, so nothing it reads from t is trusted yet.
func (a *Authenticator) keyFor(t *jwt.Token) (any, error) {
	if _, ok := t.Header["crit"]; ok {
		// RFC 7515 4.1.11: a verifier must reject critical extensions it
		// does not understand, and we understand none.
		return nil, invalid("unsupported critical header")
	}
	iss, _ := t.Claims.GetIssuer()
	if iss == "" {
		return nil, invalid("missing issuer")
	}
	keys, ok := a.issuers[iss]
	if !ok {
		return nil, invalid("unknown issuer")
	}
	alg := t.Method.Alg()
	var set jwt.VerificationKeySet
	for _, k := range keys {
		if slices.Contains(k.algs, alg) {
			set.Keys = append(set.Keys, k.key)
		}
	}
	switch len(set.Keys) {
	case 0:
		return nil, invalid("algorithm not allowed for issuer")
	case 1:
		return set.Keys[0], nil
	}
	return set, nil
}

// classify maps a jwt parse error to this package's errors. rc holds what
// the parser decoded; it is trusted only once the signature has checked
// out, which jwt guarantees for ErrTokenInvalidClaims.
func (a *Authenticator) classify(err error, rc *jwt.RegisteredClaims) error {
	var ie *invalidError
	switch {
	case errors.As(err, &ie):
		return ie
	case errors.Is(err, jwt.ErrTokenMalformed):
		return invalid("malformed")
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		return invalid("unsupported algorithm")
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return invalid("bad signature")
	case !errors.Is(err, jwt.ErrTokenInvalidClaims):
		return invalid("unverifiable")
	}
	// The signature is good; report a flaw a new login would not fix before
	// expiry, which one would.
	if rc.Subject == "" {
		return invalid("missing subject")
	}
	if err := checkTimes(rc); err != nil {
		return err
	}
	switch {
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return invalid("missing expiry")
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return invalid("wrong audience")
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return invalid("not valid yet")
	case errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return invalid("issued in the future")
	case errors.Is(err, jwt.ErrTokenExpired) && rc.ExpiresAt != nil:
		return &expiredError{at: rc.ExpiresAt.UTC()}
	}
	return invalid("invalid claims")
}

// checkTimes rejects time claims outside years 1970 to 9999. jwt converts
// seconds from float64 to int64, and an out-of-range value such as 1e300
// becomes whatever the CPU makes of it: on some machines a token that never
// expires, on others one that expired before the epoch.
func checkTimes(rc *jwt.RegisteredClaims) error {
	for _, d := range []*jwt.NumericDate{rc.ExpiresAt, rc.NotBefore, rc.IssuedAt} {
		if d != nil && (d.Year() < 1970 || d.Year() > 9999) {
			return invalid("time claim out of range")
		}
	}
	return nil
}

// invalidError is an ErrInvalidToken with a short reason that is safe to
// show to the client: it names the flaw, never the token's contents.
type invalidError struct{ reason string }

func invalid(reason string) error { return &invalidError{reason: reason} }

func (e *invalidError) Error() string { return ErrInvalidToken.Error() + ": " + e.reason }
func (e *invalidError) Unwrap() error { return ErrInvalidToken }

// expiredError is an ErrExpired that remembers when the token expired, so
// the gRPC edge can tell the user.
type expiredError struct{ at time.Time }

func (e *expiredError) Error() string {
	return ErrExpired.Error() + " at " + e.at.Format(time.RFC3339)
}
func (e *expiredError) Unwrap() error { return ErrExpired }
