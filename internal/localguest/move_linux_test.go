//go:build linux

package localguest

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stacyvm/stacyvm/internal/errdefs"
)

// TestMoveAcrossFileSystems moves between the root's file system and a
// tmpfs mounted inside it, where rename fails with EXDEV.
func TestMoveAcrossFileSystems(t *testing.T) {
	g, dir := newGuest(t)
	mnt := filepath.Join(dir, "mnt")
	must(t, os.Mkdir(mnt, 0o755))
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size=16m"); err != nil {
		t.Skipf("cannot mount a tmpfs (needs CAP_SYS_ADMIN): %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(mnt, syscall.MNT_DETACH) })
	ctx := t.Context()

	writeString(t, g, "/mnt/file.txt", "across")
	must(t, g.Chmod(ctx, "/mnt/file.txt", 0o751))
	must(t, os.Symlink("file.txt", filepath.Join(mnt, "link")))
	must(t, g.MoveFile(ctx, "/mnt/file.txt", "/workspace/moved/file.txt"))
	if got, err := readString(t, g, "/workspace/moved/file.txt"); err != nil || got != "across" {
		t.Errorf("moved file reads %q, %v", got, err)
	}
	if fi, err := g.StatFile(ctx, "/workspace/moved/file.txt"); err != nil || fi.Mode != 0o751 {
		t.Errorf("moved file mode: %+v, %v; want 0751 kept", fi, err)
	}
	if _, err := g.StatFile(ctx, "/mnt/file.txt"); err == nil {
		t.Error("source still exists after a cross-file-system move")
	}
	must(t, g.MoveFile(ctx, "/mnt/link", "/workspace/moved/link"))
	if fi, err := g.StatFile(ctx, "/workspace/moved/link"); err != nil || fi.Mode&fs.ModeSymlink == 0 {
		t.Errorf("moved link: %+v, %v", fi, err)
	}
	if target, err := os.Readlink(filepath.Join(dir, "workspace/moved/link")); err != nil || target != "file.txt" {
		t.Errorf("moved link points to %q, %v", target, err)
	}

	writeString(t, g, "/mnt/d/x", "x")
	if err := g.MoveFile(ctx, "/mnt/d", "/workspace/d"); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("moving a directory across file systems: %v; want it refused as invalid", err)
	}
	if got, _ := readString(t, g, "/mnt/d/x"); got != "x" {
		t.Error("refused directory move lost content")
	}
}
