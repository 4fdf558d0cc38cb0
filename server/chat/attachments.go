package chat

import (
	"context"
	"fmt"
	"mime"
	"strings"
	"unicode/utf8"

	"google.golang.org/grpc"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
	"github.com/parleychat/parley/server/auth"
	"github.com/parleychat/parley/server/store"
)

// Limits on attachments that are not flags (the size is: --max-attachment).
const (
	maxMessageAttachments = 10
	maxFileName           = 255
	maxContentType        = 127
	defaultContentType    = "application/octet-stream"
	defaultFileName       = "file"
	// downloadChunks is how many stored chunks Download copies out of one
	// read transaction: 1 MiB at a time, so a download holds little memory
	// and never keeps a read transaction open while it waits on the client.
	downloadChunks = 16
)

// Blobs is what attachments need from durable state. *store.Store
// implements it.
type Blobs interface {
	PutBlob(data []byte, uploader string, l store.Label) (id string, created bool, err error)
	GrantConversation(conv string, refs []store.BlobRef) error
	MayRead(id, user string) (store.BlobInfo, bool, error)
	BlobChunks(id string, first, max int) ([][]byte, error)
}

var _ Blobs = (*store.Store)(nil)

var _ parleyv1.AttachmentServiceServer = (*Service)(nil)

// Upload implements parleyv1.AttachmentServiceServer. It returns once the
// file is on disk. A file that is already stored is not written again; the
// caller is recorded as one of its uploaders either way, and the answer does
// not say which happened, so that uploads cannot probe for content.
func (s *Service) Upload(ctx context.Context, req *parleyv1.UploadRequest) (*parleyv1.UploadResponse, error) {
	data := req.GetData()
	if len(data) > s.opts.maxAttachment {
		return nil, toStatus(tooLarge(len(data), s.opts.maxAttachment))
	}
	if len(data) == 0 {
		return nil, toStatus(invalid("data is empty: an attachment has at least 1 byte"))
	}
	if req.GetName() == "" {
		return nil, toStatus(invalid("name is empty: give the file a name, e.g. photo.jpg"))
	}
	l, err := validLabel("name", "content_type", req.GetName(), req.GetContentType())
	if err != nil {
		return nil, toStatus(err)
	}
	id, _, err := s.store.PutBlob(data, auth.UserID(ctx), l)
	if err != nil {
		return nil, toStatus(err)
	}
	return &parleyv1.UploadResponse{Attachment: &parleyv1.Attachment{
		Id: id, Name: l.Name, ContentType: l.ContentType, Size: uint64(len(data)),
	}}, nil
}

// Download implements parleyv1.AttachmentServiceServer: a first frame that
// describes the file, then its content in chunks of store.BlobChunkSize.
func (s *Service) Download(req *parleyv1.DownloadRequest, stream grpc.ServerStreamingServer[parleyv1.DownloadResponse]) error {
	id := req.GetAttachmentId()
	if err := validBlobID("attachment_id", id); err != nil {
		return toStatus(err)
	}
	info, ok, err := s.store.MayRead(id, auth.UserID(stream.Context()))
	if err != nil {
		return toStatus(err)
	}
	if !ok {
		return toStatus(deniedAttachment("attachment_id", id))
	}
	first := &parleyv1.DownloadResponse{Part: &parleyv1.DownloadResponse_Attachment{Attachment: &parleyv1.Attachment{
		Id: id, Name: info.Name, ContentType: info.ContentType, Size: uint64(info.Size),
	}}}
	if err := stream.Send(first); err != nil {
		return err
	}
	for i := 0; ; i += downloadChunks {
		if s.shuttingDown() {
			return toStatus(fmt.Errorf("%w: server is shutting down; download the file again", errUnavailable))
		}
		chunks, err := s.store.BlobChunks(id, i, downloadChunks)
		if err != nil {
			return toStatus(err)
		}
		for _, c := range chunks {
			if err := stream.Send(&parleyv1.DownloadResponse{Part: &parleyv1.DownloadResponse_Chunk{Chunk: c}}); err != nil {
				return err
			}
		}
		if len(chunks) < downloadChunks {
			return nil
		}
	}
}

// validAttachments checks the shape of a message's attachments: how many,
// well-formed ids, names and content types. It needs no state, so the
// request validator can run it; resolveAttachments runs it too.
func validAttachments(atts []*parleyv1.Attachment) error {
	if len(atts) > maxMessageAttachments {
		return invalid("%d attachments; a message carries at most %d", len(atts), maxMessageAttachments)
	}
	for i, a := range atts {
		field := fmt.Sprintf("attachments[%d]", i)
		if a == nil {
			return invalid("%s is empty: give the id that Upload returned", field)
		}
		if err := validBlobID(field+".id", a.GetId()); err != nil {
			return err
		}
		if _, err := validLabel(field+".name", field+".content_type", a.GetName(), a.GetContentType()); err != nil {
			return err
		}
	}
	return nil
}

// resolveAttachments checks a message's attachments for user (who must be
// allowed to read each file: they uploaded it, or it was sent in a
// conversation they are a member of) and returns copies to put in the
// message: size from the store, an empty name as "file", an empty content
// type as application/octet-stream. The send path calls it after the
// membership check and before attachmentsSent and router.Publish.
func (s *Service) resolveAttachments(user string, in []*parleyv1.Attachment) ([]*parleyv1.Attachment, error) {
	if len(in) == 0 {
		return nil, nil
	}
	if err := validAttachments(in); err != nil {
		return nil, err
	}
	out := make([]*parleyv1.Attachment, len(in))
	for i, a := range in {
		info, ok, err := s.store.MayRead(a.GetId(), user)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, deniedAttachment(fmt.Sprintf("attachments[%d].id", i), a.GetId())
		}
		// validAttachments passed, so only the defaults remain to fill in.
		l, _ := validLabel("", "", a.GetName(), a.GetContentType())
		out[i] = &parleyv1.Attachment{Id: a.GetId(), Name: l.Name, ContentType: l.ContentType, Size: uint64(info.Size)}
	}
	return out, nil
}

// attachmentsSent records that atts (as returned by resolveAttachments)
// were sent in conv, so that conv's members may download them. The send
// path must call it before router.Publish, because the router delivers the
// message before it is durable and recipients may download at once; and
// never from an ack callback, which runs on the store's writer goroutine
// and would deadlock waiting for it. It writes only the first time a file
// is sent in conv, so a resend costs one read.
func (s *Service) attachmentsSent(conv string, atts []*parleyv1.Attachment) error {
	if len(atts) == 0 {
		return nil
	}
	refs := make([]store.BlobRef, len(atts))
	for i, a := range atts {
		refs[i] = store.BlobRef{ID: a.GetId(), Label: store.Label{Name: a.GetName(), ContentType: a.GetContentType()}}
	}
	if err := s.store.GrantConversation(conv, refs); err != nil {
		return fmt.Errorf("record attachments sent in %s: %w", conv, err)
	}
	return nil
}

func tooLarge(n, limit int) error {
	return fmt.Errorf("%w: attachment is %d bytes; the limit is %d (--max-attachment)", errExhausted, n, limit)
}

// deniedAttachment is the answer for a file the caller may not read. It is
// the same whether or not the file exists, so ids cannot be probed.
func deniedAttachment(field, id string) error {
	return fmt.Errorf("%w: %s %s: only its uploader and members of conversations where it was sent may use it (or no such file exists); upload the file yourself to get access",
		errDenied, field, id)
}

func validBlobID(field, id string) error {
	if id == "" {
		return invalid("%s is empty: give the id that Upload returned", field)
	}
	if !store.IsBlobID(id) {
		return invalid("%s %q is not a file id: want the 64 lowercase hex digits of the file's sha256, as Upload returns it", field, truncate(id))
	}
	return nil
}

// validLabel checks a file name and content type and fills in the defaults
// for empty ones.
func validLabel(nameField, typeField, name, contentType string) (store.Label, error) {
	if name == "" {
		name = defaultFileName
	}
	if contentType == "" {
		contentType = defaultContentType
	}
	if err := validFileName(nameField, name); err != nil {
		return store.Label{}, err
	}
	if err := validContentType(typeField, contentType); err != nil {
		return store.Label{}, err
	}
	return store.Label{Name: name, ContentType: contentType}, nil
}

func validFileName(field, name string) error {
	if !utf8.ValidString(name) {
		return invalid("%s is not valid UTF-8", field)
	}
	if n := utf8.RuneCountInString(name); n > maxFileName {
		return invalid("%s is %d characters; at most %d", field, n, maxFileName)
	}
	if strings.TrimSpace(name) == "" {
		return invalid("%s is blank: give the file a name, e.g. photo.jpg", field)
	}
	if strings.ContainsRune(name, '/') {
		return invalid("%s %q contains '/': give the file's own name, without directories", field, truncate(name))
	}
	if strings.ContainsFunc(name, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return invalid("%s contains control characters (such as NUL, tab or newline): remove them", field)
	}
	if name == "." || name == ".." {
		return invalid("%s %q is not a file name", field, name)
	}
	return nil
}

func validContentType(field, ct string) error {
	if len(ct) > maxContentType {
		return invalid("%s is %d characters; at most %d", field, len(ct), maxContentType)
	}
	for i := 0; i < len(ct); i++ {
		if ct[i] < 0x20 || ct[i] > 0x7e {
			return invalid("%s must be printable ASCII, like image/png", field)
		}
	}
	if mt, _, err := mime.ParseMediaType(ct); err != nil || !strings.Contains(mt, "/") {
		return invalid("%s %q is not a MIME type: want type/subtype, like image/png or text/plain; charset=utf-8 (or leave it empty for %s)",
			field, truncate(ct), defaultContentType)
	}
	return nil
}
