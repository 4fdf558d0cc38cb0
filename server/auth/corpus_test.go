package auth

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestFuzzCorpus checks that each checked-in seed of FuzzVerify still is
// what its name says, so the corpus keeps steering the fuzzer to the paths
// it was written for (a valid token that stopped verifying would leave the
// success path unexplored).
func TestFuzzCorpus(t *testing.T) {
	a := fuzzSetup(t)
	want := map[string]error{
		"valid_token":      nil,
		"valid_external":   nil,
		"alg_none":         ErrInvalidToken,
		"expired":          ErrExpired,
		"forged_signature": ErrInvalidToken,
		"exp_1e300":        ErrInvalidToken,
		"garbage":          ErrInvalidToken,
		"garbage_segments": ErrInvalidToken,
		"huge_header":      ErrInvalidToken,
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzVerify")
	for name, wantErr := range want {
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil {
				t.Fatal(err)
			}
			header, arg, ok := strings.Cut(strings.TrimSpace(string(data)), "\n")
			if !ok || header != "go test fuzz v1" || !strings.HasPrefix(arg, "string(") || !strings.HasSuffix(arg, ")") {
				t.Fatalf("not a one-string corpus file: %q", data)
			}
			token, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(arg, "string("), ")"))
			if err != nil {
				t.Fatal(err)
			}
			_, err = a.Verify(token)
			if wantErr == nil && err != nil || !errors.Is(err, wantErr) {
				t.Fatalf("Verify = %v, want %v", err, wantErr)
			}
		})
	}
}
