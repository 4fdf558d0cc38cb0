package auth

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestLoadOrCreateKey(t *testing.T) {
	// The directory does not exist yet, as on a server's first start.
	dir := filepath.Join(t.TempDir(), "data")
	k1, err := LoadOrCreateKey(dir)
	if err != nil {
		t.Fatalf("first LoadOrCreateKey: %v", err)
	}
	if len(k1) != MinKeySize {
		t.Fatalf("key is %d bytes, want %d", len(k1), MinKeySize)
	}
	if bytes.Equal(k1, make([]byte, MinKeySize)) {
		t.Fatal("key is all zeros")
	}

	path := filepath.Join(dir, KeyFileName)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if mode := fi.Mode().Perm(); mode != 0o600 {
		t.Errorf("key file mode = %v, want 0600", mode)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(data)); got != hex.EncodeToString(k1) {
		t.Errorf("key file holds %q, want the hex of the returned key", got)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("dir holds %d entries, want only the key file (temp file left behind?)", len(entries))
	}

	k2, err := LoadOrCreateKey(dir)
	if err != nil {
		t.Fatalf("second LoadOrCreateKey: %v", err)
	}
	if !bytes.Equal(k1, k2) {
		t.Fatal("second call returned a different key")
	}

	// A token issued before a restart still verifies after it.
	a1 := mustNew(t, k1)
	tok, _, err := a1.Issue("alice")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mustNew(t, k2).Verify(tok); err != nil {
		t.Fatalf("token from before reopening: %v", err)
	}

	// Another directory gets another key.
	k3, err := LoadOrCreateKey(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(k1, k3) {
		t.Fatal("two directories got the same key")
	}
}

func TestLoadOrCreateKeyRefusesDamagedFile(t *testing.T) {
	for _, tc := range []struct {
		name    string
		content string
	}{
		{"not hex", "this is not a key\n"},
		{"too short", hex.EncodeToString(make([]byte, 16)) + "\n"},
		{"empty", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, KeyFileName)
			if err := os.WriteFile(path, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := LoadOrCreateKey(dir); err == nil {
				t.Fatal("LoadOrCreateKey accepted a damaged key file")
			}
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if string(data) != tc.content {
				t.Fatal("LoadOrCreateKey replaced a damaged key file")
			}
		})
	}
}

func TestLoadPublicKey(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	smallRSA, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	edPub, edPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pkix := func(pub any) []byte {
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	}
	privDER, err := x509.MarshalPKCS8PrivateKey(edPriv)
	if err != nil {
		t.Fatal(err)
	}
	privPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: privDER})
	other := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: []byte("whatever")})

	for _, tc := range []struct {
		name    string
		content []byte
		want    any
		errLike string
	}{
		{name: "RSA", content: pkix(&rsaKey.PublicKey), want: &rsaKey.PublicKey},
		{name: "ECDSA", content: pkix(&ecKey.PublicKey), want: &ecKey.PublicKey},
		{name: "Ed25519", content: pkix(edPub), want: edPub},
		{name: "RSA PKCS1", content: pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&rsaKey.PublicKey)}), want: &rsaKey.PublicKey},
		{name: "after another block", content: append(append([]byte("comment\n"), other...), pkix(edPub)...), want: edPub},
		{name: "private key only", content: privPEM, errLike: "private key"},
		{name: "empty", content: nil, errLike: "no PEM"},
		{name: "not PEM", content: []byte("-----BEGIN nonsense"), errLike: "no PEM"},
		{name: "corrupt DER", content: pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte{0x30, 0x03, 1, 2, 3}}), errLike: "public key"},
		{name: "weak RSA", content: pkix(&smallRSA.PublicKey), errLike: "1024 bits"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "key.pem")
			if err := os.WriteFile(path, tc.content, 0o644); err != nil {
				t.Fatal(err)
			}
			got, err := LoadPublicKey(path)
			if tc.errLike != "" {
				if err == nil || !strings.Contains(err.Error(), tc.errLike) {
					t.Fatalf("err = %v, want one mentioning %q", err, tc.errLike)
				}
				return
			}
			if err != nil {
				t.Fatalf("LoadPublicKey: %v", err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %T %v, want %T %v", got, got, tc.want, tc.want)
			}
		})
	}

	if _, err := LoadPublicKey(filepath.Join(t.TempDir(), "missing.pem")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing file: err = %v, want fs.ErrNotExist", err)
	}
}
