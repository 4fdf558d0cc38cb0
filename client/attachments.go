package client

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
)

// Upload stores a file on the server and returns its Attachment, to pass to
// WithAttachments. The whole file travels in one message, so data is
// limited by the server's --max-attachment (RESOURCE_EXHAUSTED beyond it).
// name is the file name shown to people (no '/'); an empty contentType
// means application/octet-stream. Uploading the same content twice stores
// it once and returns the same id, which is the content's sha256; Upload
// checks that it is, and fails with ErrChecksum if not.
func (c *Client) Upload(ctx context.Context, name, contentType string, data []byte) (*parleyv1.Attachment, error) {
	resp, err := c.files.Upload(ctx, &parleyv1.UploadRequest{Name: name, ContentType: contentType, Data: data})
	if err != nil {
		return nil, fmt.Errorf("upload %s: %w", name, err)
	}
	att := resp.GetAttachment()
	sum := sha256.Sum256(data)
	if want := hex.EncodeToString(sum[:]); !strings.EqualFold(att.GetId(), want) {
		return nil, fmt.Errorf("upload %s: the server named it %q, not its sha256 %s: %w", name, att.GetId(), want, ErrChecksum)
	}
	return att, nil
}

// Download streams the attachment with the given id into w and returns its
// description (name, content type, size). It checks what it received
// against the id, the sha256 of the content, and against the size the
// server announced, and fails with ErrChecksum if either differs.
//
// w has been written to by the time Download returns, whatever the
// outcome: a caller that must never keep a bad or partial file writes to a
// temporary one and renames it only on success. The server answers
// PERMISSION_DENIED for a file the caller did not upload and was not sent
// in one of their conversations, whether or not it exists.
func (c *Client) Download(ctx context.Context, id string, w io.Writer) (*parleyv1.Attachment, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the stream if we stop reading early
	stream, err := c.files.Download(ctx, &parleyv1.DownloadRequest{AttachmentId: id})
	if err != nil {
		return nil, fmt.Errorf("download %s: %w", id, err)
	}
	var desc *parleyv1.Attachment
	h := sha256.New()
	var n uint64
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return desc, fmt.Errorf("download %s: %w", id, err)
		}
		switch part := resp.GetPart().(type) {
		case *parleyv1.DownloadResponse_Attachment:
			desc = part.Attachment
		case *parleyv1.DownloadResponse_Chunk:
			h.Write(part.Chunk)
			n += uint64(len(part.Chunk))
			if _, err := w.Write(part.Chunk); err != nil {
				return desc, fmt.Errorf("download %s: write: %w", id, err)
			}
		}
	}
	if desc == nil {
		return nil, fmt.Errorf("download %s: the server sent no description of the file: %w", id, ErrChecksum)
	}
	if got := hex.EncodeToString(h.Sum(nil)); !strings.EqualFold(got, id) {
		return desc, fmt.Errorf("download %s: received %d bytes with sha256 %s: %w", id, n, got, ErrChecksum)
	}
	if n != desc.GetSize() {
		return desc, fmt.Errorf("download %s: received %d bytes, the server announced %d: %w", id, n, desc.GetSize(), ErrChecksum)
	}
	return desc, nil
}
