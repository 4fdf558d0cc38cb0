package auth

import (
	"errors"
	"fmt"

	"golang.org/x/crypto/bcrypt"
)

// MaxPasswordLen is the longest password, in bytes, that bcrypt uses in
// full. Longer passwords are refused rather than truncated, because two
// passwords sharing their first 72 bytes would otherwise hash alike.
const MaxPasswordLen = 72

// unknownUserHash is a bcrypt hash at bcrypt.DefaultCost of a password no
// one is given. CheckPassword compares against it when there is no stored
// hash, so that a login for an unknown user costs as much as a wrong
// password and the two cannot be told apart by timing.
const unknownUserHash = "$2a$10$ZeCLvm.WNfKIUEciWj8tBej4YiDIRYnafx1XXuv.7zDrQqN7VQvmO"

// HashPassword returns the bcrypt hash of password at the given cost; a cost
// of 0 means bcrypt.DefaultCost. Any other cost outside
// [bcrypt.MinCost, bcrypt.MaxCost] is an error, rather than bcrypt's silent
// fallback to the default. A password longer than MaxPasswordLen bytes is
// refused with ErrPasswordTooLong. Password policy (minimum length, allowed
// characters) is the caller's.
func HashPassword(password string, cost int) ([]byte, error) {
	if len(password) > MaxPasswordLen {
		return nil, fmt.Errorf("hash password: %w (got %d bytes)", ErrPasswordTooLong, len(password))
	}
	if cost == 0 {
		cost = bcrypt.DefaultCost
	}
	if cost < bcrypt.MinCost || cost > bcrypt.MaxCost {
		return nil, fmt.Errorf("hash password: bcrypt cost %d outside [%d, %d]", cost, bcrypt.MinCost, bcrypt.MaxCost)
	}
	h, err := bcrypt.GenerateFromPassword([]byte(password), cost)
	if err != nil {
		return nil, fmt.Errorf("hash password: %w", err)
	}
	return h, nil
}

// CheckPassword reports whether password matches hash, a value returned by
// HashPassword. A mismatch is ErrBadCredentials. A nil or empty hash stands
// for an unknown user: CheckPassword still spends the time of a comparison at
// bcrypt.DefaultCost and returns ErrBadCredentials, so a login handler can
// call it unconditionally. A hash that is not a bcrypt hash is a different
// error, since it means the stored record is damaged, not that the user
// typed the wrong password.
func CheckPassword(hash []byte, password string) error {
	unknown := len(hash) == 0
	if unknown {
		hash = []byte(unknownUserHash)
	}
	// bcrypt would compare only the first 72 bytes, so a longer password
	// could match a hash made from its prefix; HashPassword never hashes
	// such a password, so it can never be right.
	tooLong := len(password) > MaxPasswordLen
	if tooLong {
		password = password[:MaxPasswordLen]
	}
	err := bcrypt.CompareHashAndPassword(hash, []byte(password))
	switch {
	case err == nil && !unknown && !tooLong:
		return nil
	case err == nil, errors.Is(err, bcrypt.ErrMismatchedHashAndPassword):
		return ErrBadCredentials
	default:
		return fmt.Errorf("check password: stored hash unusable: %w", err)
	}
}
