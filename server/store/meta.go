package store

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

// User is a registered account.
type User struct {
	ID           string    `json:"id"`
	DisplayName  string    `json:"display_name,omitempty"`
	PasswordHash []byte    `json:"password_hash"`
	CreatedAt    time.Time `json:"created_at"`
	// DeletedAt is when the account was deleted; zero while it exists. A
	// deleted user keeps its record, without password or display name, so
	// that its id stays taken.
	DeletedAt time.Time `json:"deleted_at,omitzero"`
}

// Deleted reports whether the account was deleted.
func (u User) Deleted() bool { return !u.DeletedAt.IsZero() }

// Tombstone is what DeleteUser keeps of u.
func (u User) Tombstone(at time.Time) User {
	return User{ID: u.ID, CreatedAt: u.CreatedAt, DeletedAt: at}
}

// Conversation kinds, as stored.
const (
	KindDirect = "direct"
	KindRoom   = "room"
	KindGroup  = "group"
)

// Conversation is a conversation's metadata. Members is kept sorted.
type Conversation struct {
	ID        string    `json:"id"`
	Kind      string    `json:"kind"`
	Title     string    `json:"title,omitempty"`
	Owner     string    `json:"owner,omitempty"`
	Members   []string  `json:"members"`
	CreatedAt time.Time `json:"created_at"`
}

// IsMember reports whether user is among c's members.
func (c *Conversation) IsMember(user string) bool {
	_, ok := slices.BinarySearch(c.Members, user)
	return ok
}

// CreateUser stores a new user; ErrExists if the id is taken.
func (s *Store) CreateUser(u User) error {
	data, err := json.Marshal(u)
	if err != nil {
		return fmt.Errorf("store: encode user: %w", err)
	}
	return s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketUsers)
		if b.Get([]byte(u.ID)) != nil {
			return fmt.Errorf("user %q: %w", u.ID, ErrExists)
		}
		return b.Put([]byte(u.ID), data)
	})
}

// User returns the user with id; ErrNotFound if there is none.
func (s *Store) User(id string) (User, error) {
	var u User
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketUsers).Get([]byte(id))
		if v == nil {
			return fmt.Errorf("user %q: %w", id, ErrNotFound)
		}
		return json.Unmarshal(v, &u)
	})
	return u, err
}

// DeleteUser marks the user with id deleted at at (see User.DeletedAt);
// ErrNotFound if there is none. Deleting a deleted user changes nothing.
func (s *Store) DeleteUser(id string, at time.Time) error {
	return s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketUsers)
		v := b.Get([]byte(id))
		if v == nil {
			return fmt.Errorf("user %q: %w", id, ErrNotFound)
		}
		var u User
		if err := json.Unmarshal(v, &u); err != nil {
			return fmt.Errorf("store: decode user %q: %w", id, err)
		}
		if u.Deleted() {
			return nil
		}
		data, err := json.Marshal(u.Tombstone(at))
		if err != nil {
			return fmt.Errorf("store: encode user: %w", err)
		}
		return b.Put([]byte(id), data)
	})
}

// SetLastSeen records when each user was last seen online, in one
// commit. A time never moves back: an older one than stored is ignored.
func (s *Store) SetLastSeen(seen map[string]time.Time) error {
	if len(seen) == 0 {
		return nil
	}
	return s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketLastSeen)
		for user, at := range seen {
			if old := b.Get([]byte(user)); len(old) == 8 && int64(binary.BigEndian.Uint64(old)) >= at.UnixNano() {
				continue
			}
			if err := b.Put([]byte(user), binary.BigEndian.AppendUint64(nil, uint64(at.UnixNano()))); err != nil {
				return err
			}
		}
		return nil
	})
}

// LastSeen returns when user was last seen online, or the zero time if
// that was never recorded.
func (s *Store) LastSeen(user string) (time.Time, error) {
	var at time.Time
	err := s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketLastSeen).Get([]byte(user)); len(v) == 8 {
			at = time.Unix(0, int64(binary.BigEndian.Uint64(v))).UTC()
		}
		return nil
	})
	return at, err
}

// Conversation returns the conversation with id; ErrNotFound if none.
func (s *Store) Conversation(id string) (Conversation, error) {
	var c Conversation
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		c, err = getConversation(tx, id)
		return err
	})
	return c, err
}

func getConversation(tx *bolt.Tx, id string) (Conversation, error) {
	var c Conversation
	v := tx.Bucket(bucketConvs).Get([]byte(id))
	if v == nil {
		return c, fmt.Errorf("conversation %q: %w", id, ErrNotFound)
	}
	if err := json.Unmarshal(v, &c); err != nil {
		return c, fmt.Errorf("conversation %q: decode: %w", id, err)
	}
	return c, nil
}

func putConversation(tx *bolt.Tx, c *Conversation, old []string) error {
	slices.Sort(c.Members)
	c.Members = slices.Compact(c.Members)
	data, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("conversation %q: encode: %w", c.ID, err)
	}
	if err := tx.Bucket(bucketConvs).Put([]byte(c.ID), data); err != nil {
		return err
	}
	// Only the members who came or went touch the index, so that a join
	// costs the same in a room of ten members as in one of ten thousand.
	added, removed := DiffMembers(old, c.Members)
	index := tx.Bucket(bucketUserConvs)
	for _, m := range removed {
		if b := index.Bucket([]byte(m)); b != nil {
			if err := b.Delete([]byte(c.ID)); err != nil {
				return err
			}
		}
	}
	for _, m := range added {
		b, err := index.CreateBucketIfNotExists([]byte(m))
		if err != nil {
			return err
		}
		if err := b.Put([]byte(c.ID), nil); err != nil {
			return err
		}
	}
	return nil
}

// DiffMembers returns the members of after that are not in before and the
// members of before that are not in after, each in order. Both must be
// sorted and free of repeats, as stored conversations' Members are; it
// walks each once.
func DiffMembers(before, after []string) (added, removed []string) {
	i, j := 0, 0
	for i < len(before) || j < len(after) {
		switch {
		case j == len(after) || i < len(before) && before[i] < after[j]:
			removed = append(removed, before[i])
			i++
		case i == len(before) || after[j] < before[i]:
			added = append(added, after[j])
			j++
		default:
			i++
			j++
		}
	}
	return added, removed
}

// CreateConversation stores a new conversation and indexes its members;
// ErrExists if the id is taken.
func (s *Store) CreateConversation(c Conversation) error {
	return s.update(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketConvs).Get([]byte(c.ID)) != nil {
			return fmt.Errorf("conversation %q: %w", c.ID, ErrExists)
		}
		return putConversation(tx, &c, nil)
	})
}

// UpdateConversation reads conversation id, lets fn change it and stores the
// result, all in one transaction, so concurrent membership changes cannot
// overwrite each other. fn's error aborts the change and is returned as is.
func (s *Store) UpdateConversation(id string, fn func(c *Conversation) error) (Conversation, error) {
	var out Conversation
	err := s.update(func(tx *bolt.Tx) error {
		c, err := getConversation(tx, id)
		if err != nil {
			return err
		}
		old := slices.Clone(c.Members)
		if err := fn(&c); err != nil {
			return err
		}
		if err := putConversation(tx, &c, old); err != nil {
			return err
		}
		out = c
		return nil
	})
	return out, err
}

// UserConversations returns the ids of the conversations user is a member of.
func (s *Store) UserConversations(user string) ([]string, error) {
	var ids []string
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketUserConvs).Bucket([]byte(user))
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, _ []byte) error {
			ids = append(ids, string(k))
			return nil
		})
	})
	return ids, err
}
