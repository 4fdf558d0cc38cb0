package jsstate

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/parleychat/parley/server/store"
)

// Attachments are content-addressed, as in store.Store: a blob's id is the
// lowercase hex sha256 of its content, stored once however often it is
// uploaded or sent, and never deleted. The blobs bucket holds what is known
// about each (ids are hex, so they are keys as they are):
//
//	<id>               blobMeta: size and where the content is; written
//	                   (create-if-absent) only once the content is complete,
//	                   so its presence means "readable"
//	<id>.u.token(user) label: user uploaded it (their last upload's label)
//	<id>.grants        blobGrants: the conversations it was sent in, each
//	                   with the first label it was sent with there
//
// Values are JSON. Grants are one list per blob, changed by
// compare-and-set, because MayRead must see all of a blob's grants and one
// read of one key costs far less than listing keys through a consumer;
// grants are written only the first time a blob is sent in a conversation,
// so the list is rarely contended.
//
// The content is in the blobdata object store as segments of up to
// segmentChunks chunks, objects named <id>/<upload>/<n>, each stored in
// chunks of store.BlobChunkSize. Segments let BlobChunks read any run of
// chunks by fetching one or two segments, instead of streaming the object
// from its start each time (an object store object can only be read from
// the beginning); Download asks for segmentChunks chunks at a time, so it
// reads each segment once.
//
// Two nodes may upload one content at once. Each writes its own copy
// (<upload> is random) and then races to create <id>; the loser deletes
// its copy, so one copy remains.

// segmentChunks is how many chunks one object holds: 1 MiB, as much as
// chat's Download copies out per call.
const segmentChunks = 16

const segmentSize = segmentChunks * store.BlobChunkSize

type blobMeta struct {
	Size     int64  `json:"size"`
	Upload   string `json:"upload"`   // the random part of the object names
	Segments int    `json:"segments"` // objects <id>/<upload>/0 … Segments-1
}

type blobLabel struct {
	Conv        string `json:"conv,omitempty"` // on grants: the conversation
	Name        string `json:"name,omitempty"`
	ContentType string `json:"content_type,omitempty"`
}

// blobGrants lists a blob's grants sorted by conversation, one per
// conversation.
type blobGrants struct {
	Grants []blobLabel `json:"grants"`
}

func (g *blobGrants) find(conv string) (int, bool) {
	return slices.BinarySearchFunc(g.Grants, conv, func(l blobLabel, conv string) int { return strings.Compare(l.Conv, conv) })
}

func uploaderKey(id, user string) string { return id + ".u." + token(user) }
func grantsKey(id string) string         { return id + ".grants" }
func segmentName(id, upload string, n int) string {
	return id + "/" + upload + "/" + strconv.Itoa(n)
}

// blobTimeouts bound an operation that moves size bytes of content: the
// usual bounds plus a second per MiB, so a large upload is not cut short,
// while an attempt stuck on a lost server is still retried in time.
func (s *State) blobTimeouts(size int) (timeout, attempt time.Duration) {
	extra := time.Duration(size/segmentSize+1) * time.Second
	return s.opts.timeout + extra, s.opts.attempt + extra
}

// PutBlob stores data under its sha256 and records that uploader may read
// it, labelled l (a later upload by the same user replaces the label). The
// content is written only if no node has stored it yet: created reports
// whether this call's copy is the one kept. data must not be modified until
// PutBlob returns.
func (s *State) PutBlob(data []byte, uploader string, l store.Label) (id string, created bool, err error) {
	if len(data) == 0 {
		return "", false, errors.New("jsstate: empty blob")
	}
	id = store.BlobID(data)
	var nonce [8]byte
	rand.Read(nonce[:])
	upload := hex.EncodeToString(nonce[:])
	label, err := json.Marshal(blobLabel{Name: l.Name, ContentType: l.ContentType})
	if err != nil {
		return "", false, fmt.Errorf("jsstate: encode label: %w", err)
	}
	timeout, attempt := s.blobTimeouts(len(data))
	err = s.opFor("put blob", timeout, attempt, func(ctx context.Context) error {
		m, err := s.blobMeta(ctx, id)
		switch {
		case err == nil:
			// Stored already, maybe by this call's attempt whose answer
			// was lost: then this call's copy is the one kept.
			created = m.Upload == upload
		case errors.Is(err, store.ErrNotFound):
			if created, err = s.storeContent(ctx, id, upload, data); err != nil {
				return err
			}
		default:
			return err
		}
		_, err = s.blobs.Put(ctx, uploaderKey(id, uploader), label)
		return err
	})
	if err != nil {
		return "", false, err
	}
	return id, created, nil
}

// storeContent writes data's segments under upload and then creates the
// blob's meta key; if another upload created it first, it deletes its own
// segments and reports created false.
func (s *State) storeContent(ctx context.Context, id, upload string, data []byte) (created bool, err error) {
	m := blobMeta{Size: int64(len(data)), Upload: upload, Segments: (len(data) + segmentSize - 1) / segmentSize}
	for n := range m.Segments {
		seg := data[n*segmentSize : min((n+1)*segmentSize, len(data))]
		_, err := s.blobData.Put(ctx, jetstream.ObjectMeta{
			Name: segmentName(id, upload, n),
			Opts: &jetstream.ObjectMetaOptions{ChunkSize: store.BlobChunkSize},
		}, bytes.NewReader(seg))
		if err != nil {
			s.deleteSegments(id, m, n+1)
			return false, fmt.Errorf("blob %s segment %d: %w", id, n, err)
		}
	}
	v, err := json.Marshal(m)
	if err != nil {
		return false, err
	}
	err = createOnce(ctx, s.blobs, id, v, "blob "+id)
	if errors.Is(err, store.ErrExists) {
		s.deleteSegments(id, m, m.Segments)
		return false, nil
	}
	if err != nil {
		// The meta key may have been created after all; leave the
		// segments, which a retry overwrites in place.
		return false, err
	}
	return true, nil
}

// deleteSegments removes the first n segments of an upload that was not
// kept. It is best effort: a segment it misses is unreferenced space, not
// an error anyone sees.
func (s *State) deleteSegments(id string, m blobMeta, n int) {
	ctx, cancel := context.WithTimeout(s.ctx, s.opts.timeout)
	defer cancel()
	for i := range n {
		_ = s.blobData.Delete(ctx, segmentName(id, m.Upload, i))
	}
}

// GrantConversation records that the blobs were sent in conv, so that its
// members (present and future, for as long as they are members) may read
// them. The first label a blob was sent with in conv is kept, whichever
// node sent it. A blob that does not exist fails the whole grant with an
// error wrapping store.ErrNotFound before anything is written. When every
// grant is already recorded (a resend) nothing is written.
func (s *State) GrantConversation(conv string, refs []store.BlobRef) error {
	if len(refs) == 0 {
		return nil
	}
	return s.op("grant blobs", func(ctx context.Context) error {
		var todo []store.BlobRef
		for _, r := range refs {
			if !store.IsBlobID(r.ID) {
				return fmt.Errorf("blob %q: %w", r.ID, store.ErrNotFound)
			}
			g, _, err := s.grants(ctx, r.ID)
			if err != nil {
				return err
			}
			if _, ok := g.find(conv); !ok {
				todo = append(todo, r)
			}
		}
		for _, r := range todo {
			if _, err := s.blobMeta(ctx, r.ID); err != nil {
				return err
			}
		}
		for _, r := range todo {
			if err := s.grant(ctx, r.ID, blobLabel{Conv: conv, Name: r.Name, ContentType: r.ContentType}); err != nil {
				return fmt.Errorf("blob %s in %s: %w", r.ID, conv, err)
			}
		}
		return nil
	})
}

// grants reads blob id's grants and their revision (0: none yet).
func (s *State) grants(ctx context.Context, id string) (blobGrants, uint64, error) {
	var g blobGrants
	e, err := s.blobs.Get(ctx, grantsKey(id))
	if missing(err) {
		return g, 0, nil
	}
	if err != nil {
		return g, 0, err
	}
	if err := json.Unmarshal(e.Value(), &g); err != nil {
		return g, 0, fmt.Errorf("blob %s grants: decode: %w", id, err)
	}
	return g, e.Revision(), nil
}

// grant adds l to blob id's grants unless its conversation is there
// already, by compare-and-set.
func (s *State) grant(ctx context.Context, id string, l blobLabel) error {
	for attempt := 1; ; attempt++ {
		g, rev, err := s.grants(ctx, id)
		if err != nil {
			return err
		}
		i, ok := g.find(l.Conv)
		if ok {
			return nil
		}
		g.Grants = slices.Insert(g.Grants, i, l)
		v, err := json.Marshal(g)
		if err != nil {
			return err
		}
		if rev == 0 {
			_, err = s.blobs.Create(ctx, grantsKey(id), v)
		} else {
			_, err = s.blobs.Update(ctx, grantsKey(id), v, rev)
		}
		if conflict(err) {
			s.casPause(ctx, attempt)
			continue
		}
		return err
	}
}

// grantChecks is how many grants MayRead checks one by one against their
// conversations' records before it lists the user's conversations instead.
const grantChecks = 8

// MayRead reports whether user may read blob id: they uploaded it, or they
// are now a member of a conversation it was sent in (as the conversation's
// record says). ok is false, with no error, both for a blob user may not
// read and for one that does not exist. When ok, info describes the blob
// with the label user knows it by: their own upload's, else the one it was
// sent with in the first (by id) of their conversations.
func (s *State) MayRead(id, user string) (info store.BlobInfo, ok bool, err error) {
	if !store.IsBlobID(id) {
		return info, false, nil
	}
	err = s.op("may read blob", func(ctx context.Context) error {
		info, ok = store.BlobInfo{}, false
		m, err := s.blobMeta(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if e, err := s.blobs.Get(ctx, uploaderKey(id, user)); err == nil {
			var l blobLabel
			if err := json.Unmarshal(e.Value(), &l); err != nil {
				return fmt.Errorf("blob %s uploader %s: decode: %w", id, user, err)
			}
			info, ok = store.BlobInfo{ID: id, Size: m.Size, Label: store.Label{Name: l.Name, ContentType: l.ContentType}}, true
			return nil
		} else if !missing(err) {
			return err
		}
		g, _, err := s.grants(ctx, id)
		if err != nil {
			return err
		}
		grants := g.Grants
		if len(grants) > grantChecks {
			// Sent in many conversations: check only those the index says
			// user is in (the index is a superset of the records, which
			// have the last word).
			mine, err := list(ctx, s.memberships, token(user)+".>")
			if err != nil {
				return err
			}
			in := make(map[string]bool, len(mine))
			for _, e := range mine {
				in[string(e.Value())] = true
			}
			grants = slices.DeleteFunc(grants, func(g blobLabel) bool { return !in[g.Conv] })
		}
		for _, g := range grants {
			c, _, err := s.conversation(ctx, g.Conv)
			if errors.Is(err, store.ErrNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			if c.IsMember(user) {
				info, ok = store.BlobInfo{ID: id, Size: m.Size, Label: store.Label{Name: g.Name, ContentType: g.ContentType}}, true
				return nil
			}
		}
		return nil
	})
	if err != nil || !ok {
		info, ok = store.BlobInfo{}, false
	}
	return info, ok, err
}

func (s *State) blobMeta(ctx context.Context, id string) (blobMeta, error) {
	var m blobMeta
	e, err := s.blobs.Get(ctx, id)
	if missing(err) {
		return m, fmt.Errorf("blob %q: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return m, err
	}
	if err := json.Unmarshal(e.Value(), &m); err != nil {
		return m, fmt.Errorf("blob %s: decode: %w", id, err)
	}
	return m, nil
}

// BlobChunks returns up to max chunks of blob id starting with chunk first,
// in order. Every chunk but the blob's last is store.BlobChunkSize bytes.
// Fewer than max chunks means the end was reached; none at all past the
// end. An error wrapping store.ErrNotFound if the blob does not exist. It
// does not check who may read the blob: see MayRead. The chunks are the
// caller's.
func (s *State) BlobChunks(id string, first, max int) ([][]byte, error) {
	if first < 0 || max <= 0 || uint64(first) > math.MaxUint32 {
		return nil, nil
	}
	if !store.IsBlobID(id) {
		return nil, fmt.Errorf("jsstate: blob %q: %w", id, store.ErrNotFound)
	}
	var out [][]byte
	timeout, attempt := s.blobTimeouts(min(max, 1<<12) * store.BlobChunkSize)
	err := s.opFor("blob chunks", timeout, attempt, func(ctx context.Context) error {
		out = out[:0]
		m, err := s.blobMeta(ctx, id)
		if err != nil {
			return err
		}
		total := int((m.Size + store.BlobChunkSize - 1) / store.BlobChunkSize)
		var seg []byte
		segN := -1
		for i := first; i < total && len(out) < max; i++ {
			if n := i / segmentChunks; n != segN {
				if seg, err = s.segment(ctx, id, m, n); err != nil {
					return err
				}
				segN = n
			}
			lo := (i % segmentChunks) * store.BlobChunkSize
			hi := min(lo+store.BlobChunkSize, len(seg))
			out = append(out, seg[lo:hi:hi])
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// segment reads segment n of blob id and checks its length.
func (s *State) segment(ctx context.Context, id string, m blobMeta, n int) ([]byte, error) {
	seg, err := s.blobData.GetBytes(ctx, segmentName(id, m.Upload, n))
	if err != nil {
		return nil, fmt.Errorf("blob %s segment %d: %w", id, n, err)
	}
	want := min(int64(segmentSize), m.Size-int64(n)*segmentSize)
	if int64(len(seg)) != want {
		return nil, fmt.Errorf("blob %s segment %d: %d bytes stored, %d expected", id, n, len(seg), want)
	}
	return seg, nil
}
