package jsstate

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parleychat/parley/server/store"
)

// Benchmarks run against a real three-node cluster on loopback, so they
// measure round trips to JetStream (R3), not this package's own cost.

func BenchmarkJoin(b *testing.B) {
	cl := startCluster(b)
	s := cl.open(b, 0, cl.nextPrefix(b))
	const rooms = 16
	for i := range rooms {
		if err := s.CreateConversation(store.Conversation{ID: fmt.Sprintf("room:r%d", i), Kind: store.KindRoom}); err != nil {
			b.Fatal(err)
		}
	}
	var n atomic.Int64
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			if _, err := s.UpdateConversation(fmt.Sprintf("room:r%d", i%rooms), func(c *store.Conversation) error {
				c.Members = append(c.Members, fmt.Sprintf("user%d", i))
				return nil
			}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkUpdateReceipt(b *testing.B) {
	cl := startCluster(b)
	s := cl.open(b, 0, cl.nextPrefix(b))
	var wg sync.WaitGroup
	b.ResetTimer()
	for i := range b.N {
		wg.Add(1)
		s.UpdateReceipt(store.ReceiptUpdate{Conv: "room:bench", User: fmt.Sprintf("u%d", i%64), Read: uint64(i), At: time.Now()},
			func(_ store.Receipt, err error) {
				if err != nil {
					b.Error(err)
				}
				wg.Done()
			})
	}
	wg.Wait()
}

func BenchmarkMayRead(b *testing.B) {
	cl := startCluster(b)
	s := cl.open(b, 0, cl.nextPrefix(b))
	if err := s.CreateConversation(store.Conversation{ID: "room:r", Kind: store.KindRoom, Members: []string{"alice", "bob"}}); err != nil {
		b.Fatal(err)
	}
	id, _, err := s.PutBlob([]byte("hello"), "alice", store.Label{})
	if err != nil {
		b.Fatal(err)
	}
	if err := s.GrantConversation("room:r", []store.BlobRef{{ID: id}}); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for range b.N {
		if _, ok, err := s.MayRead(id, "bob"); err != nil || !ok {
			b.Fatal(ok, err)
		}
	}
}
