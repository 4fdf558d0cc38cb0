package jsstate

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/parleychat/parley/server/store"
)

func randomBytes(n int) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{byte(n), byte(n >> 8), byte(n >> 16)})
	r.Read(b)
	return b
}

func putBlob(t *testing.T, s *State, data []byte, uploader string, l store.Label) (string, bool) {
	t.Helper()
	id, created, err := s.PutBlob(data, uploader, l)
	if err != nil {
		t.Fatalf("PutBlob by %s: %v", uploader, err)
	}
	return id, created
}

// usage counts the blobs whose content is stored and the bytes stored, as
// the object store reports them (not as the meta keys record them).
func usage(t *testing.T, s *State) (blobs int, size int64) {
	t.Helper()
	objs, err := s.blobData.List(context.Background())
	if errors.Is(err, jetstream.ErrNoObjectsFound) {
		return 0, 0
	}
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for _, o := range objs {
		if o.Deleted {
			continue
		}
		id, _, _ := strings.Cut(o.Name, "/")
		ids[id] = true
		size += int64(o.Size)
	}
	return len(ids), size
}

// readAll reads blob id step chunks at a time, checking chunk sizes.
func readAll(t *testing.T, s *State, id string, size, step int) []byte {
	t.Helper()
	var joined []byte
	for i := 0; ; i += step {
		chunks, err := s.BlobChunks(id, i, step)
		if err != nil {
			t.Fatalf("BlobChunks(%d, %d): %v", i, step, err)
		}
		for j, c := range chunks {
			if len(c) > store.BlobChunkSize || (len(c) < store.BlobChunkSize && len(joined)+len(c) != size) {
				t.Fatalf("%d bytes: chunk %d is %d bytes", size, i+j, len(c))
			}
			joined = append(joined, c...)
		}
		if len(chunks) < step {
			return joined
		}
	}
}

// The contracts of server/store's blob round trip and stored-once tests,
// with uploads and reads on different nodes.
func testBlobs(t *testing.T, cl *cluster) {
	a, b := cl.pair(t)
	sizes := []int{1, store.BlobChunkSize - 1, store.BlobChunkSize, store.BlobChunkSize + 1, 3*store.BlobChunkSize + 17,
		segmentSize, 2*segmentSize + store.BlobChunkSize + 3}
	var total int64
	for _, n := range sizes {
		data := randomBytes(n)
		id, created := putBlob(t, a, data, "alice", store.Label{Name: "f.bin"})
		if !created || id != store.BlobID(data) {
			t.Fatalf("%d bytes: id %s, created %v; want the sha256, created", n, id, created)
		}
		total += int64(n)
		// Read back as Download does (16 at a time), in pairs as the
		// store's test does, and in runs that straddle segments.
		for _, step := range []int{segmentChunks, 2, 5} {
			if got := readAll(t, b, id, n, step); !bytes.Equal(got, data) {
				t.Fatalf("%d bytes, %d chunks at a time: %d bytes back that differ from the content", n, step, len(got))
			}
		}
		if chunks, err := b.BlobChunks(id, n/store.BlobChunkSize+1, 4); err != nil || len(chunks) != 0 {
			t.Fatalf("%d bytes: chunks past the end = %d, %v", n, len(chunks), err)
		}
	}

	// A second upload of one content, by another user on another node,
	// stores nothing and records the second uploader with their label.
	data := randomBytes(200 << 10)
	id1, created1 := putBlob(t, a, data, "alice", store.Label{Name: "a.png", ContentType: "image/png"})
	id2, created2 := putBlob(t, b, bytes.Clone(data), "bob", store.Label{Name: "b.png", ContentType: "image/png"})
	if id1 != id2 || !created1 || created2 {
		t.Fatalf("two uploads of one content: ids %s, %s, created %v, %v; want one id, created once", id1, id2, created1, created2)
	}
	total += int64(len(data))
	if blobs, size := usage(t, b); blobs != len(sizes)+1 || size != total {
		t.Fatalf("usage = %d blobs, %d bytes; want %d blobs, %d bytes", blobs, size, len(sizes)+1, total)
	}
	for _, c := range []struct{ user, name string }{{"alice", "a.png"}, {"bob", "b.png"}} {
		for _, s := range []*State{a, b} {
			info, ok, err := s.MayRead(id1, c.user)
			if err != nil || !ok || info.Name != c.name || info.ContentType != "image/png" || info.Size != int64(len(data)) || info.ID != id1 {
				t.Errorf("MayRead(%s) = %+v, %v, %v; want %s's own label", c.user, info, ok, err, c.user)
			}
		}
	}

	missingID := store.BlobID([]byte("never uploaded"))
	if _, err := a.BlobChunks(missingID, 0, 4); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("BlobChunks of a missing id: %v; want store.ErrNotFound", err)
	}
	if _, err := a.BlobChunks("not-an-id", 0, 4); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("BlobChunks of a malformed id: %v; want store.ErrNotFound", err)
	}
	if _, _, err := a.PutBlob(nil, "alice", store.Label{}); err == nil {
		t.Error("PutBlob stored empty content")
	}
}

// The contract of server/store's TestMayReadFollowsGrantsAndMembership,
// with grants, membership changes and reads spread over two nodes.
func testBlobAccess(t *testing.T, cl *cluster) {
	a, b := cl.pair(t)
	now := time.Now()
	for _, c := range []store.Conversation{
		{ID: "room:a", Kind: store.KindRoom, Members: []string{"alice", "bob"}, CreatedAt: now},
		{ID: "room:b", Kind: store.KindRoom, Members: []string{"carol"}, CreatedAt: now},
	} {
		if err := a.CreateConversation(c); err != nil {
			t.Fatal(err)
		}
	}
	id, _ := putBlob(t, a, []byte("hello"), "alice", store.Label{Name: "mine.txt", ContentType: "text/plain"})
	missingID := store.BlobID([]byte("never uploaded"))

	check := func(user, blob string, want bool, wantName string) {
		t.Helper()
		for _, s := range []*State{a, b} {
			info, ok, err := s.MayRead(blob, user)
			if err != nil || ok != want || info.Name != wantName {
				t.Fatalf("MayRead(%.8s, %s) = %+v, %v, %v; want %v with name %q", blob, user, info, ok, err, want, wantName)
			}
			if !ok && info != (store.BlobInfo{}) {
				t.Fatalf("MayRead(%s) denied but described the blob: %+v", user, info)
			}
		}
	}
	check("alice", id, true, "mine.txt")
	check("bob", id, false, "")
	check("carol", id, false, "")
	check("alice", missingID, false, "")
	check("alice", "not-an-id", false, "")

	if err := b.GrantConversation("room:a", []store.BlobRef{{ID: id, Label: store.Label{Name: "sent.txt", ContentType: "text/plain"}}}); err != nil {
		t.Fatal(err)
	}
	check("alice", id, true, "mine.txt") // the uploader keeps their own label
	check("bob", id, true, "sent.txt")
	check("carol", id, false, "")

	// The first label sent in a conversation stays, whichever node sends.
	if err := a.GrantConversation("room:a", []store.BlobRef{{ID: id, Label: store.Label{Name: "renamed.txt"}}}); err != nil {
		t.Fatal(err)
	}
	check("bob", id, true, "sent.txt")

	// Access follows membership as it is now.
	if _, err := b.UpdateConversation("room:a", func(c *store.Conversation) error {
		c.Members = slices.DeleteFunc(c.Members, func(m string) bool { return m == "bob" })
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	check("bob", id, false, "")
	if _, err := a.UpdateConversation("room:b", func(c *store.Conversation) error {
		c.Members = append(c.Members, "bob")
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	check("bob", id, false, "")
	if err := a.GrantConversation("room:b", []store.BlobRef{{ID: id}}); err != nil {
		t.Fatal(err)
	}
	check("bob", id, true, "")
	check("carol", id, true, "")

	err := b.GrantConversation("room:a", []store.BlobRef{{ID: id}, {ID: missingID}})
	if !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("granting a blob that does not exist: %v; want store.ErrNotFound", err)
	}
	check("alice", missingID, false, "")

	// A blob sent in more conversations than MayRead checks one by one.
	other, _ := putBlob(t, b, []byte("popular"), "zed", store.Label{Name: "meme.gif"})
	for i := range grantChecks + 3 {
		conv := "group:" + strings.Repeat("0", 22) + string(rune('a'+i/10)) + string(rune('0'+i%10))
		if err := a.CreateConversation(store.Conversation{ID: conv, Kind: store.KindGroup, Members: []string{"zed", "member" + string(rune('a'+i))}}); err != nil {
			t.Fatal(err)
		}
		if err := b.GrantConversation(conv, []store.BlobRef{{ID: other, Label: store.Label{Name: "in " + conv}}}); err != nil {
			t.Fatal(err)
		}
	}
	last := "member" + string(rune('a'+grantChecks+2))
	if info, ok, err := a.MayRead(other, last); err != nil || !ok || !strings.HasPrefix(info.Name, "in group:") {
		t.Fatalf("MayRead of a blob sent in many conversations = %+v, %v, %v", info, ok, err)
	}
	if _, ok, err := a.MayRead(other, "stranger"); err != nil || ok {
		t.Fatalf("MayRead by a stranger = %v, %v", ok, err)
	}
}

// Nodes upload one content at once: the content is kept once, exactly
// one upload reports it created, and every uploader may read it.
func testConcurrentUploads(t *testing.T, cl *cluster) {
	a, b := cl.pair(t)
	data := randomBytes(segmentSize + 3*store.BlobChunkSize + 5)
	const n = 8
	var wg sync.WaitGroup
	created := make(chan bool, n)
	for i := range n {
		s := []*State{a, b}[i%2]
		wg.Go(func() {
			_, c, err := s.PutBlob(data, string(rune('a'+i))+"user", store.Label{})
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
		t.Fatalf("%d of %d concurrent uploads kept the content; want exactly 1", count, n)
	}
	// The losers delete their copies as they lose; the list may come from
	// a replica a moment behind those deletes.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		blobs, size := usage(t, a)
		if blobs == 1 && size == int64(len(data)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("usage = %d blobs, %d bytes; want 1 of %d", blobs, size, len(data))
		}
	}
	for i := range n {
		if _, ok, err := b.MayRead(store.BlobID(data), string(rune('a'+i))+"user"); err != nil || !ok {
			t.Fatalf("uploader %d may not read: %v, %v", i, ok, err)
		}
	}
	if got := readAll(t, b, store.BlobID(data), len(data), segmentChunks); !bytes.Equal(got, data) {
		t.Fatal("content read back differs")
	}

	// The file is sent in 20 conversations at once from both nodes: no
	// grant is lost, and each keeps its first label.
	const convs = 20
	for i := range convs {
		if err := a.CreateConversation(store.Conversation{ID: fmt.Sprintf("room:c%02d", i), Kind: store.KindRoom, Members: []string{fmt.Sprintf("member%02d", i)}}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 2 * convs {
		s := []*State{a, b}[i%2]
		wg.Go(func() {
			ref := store.BlobRef{ID: store.BlobID(data), Label: store.Label{Name: fmt.Sprintf("label%d", i/convs)}}
			if err := s.GrantConversation(fmt.Sprintf("room:c%02d", i%convs), []store.BlobRef{ref}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	g, _, err := a.grants(context.Background(), store.BlobID(data))
	if err != nil || len(g.Grants) != convs {
		t.Fatalf("%d grants, %v; want %d", len(g.Grants), err, convs)
	}
	for i := range convs {
		info, ok, err := []*State{a, b}[i%2].MayRead(store.BlobID(data), fmt.Sprintf("member%02d", i))
		if err != nil || !ok || (info.Name != "label0" && info.Name != "label1") {
			t.Fatalf("member%02d: MayRead = %+v, %v, %v", i, info, ok, err)
		}
	}
}
