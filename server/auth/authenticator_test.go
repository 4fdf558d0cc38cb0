package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func TestIssueVerifyRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name   string
		opts   []Option
		user   string
		wantTT time.Duration
		wantIs string
	}{
		{name: "defaults", user: "alice", wantTT: 24 * time.Hour, wantIs: "parley"},
		{name: "custom ttl and issuer", user: "bob", opts: []Option{WithTTL(15 * time.Minute), WithIssuerName("chat.example")}, wantTT: 15 * time.Minute, wantIs: "chat.example"},
		{name: "audience", user: "carol", opts: []Option{WithAudience("parley-api")}, wantTT: 24 * time.Hour, wantIs: "parley"},
		{name: "unicode user", user: "zoë-日本", wantTT: 24 * time.Hour, wantIs: "parley"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// A clock with a sub-second part checks that Issue's expiry
			// agrees with the whole seconds the token carries.
			now := t0.Add(700 * time.Millisecond)
			a := mustNew(t, testKey(1), append(tc.opts, WithClock(fixedClock(now)))...)
			tok, exp, err := a.Issue(tc.user)
			if err != nil {
				t.Fatalf("Issue: %v", err)
			}
			if want := t0.Add(tc.wantTT); !exp.Equal(want) {
				t.Errorf("expiresAt = %v, want %v", exp, want)
			}
			c, err := a.Verify(tok)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			want := Claims{UserID: tc.user, Issuer: tc.wantIs, ExpiresAt: exp}
			if c != want {
				t.Errorf("claims = %+v, want %+v", c, want)
			}
		})
	}
}

func TestIssueRejects(t *testing.T) {
	a := mustNew(t, testKey(1))
	if _, _, err := a.Issue(""); err == nil {
		t.Error("Issue(\"\") succeeded")
	}
	// A user ID that would make a token Verify refuses must fail here, not
	// at the client's first call.
	if _, _, err := a.Issue(strings.Repeat("u", MaxTokenSize)); err == nil {
		t.Error("Issue with a huge user ID succeeded")
	}
}

func TestVerifyExpiry(t *testing.T) {
	issuer := mustNew(t, testKey(1), WithTTL(time.Hour), WithClock(fixedClock(t0)))
	tok, exp, err := issuer.Issue("alice")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		at      time.Time
		leeway  time.Duration
		wantErr error
	}{
		{name: "fresh", at: t0},
		{name: "one second before expiry", at: exp.Add(-time.Second), leeway: 30 * time.Second},
		{name: "within leeway", at: exp.Add(29 * time.Second), leeway: 30 * time.Second},
		{name: "beyond leeway", at: exp.Add(31 * time.Second), leeway: 30 * time.Second, wantErr: ErrExpired},
		{name: "long expired", at: exp.Add(48 * time.Hour), leeway: 30 * time.Second, wantErr: ErrExpired},
		{name: "no leeway, just after", at: exp.Add(time.Second), leeway: 0, wantErr: ErrExpired},
		{name: "issued in the future beyond leeway", at: t0.Add(-time.Minute), leeway: 30 * time.Second, wantErr: ErrInvalidToken},
		{name: "issued in the future within leeway", at: t0.Add(-10 * time.Second), leeway: 30 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := mustNew(t, testKey(1), WithClock(fixedClock(tc.at)), WithLeeway(tc.leeway))
			c, err := v.Verify(tok)
			checkErr(t, err, tc.wantErr)
			if tc.wantErr == nil && c.UserID != "alice" {
				t.Errorf("UserID = %q, want alice", c.UserID)
			}
			if tc.wantErr == ErrExpired && !strings.Contains(err.Error(), exp.Format(time.RFC3339)) {
				t.Errorf("error %q does not say when the token expired (%v)", err, exp)
			}
		})
	}
}

// checkErr fails t unless err matches want and no other sentinel of this
// package (nil want means no error).
func checkErr(t *testing.T, err, want error) {
	t.Helper()
	if want == nil {
		if err != nil {
			t.Fatalf("err = %v, want nil", err)
		}
		return
	}
	if !errors.Is(err, want) {
		t.Fatalf("err = %v, want %v", err, want)
	}
	for _, other := range []error{ErrNoToken, ErrExpired, ErrInvalidToken, ErrBadCredentials} {
		if other != want && errors.Is(err, other) {
			t.Fatalf("err = %v also matches %v", err, other)
		}
	}
}

// external holds generated key pairs for the external-issuer tests.
type external struct {
	rsa, rsa2     *rsa.PrivateKey
	p256, p256b   *ecdsa.PrivateKey
	p384, p521    *ecdsa.PrivateKey
	ed, ed2       ed25519.PrivateKey
	rsaPEM        []byte
	loadedRSA     crypto.PublicKey
	loadedP256    crypto.PublicKey
	loadedP384    crypto.PublicKey
	loadedP521    crypto.PublicKey
	loadedEd25519 crypto.PublicKey
}

func newExternal(t *testing.T) *external {
	t.Helper()
	var e external
	var err error
	if e.rsa, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		t.Fatal(err)
	}
	if e.rsa2, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		t.Fatal(err)
	}
	for _, k := range []struct {
		dst   **ecdsa.PrivateKey
		curve elliptic.Curve
	}{{&e.p256, elliptic.P256()}, {&e.p256b, elliptic.P256()}, {&e.p384, elliptic.P384()}, {&e.p521, elliptic.P521()}} {
		if *k.dst, err = ecdsa.GenerateKey(k.curve, rand.Reader); err != nil {
			t.Fatal(err)
		}
	}
	if _, e.ed, err = ed25519.GenerateKey(rand.Reader); err != nil {
		t.Fatal(err)
	}
	if _, e.ed2, err = ed25519.GenerateKey(rand.Reader); err != nil {
		t.Fatal(err)
	}
	load := func(pub any) crypto.PublicKey {
		path, _ := writePublicPEM(t, pub)
		k, err := LoadPublicKey(path)
		if err != nil {
			t.Fatalf("LoadPublicKey(%T): %v", pub, err)
		}
		return k
	}
	var path string
	path, e.rsaPEM = writePublicPEM(t, &e.rsa.PublicKey)
	if e.loadedRSA, err = LoadPublicKey(path); err != nil {
		t.Fatal(err)
	}
	e.loadedP256 = load(&e.p256.PublicKey)
	e.loadedP384 = load(&e.p384.PublicKey)
	e.loadedP521 = load(&e.p521.PublicKey)
	e.loadedEd25519 = load(e.ed.Public())
	return &e
}

func (e *external) authenticator(t *testing.T, extra ...Option) *Authenticator {
	opts := append([]Option{
		WithClock(fixedClock(t0)),
		WithExternalIssuer("rsa-idp", e.loadedRSA),
		WithExternalIssuer("p256-idp", e.loadedP256),
		WithExternalIssuer("p384-idp", e.loadedP384),
		WithExternalIssuer("p521-idp", e.loadedP521),
		WithExternalIssuer("ed-idp", e.loadedEd25519),
	}, extra...)
	return mustNew(t, testKey(1), opts...)
}

func TestVerifyExternalIssuers(t *testing.T) {
	e := newExternal(t)
	a := e.authenticator(t)
	for _, tc := range []struct {
		name    string
		iss     string
		method  jwt.SigningMethod
		key     any
		wantErr error
		reason  string
	}{
		{name: "RS256", iss: "rsa-idp", method: jwt.SigningMethodRS256, key: e.rsa},
		{name: "RS384", iss: "rsa-idp", method: jwt.SigningMethodRS384, key: e.rsa},
		{name: "RS512", iss: "rsa-idp", method: jwt.SigningMethodRS512, key: e.rsa},
		{name: "ES256", iss: "p256-idp", method: jwt.SigningMethodES256, key: e.p256},
		{name: "ES384", iss: "p384-idp", method: jwt.SigningMethodES384, key: e.p384},
		{name: "ES512", iss: "p521-idp", method: jwt.SigningMethodES512, key: e.p521},
		{name: "EdDSA", iss: "ed-idp", method: jwt.SigningMethodEdDSA, key: e.ed},

		{name: "RSA wrong key", iss: "rsa-idp", method: jwt.SigningMethodRS256, key: e.rsa2, wantErr: ErrInvalidToken, reason: "bad signature"},
		{name: "ECDSA wrong key", iss: "p256-idp", method: jwt.SigningMethodES256, key: e.p256b, wantErr: ErrInvalidToken, reason: "bad signature"},
		{name: "Ed25519 wrong key", iss: "ed-idp", method: jwt.SigningMethodEdDSA, key: e.ed2, wantErr: ErrInvalidToken, reason: "bad signature"},
		{name: "RSA-PSS not allowed", iss: "rsa-idp", method: jwt.SigningMethodPS256, key: e.rsa, wantErr: ErrInvalidToken, reason: "algorithm not allowed"},
		{name: "ECDSA key claiming RSA issuer", iss: "rsa-idp", method: jwt.SigningMethodES256, key: e.p256, wantErr: ErrInvalidToken, reason: "algorithm not allowed"},
		{name: "ES384 for a P-256 issuer", iss: "p256-idp", method: jwt.SigningMethodES384, key: e.p384, wantErr: ErrInvalidToken, reason: "algorithm not allowed"},
		// The classic confusion attack: the public key is public, so
		// whoever uses it as an HMAC secret must not get in.
		{name: "HS256 with RSA public PEM as secret", iss: "rsa-idp", method: jwt.SigningMethodHS256, key: e.rsaPEM, wantErr: ErrInvalidToken, reason: "algorithm not allowed"},
		// The server's own key only speaks for the server's own issuer.
		{name: "HS256 with own key for external issuer", iss: "rsa-idp", method: jwt.SigningMethodHS256, key: testKey(1), wantErr: ErrInvalidToken, reason: "algorithm not allowed"},
		{name: "RS256 for own issuer", iss: "parley", method: jwt.SigningMethodRS256, key: e.rsa, wantErr: ErrInvalidToken, reason: "algorithm not allowed"},
		{name: "unknown issuer", iss: "evil-idp", method: jwt.SigningMethodRS256, key: e.rsa, wantErr: ErrInvalidToken, reason: "unknown issuer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok := sign(t, tc.method, tc.key, goodClaims(tc.iss), nil)
			c, err := a.Verify(tok)
			checkErr(t, err, tc.wantErr)
			if tc.wantErr != nil {
				if !strings.Contains(err.Error(), tc.reason) {
					t.Errorf("err = %v, want reason %q", err, tc.reason)
				}
				return
			}
			if want := (Claims{UserID: "alice", Issuer: tc.iss, ExpiresAt: t0.Add(time.Hour)}); c != want {
				t.Errorf("claims = %+v, want %+v", c, want)
			}
		})
	}
}

func TestVerifyRotatedExternalKeys(t *testing.T) {
	e := newExternal(t)
	a := mustNew(t, testKey(1), WithClock(fixedClock(t0)),
		WithExternalIssuer("idp", e.loadedP256),
		WithExternalIssuer("idp", &e.p256b.PublicKey),
		WithExternalIssuer("idp", e.loadedEd25519),
	)
	for _, tc := range []struct {
		name    string
		method  jwt.SigningMethod
		key     any
		wantErr error
	}{
		{"old key", jwt.SigningMethodES256, e.p256, nil},
		{"new key", jwt.SigningMethodES256, e.p256b, nil},
		{"ed25519 key of same issuer", jwt.SigningMethodEdDSA, e.ed, nil},
		{"key never configured", jwt.SigningMethodEdDSA, e.ed2, ErrInvalidToken},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := a.Verify(sign(t, tc.method, tc.key, goodClaims("idp"), nil))
			checkErr(t, err, tc.wantErr)
		})
	}
}

func TestVerifyRejects(t *testing.T) {
	own := testKey(1)
	a := mustNew(t, own, WithClock(fixedClock(t0)))
	good := sign(t, jwt.SigningMethodHS256, own, goodClaims("parley"), nil)
	without := func(k string) jwt.MapClaims {
		c := goodClaims("parley")
		delete(c, k)
		return c
	}
	with := func(k string, v any) jwt.MapClaims {
		c := goodClaims("parley")
		c[k] = v
		return c
	}
	none, err := jwt.NewWithClaims(jwt.SigningMethodNone, goodClaims("parley")).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(good, ".")
	forgedPayload := sign(t, jwt.SigningMethodHS256, own, with("sub", "mallory"), nil)
	tampered := parts[0] + "." + strings.Split(forgedPayload, ".")[1] + "." + parts[2]

	for _, tc := range []struct {
		name    string
		token   string
		wantErr error
		reason  string
	}{
		{"empty", "", ErrNoToken, ""},
		{"garbage", "not a token", ErrInvalidToken, "malformed"},
		{"three empty parts", "..", ErrInvalidToken, "malformed"},
		{"bad base64", "a.b.c", ErrInvalidToken, "malformed"},
		{"two parts", parts[0] + "." + parts[1], ErrInvalidToken, "malformed"},
		{"alg none", none, ErrInvalidToken, "algorithm not allowed"},
		{"alg none, own signature kept", strings.Join([]string{strings.Split(none, ".")[0], parts[1], parts[2]}, "."), ErrInvalidToken, "algorithm not allowed"},
		{"alg None", sign(t, jwt.SigningMethodHS256, own, goodClaims("parley"), func(h map[string]any) { h["alg"] = "None" }), ErrInvalidToken, "unsupported algorithm"},
		{"HS384 with own key", sign(t, jwt.SigningMethodHS384, own, goodClaims("parley"), nil), ErrInvalidToken, "algorithm not allowed"},
		{"HS256 forged with another key", sign(t, jwt.SigningMethodHS256, testKey(2), goodClaims("parley"), nil), ErrInvalidToken, "bad signature"},
		{"payload swapped under a good signature", tampered, ErrInvalidToken, "bad signature"},
		{"expired and forged", sign(t, jwt.SigningMethodHS256, testKey(2), with("exp", t0.Add(-time.Hour).Unix()), nil), ErrInvalidToken, "bad signature"},
		{"unknown issuer", sign(t, jwt.SigningMethodHS256, own, goodClaims("elsewhere"), nil), ErrInvalidToken, "unknown issuer"},
		{"missing issuer", sign(t, jwt.SigningMethodHS256, own, without("iss"), nil), ErrInvalidToken, "missing issuer"},
		{"missing sub", sign(t, jwt.SigningMethodHS256, own, without("sub"), nil), ErrInvalidToken, "missing subject"},
		{"empty sub", sign(t, jwt.SigningMethodHS256, own, with("sub", ""), nil), ErrInvalidToken, "missing subject"},
		{"expired with empty sub", sign(t, jwt.SigningMethodHS256, own, jwt.MapClaims{"iss": "parley", "exp": t0.Add(-time.Hour).Unix()}, nil), ErrInvalidToken, "missing subject"},
		{"sub not a string", sign(t, jwt.SigningMethodHS256, own, with("sub", 42), nil), ErrInvalidToken, "malformed"},
		{"missing exp", sign(t, jwt.SigningMethodHS256, own, without("exp"), nil), ErrInvalidToken, "missing expiry"},
		{"exp not a number", sign(t, jwt.SigningMethodHS256, own, with("exp", "tomorrow"), nil), ErrInvalidToken, "malformed"},
		{"exp beyond int64", sign(t, jwt.SigningMethodHS256, own, with("exp", 1e300), nil), ErrInvalidToken, "out of range"},
		{"exp in year 10000", sign(t, jwt.SigningMethodHS256, own, with("exp", 253402300800), nil), ErrInvalidToken, "out of range"},
		{"not valid yet", sign(t, jwt.SigningMethodHS256, own, with("nbf", t0.Add(time.Hour).Unix()), nil), ErrInvalidToken, "not valid yet"},
		{"issued in the future", sign(t, jwt.SigningMethodHS256, own, with("iat", t0.Add(time.Hour).Unix()), nil), ErrInvalidToken, "issued in the future"},
		{"unknown critical header", sign(t, jwt.SigningMethodHS256, own, goodClaims("parley"), func(h map[string]any) { h["crit"] = []string{"exp"} }), ErrInvalidToken, "critical"},
		// Correctly signed, so only the size cap can reject it.
		{"over 8 KiB", sign(t, jwt.SigningMethodHS256, own, with("pad", strings.Repeat("x", MaxTokenSize)), nil), ErrInvalidToken, "too large"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := a.Verify(tc.token)
			checkErr(t, err, tc.wantErr)
			if !strings.Contains(err.Error(), tc.reason) {
				t.Errorf("err = %v, want reason %q", err, tc.reason)
			}
			if c != (Claims{}) {
				t.Errorf("claims = %+v with an error, want zero", c)
			}
		})
	}

	// The good token itself passes, so the rejections above are not
	// an artefact of the set-up.
	if _, err := a.Verify(good); err != nil {
		t.Fatalf("good token: %v", err)
	}
	// Just under the cap still verifies: the cap is about size only.
	pad := MaxTokenSize - len(sign(t, jwt.SigningMethodHS256, own, with("pad", ""), nil))
	pad = pad * 3 / 4 // base64 grows 4/3
	if _, err := a.Verify(sign(t, jwt.SigningMethodHS256, own, with("pad", strings.Repeat("x", pad)), nil)); err != nil {
		t.Fatalf("token just under the size cap: %v", err)
	}
}

func TestVerifyAudience(t *testing.T) {
	e := newExternal(t)
	a := e.authenticator(t, WithAudience("parley-api"))
	own, _, err := a.Issue("alice")
	if err != nil {
		t.Fatal(err)
	}
	aud := func(v any) jwt.MapClaims {
		c := goodClaims("ed-idp")
		if v != nil {
			c["aud"] = v
		}
		return c
	}
	for _, tc := range []struct {
		name    string
		token   string
		wantErr error
	}{
		{"own token", own, nil},
		{"external, right audience", sign(t, jwt.SigningMethodEdDSA, e.ed, aud("parley-api"), nil), nil},
		{"external, audience list", sign(t, jwt.SigningMethodEdDSA, e.ed, aud([]string{"other", "parley-api"}), nil), nil},
		{"external, no audience", sign(t, jwt.SigningMethodEdDSA, e.ed, aud(nil), nil), ErrInvalidToken},
		{"external, other audience", sign(t, jwt.SigningMethodEdDSA, e.ed, aud("billing"), nil), ErrInvalidToken},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := a.Verify(tc.token)
			checkErr(t, err, tc.wantErr)
		})
	}
}

func TestNewRejects(t *testing.T) {
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	p224, err := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	edPub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		key  []byte
		opts []Option
	}{
		{"short key", testKey(1)[:31], nil},
		{"nil key", nil, nil},
		{"zero ttl", testKey(1), []Option{WithTTL(0)}},
		{"negative leeway", testKey(1), []Option{WithLeeway(-time.Second)}},
		{"empty issuer", testKey(1), []Option{WithIssuerName("")}},
		{"nil clock", testKey(1), []Option{WithClock(nil)}},
		{"external issuer with own name", testKey(1), []Option{WithExternalIssuer("parley", edPub)}},
		{"external issuer without name", testKey(1), []Option{WithExternalIssuer("", edPub)}},
		{"HMAC secret as external key", testKey(1), []Option{WithExternalIssuer("idp", testKey(2))}},
		{"private key as external key", testKey(1), []Option{WithExternalIssuer("idp", small)}},
		{"nil external key", testKey(1), []Option{WithExternalIssuer("idp", nil)}},
		{"1024-bit RSA", testKey(1), []Option{WithExternalIssuer("idp", &small.PublicKey)}},
		{"P-224", testKey(1), []Option{WithExternalIssuer("idp", &p224.PublicKey)}},
		{"truncated ed25519", testKey(1), []Option{WithExternalIssuer("idp", edPub[:16])}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if a, err := New(tc.key, tc.opts...); err == nil {
				t.Fatalf("New succeeded: %+v", a)
			}
		})
	}
}

func TestNewCopiesKey(t *testing.T) {
	key := testKey(1)
	a := mustNew(t, key, WithClock(fixedClock(t0)))
	tok, _, err := a.Issue("alice")
	if err != nil {
		t.Fatal(err)
	}
	key[0] ^= 0xff
	if _, err := a.Verify(tok); err != nil {
		t.Fatalf("Verify after caller changed its key slice: %v", err)
	}
}

func TestConcurrentUse(t *testing.T) {
	e := newExternal(t)
	a := e.authenticator(t)
	ext := sign(t, jwt.SigningMethodEdDSA, e.ed, goodClaims("ed-idp"), nil)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for range 50 {
				tok, _, err := a.Issue("alice")
				if err != nil {
					t.Errorf("goroutine %d: Issue: %v", i, err)
					return
				}
				for _, s := range []string{tok, ext} {
					if _, err := a.Verify(s); err != nil {
						t.Errorf("goroutine %d: Verify: %v", i, err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
}
