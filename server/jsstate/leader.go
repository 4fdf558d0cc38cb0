package jsstate

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/parleychat/parley/server/jsget"
)

// get reads key from kv. A KV Get is a direct get, which any replica may
// answer, and a replica a moment behind has not yet got what another node
// just wrote: a user registered through one node would be unknown to the
// next call through another. So a miss is asked again of the bucket's
// stream leader, which has every acknowledged write. A missing or deleted
// key is an error wrapping jetstream.ErrKeyNotFound (see missing).
func (s *State) get(ctx context.Context, kv jetstream.KeyValue, key string) (value []byte, rev uint64, err error) {
	e, err := kv.Get(ctx, key)
	if err == nil {
		return e.Value(), e.Revision(), nil
	}
	if !missing(err) {
		return nil, 0, err
	}
	return s.leaderLast(ctx, kv.Bucket(), key)
}

// leaderLast asks the leader of bucket's stream for key's newest entry.
func (s *State) leaderLast(ctx context.Context, bucket, key string) ([]byte, uint64, error) {
	m, err := jsget.Leader(ctx, s.js.Conn(), "KV_"+bucket, jsget.Request{LastFor: "$KV." + bucket + "." + key})
	switch {
	case errors.Is(err, jsget.ErrNotFound):
		return nil, 0, fmt.Errorf("leader get %s: %w", key, jetstream.ErrKeyNotFound)
	case err != nil:
		return nil, 0, fmt.Errorf("leader get %s: %w", key, err)
	}
	if op := m.Header.Get("KV-Operation"); op == "DEL" || op == "PURGE" {
		return nil, 0, fmt.Errorf("leader get %s: %w", key, jetstream.ErrKeyDeleted)
	}
	return m.Data, m.Seq, nil
}
