package localguest

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
)

// newGuest returns a guest on a fresh root and the host directory behind it.
func newGuest(t *testing.T) (*Guest, string) {
	t.Helper()
	dir := t.TempDir()
	g, err := New(Options{Root: dir, MapExecPaths: true, Env: []string{"PATH=" + os.Getenv("PATH")}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	return g, dir
}

func writeString(t *testing.T, g *Guest, p, s string) {
	t.Helper()
	if err := g.WriteFile(t.Context(), p, strings.NewReader(s), 0); err != nil {
		t.Fatalf("WriteFile(%q): %v", p, err)
	}
}

func readString(t *testing.T, g *Guest, p string) (string, error) {
	t.Helper()
	rc, err := g.ReadFile(t.Context(), p)
	if err != nil {
		return "", err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	return string(b), err
}

func TestNewCreatesWorkspaceAndTmp(t *testing.T) {
	_, dir := newGuest(t)
	for name, want := range map[string]fs.FileMode{"workspace": fs.ModeDir | 0o755, "tmp": fs.ModeDir | fs.ModeSticky | 0o777} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != want {
			t.Errorf("/%s mode = %v, want %v", name, fi.Mode(), want)
		}
	}
	if _, err := New(Options{Root: filepath.Join(dir, "missing")}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("New on a missing root: %v, want invalid argument", err)
	}
}

func TestSandboxPath(t *testing.T) {
	tests := []struct {
		in, want string
		bad      bool
	}{
		{in: "a.txt", want: "/workspace/a.txt"},
		{in: "./x/../y", want: "/workspace/y"},
		{in: "/etc/passwd", want: "/etc/passwd"},
		{in: "../../etc/passwd", want: "/etc/passwd"},
		{in: "../../../../../../etc/passwd", want: "/etc/passwd"},
		{in: "/a//b/", want: "/a/b"},
		{in: "/..", want: "/"},
		{in: "", bad: true},
		{in: "a\x00b", bad: true},
	}
	for _, tt := range tests {
		got, err := SandboxPath(tt.in)
		if tt.bad {
			if !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Errorf("SandboxPath(%q) error = %v, want invalid argument", tt.in, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("SandboxPath(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

// TestEscapes plants a secret outside the root and links to it from inside
// in every way sandbox code could, then checks no file operation reaches it.
func TestEscapes(t *testing.T) {
	g, dir := newGuest(t)
	outside := t.TempDir()
	secret := filepath.Join(outside, "secret")
	if err := os.WriteFile(secret, []byte("TOP SECRET"), 0o600); err != nil {
		t.Fatal(err)
	}
	ws := filepath.Join(dir, "workspace")
	must(t, os.Symlink(secret, filepath.Join(ws, "abs-link")))
	must(t, os.Symlink(outside, filepath.Join(ws, "abs-dir")))
	rel, err := filepath.Rel(ws, secret)
	must(t, err)
	must(t, os.Symlink(rel, filepath.Join(ws, "rel-link")))
	relDir, err := filepath.Rel(ws, outside)
	must(t, err)
	must(t, os.Symlink(relDir, filepath.Join(ws, "rel-dir")))
	hardlinked := os.Link(secret, filepath.Join(ws, "hard")) == nil

	hostPaths := []string{
		secret,                      // absolute host path: a sandbox path inside the root
		"../../" + secret,           // climbing with ..
		"/workspace/abs-link",       // absolute link: resolved inside the root
		"/workspace/rel-link",       // relative link climbing out: stops at the root
		"/workspace/abs-dir/secret", // through a linked directory
		"/workspace/rel-dir/secret", //
		"/workspace/rel-dir/../../" + filepath.Base(outside) + "/secret",
	}
	if hardlinked {
		hostPaths = append(hostPaths, "/workspace/hard")
	}
	ctx := t.Context()
	if hardlinked {
		if _, err := readString(t, g, "/workspace/hard"); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("reading a hard-linked file: %v, want invalid argument", err)
		}
		if err := g.Chmod(ctx, "/workspace/hard", 0o777); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("chmod of a hard-linked file: %v, want invalid argument", err)
		}
	}
	for _, p := range hostPaths {
		t.Run("read"+strings.ReplaceAll(p, "/", "_"), func(t *testing.T) {
			got, err := readString(t, g, p)
			if err == nil && strings.Contains(got, "TOP SECRET") {
				t.Fatalf("ReadFile(%q) read the host secret", p)
			}
			if err != nil && errdefs.Classify(err) == nil {
				t.Errorf("ReadFile(%q): unclassified error %v", p, err)
			}
			if err != nil && strings.Contains(err.Error(), dir) {
				t.Errorf("ReadFile(%q): error leaks host path: %v", p, err)
			}
			// Writes land inside the root (or fail), never on the secret.
			g.WriteFile(ctx, p, strings.NewReader("OVERWRITTEN"), 0o644)
			g.Chmod(ctx, p, 0o777)
			g.DeleteFile(ctx, p, true)
			g.MoveFile(ctx, p, "/workspace/moved")
		})
	}
	b, err := os.ReadFile(secret)
	if err != nil || string(b) != "TOP SECRET" {
		t.Fatalf("host secret changed: %q, %v", b, err)
	}
	if fi, err := os.Stat(secret); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("host secret mode changed: %v, %v", fi.Mode(), err)
	}
	// An absolute link resolves inside the root: writing through it makes
	// the file at the same path under the root.
	must(t, os.Symlink(secret, filepath.Join(ws, "abs-link2")))
	must(t, g.WriteFile(ctx, "abs-link2", strings.NewReader("INSIDE"), 0))
	if b, err := os.ReadFile(filepath.Join(dir, secret)); err != nil || string(b) != "INSIDE" {
		t.Errorf("write through an absolute link: %q, %v; want it under the root", b, err)
	}
}

func TestResolveChrootSemantics(t *testing.T) {
	g, dir := newGuest(t)
	must(t, os.MkdirAll(filepath.Join(dir, "data/sub"), 0o755))
	must(t, os.WriteFile(filepath.Join(dir, "data/sub/f"), []byte("inside"), 0o644))
	ws := filepath.Join(dir, "workspace")
	must(t, os.Symlink("/data", filepath.Join(ws, "d")))
	must(t, os.Symlink("d/sub/f", filepath.Join(ws, "chain")))
	must(t, os.Symlink("loop2", filepath.Join(ws, "loop1")))
	must(t, os.Symlink("loop1", filepath.Join(ws, "loop2")))

	tests := []struct {
		path    string
		want    string
		wantErr *errdefs.Class
	}{
		{path: "d/sub/f", want: "inside"},
		{path: "chain", want: "inside"},
		// Cleaned before any link is followed: this is /workspace/data/sub/f.
		{path: "/workspace/d/../data/sub/f", wantErr: errdefs.ErrFileNotFound},
		{path: "loop1", wantErr: errdefs.ErrInvalidArgument},
		{path: "/data/sub", wantErr: errdefs.ErrInvalidArgument},
		{path: "/data/sub/f/x", wantErr: errdefs.ErrFileNotFound},
		{path: "/nope", wantErr: errdefs.ErrFileNotFound},
	}
	for _, tt := range tests {
		got, err := readString(t, g, tt.path)
		if tt.wantErr != nil {
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("ReadFile(%q) = %q, %v; want %v", tt.path, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ReadFile(%q) = %q, %v; want %q", tt.path, got, err, tt.want)
		}
	}
}

func TestWriteFile(t *testing.T) {
	g, dir := newGuest(t)
	ctx := t.Context()
	tests := []struct {
		name     string
		path     string
		mode     fs.FileMode
		wantMode fs.FileMode
		wantErr  *errdefs.Class
	}{
		{name: "default mode", path: "a.txt", wantMode: 0o644},
		{name: "parents created", path: "/deep/er/b.txt", mode: 0o600, wantMode: 0o600},
		{name: "mode beats umask", path: "c.sh", mode: 0o777, wantMode: 0o777},
		{name: "unix setuid bits", path: "d", mode: 0o4755, wantMode: fs.ModeSetuid | 0o755},
		{name: "mode out of range", path: "e", mode: 0o17777, wantErr: errdefs.ErrInvalidArgument},
		{name: "type bits", path: "f", mode: fs.ModeDir | 0o755, wantErr: errdefs.ErrInvalidArgument},
		{name: "onto a directory", path: "/workspace", wantErr: errdefs.ErrInvalidArgument},
		{name: "onto the root", path: "/", wantErr: errdefs.ErrInvalidArgument},
		{name: "parent is a file", path: "a.txt/x", wantErr: errdefs.ErrInvalidArgument},
		{name: "empty path", path: "", wantErr: errdefs.ErrInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := g.WriteFile(ctx, tt.path, strings.NewReader("content"), tt.mode)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("WriteFile error = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			fi, err := g.StatFile(ctx, tt.path)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode != tt.wantMode || fi.Size != 7 {
				t.Errorf("stat = mode %v size %d, want %v 7", fi.Mode, fi.Size, tt.wantMode)
			}
		})
	}
	// Nothing but the written files: no temporary files left behind.
	entries, err := os.ReadDir(filepath.Join(dir, "workspace"))
	must(t, err)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".stacyvm") {
			t.Errorf("temporary file left behind: %s", e.Name())
		}
	}
}

// blockingReader yields one chunk, then blocks until released.
type blockingReader struct {
	first   bool
	release chan struct{}
}

func (r *blockingReader) Read(p []byte) (int, error) {
	if !r.first {
		r.first = true
		return copy(p, "partial"), nil
	}
	<-r.release
	return copy(p, "more"), nil
}

func TestWriteFileCancelledLeavesOldContent(t *testing.T) {
	g, dir := newGuest(t)
	writeString(t, g, "f", "old")
	ctx, cancel := context.WithCancel(t.Context())
	r := &blockingReader{release: make(chan struct{})}
	done := make(chan error, 1)
	go func() { done <- g.WriteFile(ctx, "f", r, 0) }()
	time.Sleep(50 * time.Millisecond)
	if got, _ := readString(t, g, "f"); got != "old" {
		t.Errorf("mid-write read = %q, want the old content", got)
	}
	cancel()
	close(r.release)
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled WriteFile = %v, want context.Canceled", err)
	}
	if got, _ := readString(t, g, "f"); got != "old" {
		t.Errorf("after cancel = %q, want the old content", got)
	}
	entries, _ := os.ReadDir(filepath.Join(dir, "workspace"))
	if len(entries) != 1 {
		t.Errorf("workspace holds %d entries after a cancelled write, want 1", len(entries))
	}
}

func TestReadFileIsOSFile(t *testing.T) {
	g, _ := newGuest(t)
	writeString(t, g, "x", "hello")
	rc, err := g.ReadFile(t.Context(), "x")
	must(t, err)
	defer rc.Close()
	if _, ok := rc.(*os.File); !ok {
		t.Errorf("ReadFile returned %T, want *os.File", rc)
	}
}

func TestListStatDelete(t *testing.T) {
	g, dir := newGuest(t)
	ctx := t.Context()
	writeString(t, g, "b.txt", "bb")
	writeString(t, g, "a.txt", "a")
	writeString(t, g, "dir/inner.txt", "i")
	must(t, os.Symlink("a.txt", filepath.Join(dir, "workspace", "link")))

	list, err := g.ListFiles(ctx, "/workspace")
	must(t, err)
	var names []string
	for _, fi := range list {
		names = append(names, fi.Path)
	}
	want := "/workspace/a.txt /workspace/b.txt /workspace/dir /workspace/link"
	if got := strings.Join(names, " "); got != want {
		t.Errorf("ListFiles = %s, want %s", got, want)
	}
	if !list[2].IsDir || list[2].Mode&fs.ModeDir == 0 || list[1].Size != 2 || list[3].Mode&fs.ModeSymlink == 0 {
		t.Errorf("ListFiles details wrong: %+v", list)
	}

	if fi, err := g.StatFile(ctx, "link"); err != nil || fi.Mode&fs.ModeSymlink == 0 || fi.Path != "/workspace/link" {
		t.Errorf("StatFile(link) = %+v, %v; want the link itself", fi, err)
	}
	if fi, err := g.StatFile(ctx, "/"); err != nil || !fi.IsDir || fi.Path != "/" {
		t.Errorf("StatFile(/) = %+v, %v", fi, err)
	}

	errTests := []struct {
		name string
		op   func() error
		want *errdefs.Class
	}{
		{"list a file", func() error { _, err := g.ListFiles(ctx, "a.txt"); return err }, errdefs.ErrInvalidArgument},
		{"list missing", func() error { _, err := g.ListFiles(ctx, "nope"); return err }, errdefs.ErrFileNotFound},
		{"stat missing", func() error { _, err := g.StatFile(ctx, "nope"); return err }, errdefs.ErrFileNotFound},
		{"read a directory", func() error { _, err := g.ReadFile(ctx, "dir"); return err }, errdefs.ErrInvalidArgument},
		{"delete missing", func() error { return g.DeleteFile(ctx, "nope", false) }, errdefs.ErrFileNotFound},
		{"delete non-empty", func() error { return g.DeleteFile(ctx, "dir", false) }, errdefs.ErrConflict},
		{"delete root", func() error { return g.DeleteFile(ctx, "/", true) }, errdefs.ErrInvalidArgument},
		{"delete root by ..", func() error { return g.DeleteFile(ctx, "../..", true) }, errdefs.ErrInvalidArgument},
	}
	for _, tt := range errTests {
		if err := tt.op(); !errors.Is(err, tt.want) {
			t.Errorf("%s: %v, want %v", tt.name, err, tt.want)
		}
	}

	// Deleting the link leaves its target.
	must(t, g.DeleteFile(ctx, "link", false))
	if _, err := g.StatFile(ctx, "a.txt"); err != nil {
		t.Errorf("deleting a link removed its target: %v", err)
	}
	must(t, g.DeleteFile(ctx, "dir", true))
	if _, err := g.StatFile(ctx, "dir"); !errors.Is(err, errdefs.ErrFileNotFound) {
		t.Errorf("recursive delete left the directory: %v", err)
	}
	must(t, g.WriteFile(ctx, "empty/.keep", strings.NewReader(""), 0))
	must(t, g.DeleteFile(ctx, "empty/.keep", false))
	must(t, g.DeleteFile(ctx, "empty", false)) // an empty directory needs no recursive
}

func TestMoveAndChmod(t *testing.T) {
	g, _ := newGuest(t)
	ctx := t.Context()
	writeString(t, g, "src.txt", "payload")
	writeString(t, g, "other.txt", "other")
	writeString(t, g, "d1/f", "f")
	writeString(t, g, "d2/g", "g")

	must(t, g.MoveFile(ctx, "src.txt", "/new/parent/dst.txt"))
	if got, err := readString(t, g, "/new/parent/dst.txt"); err != nil || got != "payload" {
		t.Errorf("moved content = %q, %v", got, err)
	}
	if _, err := g.StatFile(ctx, "src.txt"); !errors.Is(err, errdefs.ErrFileNotFound) {
		t.Errorf("source still exists after move: %v", err)
	}
	must(t, g.MoveFile(ctx, "other.txt", "/new/parent/dst.txt")) // a file replaces a file
	if got, _ := readString(t, g, "/new/parent/dst.txt"); got != "other" {
		t.Errorf("replaced content = %q", got)
	}
	must(t, g.MoveFile(ctx, "d1", "d3"))
	must(t, g.MoveFile(ctx, "d3", "d3")) // same path: nothing to do

	tests := []struct {
		name     string
		old, new string
		want     *errdefs.Class
	}{
		{"missing source", "nope", "x", errdefs.ErrFileNotFound},
		{"onto a directory", "/new/parent/dst.txt", "d2", errdefs.ErrConflict},
		{"directory onto a file", "d3", "/new/parent/dst.txt", errdefs.ErrConflict},
		{"into itself", "d3", "d3/sub", errdefs.ErrInvalidArgument},
		{"the root", "/", "x", errdefs.ErrInvalidArgument},
	}
	for _, tt := range tests {
		if err := g.MoveFile(ctx, tt.old, tt.new); !errors.Is(err, tt.want) {
			t.Errorf("%s: MoveFile(%q, %q) = %v, want %v", tt.name, tt.old, tt.new, err, tt.want)
		}
	}

	chmodTests := []struct {
		path string
		mode fs.FileMode
		want fs.FileMode
		err  *errdefs.Class
	}{
		{"d3/f", 0o700, 0o700, nil},
		{"d3/f", 0, 0, nil},
		{"d3/f", 0o1755, fs.ModeSticky | 0o755, nil},
		{"d3", 0o750, fs.ModeDir | 0o750, nil},
		{"d3/f", 0o10000, 0, errdefs.ErrInvalidArgument},
		{"nope", 0o644, 0, errdefs.ErrFileNotFound},
	}
	for _, tt := range chmodTests {
		err := g.Chmod(ctx, tt.path, tt.mode)
		if tt.err != nil {
			if !errors.Is(err, tt.err) {
				t.Errorf("Chmod(%q, %#o) = %v, want %v", tt.path, tt.mode, err, tt.err)
			}
			continue
		}
		must(t, err)
		fi, err := g.StatFile(ctx, tt.path)
		must(t, err)
		if fi.Mode != tt.want {
			t.Errorf("after Chmod(%q, %#o) mode = %v, want %v", tt.path, tt.mode, fi.Mode, tt.want)
		}
	}
}

func TestGlob(t *testing.T) {
	g, dir := newGuest(t)
	for _, p := range []string{"a.go", "b.go", "c.txt", ".hidden.go", "pkg/x.go", "pkg/sub/y.go", "pkg/sub/deeper/z.go", "pkg/sub/n.txt", "/etc/conf"} {
		writeString(t, g, p, p)
	}
	ws := filepath.Join(dir, "workspace")
	must(t, os.Symlink("/etc", filepath.Join(ws, "etclink")))
	must(t, os.Symlink("..", filepath.Join(ws, "pkg", "up"))) // a cycle for **
	outside := t.TempDir()
	must(t, os.WriteFile(filepath.Join(outside, "leak.go"), nil, 0o644))
	must(t, os.Symlink(outside, filepath.Join(ws, "out")))

	tests := []struct {
		pattern string
		want    []string
		err     bool
	}{
		{pattern: "*.go", want: []string{"/workspace/.hidden.go", "/workspace/a.go", "/workspace/b.go"}},
		{pattern: "/workspace/?.txt", want: []string{"/workspace/c.txt"}},
		{pattern: "**/*.go", want: []string{"/workspace/.hidden.go", "/workspace/a.go", "/workspace/b.go", "/workspace/pkg/sub/deeper/z.go", "/workspace/pkg/sub/y.go", "/workspace/pkg/x.go"}},
		{pattern: "pkg/**/z.go", want: []string{"/workspace/pkg/sub/deeper/z.go"}},
		{pattern: "pkg/sub/**", want: []string{"/workspace/pkg/sub/deeper", "/workspace/pkg/sub/deeper/z.go", "/workspace/pkg/sub/n.txt", "/workspace/pkg/sub/y.go"}},
		{pattern: "pkg/**/**/y.go", want: []string{"/workspace/pkg/sub/y.go"}},
		{pattern: "etclink/*", want: []string{"/workspace/etclink/conf"}},
		{pattern: "/*/conf", want: []string{"/etc/conf"}},
		{pattern: "out/*.go", want: []string{}}, // /tmp/... inside the root does not exist
		{pattern: "[ab].go", want: []string{"/workspace/a.go", "/workspace/b.go"}},
		{pattern: "nothing/**", want: []string{}},
		{pattern: "[", err: true},
		{pattern: "", err: true},
	}
	for _, tt := range tests {
		got, err := g.Glob(t.Context(), tt.pattern)
		if tt.err {
			if !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Errorf("Glob(%q) error = %v, want invalid argument", tt.pattern, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("Glob(%q): %v", tt.pattern, err)
			continue
		}
		if strings.Join(got, " ") != strings.Join(tt.want, " ") {
			t.Errorf("Glob(%q) = %q, want %q", tt.pattern, got, tt.want)
		}
	}
}

func TestClosedGuest(t *testing.T) {
	g, _ := newGuest(t)
	must(t, g.Close())
	must(t, g.Close()) // idempotent
	if _, err := g.ReadFile(t.Context(), "x"); err == nil {
		t.Error("ReadFile after Close succeeded")
	}
	if _, err := g.Exec(t.Context(), execReq("true"), nil, nil); !errors.Is(err, errdefs.ErrProviderUnavailable) {
		t.Errorf("Exec after Close = %v, want provider unavailable", err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
