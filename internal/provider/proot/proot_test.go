//go:build linux

package proot

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/provider"
	"github.com/stacyvm/stacyvm/internal/provider/proot/prootest"
	"github.com/stacyvm/stacyvm/internal/provider/providertest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	prootest.Cleanup()
	// Every sandbox was destroyed: none of their processes may be left.
	// Running as root, sandboxes have uids from DefaultUIDBase on. (Other
	// packages' tests may be running sandboxes at the same time, with
	// other state directories and so other uid ranges: only this
	// package's count.)
	if os.Geteuid() == 0 {
		left := scan(func(pi procInfo) bool {
			_, ok := testUIDBases.Load(pi.uids[0] - pi.uids[0]%uidsPerProvider)
			return ok
		})
		for _, pid := range left {
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			fmt.Fprintf(os.Stderr, "process %d of a sandbox outlived the tests: %q\n", pid, b)
			code = 1
		}
	}
	// PRoot is given its loader (loader_linux.go) and writes none to
	// /tmp. Such a file belongs to the sandbox's uid, so the ones of other
	// packages' tests running now are not counted.
	if left := loadersInTmp(func(uid int) bool {
		_, ok := testUIDBases.Load(uid - uid%uidsPerProvider)
		return ok
	}); len(left) > 0 {
		fmt.Fprintf(os.Stderr, "PRoot loader files of this package's sandboxes left in /tmp: %q\n", left)
		code = 1
	}
	os.Exit(code)
}

// loadersInTmp lists the loader files PRoot wrote to /tmp whose owner
// passes mine.
func loadersInTmp(mine func(uid int) bool) []string {
	matches, _ := filepath.Glob("/tmp/prooted-*")
	var out []string
	for _, m := range matches {
		if fi, err := os.Stat(m); err == nil && mine(int(fi.Sys().(*syscall.Stat_t).Uid)) {
			out = append(out, m)
		}
	}
	return out
}

// newProvider returns a provider on stateDir with the test images and
// agent; opts may adjust the options first.
func newProvider(t testing.TB, stateDir string, opts ...func(*Options)) *Provider {
	t.Helper()
	o := Options{
		ImagesDir:    prootest.ImagesDir(),
		StateDir:     stateDir,
		AgentPath:    prootest.Agent(t),
		MaxSandboxes: -1,
	}
	for _, f := range opts {
		f(&o)
	}
	p, err := New(o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	testUIDBases.Store(p.uidBase, true)
	return p
}

// testUIDBases holds the uid ranges of the providers the tests made.
var testUIDBases sync.Map

func TestConformance(t *testing.T) {
	for _, tc := range []struct{ name, image string }{
		{"busybox", prootest.Busybox},
		{"debian", prootest.Debian},
	} {
		t.Run(tc.name, func(t *testing.T) {
			prootest.Require(t, tc.image)
			providertest.Run(t, providertest.Harness{
				Image: tc.image,
				New: func(t *testing.T, stateDir string) provider.Provider {
					// The suite's directory is 0700 under a 0700 parent.
					prootest.Reachable(t, stateDir)
					return newProvider(t, stateDir)
				},
			})
		})
	}
}

// spawn starts a sandbox that is destroyed when t ends.
func spawn(t *testing.T, p *Provider, spec provider.Spec) string {
	t.Helper()
	if spec.ID == "" {
		spec.ID = providertest.NewID()
	}
	if spec.Image == "" {
		spec.Image = prootest.Busybox
	}
	providertest.Spawn(t, p, spec)
	return spec.ID
}

func run(t *testing.T, p provider.Provider, id, script string) (string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	st, err := p.Exec(t.Context(), id, provider.ExecRequest{Argv: []string{"/bin/sh", "-c", script}}, &out, &errb)
	if err != nil {
		t.Fatalf("exec %q: %v (stderr %q)", script, err, errb.String())
	}
	return out.String(), st.ExitCode
}

func read(t *testing.T, p provider.Provider, id, path string) (string, error) {
	t.Helper()
	rc, err := p.ReadFile(t.Context(), id, path)
	if err != nil {
		return "", err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	return string(b), err
}

// TestPrivateState: what one sandbox writes anywhere it can, the other
// does not see.
func TestPrivateState(t *testing.T) {
	prootest.Require(t, prootest.Busybox)
	p := newProvider(t, prootest.StateDir(t))
	a := spawn(t, p, provider.Spec{})
	b := spawn(t, p, provider.Spec{})
	places := []string{"/workspace", "/tmp", "/root", "/etc", "/dev/shm", "/", "/bin"}
	var script strings.Builder
	for _, d := range places {
		fmt.Fprintf(&script, "echo from-a > %s/private-a && ", d)
	}
	script.WriteString("echo changed >> /etc/passwd && true")
	if out, code := run(t, p, a, script.String()); code != 0 {
		t.Fatalf("writing in a: exit %d %q", code, out)
	}
	for _, d := range places {
		f := filepath.Join(d, "private-a")
		if got, err := read(t, p, a, f); err != nil || got != "from-a\n" {
			t.Errorf("a reads its own %s: %q, %v", f, got, err)
		}
		if _, err := read(t, p, b, f); !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("b reads a's %s through the file API: %v, want not found", f, err)
		}
		if out, code := run(t, p, b, "cat "+f+" 2>&1"); code == 0 {
			t.Errorf("b reads a's %s with cat: %q", f, out)
		}
	}
	if out, _ := run(t, p, b, "cat /etc/passwd"); strings.Contains(out, "changed") {
		t.Errorf("a's change to /etc/passwd shows in b: %q", out)
	}
}

// treeDigest describes every entry of an image tree: type, mode, size,
// modification time, link target and content hash.
func treeDigest(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		desc := fmt.Sprintf("%v %d %d", fi.Mode(), fi.Size(), fi.ModTime().UnixNano())
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			desc += " -> " + l
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			h := sha256.Sum256(b)
			desc += " " + hex.EncodeToString(h[:8])
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			desc += fmt.Sprintf(" %d:%d", st.Uid, st.Gid)
		}
		out[p] = desc
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestBaseImageUnchanged: a sandbox that writes, chmods, moves and deletes
// everywhere it can, by commands and by file operations, leaves the image
// exactly as it was.
func TestBaseImageUnchanged(t *testing.T) {
	for _, image := range []string{prootest.Busybox, prootest.Debian} {
		t.Run(strings.Split(strings.TrimPrefix(image, "stacyvm/"), ":")[0], func(t *testing.T) {
			images := prootest.Require(t, image)
			name, _, _ := ImageDir(image)
			base := filepath.Join(images, name)
			before := treeDigest(t, base)
			p := newProvider(t, prootest.StateDir(t))
			id := spawn(t, p, provider.Spec{Image: image})
			script := `
				for d in / /etc /bin /usr /usr/bin /tmp /workspace /root /var /dev/shm; do echo x > $d/stacy-written; done
				echo appended >> /etc/passwd
				chmod 0777 /bin /etc
				chmod 4755 /bin/sh
				rm -f /bin/cat
				mkdir -p /newdir/sub && ln -s / /newdir/rootlink
				ln /etc/passwd /workspace/hardlink-to-passwd && echo via-link >> /workspace/hardlink-to-passwd
				mv /etc/group /etc/group.moved
				touch -d 2001-01-01 /etc /bin/sh
				true`
			if out, code := run(t, p, id, script); code != 0 {
				t.Logf("script exit %d (some steps may fail on this image): %q", code, out)
			}
			ctx := t.Context()
			p.WriteFile(ctx, id, "/etc/passwd", strings.NewReader("replaced"), 0o600)
			p.WriteFile(ctx, id, "/usr/new-file", strings.NewReader("new"), 0o644)
			p.Chmod(ctx, id, "/root", 0o700)
			p.Chmod(ctx, id, "/bin", 0o700)
			p.MoveFile(ctx, id, "/etc/hostname", "/workspace/hostname")
			p.DeleteFile(ctx, id, "/usr/share", true)
			p.DeleteFile(ctx, id, "/sbin", true)
			if err := p.Destroy(ctx, id); err != nil {
				t.Fatal(err)
			}
			after := treeDigest(t, base)
			for path, d := range before {
				if after[path] != d {
					t.Errorf("image changed: %s: %q → %q", path, d, after[path])
				}
			}
			for path := range after {
				if _, ok := before[path]; !ok {
					t.Errorf("image changed: %s appeared", path)
				}
			}
		})
	}
}

func TestUnknownImage(t *testing.T) {
	prootest.Require(t, prootest.Busybox)
	p := newProvider(t, prootest.StateDir(t))
	_, err := p.Spawn(t.Context(), provider.Spec{ID: providertest.NewID(), Image: "no/such:image"})
	if !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("Spawn of an unknown image: %v (class %v), want not found", err, errdefs.Classify(err))
	}
	if !strings.Contains(err.Error(), "stacyvm_busybox_test") {
		t.Errorf("error %q does not list the images that exist", err)
	}
	if strings.Contains(err.Error(), prootest.ImagesDir()) {
		t.Errorf("error %q names a host path", err)
	}
	if errdefs.Hint(err) == "" {
		t.Errorf("error %q has no hint", err)
	}
	for _, bad := range []string{"../etc", "/abs", "a/../../b", "-flag", "x@sha256:00"} {
		_, err := p.Spawn(t.Context(), provider.Spec{ID: providertest.NewID(), Image: bad})
		if !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("Spawn of image %q: %v, want invalid argument", bad, err)
		}
	}
	ents, _ := os.ReadDir(p.stateDir)
	ents = slices.DeleteFunc(ents, func(e fs.DirEntry) bool { return e.Name() == loaderFile || e.Name() == loader32File })
	if len(ents) != 0 {
		t.Errorf("failed spawns left %d entries in the state directory", len(ents))
	}
}

func TestImageDir(t *testing.T) {
	tests := []struct{ image, name, fallback string }{
		{"busybox", "busybox", ""},
		{"stacyvm/debian:test", "stacyvm_debian_test", ""},
		{"alpine:latest", "alpine_latest", "alpine"},
		{"registry.local:5000/team/img:v1.2", "registry.local_5000_team_img_v1.2", ""},
	}
	for _, tt := range tests {
		name, fallback, err := ImageDir(tt.image)
		if err != nil || name != tt.name || fallback != tt.fallback {
			t.Errorf("ImageDir(%q) = %q, %q, %v; want %q, %q", tt.image, name, fallback, err, tt.name, tt.fallback)
		}
	}
	for _, bad := range []string{"", ".", "..", ".hidden", "a/../b", "/abs", "a b", "a\x00b", strings.Repeat("a", 201)} {
		if _, _, err := ImageDir(bad); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("ImageDir(%q): %v, want invalid argument", bad, err)
		}
	}
}

func TestMaxSandboxes(t *testing.T) {
	prootest.Require(t, prootest.Busybox)
	p := newProvider(t, prootest.StateDir(t), func(o *Options) { o.MaxSandboxes = 2 })
	a := spawn(t, p, provider.Spec{})
	spawn(t, p, provider.Spec{})
	id := providertest.NewID()
	_, err := p.Spawn(t.Context(), provider.Spec{ID: id, Image: prootest.Busybox})
	if !errors.Is(err, errdefs.ErrResourceLimit) {
		t.Fatalf("third Spawn with MaxSandboxes 2: %v (class %v), want resource limit", err, errdefs.Classify(err))
	}
	if _, err := os.Stat(filepath.Join(p.stateDir, id)); err == nil {
		t.Error("the refused spawn left a directory")
	}
	if err := p.Destroy(t.Context(), a); err != nil {
		t.Fatal(err)
	}
	spawn(t, p, provider.Spec{ID: id})
}

// TestRestart: a new instance re-attaches to live sandboxes, and removes
// the ones whose processes died and the ones a crash left half made.
func TestRestart(t *testing.T) {
	prootest.Require(t, prootest.Busybox)
	dir := prootest.StateDir(t)
	p1 := newProvider(t, dir)
	alive := spawn(t, p1, provider.Spec{Env: map[string]string{"KEPT": "yes"}, Metadata: map[string]string{"k": "v"}})
	dead := spawn(t, p1, provider.Spec{})
	run(t, p1, alive, "echo before > /workspace/f; (setsid sleep 600 &) ; true")
	p1.Close()

	// The server is gone; then dead's PRoot is killed from outside, and its
	// processes with it, as a reboot or an OOM kill would.
	st, ok := readState(filepath.Join(dir, dead))
	if !ok {
		t.Fatal("no state for the sandbox to kill")
	}
	if err := killProcs(t.Context(), findTracers(filepath.Join(dir, dead, rootfsDir)), st.UID, st.Files); err != nil {
		t.Fatal(err)
	}
	// And a crash mid-spawn left a directory behind.
	half := providertest.NewID()
	if err := os.Mkdir(filepath.Join(dir, half), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := writeState(filepath.Join(dir, half), state{Version: stateVersion, ID: half, Phase: phaseCreating, UID: -1}); err != nil {
		t.Fatal(err)
	}

	p2 := newProvider(t, dir)
	list, err := p2.List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].ID != alive || list[0].State != provider.StateRunning || list[0].Metadata["k"] != "v" {
		t.Fatalf("List after restart = %+v, want only %s running", list, alive)
	}
	if out, _ := run(t, p2, alive, `cat /workspace/f; printf %s "$KEPT"`); out != "before\nyes" {
		t.Errorf("re-attached sandbox: %q", out)
	}
	for _, id := range []string{dead, half} {
		if _, err := os.Stat(filepath.Join(dir, id)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("directory of %s still exists after restart: %v", id, err)
		}
		if _, err := p2.Status(t.Context(), id); !errors.Is(err, errdefs.ErrSandboxNotFound) {
			t.Errorf("Status(%s) after restart: %v, want sandbox not found", id, err)
		}
	}

	// Destroy through the new instance kills processes it did not start,
	// including one that left the command's session.
	ast, _ := readState(filepath.Join(dir, alive))
	tr := findTracers(filepath.Join(dir, alive, rootfsDir))
	procs := members(tr, -1)
	if len(tr) != 1 || len(procs) != 1 {
		t.Fatalf("the background sleep: %d PRoot processes tracing %d processes, want 1 and 1", len(tr), len(procs))
	}
	if err := p2.Destroy(t.Context(), alive); err != nil {
		t.Fatal(err)
	}
	for _, pid := range append(procs, tr[0].PID, ast.Files.PID) {
		if st, err := readStat(pid); err == nil && st.state != 'Z' {
			t.Errorf("process %d of the destroyed sandbox still runs (state %c)", pid, st.state)
		}
	}
}

// TestEscapes: links planted in the sandbox, by its commands or (standing
// in for code that escaped PRoot) directly on the host, never let a file
// operation reach a host file.
func TestEscapes(t *testing.T) {
	prootest.Require(t, prootest.Busybox)
	dir := prootest.StateDir(t)
	p := newProvider(t, dir)
	id := spawn(t, p, provider.Spec{})
	ctx := t.Context()

	// The secret sits on the file system of the sandbox's copy, so a hard
	// link to it is possible at all.
	secretDir := filepath.Join(dir, "secret-dir")
	if err := os.Mkdir(secretDir, 0o755); err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(secretDir, "secret.txt")
	const content = "host secret"
	if err := os.WriteFile(secret, []byte(content), 0o640); err != nil {
		t.Fatal(err)
	}
	check := func(what string) {
		t.Helper()
		b, err := os.ReadFile(secret)
		fi, serr := os.Stat(secret)
		if err != nil || string(b) != content || serr != nil || fi.Mode().Perm() != 0o640 {
			t.Fatalf("%s changed the host file: %q %v %v", what, b, fi.Mode(), err)
		}
	}

	// Sandbox code cannot even name the host file.
	if out, code := run(t, p, id, "ln "+secret+" /workspace/h 2>&1; cat "+secret+" 2>&1"); code == 0 || strings.Contains(out, content) {
		t.Errorf("sandbox code reached the host file: exit %d %q", code, out)
	}

	rootfs := filepath.Join(dir, id, rootfsDir)
	planted := map[string]func(string) error{
		"hardlink":     func(p string) error { return os.Link(secret, p) },
		"abs-symlink":  func(p string) error { return os.Symlink(secret, p) },
		"dir-symlink":  func(p string) error { return os.Symlink(secretDir, p) },
		"rel-symlink":  func(p string) error { return os.Symlink(strings.Repeat("../", 12)+strings.TrimPrefix(secret, "/"), p) },
		"proc-symlink": func(p string) error { return os.Symlink("/proc/1/root"+secret, p) },
	}
	var paths []string
	for name, plant := range planted {
		if err := plant(filepath.Join(rootfs, "workspace", name)); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, "/workspace/"+name, "/workspace/"+name+"/secret.txt")
	}
	// Reads first: the writes below may create same-named files inside the
	// sandbox.
	for _, path := range paths {
		if got, err := read(t, p, id, path); strings.Contains(got, content) {
			t.Errorf("ReadFile(%s) read the host file", path)
		} else if err != nil && errdefs.Classify(err) == nil {
			t.Errorf("ReadFile(%s): unclassified error %v", path, err)
		}
		if list, err := p.ListFiles(ctx, id, path); err == nil && slices.ContainsFunc(list, func(fi provider.FileInfo) bool {
			return strings.HasSuffix(fi.Path, "secret.txt")
		}) {
			t.Errorf("ListFiles(%s) lists the host directory", path)
		}
		if got, err := p.Glob(ctx, id, path+"/*"); err == nil && len(got) > 0 {
			t.Errorf("Glob(%s/*) = %q, want nothing", path, got)
		}
	}
	for _, path := range paths {
		p.Chmod(ctx, id, path, 0o777)
		check("Chmod(" + path + ")")
		p.WriteFile(ctx, id, path, strings.NewReader("overwritten"), 0o666)
		check("WriteFile(" + path + ")")
		p.MoveFile(ctx, id, path, "/workspace/moved")
		check("MoveFile(" + path + ")")
		p.DeleteFile(ctx, id, path, true)
		check("DeleteFile(" + path + ")")
	}
}

// TestAgentSocketHijack: sandbox code, which runs as the same user as the
// file agent, that replaces the agent's socket with a link to another host
// socket does not get the server to talk to that socket.
func TestAgentSocketHijack(t *testing.T) {
	prootest.Require(t, prootest.Busybox)
	dir := prootest.StateDir(t)
	p1 := newProvider(t, dir)
	id := spawn(t, p1, provider.Spec{})

	decoy := filepath.Join(dir, "decoy.sock")
	ln, err := net.Listen("unix", decoy)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var got atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				n, _ := io.Copy(io.Discard, c)
				got.Add(n)
			}()
		}
	}()
	sock := filepath.Join(dir, id, filesDir, socketName)
	if err := os.Remove(sock); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(decoy, sock); err != nil {
		t.Fatal(err)
	}
	// A fresh instance has no pooled connection to the real agent.
	p2 := newProvider(t, dir)
	_, err = p2.StatFile(t.Context(), id, "/workspace")
	if !errors.Is(err, errdefs.ErrProviderUnavailable) {
		t.Errorf("StatFile through a hijacked socket: %v, want provider unavailable", err)
	}
	time.Sleep(50 * time.Millisecond)
	if n := got.Load(); n != 0 {
		t.Errorf("the server sent %d bytes to the decoy socket", n)
	}
}

// TestExecKillsWholeTree: a timeout kills children that left the command's
// process group and session, which a process-group kill would miss.
func TestExecKillsWholeTree(t *testing.T) {
	prootest.Require(t, prootest.Busybox)
	p := newProvider(t, prootest.StateDir(t))
	id := spawn(t, p, provider.Spec{})
	start := time.Now()
	st, err := p.Exec(t.Context(), id, provider.ExecRequest{
		Argv:    []string{"sh", "-c", "setsid sh -c 'sleep 2; echo survived > /workspace/marker' & echo started; sleep 30"},
		Timeout: 500 * time.Millisecond,
	}, nil, nil)
	if !errors.Is(err, errdefs.ErrExecTimeout) || !st.TimedOut || st.ExitCode != -1 {
		t.Fatalf("Exec = %+v, %v; want a timeout", st, err)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("the timed-out Exec returned after %v", el)
	}
	time.Sleep(time.Until(start.Add(3 * time.Second)))
	if _, err := p.StatFile(t.Context(), id, "/workspace/marker"); !errors.Is(err, errdefs.ErrFileNotFound) {
		t.Errorf("the setsid child survived the timeout: StatFile = %v", err)
	}
	if tr := findTracers(filepath.Join(p.stateDir, id, rootfsDir)); len(tr) != 0 {
		t.Errorf("%d PRoot processes left after the timeout", len(tr))
	}
}

// TestNoLoaderInTmp: PRoot runs the loader the provider extracted into
// its state directory, instead of writing its own to /tmp, which a proot
// killed with SIGKILL (Destroy's fallback, or a crash) would leave behind.
func TestNoLoaderInTmp(t *testing.T) {
	prootest.Require(t, prootest.Busybox)
	p := newProvider(t, prootest.StateDir(t))
	if len(p.loaderEnv) == 0 {
		t.Fatal("no loader extracted from the proot binary")
	}
	for _, kv := range p.loaderEnv {
		_, path, _ := strings.Cut(kv, "=")
		if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o555 || filepath.Dir(path) != p.stateDir {
			t.Errorf("loader %s: %v, %v; want mode 0555 in the state directory", kv, fi, err)
		}
	}
	id := spawn(t, p, provider.Spec{})
	if out, _ := run(t, p, id, "(setsid sleep 600 &); echo ran"); out != "ran\n" {
		t.Fatalf("exec with the extracted loader: %q", out)
	}
	if out, _ := run(t, p, id, `printf %s "${PROOT_LOADER-unset} ${PROOT_LOADER_32-unset}"`); out != "unset unset" {
		t.Errorf("the command sees the loaders' host paths: %q", out)
	}
	tr := findTracers(filepath.Join(p.stateDir, id, rootfsDir))
	if len(tr) != 1 {
		t.Fatalf("%d PRoot processes for the background sleep, want 1", len(tr))
	}
	// PRoot writes its loader before it starts the program: by now it
	// would be there.
	if m, _ := filepath.Glob(fmt.Sprintf("/tmp/prooted-%d-*", tr[0].PID)); len(m) > 0 {
		t.Errorf("PRoot wrote its loader to /tmp: %q", m)
	}
	tr[0].signal(syscall.SIGKILL)
	if err := p.Destroy(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	if m, _ := filepath.Glob(fmt.Sprintf("/tmp/prooted-%d-*", tr[0].PID)); len(m) > 0 {
		t.Errorf("loader left in /tmp after SIGKILL and Destroy: %q", m)
	}
}

// TestDestroyDuringExec: a command running when its sandbox is destroyed
// ends at once, reporting the sandbox gone.
func TestDestroyDuringExec(t *testing.T) {
	prootest.Require(t, prootest.Busybox)
	p := newProvider(t, prootest.StateDir(t))
	id := providertest.NewID()
	if _, err := p.Spawn(t.Context(), provider.Spec{ID: id, Image: prootest.Busybox}); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	done := make(chan error, 1)
	go func() {
		_, err := p.Exec(context.Background(), id, provider.ExecRequest{Argv: []string{"sh", "-c", "echo up; sleep 60"}}, &lockedWriter{w: &out}, nil)
		done <- err
	}()
	time.Sleep(300 * time.Millisecond)
	if err := p.Destroy(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, errdefs.ErrSandboxDestroyed) {
			t.Errorf("Exec during Destroy: %v, want sandbox destroyed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Exec still running 10s after its sandbox was destroyed")
	}
}

// TestExecEnv: the request's environment reaches the command and only the
// command: not the proot binary, which runs on the host.
func TestExecEnv(t *testing.T) {
	prootest.Require(t, prootest.Busybox)
	p := newProvider(t, prootest.StateDir(t))
	id := spawn(t, p, provider.Spec{Env: map[string]string{"FROM_SPAWN": "s"}})
	var out, errb bytes.Buffer
	st, err := p.Exec(t.Context(), id, provider.ExecRequest{
		Argv: []string{"sh", "-c", `printf '%s|%s|%s|%s' "$LD_PRELOAD" "$FROM_SPAWN" "$MULTI" "$HOME"`},
		Env:  map[string]string{"LD_PRELOAD": "/nonexistent/evil.so", "MULTI": "a\nb 'c' \"d\" $e"},
	}, &out, &errb)
	if err != nil || st.ExitCode != 0 {
		t.Fatalf("Exec = %+v, %v, stderr %q", st, err, errb.String())
	}
	if want := "/nonexistent/evil.so|s|a\nb 'c' \"d\" $e|/root"; out.String() != want {
		t.Errorf("stdout %q, want %q", out.String(), want)
	}
	if strings.Contains(errb.String(), "ld.so") || strings.Contains(errb.String(), "preload") {
		t.Errorf("LD_PRELOAD reached the host's dynamic linker: %q", errb.String())
	}
	for _, bad := range []string{"A-B", "1X", "A=B", ""} {
		_, err := p.Exec(t.Context(), id, provider.ExecRequest{Argv: []string{"true"}, Env: map[string]string{bad: "v"}}, nil, nil)
		if !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("env name %q: %v, want invalid argument", bad, err)
		}
	}
}

type lockedWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

func TestNetworkNone(t *testing.T) {
	prootest.Require(t, prootest.Busybox)
	p := newProvider(t, prootest.StateDir(t))
	_, err := p.Spawn(t.Context(), provider.Spec{ID: providertest.NewID(), Image: prootest.Busybox, Network: "none"})
	if !errors.Is(err, errdefs.ErrUnimplemented) {
		t.Errorf("Spawn with network none: %v, want unimplemented", err)
	}
}

// TestSpawnAbandoned: a spawn cut short by its context leaves nothing.
func TestSpawnAbandoned(t *testing.T) {
	prootest.Require(t, prootest.Debian)
	p := newProvider(t, prootest.StateDir(t))
	for _, d := range []time.Duration{0, 20 * time.Millisecond, 300 * time.Millisecond} {
		ctx, cancel := context.WithTimeout(t.Context(), d)
		id := providertest.NewID()
		_, err := p.Spawn(ctx, provider.Spec{ID: id, Image: prootest.Debian})
		cancel()
		if err == nil {
			p.Destroy(t.Context(), id)
			continue // the machine was fast enough
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Spawn with a %v deadline: %v, want deadline exceeded", d, err)
		}
		if _, err := os.Stat(filepath.Join(p.stateDir, id)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Spawn with a %v deadline left its directory: %v", d, err)
		}
	}
	if list, _ := p.List(t.Context()); len(list) != 0 {
		t.Errorf("List after abandoned spawns: %+v", list)
	}
}

func TestNewReasons(t *testing.T) {
	prootest.Require(t)
	agentBin := prootest.Agent(t)
	dir := prootest.StateDir(t)
	tests := []struct {
		name string
		opts Options
		want string
	}{
		{"NoProot", Options{ProotPath: "/nonexistent/proot", AgentPath: agentBin}, "proot binary was not found"},
		{"NoAgent", Options{AgentPath: "/nonexistent/stacyvm-agent"}, "stacyvm-agent binary was not found"},
		{"DynamicAgent", Options{AgentPath: "/bin/ls"}, "dynamically linked"},
		{"NoImages", Options{AgentPath: agentBin, ImagesDir: filepath.Join(dir, "none")}, "images directory"},
		{"LongStateDir", Options{AgentPath: agentBin, StateDir: "/tmp/" + strings.Repeat("d", 80)}, "bytes long"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.opts.StateDir == "" {
				tt.opts.StateDir = filepath.Join(dir, tt.name)
			}
			if tt.opts.ImagesDir == "" {
				tt.opts.ImagesDir = prootest.ImagesDir()
			}
			_, err := New(tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New: %v, want an error saying %q", err, tt.want)
			}
		})
	}
}

func TestCopyTree(t *testing.T) {
	src := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(src, "d/sub"), 0o755))
	must(os.WriteFile(filepath.Join(src, "d/file"), []byte("content"), 0o640))
	must(os.Chmod(filepath.Join(src, "d/file"), 0o750|fs.ModeSetuid))
	must(os.Link(filepath.Join(src, "d/file"), filepath.Join(src, "d/hardlink")))
	must(os.Symlink("../d/file", filepath.Join(src, "d/sub/link")))
	must(syscall.Mkfifo(filepath.Join(src, "fifo"), 0o600))
	must(os.Mkdir(filepath.Join(src, "sticky"), 0o755))
	must(os.Chmod(filepath.Join(src, "sticky"), 0o777|fs.ModeSticky))
	must(os.Mkdir(filepath.Join(src, "readonly"), 0o555))
	old := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
	must(os.Chtimes(filepath.Join(src, "d/file"), old, old))

	own := owner{}
	if os.Geteuid() == 0 {
		own = owner{set: true, uid: 4242, gid: 4343}
	}
	dst := filepath.Join(t.TempDir(), "copy")
	must(copyTree(t.Context(), src, dst, own))
	t.Cleanup(func() { removeTree(dst) })

	if b, err := os.ReadFile(filepath.Join(dst, "d/file")); err != nil || string(b) != "content" {
		t.Errorf("file content %q, %v", b, err)
	}
	for path, want := range map[string]fs.FileMode{
		"d/file":   0o750 | fs.ModeSetuid,
		"d/sub":    fs.ModeDir | 0o755,
		"fifo":     fs.ModeNamedPipe | 0o600,
		"sticky":   fs.ModeDir | fs.ModeSticky | 0o777,
		"readonly": fs.ModeDir | 0o555,
	} {
		fi, err := os.Lstat(filepath.Join(dst, path))
		if err != nil || fi.Mode() != want {
			t.Errorf("%s: mode %v, %v; want %v", path, fi.Mode(), err, want)
			continue
		}
		if own.set {
			if st := fi.Sys().(*syscall.Stat_t); int(st.Uid) != own.uid || int(st.Gid) != own.gid {
				t.Errorf("%s owned by %d:%d, want %d:%d", path, st.Uid, st.Gid, own.uid, own.gid)
			}
		}
	}
	if l, err := os.Readlink(filepath.Join(dst, "d/sub/link")); err != nil || l != "../d/file" {
		t.Errorf("symlink: %q, %v", l, err)
	}
	if fi, err := os.Stat(filepath.Join(dst, "d/file")); err != nil || !fi.ModTime().Equal(old) {
		t.Errorf("mtime not kept: %v, %v", fi.ModTime(), err)
	}
	fi, err := os.Stat(filepath.Join(dst, "d/hardlink"))
	if err != nil || fi.Sys().(*syscall.Stat_t).Nlink != 1 {
		t.Errorf("hard link copied as a link: %+v, %v", fi, err)
	}

	// Removal copes with directories made inaccessible.
	must(os.Chmod(filepath.Join(dst, "d/sub"), 0))
	must(os.Chmod(filepath.Join(dst, "d"), 0o500))
	must(removeTree(dst))
	if _, err := os.Lstat(dst); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("removeTree left %s: %v", dst, err)
	}

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := copyTree(ctx, src, filepath.Join(t.TempDir(), "c"), owner{}); !errors.Is(err, context.Canceled) {
		t.Errorf("copyTree with a cancelled context: %v", err)
	}
}

// BenchmarkPauseResume reports p50/p95/p99 of Pause and Resume of a
// busybox sandbox running a command:
//
//	STACYVM_TEST_PROOT=1 go test -run '^$' -bench PauseResume -benchtime 50x ./internal/provider/proot/
func BenchmarkPauseResume(b *testing.B) {
	prootest.Require(b, prootest.Busybox)
	dir := b.TempDir()
	prootest.Reachable(b, dir)
	providertest.BenchPauseResume(b, newProvider(b, dir), prootest.Busybox)
}
