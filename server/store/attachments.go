package store

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math"

	bolt "go.etcd.io/bbolt"
)

// Attachments are content-addressed blobs: a file's id is the lowercase hex
// sha256 of its content, and the content is stored once however often it is
// uploaded or sent. Three buckets hold them:
//
//	blob_meta    id → 8-byte big-endian size; present only once the content is
//	             complete (both are written in one transaction)
//	blob_chunks  id + 4-byte big-endian index → up to BlobChunkSize bytes
//	blob_readers id + 'u' + user → label   the user uploaded it
//	             id + 'c' + conv → label   it was sent in conv
//
// A label is the file name, a NUL, and the content type, as the uploader or
// the sender gave them. Chunks let Download copy out one piece at a time in
// short read transactions instead of holding a read transaction (and so the
// writer's remap) for as long as a slow client takes. Blobs are never
// deleted.
var (
	bucketBlobMeta    = []byte("blob_meta")
	bucketBlobChunks  = []byte("blob_chunks")
	bucketBlobReaders = []byte("blob_readers")
)

// BlobChunkSize is the size of every stored chunk but a blob's last.
const BlobChunkSize = 64 << 10

const (
	readerUploader     = 'u'
	readerConversation = 'c'
)

// Label is how a person named a file: its name and MIME type. Either may be
// empty.
type Label struct {
	Name        string
	ContentType string
}

// BlobRef names a blob and the label it was sent with.
type BlobRef struct {
	ID string
	Label
}

// BlobInfo describes a stored blob to one reader: the label is the one that
// reader uploaded it with, or else the one it was sent with in a
// conversation of theirs.
type BlobInfo struct {
	ID   string
	Size int64
	Label
}

// IsBlobID reports whether id has the form of a blob id: 64 lowercase hex
// digits.
func IsBlobID(id string) bool {
	if len(id) != 2*sha256.Size {
		return false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// BlobID is the id of content data.
func BlobID(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// blobBuckets creates the attachment buckets on first use, so that a file
// written before attachments existed needs no migration.
func blobBuckets(tx *bolt.Tx) (meta, chunks, readers *bolt.Bucket, err error) {
	if meta, err = tx.CreateBucketIfNotExists(bucketBlobMeta); err != nil {
		return
	}
	if chunks, err = tx.CreateBucketIfNotExists(bucketBlobChunks); err != nil {
		return
	}
	readers, err = tx.CreateBucketIfNotExists(bucketBlobReaders)
	return
}

func chunkKey(id string, i uint32) []byte {
	k := make([]byte, len(id)+4)
	copy(k, id)
	binary.BigEndian.PutUint32(k[len(id):], i)
	return k
}

func readerKey(id string, kind byte, who string) []byte {
	k := make([]byte, 0, len(id)+1+len(who))
	k = append(k, id...)
	k = append(k, kind)
	return append(k, who...)
}

// encodeLabel joins name and content type with a NUL, which callers keep
// out of both.
func encodeLabel(l Label) []byte {
	v := make([]byte, 0, len(l.Name)+1+len(l.ContentType))
	v = append(v, l.Name...)
	v = append(v, 0)
	return append(v, l.ContentType...)
}

func decodeLabel(v []byte) Label {
	name, ct, _ := bytes.Cut(v, []byte{0})
	return Label{Name: string(name), ContentType: string(ct)}
}

// PutBlob stores data under its sha256 and records that uploader may read
// it, labelled l (a later upload by the same user replaces the label). The
// content is written only the first time: created reports whether this call
// wrote it. The store computes the id itself, so content and id always
// match. data must not be modified until PutBlob returns.
func (s *Store) PutBlob(data []byte, uploader string, l Label) (id string, created bool, err error) {
	if len(data) == 0 {
		return "", false, fmt.Errorf("store: empty blob")
	}
	if uint64(len(data)) > math.MaxUint32*BlobChunkSize {
		return "", false, fmt.Errorf("store: blob of %d bytes has more chunks than a key can number", len(data))
	}
	id = BlobID(data)
	err = s.update(func(tx *bolt.Tx) error {
		meta, chunks, readers, err := blobBuckets(tx)
		if err != nil {
			return err
		}
		if meta.Get([]byte(id)) == nil {
			for i, off := uint32(0), 0; off < len(data); i, off = i+1, off+BlobChunkSize {
				if err := chunks.Put(chunkKey(id, i), data[off:min(off+BlobChunkSize, len(data))]); err != nil {
					return fmt.Errorf("blob %s chunk %d: %w", id, i, err)
				}
			}
			var size [8]byte
			binary.BigEndian.PutUint64(size[:], uint64(len(data)))
			if err := meta.Put([]byte(id), size[:]); err != nil {
				return fmt.Errorf("blob %s: %w", id, err)
			}
			created = true
		}
		return readers.Put(readerKey(id, readerUploader, uploader), encodeLabel(l))
	})
	if err != nil {
		return "", false, err
	}
	return id, created, nil
}

// GrantConversation records that the blobs were sent in conv, so that its
// members (present and future, for as long as they are members) may read
// them. The first label a blob was sent with in conv is kept. A blob that
// does not exist fails the whole grant with ErrNotFound. When every grant
// is already recorded (a resend, the same file sent again) nothing is
// written; otherwise GrantConversation returns once the grant is durable.
func (s *Store) GrantConversation(conv string, refs []BlobRef) error {
	if len(refs) == 0 {
		return nil
	}
	missing := false
	err := s.db.View(func(tx *bolt.Tx) error {
		readers := tx.Bucket(bucketBlobReaders)
		for _, r := range refs {
			if readers == nil || readers.Get(readerKey(r.ID, readerConversation, conv)) == nil {
				missing = true
				return nil
			}
		}
		return nil
	})
	if err != nil || !missing {
		return err
	}
	return s.update(func(tx *bolt.Tx) error {
		meta, _, readers, err := blobBuckets(tx)
		if err != nil {
			return err
		}
		for _, r := range refs {
			if meta.Get([]byte(r.ID)) == nil {
				return fmt.Errorf("blob %q: %w", r.ID, ErrNotFound)
			}
			k := readerKey(r.ID, readerConversation, conv)
			if readers.Get(k) != nil {
				continue
			}
			if err := readers.Put(k, encodeLabel(r.Label)); err != nil {
				return fmt.Errorf("blob %s in %s: %w", r.ID, conv, err)
			}
		}
		return nil
	})
}

// MayRead reports whether user may read blob id: they uploaded it, or they
// are a member of a conversation it was sent in. Membership is read from the
// same transaction as the grants. ok is false, with no error, both for a
// blob user may not read and for one that does not exist, so callers cannot
// tell the two apart by accident. When ok, info describes the blob with the
// label user knows it by.
func (s *Store) MayRead(id, user string) (info BlobInfo, ok bool, err error) {
	if !IsBlobID(id) {
		return info, false, nil
	}
	err = s.db.View(func(tx *bolt.Tx) error {
		meta, readers := tx.Bucket(bucketBlobMeta), tx.Bucket(bucketBlobReaders)
		if meta == nil || readers == nil {
			return nil
		}
		size := meta.Get([]byte(id))
		if len(size) != 8 {
			return nil
		}
		info = BlobInfo{ID: id, Size: int64(binary.BigEndian.Uint64(size))}
		if v := readers.Get(readerKey(id, readerUploader, user)); v != nil {
			info.Label, ok = decodeLabel(v), true
			return nil
		}
		mine := tx.Bucket(bucketUserConvs).Bucket([]byte(user))
		if mine == nil {
			return nil
		}
		prefix := readerKey(id, readerConversation, "")
		c := readers.Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			if mine.Get(k[len(prefix):]) != nil {
				info.Label, ok = decodeLabel(v), true
				return nil
			}
		}
		return nil
	})
	if !ok {
		info = BlobInfo{}
	}
	return info, ok, err
}

// BlobChunks returns copies of up to max chunks of blob id starting with
// chunk first, in order. Every chunk but the blob's last is BlobChunkSize
// bytes. Fewer than max chunks means the end was reached; none at all past
// the end. ErrNotFound if the blob does not exist. It does not check who
// may read the blob: see MayRead.
func (s *Store) BlobChunks(id string, first, max int) ([][]byte, error) {
	if first < 0 || max <= 0 || uint64(first) > math.MaxUint32 {
		return nil, nil
	}
	var out [][]byte
	err := s.db.View(func(tx *bolt.Tx) error {
		meta, chunks := tx.Bucket(bucketBlobMeta), tx.Bucket(bucketBlobChunks)
		if meta == nil || chunks == nil || meta.Get([]byte(id)) == nil {
			return fmt.Errorf("blob %q: %w", id, ErrNotFound)
		}
		prefix := []byte(id)
		c := chunks.Cursor()
		for k, v := c.Seek(chunkKey(id, uint32(first))); k != nil && bytes.HasPrefix(k, prefix) && len(out) < max; k, v = c.Next() {
			out = append(out, bytes.Clone(v))
		}
		return nil
	})
	return out, err
}

// Blob returns a copy of the whole content of blob id; ErrNotFound if there
// is none. Download should use BlobChunks, which holds less in memory.
func (s *Store) Blob(id string) ([]byte, error) {
	var out []byte
	err := s.db.View(func(tx *bolt.Tx) error {
		meta, chunks := tx.Bucket(bucketBlobMeta), tx.Bucket(bucketBlobChunks)
		if meta == nil || chunks == nil {
			return fmt.Errorf("blob %q: %w", id, ErrNotFound)
		}
		size := meta.Get([]byte(id))
		if len(size) != 8 {
			return fmt.Errorf("blob %q: %w", id, ErrNotFound)
		}
		out = make([]byte, 0, binary.BigEndian.Uint64(size))
		prefix := []byte(id)
		c := chunks.Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			out = append(out, v...)
		}
		if uint64(len(out)) != binary.BigEndian.Uint64(size) {
			return fmt.Errorf("blob %s: %d bytes stored, %d recorded", id, len(out), binary.BigEndian.Uint64(size))
		}
		return nil
	})
	return out, err
}

// BlobSize returns the size of blob id; ErrNotFound if there is none.
func (s *Store) BlobSize(id string) (int64, error) {
	var n int64
	err := s.db.View(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketBlobMeta)
		if meta == nil {
			return fmt.Errorf("blob %q: %w", id, ErrNotFound)
		}
		v := meta.Get([]byte(id))
		if len(v) != 8 {
			return fmt.Errorf("blob %q: %w", id, ErrNotFound)
		}
		n = int64(binary.BigEndian.Uint64(v))
		return nil
	})
	return n, err
}

// BlobUsage counts the stored blobs and the content bytes they occupy, as
// written in the chunks (not as recorded in their metadata), so it measures
// what is really on disk.
func (s *Store) BlobUsage() (blobs int, size int64, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		if meta := tx.Bucket(bucketBlobMeta); meta != nil {
			blobs = meta.Stats().KeyN
		}
		if chunks := tx.Bucket(bucketBlobChunks); chunks != nil {
			return chunks.ForEach(func(_, v []byte) error {
				size += int64(len(v))
				return nil
			})
		}
		return nil
	})
	return blobs, size, err
}
