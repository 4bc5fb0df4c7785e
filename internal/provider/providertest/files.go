package providertest

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"io"
	"io/fs"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/provider"
)

func (s *suite) testFiles(t *testing.T) {
	p := s.p
	id := s.spawn(t, p, provider.Spec{})
	// Each subtest works in its own directory of the shared sandbox.
	dirOf := func(t *testing.T) string {
		return "/workspace/" + strings.ReplaceAll(t.Name(), "/", "_") + "-" + token()
	}

	t.Run("Text", func(t *testing.T) {
		t.Parallel()
		f := dirOf(t) + "/hello.txt"
		want := "hello\nworld — ünïcödé\n"
		writeFile(t, p, id, f, []byte(want), 0)
		if got := mustRead(t, p, id, f); got != want {
			t.Errorf("read %q, want %q", got, want)
		}
	})

	t.Run("Binary", func(t *testing.T) {
		t.Parallel()
		f := dirOf(t) + "/all-bytes.bin"
		var want []byte
		for range 4 {
			for b := range 256 {
				want = append(want, byte(b))
			}
		}
		writeFile(t, p, id, f, want, 0)
		got, err := readFile(t.Context(), p, id, f)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("binary round trip: %d bytes, %v; want the %d bytes written", len(got), err, len(want))
		}
	})

	t.Run("Large", func(t *testing.T) {
		t.Parallel()
		const size = 8 << 20
		f := dirOf(t) + "/large.bin"
		data := make([]byte, size)
		rand.Read(data)
		want := sha256.Sum256(data)
		// A pipe, so the provider cannot learn the length up front.
		pr, pw := io.Pipe()
		go func() {
			for off := 0; off < size; off += 100_000 {
				if _, err := pw.Write(data[off:min(off+100_000, size)]); err != nil {
					return
				}
			}
			pw.Close()
		}()
		if err := p.WriteFile(t.Context(), id, f, pr, 0o644); err != nil {
			t.Fatalf("WriteFile: %v", err)
		}
		pr.Close()
		rc, err := p.ReadFile(t.Context(), id, f)
		if err != nil {
			t.Fatalf("ReadFile: %v", err)
		}
		defer rc.Close()
		h := sha256.New()
		n, err := io.Copy(h, rc)
		if err != nil || n != size || !bytes.Equal(h.Sum(nil), want[:]) {
			t.Errorf("read back %d bytes (%v), sha256 match %v; want %d identical bytes", n, err, bytes.Equal(h.Sum(nil), want[:]), size)
		}
		fi, err := p.StatFile(t.Context(), id, f)
		if err != nil || fi.Size != size {
			t.Errorf("StatFile = %+v, %v; want size %d", fi, err, size)
		}
	})

	t.Run("Empty", func(t *testing.T) {
		t.Parallel()
		f := dirOf(t) + "/empty"
		writeFile(t, p, id, f, nil, 0)
		if got := mustRead(t, p, id, f); got != "" {
			t.Errorf("empty file reads %q", got)
		}
	})

	t.Run("Overwrite", func(t *testing.T) {
		t.Parallel()
		f := dirOf(t) + "/f"
		writeFile(t, p, id, f, []byte("a much longer first version"), 0)
		writeFile(t, p, id, f, []byte("short"), 0)
		if got := mustRead(t, p, id, f); got != "short" {
			t.Errorf("after overwrite: %q, want %q", got, "short")
		}
	})

	t.Run("CreatesParents", func(t *testing.T) {
		t.Parallel()
		d := dirOf(t)
		writeFile(t, p, id, d+"/a/b/c/file.txt", []byte("deep"), 0)
		for _, dir := range []string{d + "/a", d + "/a/b/c"} {
			fi, err := p.StatFile(t.Context(), id, dir)
			if err != nil || !fi.IsDir {
				t.Errorf("parent %s: %+v, %v; want a directory", dir, fi, err)
			}
		}
	})

	t.Run("Mode", func(t *testing.T) {
		t.Parallel()
		d := dirOf(t)
		for _, tt := range []struct {
			mode, want fs.FileMode
		}{{0, 0o644}, {0o600, 0o600}, {0o755, 0o755}, {0o777, 0o777}} {
			f := d + "/m" + tt.mode.String()
			writeFile(t, p, id, f, []byte("#!/bin/sh\necho ran\n"), tt.mode)
			fi, err := p.StatFile(t.Context(), id, f)
			if err != nil || fi.Mode.Perm() != tt.want || fi.IsDir || !fi.Mode.IsRegular() {
				t.Errorf("WriteFile mode %v: StatFile = %+v, %v; want a regular file with mode %v", tt.mode, fi, err, tt.want)
			}
		}
		// The mode is real: a 0755 script runs.
		r := execIn(t.Context(), p, id, provider.ExecRequest{Argv: []string{"./m" + fs.FileMode(0o755).String()}, WorkDir: d})
		if r.err != nil || r.st.ExitCode != 0 || r.stdout != "ran\n" {
			t.Errorf("running a script written with mode 0755: %s", r)
		}
	})

	t.Run("RelativePath", func(t *testing.T) {
		t.Parallel()
		name := "rel-" + token() + ".txt"
		writeFile(t, p, id, name, []byte("relative"), 0)
		if got := mustRead(t, p, id, "/workspace/"+name); got != "relative" {
			t.Errorf("relative path is not under /workspace: %q", got)
		}
		if got := mustExec(t, p, id, "cat "+name); got != "relative" {
			t.Errorf("exec does not see the file written by WriteFile: %q", got)
		}
	})

	t.Run("ExecWritesFileReads", func(t *testing.T) {
		t.Parallel()
		name := "from-exec-" + token() + ".txt"
		mustExec(t, p, id, "printf 'made by exec' > "+name)
		if got := mustRead(t, p, id, name); got != "made by exec" {
			t.Errorf("ReadFile of a file made by exec: %q", got)
		}
	})

	t.Run("ReadMissing", func(t *testing.T) {
		t.Parallel()
		_, err := readFile(t.Context(), p, id, dirOf(t)+"/nope")
		wantFileNotFound(t, "ReadFile of a missing file", err)
		if err != nil && errdefs.Classify(err) != errdefs.ErrFileNotFound {
			t.Logf("note: class %v; errdefs.ErrFileNotFound is preferred", errdefs.Classify(err))
		}
	})

	t.Run("ReadDirectory", func(t *testing.T) {
		t.Parallel()
		_, err := readFile(t.Context(), p, id, "/workspace")
		wantClass(t, "ReadFile of a directory", err, errdefs.ErrInvalidArgument)
	})

	t.Run("InvalidPath", func(t *testing.T) {
		t.Parallel()
		_, err := readFile(t.Context(), p, id, "")
		wantClass(t, "ReadFile of an empty path", err, errdefs.ErrInvalidArgument)
		err = p.WriteFile(t.Context(), id, "bad\x00name", strings.NewReader("x"), 0)
		wantClass(t, "WriteFile of a path with NUL", err, errdefs.ErrInvalidArgument)
	})

	t.Run("List", func(t *testing.T) {
		t.Parallel()
		d := dirOf(t)
		writeFile(t, p, id, d+"/b.txt", []byte("bb"), 0)
		writeFile(t, p, id, d+"/a.txt", []byte("a"), 0)
		writeFile(t, p, id, d+"/c/inner", []byte("i"), 0)
		list, err := p.ListFiles(t.Context(), id, d)
		if err != nil {
			t.Fatalf("ListFiles: %v", err)
		}
		var paths []string
		for _, fi := range list {
			paths = append(paths, fi.Path)
		}
		want := []string{d + "/a.txt", d + "/b.txt", d + "/c"}
		if !slices.Equal(paths, want) {
			t.Fatalf("ListFiles = %q, want %q (direct children, sorted, absolute)", paths, want)
		}
		if list[0].Size != 1 || list[1].Size != 2 || list[0].IsDir || !list[2].IsDir || list[2].Mode&fs.ModeDir == 0 {
			t.Errorf("ListFiles details: %+v", list)
		}
		root, err := p.ListFiles(t.Context(), id, "/")
		if err != nil || !slices.ContainsFunc(root, func(fi provider.FileInfo) bool { return fi.Path == "/workspace" && fi.IsDir }) {
			t.Errorf("ListFiles(/) = %+v, %v; want it to hold /workspace", root, err)
		}
		_, err = p.ListFiles(t.Context(), id, d+"/a.txt")
		wantClass(t, "ListFiles of a file", err, errdefs.ErrInvalidArgument)
		_, err = p.ListFiles(t.Context(), id, d+"/missing")
		wantFileNotFound(t, "ListFiles of a missing directory", err)
	})

	t.Run("Stat", func(t *testing.T) {
		t.Parallel()
		d := dirOf(t)
		before := time.Now()
		writeFile(t, p, id, d+"/s.txt", []byte("12345"), 0o640)
		fi, err := p.StatFile(t.Context(), id, d+"/s.txt")
		if err != nil {
			t.Fatalf("StatFile: %v", err)
		}
		if fi.Path != d+"/s.txt" || fi.Size != 5 || fi.IsDir || fi.Mode.Perm() != 0o640 {
			t.Errorf("StatFile = %+v", fi)
		}
		// Sandbox clocks may drift from the host's a little.
		if fi.ModTime.Before(before.Add(-5*time.Minute)) || fi.ModTime.After(time.Now().Add(5*time.Minute)) {
			t.Errorf("ModTime %v is not about now", fi.ModTime)
		}
		dfi, err := p.StatFile(t.Context(), id, d)
		if err != nil || !dfi.IsDir || dfi.Mode&fs.ModeDir == 0 || dfi.Path != d {
			t.Errorf("StatFile(dir) = %+v, %v", dfi, err)
		}
		_, err = p.StatFile(t.Context(), id, d+"/missing")
		wantFileNotFound(t, "StatFile of a missing file", err)
	})

	t.Run("Glob", func(t *testing.T) {
		t.Parallel()
		d := dirOf(t)
		for _, f := range []string{"a.go", "b.go", "c.txt", "sub/d.go", "sub/deep/e.go", "sub/deep/f.txt"} {
			writeFile(t, p, id, d+"/"+f, []byte(f), 0)
		}
		rel := strings.TrimPrefix(d, "/workspace/")
		tests := []struct {
			pattern string
			want    []string
		}{
			{d + "/*.go", []string{d + "/a.go", d + "/b.go"}},
			{d + "/?.txt", []string{d + "/c.txt"}},
			{d + "/**/*.go", []string{d + "/a.go", d + "/b.go", d + "/sub/d.go", d + "/sub/deep/e.go"}},
			{d + "/sub/**/*.txt", []string{d + "/sub/deep/f.txt"}},
			{d + "/*/deep", []string{d + "/sub/deep"}},
			{rel + "/*.txt", []string{d + "/c.txt"}},
			{d + "/*.none", nil},
		}
		for _, tt := range tests {
			got, err := p.Glob(t.Context(), id, tt.pattern)
			if err != nil {
				t.Errorf("Glob(%q): %v", tt.pattern, err)
				continue
			}
			if len(got) == 0 && len(tt.want) == 0 {
				continue
			}
			if !sortedEqual(got, tt.want) {
				t.Errorf("Glob(%q) = %q, want %q (sorted absolute paths)", tt.pattern, got, tt.want)
			}
		}
		_, err := p.Glob(t.Context(), id, d+"/[")
		wantClass(t, "Glob of a malformed pattern", err, errdefs.ErrInvalidArgument)
	})

	t.Run("Move", func(t *testing.T) {
		t.Parallel()
		d := dirOf(t)
		writeFile(t, p, id, d+"/src.txt", []byte("moving"), 0o600)
		if err := p.MoveFile(t.Context(), id, d+"/src.txt", d+"/new/parent/dst.txt"); err != nil {
			t.Fatalf("MoveFile: %v", err)
		}
		if got := mustRead(t, p, id, d+"/new/parent/dst.txt"); got != "moving" {
			t.Errorf("moved file reads %q", got)
		}
		if fi, err := p.StatFile(t.Context(), id, d+"/new/parent/dst.txt"); err != nil || fi.Mode.Perm() != 0o600 {
			t.Errorf("moved file: %+v, %v; want mode kept", fi, err)
		}
		_, err := p.StatFile(t.Context(), id, d+"/src.txt")
		wantFileNotFound(t, "the source after a move", err)

		writeFile(t, p, id, d+"/dir/x", []byte("x"), 0)
		if err := p.MoveFile(t.Context(), id, d+"/dir", d+"/renamed"); err != nil {
			t.Fatalf("MoveFile of a directory: %v", err)
		}
		if got := mustRead(t, p, id, d+"/renamed/x"); got != "x" {
			t.Errorf("file in the moved directory reads %q", got)
		}
		err = p.MoveFile(t.Context(), id, d+"/missing", d+"/whatever")
		wantFileNotFound(t, "MoveFile of a missing file", err)
	})

	t.Run("Chmod", func(t *testing.T) {
		t.Parallel()
		f := dirOf(t) + "/c.txt"
		writeFile(t, p, id, f, []byte("c"), 0o644)
		for _, m := range []fs.FileMode{0o700, 0o444, 0o755} {
			if err := p.Chmod(t.Context(), id, f, m); err != nil {
				t.Fatalf("Chmod(%v): %v", m, err)
			}
			if fi, err := p.StatFile(t.Context(), id, f); err != nil || fi.Mode.Perm() != m {
				t.Errorf("after Chmod(%v): %+v, %v", m, fi, err)
			}
		}
		wantClass(t, "Chmod with mode 010000", p.Chmod(t.Context(), id, f, 0o10000), errdefs.ErrInvalidArgument)
		wantFileNotFound(t, "Chmod of a missing file", p.Chmod(t.Context(), id, f+".missing", 0o644))
	})

	t.Run("Delete", func(t *testing.T) {
		t.Parallel()
		d := dirOf(t)
		writeFile(t, p, id, d+"/file", []byte("f"), 0)
		writeFile(t, p, id, d+"/full/inner/x", []byte("x"), 0)
		writeFile(t, p, id, d+"/empty/.k", nil, 0)
		if err := p.DeleteFile(t.Context(), id, d+"/empty/.k", false); err != nil {
			t.Fatal(err)
		}

		if err := p.DeleteFile(t.Context(), id, d+"/file", false); err != nil {
			t.Errorf("delete a file: %v", err)
		}
		wantFileNotFound(t, "delete a missing file", p.DeleteFile(t.Context(), id, d+"/file", false))
		wantClass(t, "delete a non-empty directory without recursive", p.DeleteFile(t.Context(), id, d+"/full", false), errdefs.ErrConflict)
		if got := mustRead(t, p, id, d+"/full/inner/x"); got != "x" {
			t.Errorf("a refused delete removed content: %q", got)
		}
		if err := p.DeleteFile(t.Context(), id, d+"/full", true); err != nil {
			t.Errorf("recursive delete: %v", err)
		}
		if err := p.DeleteFile(t.Context(), id, d+"/empty", false); err != nil {
			t.Errorf("delete an empty directory: %v", err)
		}
		list, err := p.ListFiles(t.Context(), id, d)
		if err != nil || len(list) != 0 {
			t.Errorf("after deletes the directory holds %+v, %v", list, err)
		}
	})

	t.Run("ConcurrentWrites", func(t *testing.T) {
		t.Parallel()
		d := dirOf(t)
		var wg sync.WaitGroup
		for i := range 10 {
			wg.Go(func() {
				f := d + "/f" + string(rune('a'+i))
				want := strings.Repeat(string(rune('a'+i)), 1000*(i+1))
				if err := p.WriteFile(t.Context(), id, f, strings.NewReader(want), 0); err != nil {
					t.Errorf("WriteFile(%s): %v", f, err)
					return
				}
				if got, err := readFile(t.Context(), p, id, f); err != nil || string(got) != want {
					t.Errorf("ReadFile(%s): %d bytes, %v", f, len(got), err)
				}
			})
		}
		wg.Wait()
	})
}
