package store

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
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

// Conversations are kept in two buckets, so that a join or a leave writes
// only the member who came or went and decodes no member list:
//
//	convs         id → convRecord's JSON: everything but the members
//	conv_members  id → a bucket whose keys are the members (empty values)
//
// The member keys' order is byte order, which is Go's string order, so a
// cursor reads Members already sorted. A conversation without members may
// have no member bucket. user_convs is the same membership indexed by user
// and changes with it, in the same transaction. Files written before
// conv_members existed held the members in the convs records; Open moves
// them (splitMembers).
var bucketConvMembers = []byte("conv_members")

// convRecord is what the convs bucket holds of a Conversation.
type convRecord struct {
	ID        string    `json:"id"`
	Kind      string    `json:"kind"`
	Title     string    `json:"title,omitempty"`
	Owner     string    `json:"owner,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

func recordOf(c *Conversation) convRecord {
	return convRecord{ID: c.ID, Kind: c.Kind, Title: c.Title, Owner: c.Owner, CreatedAt: c.CreatedAt}
}

func (r convRecord) conversation(members []string) Conversation {
	return Conversation{ID: r.ID, Kind: r.Kind, Title: r.Title, Owner: r.Owner, Members: members, CreatedAt: r.CreatedAt}
}

// same reports whether r and o hold the same fields; CreatedAt compares
// as an instant, as it does once stored.
func (r convRecord) same(o convRecord) bool {
	return r.ID == o.ID && r.Kind == o.Kind && r.Title == o.Title && r.Owner == o.Owner && r.CreatedAt.Equal(o.CreatedAt)
}

func putRecord(tx *bolt.Tx, r convRecord) error {
	data, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("conversation %q: encode: %w", r.ID, err)
	}
	return tx.Bucket(bucketConvs).Put([]byte(r.ID), data)
}

// Conversation returns the conversation with id; ErrNotFound if none.
func (s *Store) Conversation(id string) (Conversation, error) {
	var c Conversation
	err := s.db.View(func(tx *bolt.Tx) error {
		r, err := getRecord(tx, id)
		if err != nil {
			return err
		}
		c = r.conversation(members(tx, id))
		return nil
	})
	return c, err
}

func getRecord(tx *bolt.Tx, id string) (convRecord, error) {
	var r convRecord
	v := tx.Bucket(bucketConvs).Get([]byte(id))
	if v == nil {
		return r, fmt.Errorf("conversation %q: %w", id, ErrNotFound)
	}
	if err := json.Unmarshal(v, &r); err != nil {
		return r, fmt.Errorf("conversation %q: decode: %w", id, err)
	}
	return r, nil
}

// members returns conversation id's members, sorted. They are slices of
// one string, sized beforehand from the bucket's page statistics (a hint:
// they describe the pages as last committed), so that a room of ten
// thousand is read with a few allocations rather than ten thousand that
// the collector would then scan. Keeping one member keeps that string;
// callers keep the whole list anyway.
func members(tx *bolt.Tx, id string) []string {
	b := tx.Bucket(bucketConvMembers).Bucket([]byte(id))
	if b == nil {
		return nil
	}
	st := b.Stats()
	var all strings.Builder
	// Leaf bytes in use count a 16-byte header per key besides the key.
	all.Grow(max(st.LeafInuse+st.InlineBucketInuse-16*st.KeyN, 0))
	ends := make([]int, 0, st.KeyN)
	c := b.Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		all.Write(k)
		ends = append(ends, all.Len())
	}
	if len(ends) == 0 {
		return nil
	}
	joined := all.String()
	out := make([]string, len(ends))
	start := 0
	for i, end := range ends {
		out[i] = joined[start:end]
		start = end
	}
	return out
}

// normalize sorts c's members and drops repeats, as they are stored. An
// update's members are mostly a sorted list with a name or two appended:
// those are moved into place rather than the list sorted again.
func normalize(c *Conversation) {
	m := c.Members
	p := 1
	for p < len(m) && m[p-1] <= m[p] {
		p++
	}
	if len(m)-p > 8 {
		slices.Sort(m)
	} else {
		for ; p < len(m); p++ {
			x := m[p]
			i, _ := slices.BinarySearch(m[:p], x)
			copy(m[i+1:p+1], m[i:p])
			m[i] = x
		}
	}
	c.Members = slices.Compact(m)
}

// putMembers stores the change of conversation id's members from before to
// after, both sorted and free of repeats, in its member keys and the user
// index. Only the members who came or went are written, so that a join
// costs the same in a room of ten members as in one of ten thousand.
func putMembers(tx *bolt.Tx, id string, before, after []string) error {
	added, removed := DiffMembers(before, after)
	if len(added) == 0 && len(removed) == 0 {
		return nil
	}
	key := []byte(id)
	conv, err := tx.Bucket(bucketConvMembers).CreateBucketIfNotExists(key)
	if err != nil {
		return fmt.Errorf("conversation %q: members: %w", id, err)
	}
	index := tx.Bucket(bucketUserConvs)
	for _, m := range removed {
		if err := conv.Delete([]byte(m)); err != nil {
			return err
		}
		if b := index.Bucket([]byte(m)); b != nil {
			if err := b.Delete(key); err != nil {
				return err
			}
		}
	}
	for _, m := range added {
		if err := conv.Put([]byte(m), nil); err != nil {
			return fmt.Errorf("conversation %q: member %q: %w", id, m, err)
		}
		b, err := index.CreateBucketIfNotExists([]byte(m))
		if err != nil {
			return fmt.Errorf("conversation %q: member %q: %w", id, m, err)
		}
		if err := b.Put(key, nil); err != nil {
			return err
		}
	}
	return nil
}

// splitMembers moves the members of a file written before conv_members
// existed out of the convs records and into their own keys, in the
// transaction that opens the file, so that no reader ever sees half of it.
// The user index was kept then as now and stays as it is. The bucket's
// existence marks a converted file; it is created here, and only here, so
// a new file is converted (of nothing) on its first Open and every later
// Open does nothing. It returns how many conversations it converted.
func splitMembers(tx *bolt.Tx) (int, error) {
	if tx.Bucket(bucketConvMembers) != nil {
		return 0, nil
	}
	all, err := tx.CreateBucket(bucketConvMembers)
	if err != nil {
		return 0, err
	}
	convs := tx.Bucket(bucketConvs)
	var old []Conversation
	var keys [][]byte
	// Collected first: a bucket must not change under its cursor.
	err = convs.ForEach(func(k, v []byte) error {
		var c Conversation
		if err := json.Unmarshal(v, &c); err != nil {
			return fmt.Errorf("conversation %q: decode: %w", k, err)
		}
		old, keys = append(old, c), append(keys, bytes.Clone(k))
		return nil
	})
	if err != nil {
		return 0, err
	}
	for i := range old {
		data, err := json.Marshal(recordOf(&old[i]))
		if err != nil {
			return 0, fmt.Errorf("conversation %q: encode: %w", keys[i], err)
		}
		if err := convs.Put(keys[i], data); err != nil {
			return 0, err
		}
		if len(old[i].Members) == 0 {
			continue
		}
		b, err := all.CreateBucket(keys[i])
		if err != nil {
			return 0, fmt.Errorf("conversation %q: members: %w", keys[i], err)
		}
		for _, m := range old[i].Members {
			if err := b.Put([]byte(m), nil); err != nil {
				return 0, fmt.Errorf("conversation %q: member %q: %w", keys[i], m, err)
			}
		}
	}
	return len(old), nil
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
// ErrExists if the id is taken. Members are sorted and compacted first.
func (s *Store) CreateConversation(c Conversation) error {
	return s.update(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketConvs).Get([]byte(c.ID)) != nil {
			return fmt.Errorf("conversation %q: %w", c.ID, ErrExists)
		}
		normalize(&c)
		if err := putRecord(tx, recordOf(&c)); err != nil {
			return err
		}
		return putMembers(tx, c.ID, nil, c.Members)
	})
}

// UpdateConversation reads conversation id, lets fn change it and stores the
// result, all in one transaction, so concurrent membership changes cannot
// overwrite each other. fn's error aborts the change and is returned as is;
// fn may not change the id. Members are sorted and compacted before
// storing. Only what changed is written: the members who came or went, and
// the record only if another field changed.
func (s *Store) UpdateConversation(id string, fn func(c *Conversation) error) (Conversation, error) {
	var out Conversation
	err := s.update(func(tx *bolt.Tx) error {
		r, err := getRecord(tx, id)
		if err != nil {
			return err
		}
		c := r.conversation(members(tx, id))
		old := slices.Clone(c.Members)
		if err := fn(&c); err != nil {
			return err
		}
		if c.ID != id {
			return fmt.Errorf("conversation %q: an update may not change the id (to %q)", id, c.ID)
		}
		normalize(&c)
		if next := recordOf(&c); !next.same(r) {
			if err := putRecord(tx, next); err != nil {
				return err
			}
		}
		if err := putMembers(tx, id, old, c.Members); err != nil {
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
