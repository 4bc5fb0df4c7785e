package proot

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/stacyvm/stacyvm/internal/errdefs"
)

// An image is a root file system directory directly under the images
// directory. Image references name it the way container images are named,
// so that the same spawn request works with Docker and PRoot:
//
//	busybox              → busybox
//	stacyvm/debian:test  → stacyvm_debian_test
//	alpine:latest        → alpine_latest, else alpine
//
// Every '/' and ':' becomes '_'. The mapping is not injective
// ("a/b" and "a_b" name the same directory), which is harmless: the
// directory, not the reference, is the image. A directory name is itself a
// valid reference, so the names ImageNames lists can be spawned as they
// are. Hidden directories (".name") are never images; they are free for
// work in progress, such as an image being unpacked.
var validImage = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._/:-]*$`)

// maxImageLen bounds image references (one path element on disk).
const maxImageLen = 200

// ImageDir returns the directory name, under the images directory, of an
// image reference, and the fallback name tried when that does not exist
// ("" when there is none): a ":latest" tag may be left off on disk.
func ImageDir(image string) (name, fallback string, err error) {
	if len(image) > maxImageLen || !validImage.MatchString(image) || strings.Contains(image, "..") {
		return "", "", errdefs.New(errdefs.ErrInvalidArgument,
			"image %q is not a valid name: want letters, digits and . _ - / : (a rootfs directory under the images directory)", image)
	}
	r := strings.NewReplacer("/", "_", ":", "_")
	name = r.Replace(image)
	if base, ok := strings.CutSuffix(image, ":latest"); ok {
		fallback = r.Replace(base)
	}
	return name, fallback, nil
}

// ImageNames lists the images in dir, sorted: every directory (or symbolic
// link to one) whose name does not start with a dot.
func ImageNames(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		n := e.Name()
		if strings.HasPrefix(n, ".") {
			continue
		}
		fi, err := os.Stat(filepath.Join(dir, n))
		if err != nil || !fi.IsDir() {
			continue
		}
		out = append(out, n)
	}
	slices.Sort(out)
	return out, nil
}

// findImage returns the host directory of image under dir, or an
// errdefs.ErrNotFound error that lists the images that exist. Messages name
// images, never host paths.
func findImage(dir, image string) (string, error) {
	name, fallback, err := ImageDir(image)
	if err != nil {
		return "", err
	}
	for _, n := range []string{name, fallback} {
		if n == "" {
			continue
		}
		p := filepath.Join(dir, n)
		fi, err := os.Stat(p)
		if err == nil && fi.IsDir() {
			return p, nil
		}
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return "", errdefs.Wrap(errdefs.ErrProviderUnavailable, unwrapPath(err), "proot: image %q", image)
		}
	}
	names, err := ImageNames(dir)
	if err != nil {
		return "", errdefs.Wrap(errdefs.ErrProviderUnavailable, unwrapPath(err), "proot: reading the images directory")
	}
	have := "there are none"
	if len(names) > 0 {
		have = "available: " + strings.Join(names, ", ")
	}
	return "", errdefs.WithHint(
		errdefs.New(errdefs.ErrNotFound, "proot: no image %q (rootfs directory %q); %s", image, name, have),
		"spawn one of the available images, or make a root file system directory for this one (docs/proot.md)")
}

// unwrapPath drops the host path a *PathError or *LinkError carries, so
// that errors reaching API clients name no host path.
func unwrapPath(err error) error {
	if pe, ok := errors.AsType[*fs.PathError](err); ok {
		return pe.Err
	}
	if le, ok := errors.AsType[*os.LinkError](err); ok {
		return le.Err
	}
	if se, ok := errors.AsType[*os.SyscallError](err); ok {
		return se.Err
	}
	return err
}
