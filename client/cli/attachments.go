package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"google.golang.org/grpc/codes"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
)

func (r *runner) download(ctx context.Context, fset *flag.FlagSet, args []string) error {
	out := fset.String("o", "", "save to `file` (- for standard output; default: the attachment's own name in the current directory)")
	pos, err := r.parse(fset, args, 1, 1)
	if err != nil {
		return err
	}
	id := pos[0]
	c, _, err := r.dial(ctx, true)
	if err != nil {
		return err
	}
	defer c.Close()
	// No --timeout here: a large file may take longer than one call should;
	// Ctrl-C stops it.
	if *out == "-" {
		_, err := c.Download(ctx, id, r.stdout)
		return err
	}

	dir := "."
	if *out != "" {
		dir = filepath.Dir(*out)
	}
	// Download next to the destination and move it there only once it is
	// complete and checked, so that a failure never leaves a bad file
	// under the name.
	tmp, err := os.CreateTemp(dir, ".parley-download-*")
	if err != nil {
		return localError{codes.FailedPrecondition, fmt.Sprintf("download %s: %v", id, err)}
	}
	defer os.Remove(tmp.Name()) // fails harmlessly once moved
	att, err := c.Download(ctx, id, tmp)
	if cerr := tmp.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("download %s: %w", id, cerr)
	}
	if err != nil {
		return err
	}
	dest := *out
	if dest == "" {
		dest = localName(att)
		// A link fails if the name is taken, where a rename would replace
		// the file: never overwrite what the user did not name.
		if err := os.Link(tmp.Name(), dest); err != nil {
			if errors.Is(err, fs.ErrExist) {
				return localError{codes.AlreadyExists, fmt.Sprintf("%s already exists: choose another name with -o", dest)}
			}
			return localError{codes.FailedPrecondition, fmt.Sprintf("save %s: %v", dest, err)}
		}
	} else if err := os.Rename(tmp.Name(), dest); err != nil {
		return localError{codes.FailedPrecondition, fmt.Sprintf("save %s: %v", dest, err)}
	}
	// CreateTemp made the file 0600, which suits a temporary file, not a
	// download.
	if err := os.Chmod(dest, 0o644); err != nil {
		return localError{codes.FailedPrecondition, fmt.Sprintf("save %s: %v", dest, err)}
	}
	fmt.Fprintf(r.stdout, "saved %s (%d bytes, %s)\n", dest, att.GetSize(), att.GetContentType())
	return nil
}

// localName is a safe name in the current directory for a downloaded
// file: the name it was sent under, without any directory part, else its
// id.
func localName(att *parleyv1.Attachment) string {
	name := filepath.Base(strings.ReplaceAll(att.GetName(), "\\", "/"))
	if name == "." || name == ".." || name == "/" || strings.HasPrefix(name, ".") || strings.ContainsFunc(name, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return att.GetId()
	}
	return name
}
