//go:build linux

package fakevmm

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// A snapshot's "memory" brings back the guest's tree: contents, modes
// (set-id bits included), owners, symlinks and times; /dev and the vsock
// stand-ins are left for the boot to make again.
func TestTreeRoundTrip(t *testing.T) {
	src := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(src, "workspace", "sub"), 0o755))
	must(os.WriteFile(filepath.Join(src, "workspace", "sub", "f"), []byte("kept"), 0o640))
	must(os.WriteFile(filepath.Join(src, "suid"), []byte("x"), 0o755))
	must(os.Chmod(filepath.Join(src, "suid"), 0o755|fs.ModeSetuid))
	must(os.Symlink("workspace/sub/f", filepath.Join(src, "link")))
	must(os.MkdirAll(filepath.Join(src, "dev"), 0o755))
	must(os.WriteFile(filepath.Join(src, "dev", "null"), nil, 0o666))
	must(os.MkdirAll(filepath.Join(src, guestVsockDir), 0o755))
	must(os.WriteFile(filepath.Join(src, guestVsockDir, "1024.sock"), nil, 0o600))
	owned := filepath.Join(src, "owned")
	must(os.WriteFile(owned, []byte("o"), 0o600))
	if os.Geteuid() == 0 {
		must(os.Lchown(owned, 1234, 5678))
	}
	mtime := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	must(os.Chtimes(filepath.Join(src, "workspace", "sub", "f"), mtime, mtime))

	var mem bytes.Buffer
	mem.WriteString("header\n")
	must(writeTree(&mem, src))
	memFile := filepath.Join(t.TempDir(), "mem")
	must(os.WriteFile(memFile, mem.Bytes(), 0o600))
	dst := t.TempDir()
	must(readTree(memFile, int64(len("header\n")), dst))

	if b, err := os.ReadFile(filepath.Join(dst, "workspace", "sub", "f")); err != nil || string(b) != "kept" {
		t.Errorf("file: %q, %v", b, err)
	}
	if fi, err := os.Stat(filepath.Join(dst, "workspace", "sub", "f")); err != nil || fi.Mode().Perm() != 0o640 || !fi.ModTime().Equal(mtime) {
		t.Errorf("file mode and time: %v", fi.Mode())
	}
	if fi, err := os.Stat(filepath.Join(dst, "suid")); err != nil || fi.Mode()&fs.ModeSetuid == 0 {
		t.Errorf("set-uid file: %v, %v", fi.Mode(), err)
	}
	if l, err := os.Readlink(filepath.Join(dst, "link")); err != nil || l != "workspace/sub/f" {
		t.Errorf("symlink: %q, %v", l, err)
	}
	for _, gone := range []string{"dev", guestVsockDir} {
		if _, err := os.Lstat(filepath.Join(dst, gone)); err == nil {
			t.Errorf("%s was saved; the boot makes it", gone)
		}
	}
	if os.Geteuid() == 0 {
		fi, err := os.Lstat(filepath.Join(dst, "owned"))
		if st, ok := fi.Sys().(*syscall.Stat_t); err != nil || !ok || st.Uid != 1234 || st.Gid != 5678 {
			t.Errorf("owner not kept: %+v, %v", fi.Sys(), err)
		}
	}
}
