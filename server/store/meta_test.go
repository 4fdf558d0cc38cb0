package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// stored is conversation id as the main file holds it: the record's bytes
// and the member keys.
func stored(t *testing.T, s *Store, id string) (record []byte, keys []string) {
	t.Helper()
	err := s.db.View(func(tx *bolt.Tx) error {
		record = bytes.Clone(tx.Bucket(bucketConvs).Get([]byte(id)))
		if b := tx.Bucket(bucketConvMembers).Bucket([]byte(id)); b != nil {
			return b.ForEach(func(k, _ []byte) error {
				keys = append(keys, string(k))
				return nil
			})
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return record, keys
}

// checkMembers checks that conversation id has exactly want as members,
// read back, in its member keys and in the user index of every user named
// in users, and that its record holds no member list.
func checkMembers(t *testing.T, s *Store, id string, want, users []string) {
	t.Helper()
	c, err := s.Conversation(id)
	if err != nil || !slices.Equal(c.Members, want) {
		t.Errorf("Conversation(%s).Members = %q, %v; want %q", id, c.Members, err, want)
	}
	record, keys := stored(t, s, id)
	if !slices.Equal(keys, want) {
		t.Errorf("member keys of %s = %q, want %q", id, keys, want)
	}
	if bytes.Contains(record, []byte(`"members"`)) {
		t.Errorf("record of %s holds the members: %s", id, record)
	}
	for _, u := range users {
		ids, err := s.UserConversations(u)
		if err != nil {
			t.Fatal(err)
		}
		if in, member := slices.Contains(ids, id), slices.Contains(want, u); in != member {
			t.Errorf("UserConversations(%s) = %q; member of %s: %v", u, ids, id, member)
		}
	}
}

// Each membership change writes the member keys and the user index of who
// came or went, and the record only when another field changed: the record
// is seeded with a form of its JSON that the store never writes, which
// survives every change that leaves its fields alone.
func TestMembershipChanges(t *testing.T) {
	s := open(t, t.TempDir())
	defer s.Close()
	created := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	users := []string{"alice", "bob", "carol", "dave", "erin"}
	if err := s.CreateConversation(Conversation{ID: "group:g", Kind: KindGroup, Title: "G", Owner: "alice", Members: []string{"carol", "alice", "alice"}, CreatedAt: created}); err != nil {
		t.Fatal(err)
	}
	checkMembers(t, s, "group:g", []string{"alice", "carol"}, users)

	seed := []byte(`{"created_at":"2026-03-04T05:06:07Z", "owner":"alice", "title":"G", "kind":"group", "id":"group:g"}`)
	if err := s.update(func(tx *bolt.Tx) error { return tx.Bucket(bucketConvs).Put([]byte("group:g"), seed) }); err != nil {
		t.Fatal(err)
	}
	remove := func(users ...string) func(c *Conversation) {
		return func(c *Conversation) {
			c.Members = slices.DeleteFunc(c.Members, func(m string) bool { return slices.Contains(users, m) })
		}
	}
	add := func(users ...string) func(c *Conversation) {
		return func(c *Conversation) { c.Members = append(c.Members, users...) }
	}
	for _, tc := range []struct {
		name    string
		change  func(c *Conversation)
		want    []string
		rewrite bool // the record changes
	}{
		{"add one", add("bob"), []string{"alice", "bob", "carol"}, false},
		{"add in any order, twice", add("erin", "dave", "erin", "bob"), []string{"alice", "bob", "carol", "dave", "erin"}, false},
		{"remove one", remove("carol"), []string{"alice", "bob", "dave", "erin"}, false},
		{"add a member back", add("carol"), []string{"alice", "bob", "carol", "dave", "erin"}, false},
		{"join as a member", add("alice"), []string{"alice", "bob", "carol", "dave", "erin"}, false},
		{"same owner set again", func(c *Conversation) { c.Owner = "alice" }, []string{"alice", "bob", "carol", "dave", "erin"}, false},
		{"remove several", remove("alice", "erin"), []string{"bob", "carol", "dave"}, false},
		{"remove all", func(c *Conversation) { c.Members = nil }, nil, false},
		{"add to none", add("dave", "alice"), []string{"alice", "dave"}, false},
		{"change the owner and a member", func(c *Conversation) { c.Owner = "dave"; remove("alice")(c) }, []string{"dave"}, true},
		{"change the title", func(c *Conversation) { c.Title = "H" }, []string{"dave"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, _ := stored(t, s, "group:g")
			got, err := s.UpdateConversation("group:g", func(c *Conversation) error { tc.change(c); return nil })
			if err != nil || !slices.Equal(got.Members, tc.want) {
				t.Fatalf("UpdateConversation = %q, %v; want %q", got.Members, err, tc.want)
			}
			checkMembers(t, s, "group:g", tc.want, users)
			after, _ := stored(t, s, "group:g")
			if rewritten := !bytes.Equal(before, after); rewritten != tc.rewrite {
				t.Errorf("record %s -> %s: rewritten %v, want %v", before, after, rewritten, tc.rewrite)
			}
			c, err := s.Conversation("group:g")
			if err != nil || c.ID != "group:g" || c.Kind != KindGroup || c.Title != got.Title || c.Owner != got.Owner || !c.CreatedAt.Equal(created) {
				t.Errorf("Conversation = %+v, %v; update returned %+v", c, err, got)
			}
		})
	}

	before, keys := stored(t, s, "group:g")
	if _, err := s.UpdateConversation("group:g", func(c *Conversation) error {
		c.ID = "group:other"
		c.Members = append(c.Members, "erin")
		return nil
	}); err == nil || errors.Is(err, ErrNotFound) {
		t.Fatalf("an update changing the id: %v, want an error", err)
	}
	if after, afterKeys := stored(t, s, "group:g"); !bytes.Equal(before, after) || !slices.Equal(keys, afterKeys) {
		t.Errorf("a refused update was stored: %s %q", after, afterKeys)
	}
	if _, err := s.Conversation("group:other"); !errors.Is(err, ErrNotFound) {
		t.Errorf("a refused update created a conversation: %v", err)
	}
	if _, err := s.UpdateConversation("group:none", func(*Conversation) error { return nil }); !errors.Is(err, ErrNotFound) {
		t.Errorf("update of a missing conversation: %v, want ErrNotFound", err)
	}
}

func TestNormalize(t *testing.T) {
	many := strings.Fields("k j i h g f e d c b a")
	for _, tc := range []struct {
		in, want []string
	}{
		{nil, nil},
		{[]string{"a"}, []string{"a"}},
		{[]string{"a", "a"}, []string{"a"}},
		{[]string{"a", "b", "c"}, []string{"a", "b", "c"}},
		{[]string{"b", "c", "a"}, []string{"a", "b", "c"}},
		{[]string{"b", "d", "e", "c"}, []string{"b", "c", "d", "e"}},
		{[]string{"b", "d", "f", "z", "a", "e", "d"}, []string{"a", "b", "d", "e", "f", "z"}},
		{[]string{"a", "b", "b", "c", "b"}, []string{"a", "b", "c"}},
		{many, strings.Fields("a b c d e f g h i j k")},
		{append([]string{"m"}, many...), strings.Fields("a b c d e f g h i j k m")},
	} {
		c := Conversation{Members: slices.Clone(tc.in)}
		normalize(&c)
		if !slices.Equal(c.Members, tc.want) {
			t.Errorf("normalize(%q) = %q, want %q", tc.in, c.Members, tc.want)
		}
	}
}

// A data dir whose conversation records hold their members (as earlier
// versions wrote them) has the members moved to their own keys by Open,
// in one go, and a later Open finds nothing to do.
func TestOldConversationsMoved(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	s.Close()
	created := time.Date(2025, 12, 1, 0, 0, 0, 0, time.UTC)
	old := []Conversation{
		{ID: "dm:alice:bob", Kind: KindDirect, Members: []string{"alice", "bob"}, CreatedAt: created},
		{ID: "group:g", Kind: KindGroup, Title: "G", Owner: "carol", Members: []string{"alice", "carol", "dave"}, CreatedAt: created},
		{ID: "room:empty", Kind: KindRoom, Title: "nobody", Members: nil, CreatedAt: created},
		{ID: "room:big", Kind: KindRoom, CreatedAt: created},
	}
	for i := range 3000 {
		old[3].Members = append(old[3].Members, fmt.Sprintf("user%05d", i))
	}
	db, err := bolt.Open(filepath.Join(dir, FileName), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		// The old layout: no conv_members, the members in the records and
		// the user index.
		if err := tx.DeleteBucket(bucketConvMembers); err != nil {
			return err
		}
		for _, c := range old {
			data, err := json.Marshal(c)
			if err != nil {
				return err
			}
			if err := tx.Bucket(bucketConvs).Put([]byte(c.ID), data); err != nil {
				return err
			}
			for _, m := range c.Members {
				b, err := tx.Bucket(bucketUserConvs).CreateBucketIfNotExists([]byte(m))
				if err != nil {
					return err
				}
				if err := b.Put([]byte(c.ID), nil); err != nil {
					return err
				}
			}
		}
		return nil
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}

	s = open(t, dir)
	users := []string{"alice", "bob", "carol", "dave", "user00000", "user02999"}
	for _, want := range old {
		c, err := s.Conversation(want.ID)
		if err != nil || c.Kind != want.Kind || c.Title != want.Title || c.Owner != want.Owner || !c.CreatedAt.Equal(want.CreatedAt) {
			t.Errorf("Conversation(%s) = %+v, %v; want %+v", want.ID, c, err, want)
		}
		checkMembers(t, s, want.ID, want.Members, users)
	}
	for user, want := range map[string][]string{"alice": {"dm:alice:bob", "group:g"}, "carol": {"group:g"}, "user01234": {"room:big"}} {
		if ids, err := s.UserConversations(user); err != nil || !slices.Equal(ids, want) {
			t.Errorf("UserConversations(%s) = %q, %v; want %q", user, ids, err, want)
		}
	}
	if _, err := s.UpdateConversation("group:g", func(c *Conversation) error {
		c.Members = append(slices.DeleteFunc(c.Members, func(m string) bool { return m == "dave" }), "bob")
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	checkMembers(t, s, "group:g", []string{"alice", "bob", "carol"}, users)
	records := map[string][]byte{}
	for _, c := range old {
		records[c.ID], _ = stored(t, s, c.ID)
	}
	s.Close()

	s = open(t, dir)
	defer s.Close()
	for _, c := range old {
		if record, _ := stored(t, s, c.ID); !bytes.Equal(record, records[c.ID]) {
			t.Errorf("a second Open rewrote %s: %s -> %s", c.ID, records[c.ID], record)
		}
	}
	checkMembers(t, s, "group:g", []string{"alice", "bob", "carol"}, users)
	checkMembers(t, s, "room:big", old[3].Members, users)
}
