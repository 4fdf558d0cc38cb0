package jsstate

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/parleychat/parley/server/store"
)

// CreateUser stores a new user; an error wrapping store.ErrExists if the id
// is taken, on this node or any other. Of two nodes registering one id at
// once, exactly one succeeds: the key is created only if absent.
func (s *State) CreateUser(u store.User) error {
	data, err := json.Marshal(u)
	if err != nil {
		return fmt.Errorf("jsstate: encode user: %w", err)
	}
	return s.op("create user", func(ctx context.Context) error {
		return createOnce(ctx, s.users, token(u.ID), data, fmt.Sprintf("user %q", u.ID))
	})
}

// createOnce creates key with value, or fails with store.ErrExists. A
// retried create whose first attempt was applied but not acknowledged finds
// its own value and counts as success.
func createOnce(ctx context.Context, kv jetstream.KeyValue, key string, value []byte, what string) error {
	_, err := kv.Create(ctx, key, value)
	if err == nil {
		return nil
	}
	if !errors.Is(err, jetstream.ErrKeyExists) {
		return err
	}
	if e, gerr := kv.Get(ctx, key); gerr == nil && string(e.Value()) == string(value) {
		return nil
	}
	return fmt.Errorf("%s: %w", what, store.ErrExists)
}

// User returns the user with id; an error wrapping store.ErrNotFound if
// there is none.
func (s *State) User(id string) (store.User, error) {
	var u store.User
	err := s.op("user", func(ctx context.Context) error {
		v, _, err := s.get(ctx, s.users, token(id))
		if missing(err) {
			return fmt.Errorf("user %q: %w", id, store.ErrNotFound)
		}
		if err != nil {
			return err
		}
		if err := json.Unmarshal(v, &u); err != nil {
			return fmt.Errorf("user %q: decode: %w", id, err)
		}
		return nil
	})
	return u, err
}

// DeleteUser marks the user with id deleted at at (see store.User); an
// error wrapping store.ErrNotFound if there is none. The record is
// rewritten only if unchanged since it was read, so a concurrent change on
// another node is not lost; deleting a deleted user changes nothing.
func (s *State) DeleteUser(id string, at time.Time) error {
	key := token(id)
	return s.op("delete user", func(ctx context.Context) error {
		for attempt := 1; ; attempt++ {
			v, rev, err := s.get(ctx, s.users, key)
			if missing(err) {
				return fmt.Errorf("user %q: %w", id, store.ErrNotFound)
			}
			if err != nil {
				return err
			}
			var u store.User
			if err := json.Unmarshal(v, &u); err != nil {
				return fmt.Errorf("user %q: decode: %w", id, err)
			}
			if u.Deleted() {
				return nil
			}
			data, err := json.Marshal(u.Tombstone(at))
			if err != nil {
				return fmt.Errorf("user %q: encode: %w", id, err)
			}
			if _, err := s.users.Update(ctx, key, data, rev); err != nil {
				if conflict(err) {
					s.casPause(ctx, attempt)
					continue
				}
				return err
			}
			return nil
		}
	})
}

// SetLastSeen records when each user was last seen online. Each time is
// kept only if it is newer than the stored one (a compare-and-set), so two
// nodes writing at once cannot move it back.
func (s *State) SetLastSeen(seen map[string]time.Time) error {
	users := make([]string, 0, len(seen))
	for u := range seen {
		users = append(users, u)
	}
	return s.op("set last seen", func(ctx context.Context) error {
		return parallel(ctx, users, indexParallel, func(ctx context.Context, user string) error {
			at := seen[user].UTC()
			value := []byte(at.Format(time.RFC3339Nano))
			key := token(user)
			for attempt := 1; ; attempt++ {
				e, err := s.lastSeen.Get(ctx, key)
				switch {
				case missing(err):
					_, err = s.lastSeen.Create(ctx, key, value)
				case err != nil:
					return err
				default:
					if old, perr := time.Parse(time.RFC3339Nano, string(e.Value())); perr == nil && !old.Before(at) {
						return nil
					}
					_, err = s.lastSeen.Update(ctx, key, value, e.Revision())
				}
				if err == nil || !conflict(err) {
					return err
				}
				s.casPause(ctx, attempt)
			}
		})
	})
}

// LastSeen returns when user was last seen online, or the zero time if
// that was never recorded.
func (s *State) LastSeen(user string) (time.Time, error) {
	var at time.Time
	err := s.op("last seen", func(ctx context.Context) error {
		v, _, err := s.get(ctx, s.lastSeen, token(user))
		if missing(err) {
			return nil
		}
		if err != nil {
			return err
		}
		at, err = time.Parse(time.RFC3339Nano, string(v))
		return err
	})
	return at, err
}

// signingKeySize matches auth.LoadOrCreateKey's 32 random bytes, the
// minimum auth.New accepts.
const signingKeySize = 32

const keySigningKey = "signing-key"

// SigningKey returns the cluster's JWT signing key, creating 32 random
// bytes the first time any node asks. The key is created only if absent,
// so nodes that start together agree on whichever was written first. The
// returned slice is the caller's.
func (s *State) SigningKey(ctx context.Context) ([]byte, error) {
	if s.isClosed() {
		return nil, fmt.Errorf("jsstate: signing key: %w", store.ErrClosed)
	}
	ctx, cancel := context.WithTimeout(ctx, s.opts.timeout)
	defer cancel()
	fresh := make([]byte, signingKeySize)
	rand.Read(fresh)
	var key []byte
	err := retry(ctx, s.opts.attempt, func(ctx context.Context) error {
		v, _, err := s.get(ctx, s.meta, keySigningKey)
		if err == nil {
			key = v
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyNotFound) {
			return err
		}
		if _, err := s.meta.Create(ctx, keySigningKey, fresh); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
			return err
		}
		// Read back rather than trust our own create: another node's may
		// have won. Through the leader on a miss, like every read of
		// what another node may have just written: a replica a moment
		// behind would answer "not found" for the key that Create has
		// just called taken.
		key, _, err = s.get(ctx, s.meta, keySigningKey)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("jsstate: signing key: %w", err)
	}
	if len(key) < signingKeySize {
		return nil, fmt.Errorf("jsstate: signing key in bucket %s is %d bytes, need at least %d", s.meta.Bucket(), len(key), signingKeySize)
	}
	return key, nil
}
