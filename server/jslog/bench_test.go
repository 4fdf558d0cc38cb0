package jslog

import (
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/parleychat/parley/server/natstest"
	"github.com/parleychat/parley/server/router"
)

// BenchmarkLog measures the message plane on a three-node cluster on
// loopback (R3, file storage, nats-server's default sync interval): the
// publish round trip of one conversation, publishes to many conversations
// at once, and the reads behind History and catch-up.
//
//	go test -run - -bench . ./server/jslog
func BenchmarkLog(b *testing.B) {
	c := natstest.Start(b, natstest.Options{})
	opts := names()
	a := node(b, c, 0, opts...)
	other := node(b, c, 1, opts...)
	var ids atomic.Int64
	next := func() string { return fmt.Sprint(ids.Add(1)) }

	b.Run("PublishOneConversation", func(b *testing.B) {
		for b.Loop() {
			benchPublish(b, a, post("room:one", "alice", next()))
		}
	})
	b.Run("PublishManyConversations", func(b *testing.B) {
		var convs atomic.Int64
		b.SetParallelism(32) // 32 senders per CPU, each in a conversation of its own
		b.RunParallel(func(pb *testing.PB) {
			conv := fmt.Sprintf("room:c%d", convs.Add(1))
			for pb.Next() {
				benchPublish(b, a, post(conv, "alice", next()))
			}
		})
	})

	// A conversation of 1000 messages among others' traffic.
	const conv = "room:history"
	var pending []<-chan error
	for i := range 1000 {
		pending = append(pending, benchPublishAsync(b, a, post(conv, "alice", next())))
		pending = append(pending, benchPublishAsync(b, other, post(fmt.Sprintf("room:noise%d", i%7), "bob", next())))
	}
	for _, ch := range pending {
		if err := <-ch; err != nil {
			b.Fatal(err)
		}
	}
	for _, limit := range []int{20, 50} {
		b.Run(fmt.Sprintf("Before%d", limit), func(b *testing.B) {
			for b.Loop() {
				if recs, _, err := other.Before(conv, 0, limit); err != nil || len(recs) != limit {
					b.Fatalf("Before: %d, %v", len(recs), err)
				}
			}
		})
		b.Run(fmt.Sprintf("Range%d", limit), func(b *testing.B) {
			for b.Loop() {
				if recs, _, err := other.Range(conv, 0, 0, limit); err != nil || len(recs) != limit {
					b.Fatalf("Range: %d, %v", len(recs), err)
				}
			}
		})
	}
	b.Run("CatchupFromTheStream1000", func(b *testing.B) {
		for b.Loop() {
			var n int
			var after uint64
			sub := &recorder{}
			for {
				frames, next, live, err := other.Catchup(conv, after, 256, sub)
				if err != nil {
					b.Fatal(err)
				}
				n += len(frames)
				if live {
					break
				}
				after = next
			}
			other.Unsubscribe(conv, sub)
			if n != 1000 {
				b.Fatalf("caught up %d, want 1000", n)
			}
		}
	})
}

func benchPublishAsync(b *testing.B, l *Log, m router.Message) <-chan error {
	ch := make(chan error, 1)
	if err := l.Publish(b.Context(), m, func(_ router.Result, err error) { ch <- err }); err != nil {
		ch <- err
	}
	return ch
}

func benchPublish(b *testing.B, l *Log, m router.Message) {
	if err := <-benchPublishAsync(b, l, m); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkPublishSync compares what an ack costs with nats-server's
// default sync interval (the write reaches the OS before the ack; fsync
// every 2 minutes) and with sync_interval: always (fsync before the ack),
// the setting the shipped cluster configuration uses.
//
//	go test -run - -bench PublishSync ./server/jslog
func BenchmarkPublishSync(b *testing.B) {
	for _, always := range []bool{false, true} {
		b.Run(fmt.Sprintf("always=%v", always), func(b *testing.B) {
			c := natstest.Start(b, natstest.Options{SyncAlways: always})
			a := node(b, c, 0, names()...)
			var ids atomic.Int64
			next := func() string { return fmt.Sprint(ids.Add(1)) }
			b.Run("OneConversation", func(b *testing.B) {
				for b.Loop() {
					benchPublish(b, a, post("room:one", "alice", next()))
				}
			})
			b.Run("ManyConversations", func(b *testing.B) {
				var convs atomic.Int64
				b.SetParallelism(32)
				b.RunParallel(func(pb *testing.PB) {
					conv := fmt.Sprintf("room:c%d", convs.Add(1))
					for pb.Next() {
						benchPublish(b, a, post(conv, "alice", next()))
					}
				})
			})
		})
	}
}
