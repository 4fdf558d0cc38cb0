package server

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
	"github.com/parleychat/parley/server/store"
)

func randomFile(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func (u *user) upload(t *testing.T, name, contentType string, data []byte) *parleyv1.Attachment {
	t.Helper()
	resp, err := parleyv1.NewAttachmentServiceClient(u.conn).Upload(u.ctx(t), &parleyv1.UploadRequest{Name: name, ContentType: contentType, Data: data})
	if err != nil {
		t.Fatalf("%s Upload %s: %v", u.id, name, err)
	}
	return resp.GetAttachment()
}

// download fetches a file and checks the shape of the stream: one
// description first, then chunks of at most 64 KiB.
func (u *user) download(t *testing.T, id string) (*parleyv1.Attachment, []byte, error) {
	t.Helper()
	st, err := parleyv1.NewAttachmentServiceClient(u.conn).Download(u.ctx(t), &parleyv1.DownloadRequest{AttachmentId: id})
	if err != nil {
		return nil, nil, err
	}
	var desc *parleyv1.Attachment
	var data []byte
	for i := 0; ; i++ {
		f, err := st.Recv()
		if errors.Is(err, io.EOF) {
			if desc == nil {
				t.Fatal("Download ended without describing the file")
			}
			return desc, data, nil
		}
		if err != nil {
			return desc, data, err
		}
		switch p := f.GetPart().(type) {
		case *parleyv1.DownloadResponse_Attachment:
			if i != 0 {
				t.Fatalf("frame %d describes the file again", i)
			}
			desc = p.Attachment
		case *parleyv1.DownloadResponse_Chunk:
			if i == 0 {
				t.Fatal("the first frame is a chunk, not the description")
			}
			if len(p.Chunk) == 0 || len(p.Chunk) > 64<<10 {
				t.Fatalf("chunk %d is %d bytes; want 1 to 64 KiB", i, len(p.Chunk))
			}
			data = append(data, p.Chunk...)
		default:
			t.Fatalf("frame %d is empty", i)
		}
	}
}

func wantCode(t *testing.T, what string, err error, code codes.Code, msg string) {
	t.Helper()
	if status.Code(err) != code || !strings.Contains(status.Convert(err).Message(), msg) {
		t.Fatalf("%s: %v; want %s mentioning %q", what, err, code, msg)
	}
}

func sha(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

func TestAttachmentRoundTrip(t *testing.T) {
	dir := t.TempDir()
	n := start(t, dir)
	alice := register(t, n, "alice")
	data := randomFile(t, 3<<20+12345)

	att := alice.upload(t, "holiday.mov", "video/quicktime", data)
	if att.GetId() != sha(data) || att.GetSize() != uint64(len(data)) || att.GetName() != "holiday.mov" || att.GetContentType() != "video/quicktime" {
		t.Fatalf("Upload returned %v; want id %s, size %d and the given name and type", att, sha(data), len(data))
	}
	desc, got, err := alice.download(t, att.GetId())
	if err != nil {
		t.Fatalf("uploader's Download: %v", err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("downloaded %d bytes that differ from the %d uploaded", len(got), len(data))
	}
	if desc.GetId() != att.GetId() || desc.GetSize() != uint64(len(data)) || desc.GetName() != "holiday.mov" || desc.GetContentType() != "video/quicktime" {
		t.Fatalf("Download described the file as %v; want %v", desc, att)
	}

	// An empty content type is stored as application/octet-stream, and the
	// file outlives a restart.
	small := alice.upload(t, "notes", "", []byte("x"))
	if small.GetContentType() != "application/octet-stream" {
		t.Fatalf("empty content type came back as %q", small.GetContentType())
	}
	n.stop(t)
	n = start(t, dir)
	alice.reconnect(t, n)
	if _, got, err := alice.download(t, att.GetId()); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("after a restart Download = %d bytes, %v; want the file back", len(got), err)
	}
}

func TestAttachmentStoredOnce(t *testing.T) {
	n := start(t, "")
	alice, bob := register(t, n, "alice"), register(t, n, "bob")
	data := randomFile(t, 300<<10)
	a := alice.upload(t, "a.bin", "", data)
	b := bob.upload(t, "b.bin", "application/x-thing", data)
	if a.GetId() != b.GetId() {
		t.Fatalf("one content got two ids: %s, %s", a.GetId(), b.GetId())
	}
	blobs, size, err := n.store.(*store.Store).BlobUsage()
	if err != nil || blobs != 1 || size != int64(len(data)) {
		t.Fatalf("store holds %d blobs of %d bytes in all (%v); want 1 of %d", blobs, size, err, len(data))
	}
	// Each uploader may read it, under the name they gave it.
	for _, c := range []struct {
		u    *user
		name string
	}{{alice, "a.bin"}, {bob, "b.bin"}} {
		desc, got, err := c.u.download(t, a.GetId())
		if err != nil || !bytes.Equal(got, data) || desc.GetName() != c.name {
			t.Fatalf("%s Download: %v named %q; want the file named %q", c.u.id, err, desc.GetName(), c.name)
		}
	}
}

func TestAttachmentAccess(t *testing.T) {
	n := start(t, "")
	alice, bob, carol, mallory := register(t, n, "alice"), register(t, n, "bob"), register(t, n, "carol"), register(t, n, "mallory")
	conv := room(t, alice, "photos", bob)
	data := randomFile(t, 100<<10)
	att := alice.upload(t, "cat.jpg", "image/jpeg", data)

	const denied = "only its uploader and members of conversations where it was sent may use it"
	_, _, err := bob.download(t, att.GetId())
	wantCode(t, "a room member's Download before the file was sent", err, codes.PermissionDenied, denied)

	// Alice sends it in the room. Until the send path records attachments,
	// the test records the grant the way the send path does.
	_, err = alice.chat.Send(alice.ctx(t), &parleyv1.SendRequest{ConversationId: conv, ClientMessageId: "with-cat", Body: "look",
		Attachments: []*parleyv1.Attachment{{Id: att.GetId(), Name: "kitten.jpg", ContentType: "image/jpeg"}}})
	if err != nil {
		t.Fatalf("Send with an attachment: %v", err)
	}
	hist, err := alice.chat.History(alice.ctx(t), &parleyv1.HistoryRequest{ConversationId: conv})
	if err != nil || len(hist.GetMessages()) != 1 {
		t.Fatalf("History = %v, %v; want the one message", hist, err)
	}
	wired := len(hist.GetMessages()[0].GetAttachments()) > 0
	if wired {
		if got := hist.GetMessages()[0].GetAttachments(); len(got) != 1 || got[0].GetSize() != uint64(len(data)) || got[0].GetName() != "kitten.jpg" {
			t.Fatalf("the message carries %v; want the file with its size filled in", got)
		}
	} else {
		t.Log("the send path does not carry attachments yet; granting the room access directly")
		if err := n.store.GrantConversation(conv, []store.BlobRef{{ID: att.GetId(), Label: store.Label{Name: "kitten.jpg", ContentType: "image/jpeg"}}}); err != nil {
			t.Fatal(err)
		}
	}

	desc, got, err := bob.download(t, att.GetId())
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("member's Download of a file sent in the room: %d bytes, %v", len(got), err)
	}
	if desc.GetName() != "kitten.jpg" || desc.GetSize() != uint64(len(data)) {
		t.Fatalf("member sees %v; want the name it was sent with and the size", desc)
	}

	// Someone in no conversation where it was sent is refused with the same
	// answer as for a file that does not exist.
	_, _, errSent := mallory.download(t, att.GetId())
	wantCode(t, "stranger's Download", errSent, codes.PermissionDenied, denied)
	missing := sha([]byte("never uploaded"))
	_, _, errMissing := mallory.download(t, missing)
	wantCode(t, "Download of a file that does not exist", errMissing, codes.PermissionDenied, denied)
	if a, b := strings.ReplaceAll(status.Convert(errSent).Message(), att.GetId(), "ID"), strings.ReplaceAll(status.Convert(errMissing).Message(), missing, "ID"); a != b {
		t.Fatalf("denied and missing answers differ:\n%s\n%s", a, b)
	}

	// Access follows membership as it is now.
	if _, err := carol.convs.JoinRoom(carol.ctx(t), &parleyv1.JoinRoomRequest{ConversationId: conv}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := carol.download(t, att.GetId()); err != nil {
		t.Fatalf("a member who joined after the file was sent: %v", err)
	}
	if _, err := bob.convs.LeaveConversation(bob.ctx(t), &parleyv1.LeaveConversationRequest{ConversationId: conv}); err != nil {
		t.Fatal(err)
	}
	_, _, err = bob.download(t, att.GetId())
	wantCode(t, "Download after leaving the room", err, codes.PermissionDenied, denied)

	if wired {
		// Nobody can attach a file they may not read.
		mine := room(t, mallory, "mine")
		_, err := mallory.chat.Send(mallory.ctx(t), &parleyv1.SendRequest{ConversationId: mine, ClientMessageId: "steal", Body: "mine now",
			Attachments: []*parleyv1.Attachment{{Id: att.GetId()}}})
		wantCode(t, "Send with someone else's file", err, codes.PermissionDenied, denied)
	}
}

func TestAttachmentLimits(t *testing.T) {
	const limit = 256 << 10
	n := start(t, "", func(c *Config) { c.MaxAttachment = limit })
	alice := register(t, n, "alice")
	client := parleyv1.NewAttachmentServiceClient(alice.conn)

	if att := alice.upload(t, "exact.bin", "", randomFile(t, limit)); att.GetSize() != limit {
		t.Fatalf("a file of exactly the limit: size %d", att.GetSize())
	}
	_, err := client.Upload(alice.ctx(t), &parleyv1.UploadRequest{Name: "big.bin", Data: randomFile(t, limit+1)})
	wantCode(t, "one byte over the limit", err, codes.ResourceExhausted, "attachment is 262145 bytes; the limit is 262144 (--max-attachment)")
	// Far over the limit the message itself is too large for the server to
	// read; the code is the same.
	_, err = client.Upload(alice.ctx(t), &parleyv1.UploadRequest{Name: "huge.bin", Data: randomFile(t, 4*limit)})
	wantCode(t, "far over the limit", err, codes.ResourceExhausted, "")
	if blobs, _, _ := n.store.(*store.Store).BlobUsage(); blobs != 1 {
		t.Fatalf("store holds %d blobs; refused uploads must not be stored", blobs)
	}

	for _, bad := range []int{-1, 1<<30 + 1} {
		if s, err := New(Config{DataDir: t.TempDir(), SigningKey: testKey, MaxAttachment: bad}); err == nil {
			s.Shutdown(t.Context())
			t.Errorf("New accepted a max attachment of %d bytes", bad)
		}
	}
}

func TestAttachmentBadInput(t *testing.T) {
	n := start(t, "")
	alice := register(t, n, "alice")
	client := parleyv1.NewAttachmentServiceClient(alice.conn)
	tests := []struct {
		name string
		req  *parleyv1.UploadRequest
		msg  string
	}{
		{"empty data", &parleyv1.UploadRequest{Name: "a.txt"}, "data is empty"},
		{"empty name", &parleyv1.UploadRequest{Data: []byte("x")}, "name is empty"},
		{"blank name", &parleyv1.UploadRequest{Name: "   ", Data: []byte("x")}, "name is blank"},
		{"slash", &parleyv1.UploadRequest{Name: "etc/passwd", Data: []byte("x")}, "contains '/'"},
		{"NUL", &parleyv1.UploadRequest{Name: "a\x00b", Data: []byte("x")}, "control characters"},
		{"newline", &parleyv1.UploadRequest{Name: "a\nb", Data: []byte("x")}, "control characters"},
		{"dot dot", &parleyv1.UploadRequest{Name: "..", Data: []byte("x")}, "is not a file name"},
		{"long name", &parleyv1.UploadRequest{Name: strings.Repeat("é", 256), Data: []byte("x")}, "name is 256 characters; at most 255"},
		{"type without subtype", &parleyv1.UploadRequest{Name: "a", ContentType: "png", Data: []byte("x")}, "content_type \"png\" is not a MIME type"},
		{"type with spaces", &parleyv1.UploadRequest{Name: "a", ContentType: "image png", Data: []byte("x")}, "is not a MIME type"},
		{"long type", &parleyv1.UploadRequest{Name: "a", ContentType: "a/" + strings.Repeat("b", 126), Data: []byte("x")}, "content_type is 128 characters; at most 127"},
		{"non-ASCII type", &parleyv1.UploadRequest{Name: "a", ContentType: "image/pñg", Data: []byte("x")}, "printable ASCII"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := client.Upload(alice.ctx(t), tc.req)
			wantCode(t, "Upload", err, codes.InvalidArgument, tc.msg)
		})
	}
	// Names at the limit and types with parameters are fine.
	alice.upload(t, strings.Repeat("é", 255), "text/plain; charset=utf-8", []byte("ok"))

	for _, id := range []string{"", "abc", strings.ToUpper(sha([]byte("x"))), sha([]byte("x")) + "0"} {
		_, _, err := alice.download(t, id)
		wantCode(t, "Download of id "+id, err, codes.InvalidArgument, "attachment_id")
	}

	// Without a token nothing is stored or read.
	_, err := client.Upload(t.Context(), &parleyv1.UploadRequest{Name: "a", Data: []byte("x")})
	wantCode(t, "Upload without a token", err, codes.Unauthenticated, "")
	st, err := client.Download(t.Context(), &parleyv1.DownloadRequest{AttachmentId: sha([]byte("ok"))})
	if err == nil {
		_, err = st.Recv()
	}
	wantCode(t, "Download without a token", err, codes.Unauthenticated, "")
}
