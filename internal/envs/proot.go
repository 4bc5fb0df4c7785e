package envs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/provider/proot"
	"github.com/stacyvm/stacyvm/internal/rootfs"
)

// PRootImages writes root file systems into the PRoot provider's images
// directory, under the name the provider looks up for the image
// reference, so a PRoot sandbox spawns the build's image by the same name
// as a Docker sandbox does.
type PRootImages struct {
	Dir string
}

var _ RootfsWriter = PRootImages{}

// WriteRootfs implements RootfsWriter. The tree is unpacked into a hidden
// directory (never listed as an image) and renamed into place, so no half
// image is ever visible; the digest and size of the export sit beside it
// in a hidden file, so an image already written (the tag is content
// addressed) is reused with its numbers.
func (p PRootImages) WriteRootfs(ctx context.Context, b Builder, image string) (string, string, int64, error) {
	name, _, err := proot.ImageDir(image)
	if err != nil {
		return "", "", 0, err
	}
	dst := filepath.Join(p.Dir, name)
	meta := filepath.Join(p.Dir, "."+name+".digest")
	if _, err := os.Stat(dst); err == nil {
		if digest, size, ok := readMeta(meta); ok {
			return image, digest, size, nil
		}
	}
	if err := os.MkdirAll(p.Dir, 0o755); err != nil {
		return "", "", 0, errdefs.Wrap(errdefs.ErrProviderUnavailable, err, "proot images directory")
	}
	tmp, err := os.MkdirTemp(p.Dir, ".env-")
	if err != nil {
		return "", "", 0, errdefs.Wrap(errdefs.ErrProviderUnavailable, err, "proot images directory")
	}
	done := false
	defer func() {
		if !done {
			os.RemoveAll(tmp)
		}
	}()
	root, err := os.OpenRoot(tmp)
	if err != nil {
		return "", "", 0, err
	}
	defer root.Close()

	pr, pw := io.Pipe()
	dw := newDigestWriter()
	exported := make(chan error, 1)
	go func() {
		err := b.Export(ctx, image, io.MultiWriter(pw, dw))
		pw.CloseWithError(err)
		exported <- err
	}()
	_, xerr := rootfs.Extract(ctx, pr, root)
	pr.CloseWithError(errors.New("extraction stopped"))
	if err := errors.Join(<-exported, xerr); err != nil {
		return "", "", 0, fmt.Errorf("export %s as a PRoot root file system: %w", image, err)
	}
	// What the PRoot provider expects in every image.
	for _, d := range []string{"workspace", "run/stacyvm", "tmp"} {
		if err := root.MkdirAll(d, 0o755); err != nil {
			return "", "", 0, err
		}
	}
	if err := root.Chmod("tmp", 0o777|fs.ModeSticky); err != nil {
		return "", "", 0, err
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return "", "", 0, err
	}
	if err := os.RemoveAll(dst); err != nil {
		return "", "", 0, err
	}
	if err := os.Rename(tmp, dst); err != nil {
		return "", "", 0, err
	}
	done = true
	digest := dw.Digest()
	if err := os.WriteFile(meta, []byte(digest+" "+strconv.FormatInt(dw.n, 10)+"\n"), 0o644); err != nil {
		return "", "", 0, err
	}
	return image, digest, dw.n, nil
}

func readMeta(path string) (string, int64, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", 0, false
	}
	digest, sizeText, ok := strings.Cut(strings.TrimSpace(string(b)), " ")
	size, err := strconv.ParseInt(sizeText, 10, 64)
	if !ok || err != nil || !strings.HasPrefix(digest, "sha256:") || size <= 0 {
		return "", 0, false
	}
	return digest, size, true
}
