package jsstate

import (
	"errors"
	"strings"
)

// KV keys are NATS subjects below the bucket's prefix: tokens separated by
// '.', each made of [-/_=A-Za-z0-9], none empty. Parley's ids are not:
// conversation ids are dm:alice:bob, room:lobby and group:<24 hex>, and user
// ids from an external token issuer may hold any byte. So every id is
// encoded before it becomes part of a key:
//
//   - token encodes a string as exactly one token: the bytes A-Z, a-z, 0-9,
//     '-' and '_' stand for themselves, every other byte is '=' and two
//     uppercase hex digits (':' is =3A, '.' is =2E), and the empty string is
//     a lone "=". Users and blob ids are encoded this way, so a key's user
//     is always exactly one token and a filter such as "alice.>" selects
//     alice and nobody else.
//   - convKey encodes a conversation id as one token per ':'-separated part,
//     so ':' becomes '.': dm:alice:bob is dm.alice.bob, room:lobby is
//     room.lobby. The number of tokens varies with the id, which is why a
//     conversation is always the last part of a key or is followed by a
//     single-token user that a '*' wildcard matches.
//
// Both encodings are injective (a '.' or '=' inside an id is escaped), so
// decoding a key gives back the id that made it. Ids that chat accepts need
// no escapes at all, which keeps keys readable with the nats CLI.

// token encodes s as a single subject token.
func token(s string) string {
	if s == "" {
		return "="
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if plain(c) {
			b.WriteByte(c)
			continue
		}
		const hex = "0123456789ABCDEF"
		b.WriteByte('=')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&0xf])
	}
	return b.String()
}

func plain(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
}

var errBadKey = errors.New("jsstate: malformed key")

// untoken decodes one token made by token.
func untoken(t string) (string, error) {
	if t == "=" {
		return "", nil
	}
	if !strings.Contains(t, "=") {
		return t, nil
	}
	var b strings.Builder
	for i := 0; i < len(t); i++ {
		if t[i] != '=' {
			b.WriteByte(t[i])
			continue
		}
		if i+2 >= len(t) {
			return "", errBadKey
		}
		hi, ok1 := unhex(t[i+1])
		lo, ok2 := unhex(t[i+2])
		if !ok1 || !ok2 {
			return "", errBadKey
		}
		b.WriteByte(hi<<4 | lo)
		i += 2
	}
	return b.String(), nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// convKey encodes a conversation id as one token per ':'-separated part.
func convKey(id string) string {
	parts := strings.Split(id, ":")
	for i, p := range parts {
		parts[i] = token(p)
	}
	return strings.Join(parts, ".")
}

// unconvKey decodes tokens made by convKey.
func unconvKey(tokens []string) (string, error) {
	if len(tokens) == 0 {
		return "", errBadKey
	}
	parts := make([]string, len(tokens))
	for i, t := range tokens {
		p, err := untoken(t)
		if err != nil {
			return "", err
		}
		parts[i] = p
	}
	return strings.Join(parts, ":"), nil
}
