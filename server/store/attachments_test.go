package store

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// blobReaders lists who may read blob id, as "u:<user>" and "c:<conv>",
// sorted.
func (s *Store) blobReaders(id string) ([]string, error) {
	var out []string
	err := s.db.View(func(tx *bolt.Tx) error {
		readers := tx.Bucket(bucketBlobReaders)
		if readers == nil {
			return nil
		}
		c := readers.Cursor()
		for k, _ := c.Seek([]byte(id)); k != nil && bytes.HasPrefix(k, []byte(id)); k, _ = c.Next() {
			out = append(out, string(k[len(id)])+":"+string(k[len(id)+1:]))
		}
		return nil
	})
	slices.Sort(out)
	return out, err
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{byte(n), byte(n >> 8), byte(n >> 16)})
	r.Read(b)
	return b
}

func putBlob(t *testing.T, s *Store, data []byte, uploader string, l Label) (string, bool) {
	t.Helper()
	id, created, err := s.PutBlob(data, uploader, l)
	if err != nil {
		t.Fatalf("PutBlob by %s: %v", uploader, err)
	}
	return id, created
}

func TestBlobRoundTripAcrossChunkSizes(t *testing.T) {
	s := open(t, t.TempDir())
	defer s.Close()
	for _, n := range []int{1, BlobChunkSize - 1, BlobChunkSize, BlobChunkSize + 1, 3*BlobChunkSize + 17} {
		data := randomBytes(n)
		id, created := putBlob(t, s, data, "alice", Label{Name: "f.bin"})
		if !created {
			t.Fatalf("%d bytes: first PutBlob did not create", n)
		}
		if id != BlobID(data) || !IsBlobID(id) {
			t.Fatalf("%d bytes: id %q is not the content's sha256", n, id)
		}
		got, err := s.Blob(id)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%d bytes: Blob = %d bytes, %v; want the content back", n, len(got), err)
		}
		if size, err := s.BlobSize(id); err != nil || size != int64(n) {
			t.Fatalf("%d bytes: BlobSize = %d, %v", n, size, err)
		}
		// Read back two chunks at a time, as Download does.
		var joined []byte
		for i := 0; ; i += 2 {
			chunks, err := s.BlobChunks(id, i, 2)
			if err != nil {
				t.Fatal(err)
			}
			for j, c := range chunks {
				if len(c) > BlobChunkSize || (len(c) < BlobChunkSize && len(joined)+len(c) != n) {
					t.Fatalf("%d bytes: chunk %d is %d bytes", n, i+j, len(c))
				}
				joined = append(joined, c...)
			}
			if len(chunks) < 2 {
				break
			}
		}
		if !bytes.Equal(joined, data) {
			t.Fatalf("%d bytes: chunks join to %d bytes that differ from the content", n, len(joined))
		}
	}
}

func TestBlobStoredOnceRecordsEveryUploader(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	data := randomBytes(200 << 10)
	id1, created1 := putBlob(t, s, data, "alice", Label{Name: "a.png", ContentType: "image/png"})
	id2, created2 := putBlob(t, s, bytes.Clone(data), "bob", Label{Name: "b.png", ContentType: "image/png"})
	if id1 != id2 || !created1 || created2 {
		t.Fatalf("two uploads of one content: ids %s, %s, created %v, %v; want one id, created once", id1, id2, created1, created2)
	}
	if blobs, size, err := s.BlobUsage(); err != nil || blobs != 1 || size != int64(len(data)) {
		t.Fatalf("BlobUsage = %d blobs, %d bytes, %v; want 1 blob of %d bytes", blobs, size, err, len(data))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, dir)
	defer s.Close()
	for _, c := range []struct {
		user string
		name string
	}{{"alice", "a.png"}, {"bob", "b.png"}} {
		info, ok, err := s.MayRead(id1, c.user)
		if err != nil || !ok || info.Name != c.name || info.ContentType != "image/png" || info.Size != int64(len(data)) {
			t.Errorf("after reopen MayRead(%s) = %+v, %v, %v; want %s's own label", c.user, info, ok, err, c.user)
		}
	}
	readers, err := s.blobReaders(id1)
	if err != nil || !slices.Equal(readers, []string{"u:alice", "u:bob"}) {
		t.Fatalf("readers = %q, %v", readers, err)
	}
}

func TestMayReadFollowsGrantsAndMembership(t *testing.T) {
	s := open(t, t.TempDir())
	defer s.Close()
	now := time.Now()
	for _, c := range []Conversation{
		{ID: "room:a", Kind: KindRoom, Members: []string{"alice", "bob"}, CreatedAt: now},
		{ID: "room:b", Kind: KindRoom, Members: []string{"carol"}, CreatedAt: now},
	} {
		if err := s.CreateConversation(c); err != nil {
			t.Fatal(err)
		}
	}
	id, _ := putBlob(t, s, []byte("hello"), "alice", Label{Name: "mine.txt", ContentType: "text/plain"})
	missing := BlobID([]byte("never uploaded"))

	check := func(user, blob string, want bool, wantName string) {
		t.Helper()
		info, ok, err := s.MayRead(blob, user)
		if err != nil || ok != want || info.Name != wantName {
			t.Fatalf("MayRead(%s, %s) = %+v, %v, %v; want %v with name %q", blob[:8], user, info, ok, err, want, wantName)
		}
		if !ok && info != (BlobInfo{}) {
			t.Fatalf("MayRead(%s) denied but described the blob: %+v", user, info)
		}
	}
	check("alice", id, true, "mine.txt")
	check("bob", id, false, "")
	check("carol", id, false, "")
	check("alice", missing, false, "")
	check("alice", "not-an-id", false, "")

	if err := s.GrantConversation("room:a", []BlobRef{{ID: id, Label: Label{Name: "sent.txt", ContentType: "text/plain"}}}); err != nil {
		t.Fatal(err)
	}
	check("alice", id, true, "mine.txt") // the uploader keeps their own label
	check("bob", id, true, "sent.txt")
	check("carol", id, false, "")

	// The first label sent in a conversation stays; a resend writes nothing.
	if err := s.GrantConversation("room:a", []BlobRef{{ID: id, Label: Label{Name: "renamed.txt"}}}); err != nil {
		t.Fatal(err)
	}
	check("bob", id, true, "sent.txt")

	// Access follows membership as it is now.
	if _, err := s.UpdateConversation("room:a", func(c *Conversation) error {
		c.Members = slices.DeleteFunc(c.Members, func(m string) bool { return m == "bob" })
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	check("bob", id, false, "")
	if _, err := s.UpdateConversation("room:b", func(c *Conversation) error {
		c.Members = append(c.Members, "bob")
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	check("bob", id, false, "")
	if err := s.GrantConversation("room:b", []BlobRef{{ID: id}}); err != nil {
		t.Fatal(err)
	}
	check("bob", id, true, "")
	check("carol", id, true, "")

	err := s.GrantConversation("room:a", []BlobRef{{ID: id}, {ID: missing}})
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("granting a blob that does not exist: %v; want ErrNotFound", err)
	}
	if _, ok, _ := s.MayRead(missing, "alice"); ok {
		t.Fatal("a failed grant made a missing blob readable")
	}
	readers, err := s.blobReaders(id)
	if err != nil || !slices.Equal(readers, []string{"c:room:a", "c:room:b", "u:alice"}) {
		t.Fatalf("readers = %q, %v", readers, err)
	}
}

func TestBlobErrors(t *testing.T) {
	s := open(t, t.TempDir())
	missing := BlobID([]byte("x"))
	if _, err := s.Blob(missing); !errors.Is(err, ErrNotFound) {
		t.Errorf("Blob of a missing id: %v; want ErrNotFound", err)
	}
	if _, err := s.BlobSize(missing); !errors.Is(err, ErrNotFound) {
		t.Errorf("BlobSize of a missing id: %v; want ErrNotFound", err)
	}
	if _, err := s.BlobChunks(missing, 0, 4); !errors.Is(err, ErrNotFound) {
		t.Errorf("BlobChunks of a missing id: %v; want ErrNotFound", err)
	}
	if _, _, err := s.PutBlob(nil, "alice", Label{}); err == nil {
		t.Error("PutBlob stored empty content")
	}
	if blobs, size, err := s.BlobUsage(); err != nil || blobs != 0 || size != 0 {
		t.Errorf("BlobUsage of a store without blobs = %d, %d, %v", blobs, size, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.PutBlob([]byte("late"), "alice", Label{}); !errors.Is(err, ErrClosed) {
		t.Errorf("PutBlob after Close: %v; want ErrClosed", err)
	}
}

func TestConcurrentUploadsOfOneContent(t *testing.T) {
	s := open(t, t.TempDir())
	defer s.Close()
	data := randomBytes(3*BlobChunkSize + 5)
	const n = 8
	var wg sync.WaitGroup
	created := make(chan bool, n)
	for i := range n {
		wg.Go(func() {
			_, c, err := s.PutBlob(data, string(rune('a'+i))+"user", Label{})
			if err != nil {
				t.Error(err)
			}
			created <- c
		})
	}
	wg.Wait()
	close(created)
	count := 0
	for c := range created {
		if c {
			count++
		}
	}
	if count != 1 {
		t.Fatalf("%d of %d concurrent uploads wrote the content; want exactly 1", count, n)
	}
	if blobs, size, err := s.BlobUsage(); err != nil || blobs != 1 || size != int64(len(data)) {
		t.Fatalf("BlobUsage = %d, %d, %v", blobs, size, err)
	}
	readers, _ := s.blobReaders(BlobID(data))
	if len(readers) != n {
		t.Fatalf("readers = %q; want all %d uploaders", readers, n)
	}
}
