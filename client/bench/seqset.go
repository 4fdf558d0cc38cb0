package bench

import "math/bits"

// seqSet is a set of small counters (a sender's message numbers) that
// stays small when they arrive roughly in order: every counter below base
// is in the set, and words holds one bit per counter from base on. Words
// that fill up are dropped from the front. It is not safe for concurrent
// use.
type seqSet struct {
	base  uint64 // a multiple of 64
	words []uint64
	n     uint64 // members
}

// add inserts x and reports whether it was new.
func (s *seqSet) add(x uint64) bool {
	if x < s.base {
		return false
	}
	w := int((x - s.base) / 64)
	for w >= len(s.words) {
		s.words = append(s.words, 0)
	}
	bit := uint64(1) << ((x - s.base) % 64)
	if s.words[w]&bit != 0 {
		return false
	}
	s.words[w] |= bit
	s.n++
	for len(s.words) > 0 && s.words[0] == ^uint64(0) {
		s.words = s.words[1:]
		s.base += 64
	}
	return true
}

// has reports whether x is in the set.
func (s *seqSet) has(x uint64) bool {
	if x < s.base {
		return true
	}
	w := int((x - s.base) / 64)
	return w < len(s.words) && s.words[w]&(uint64(1)<<((x-s.base)%64)) != 0
}

// len returns the number of members.
func (s *seqSet) len() uint64 { return s.n }

// missing counts the members of want that s lacks.
func (s *seqSet) missing(want *seqSet) uint64 {
	var n uint64
	// Below both bases every counter is in both sets.
	lo := min(s.base, want.base)
	for x := lo; x < want.base; x++ {
		if !s.has(x) {
			n++
		}
	}
	for i, w := range want.words {
		for w != 0 {
			b := uint64(bits.TrailingZeros64(w))
			w &= w - 1
			if !s.has(want.base + uint64(i)*64 + b) {
				n++
			}
		}
	}
	return n
}
