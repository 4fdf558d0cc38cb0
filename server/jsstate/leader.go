package jsstate

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
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
	body, err := json.Marshal(struct {
		LastFor string `json:"last_by_subj"`
	}{"$KV." + bucket + "." + key})
	if err != nil {
		return nil, 0, err
	}
	resp, err := s.js.Conn().RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET.KV_"+bucket, body)
	if err != nil {
		return nil, 0, fmt.Errorf("leader get %s: %w", key, err)
	}
	var r struct {
		Error   *jetstream.APIError `json:"error"`
		Message *struct {
			Seq  uint64 `json:"seq"`
			Data []byte `json:"data"`
			Hdrs []byte `json:"hdrs"`
		} `json:"message"`
	}
	if err := json.Unmarshal(resp.Data, &r); err != nil {
		return nil, 0, fmt.Errorf("leader get %s: %w", key, err)
	}
	switch {
	case r.Error != nil && r.Error.ErrorCode == jetstream.JSErrCodeMessageNotFound, r.Error == nil && r.Message == nil:
		return nil, 0, fmt.Errorf("leader get %s: %w", key, jetstream.ErrKeyNotFound)
	case r.Error != nil:
		return nil, 0, fmt.Errorf("leader get %s: %w", key, r.Error)
	}
	if len(r.Message.Hdrs) > 0 {
		h, err := nats.DecodeHeadersMsg(r.Message.Hdrs)
		if err != nil {
			return nil, 0, fmt.Errorf("leader get %s: headers: %w", key, err)
		}
		if op := h.Get("KV-Operation"); op == "DEL" || op == "PURGE" {
			return nil, 0, fmt.Errorf("leader get %s: %w", key, jetstream.ErrKeyDeleted)
		}
	}
	return r.Message.Data, r.Message.Seq, nil
}
