package store

import (
	"hash/maphash"
	"sync/atomic"

	bolt "go.etcd.io/bbolt"
)

// dedupFilter is a Bloom filter over every dedup key the store holds, so
// that a send with a new client message id (nearly every send) is told
// "not seen" without a read transaction. It may answer "maybe" for a key it
// never saw, never "no" for one it did: Open adds every key in the index,
// and pending.add adds each new one before its append is acknowledged,
// which is before the index can hold it. Keys are never removed; past a
// few million keys the filter says "maybe" more and more often, which
// costs a lookup, not a wrong answer. Safe for concurrent use.
type dedupFilter struct {
	seed maphash.Seed
	bits []atomic.Uint64
}

// filterBits is the filter's size: 1 MiB, about 1% false positives at a
// million keys.
const filterBits = 1 << 23

// filterHashes is the number of bits each key sets.
const filterHashes = 4

func newDedupFilter() *dedupFilter {
	return &dedupFilter{seed: maphash.MakeSeed(), bits: make([]atomic.Uint64, filterBits/64)}
}

// hash hashes the bytes of dedupKey(sender, id) without building them.
func (f *dedupFilter) hash(sender, id string) uint64 {
	var h maphash.Hash
	h.SetSeed(f.seed)
	h.WriteString(sender)
	h.WriteByte(0)
	h.WriteString(id)
	return h.Sum64()
}

// bits returns the positions of the key with hash h (double hashing: the
// hash's halves give the first position and the stride).
func bits(h uint64) (at [filterHashes]uint64) {
	a, b := h&0xffffffff, h>>32|1
	for i := range at {
		at[i] = (a + uint64(i)*b) % filterBits
	}
	return at
}

// add sets the bits of the key with hash h.
func (f *dedupFilter) add(h uint64) {
	for _, bit := range bits(h) {
		f.bits[bit/64].Or(1 << (bit % 64))
	}
}

// mayHold reports whether the key with hash h may be in the index.
func (f *dedupFilter) mayHold(h uint64) bool {
	for _, bit := range bits(h) {
		if f.bits[bit/64].Load()&(1<<(bit%64)) == 0 {
			return false
		}
	}
	return true
}

// fill adds every key of the dedup index.
func (f *dedupFilter) fill(tx *bolt.Tx) error {
	return tx.Bucket(bucketDedup).ForEach(func(k, _ []byte) error {
		var h maphash.Hash
		h.SetSeed(f.seed)
		h.Write(k)
		f.add(h.Sum64())
		return nil
	})
}
