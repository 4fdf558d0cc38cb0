package auth

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// KeyFileName is the name of the signing key file inside the directory given
// to LoadOrCreateKey.
const KeyFileName = "jwt-signing.key"

// LoadOrCreateKey returns the HS256 signing key kept in dir/jwt-signing.key,
// creating dir (mode 0700) and the key the first time: 32 random bytes,
// hex-encoded, in a file of mode 0600. The file is written to a temporary
// name, synced, then renamed into place and the directory synced, so a crash
// leaves either no key or a whole one, never a torn file that would later
// fail every token. An existing file that does not hold at least MinKeySize
// hex-encoded bytes is an error, not replaced: replacing it would silently
// log every user out.
//
// Concurrent first calls on one directory are not coordinated; the last
// rename wins. parleyd's store holds a lock on the same directory, so only
// one server creates the key.
func LoadOrCreateKey(dir string) ([]byte, error) {
	path := filepath.Join(dir, KeyFileName)
	key, err := readKey(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return key, err
	}

	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("auth: create key directory: %w", err)
	}
	key = make([]byte, MinKeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("auth: generate signing key: %w", err)
	}
	if err := writeFileAtomic(dir, path, []byte(hex.EncodeToString(key)+"\n")); err != nil {
		return nil, fmt.Errorf("auth: write signing key: %w", err)
	}
	return key, nil
}

func readKey(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("auth: read signing key: %w", err)
	}
	key, err := hex.DecodeString(string(bytes.TrimSpace(data)))
	if err != nil {
		return nil, fmt.Errorf("auth: signing key %s is not hex: %w", path, err)
	}
	if len(key) < MinKeySize {
		return nil, fmt.Errorf("auth: signing key %s holds %d bytes, need at least %d", path, len(key), MinKeySize)
	}
	return key, nil
}

// writeFileAtomic puts data at path (mode 0600) by way of a temporary file
// in dir, so that readers see the old state or the new one and nothing in
// between.
func writeFileAtomic(dir, path string, data []byte) (err error) {
	// CreateTemp makes the file with mode 0600, so the key is never readable
	// by others, not even briefly.
	f, err := os.CreateTemp(dir, "."+KeyFileName+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = os.Remove(tmp)
		}
	}()
	if _, err = f.Write(data); err != nil {
		_ = f.Close()
		return err
	}
	if err = f.Sync(); err != nil {
		_ = f.Close()
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp, path); err != nil {
		return err
	}
	// Without syncing the directory the rename itself may not survive a
	// crash, and a key that vanishes invalidates every token issued with it.
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	if err = d.Sync(); err != nil {
		_ = d.Close()
		return err
	}
	return d.Close()
}

// LoadPublicKey reads the PEM file at path and returns the public key of an
// external token issuer, for WithExternalIssuer: an *rsa.PublicKey, an
// *ecdsa.PublicKey or an ed25519.PublicKey. It takes the first "PUBLIC KEY"
// (PKIX) block, or an "RSA PUBLIC KEY" (PKCS #1) block, and skips other
// blocks. A file holding only a private key is refused with a hint, since
// the issuer's private key does not belong on this server.
func LoadPublicKey(path string) (crypto.PublicKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("auth: read public key: %w", err)
	}
	sawPrivate := false
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		switch block.Type {
		case "PUBLIC KEY":
			pub, err := x509.ParsePKIXPublicKey(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("auth: public key %s: %w", path, err)
			}
			if _, err := algorithmsFor(pub); err != nil {
				return nil, fmt.Errorf("auth: public key %s: %w", path, err)
			}
			return pub, nil
		case "RSA PUBLIC KEY":
			pub, err := x509.ParsePKCS1PublicKey(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("auth: public key %s: %w", path, err)
			}
			if _, err := algorithmsFor(pub); err != nil {
				return nil, fmt.Errorf("auth: public key %s: %w", path, err)
			}
			return pub, nil
		case "PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY", "ENCRYPTED PRIVATE KEY":
			sawPrivate = true
		}
	}
	if sawPrivate {
		return nil, fmt.Errorf("auth: %s holds a private key; give the issuer's public key (openssl pkey -pubout)", path)
	}
	return nil, fmt.Errorf("auth: %s holds no PEM \"PUBLIC KEY\" block", path)
}
