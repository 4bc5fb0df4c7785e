//go:build linux

package firecracker

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/rootfs"
)

func buildCfg(t *testing.T, state string) Config {
	cfg, _ := fakeConfig(t, state)
	return cfg
}

// debugfsStat returns "mode size" of path inside an ext4 file, or "".
func debugfsStat(t *testing.T, img, path string) string {
	t.Helper()
	out, err := exec.Command("debugfs", "-R", "stat "+path, img).CombinedOutput()
	if err != nil {
		t.Fatalf("debugfs: %v: %s", err, out)
	}
	mode := regexp.MustCompile(`Mode:\s+(\d+)`).FindSubmatch(out)
	size := regexp.MustCompile(`Size:\s+(\d+)`).FindSubmatch(out)
	if mode == nil || size == nil {
		return ""
	}
	return string(mode[1]) + " " + string(size[1])
}

func tarOf(t *testing.T, dir string, gz bool) string {
	t.Helper()
	var buf bytes.Buffer
	var w io.Writer = &buf
	var zw *gzip.Writer
	if gz {
		zw = gzip.NewWriter(&buf)
		w = zw
	}
	if err := writeDirTar(t.Context(), dir, w); err != nil {
		t.Fatal(err)
	}
	if zw != nil {
		zw.Close()
	}
	p := filepath.Join(t.TempDir(), "img.tar")
	if gz {
		p += ".gz"
	}
	if err := os.WriteFile(p, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestBuildImageSources(t *testing.T) {
	needEnv(t)
	cfg := buildCfg(t, shortDir(t))
	agentFI, err := os.Stat(testEnv.agent)
	if err != nil {
		t.Fatal(err)
	}
	wantAgent := "0755 " + strconv.FormatInt(agentFI.Size(), 10)
	for _, src := range []struct{ name, ref, kind string }{
		{"directory", testEnv.image, KindDir},
		{"tarball", tarOf(t, testEnv.image, false), KindTar},
		{"gzipped tarball", tarOf(t, testEnv.image, true), KindTar},
	} {
		t.Run(src.name, func(t *testing.T) {
			img, err := BuildImage(t.Context(), cfg, src.ref)
			if err != nil {
				t.Fatal(err)
			}
			if img.Kind != src.kind || !strings.HasPrefix(img.Digest, "sha256:") || !strings.HasPrefix(img.SourceDigest, "sha256:") {
				t.Errorf("image %+v", img)
			}
			if got := debugfsStat(t, img.Path, GuestAgentPath); got != wantAgent {
				t.Errorf("%s in the image: %q, want %q", GuestAgentPath, got, wantAgent)
			}
			if got := debugfsStat(t, img.Path, "/bin/busybox"); got == "" {
				t.Error("/bin/busybox missing from the image")
			}
			if got := debugfsStat(t, img.Path, "/tmp"); !strings.HasPrefix(got, "0755") && !strings.HasPrefix(got, "1777") {
				t.Errorf("/tmp: %q", got)
			}
			// Free space for the sandbox's writes.
			out, err := exec.Command("dumpe2fs", "-h", img.Path).CombinedOutput()
			if err != nil {
				t.Fatalf("dumpe2fs: %v", err)
			}
			free := regexp.MustCompile(`Free blocks:\s+(\d+)`).FindSubmatch(out)
			bs := regexp.MustCompile(`Block size:\s+(\d+)`).FindSubmatch(out)
			if free == nil || bs == nil {
				t.Fatalf("dumpe2fs output: %s", out)
			}
			f, _ := strconv.ParseInt(string(free[1]), 10, 64)
			b, _ := strconv.ParseInt(string(bs[1]), 10, 64)
			if f*b < int64(cfg.FreeMB)<<20 {
				t.Errorf("%d MiB free, want at least %d", f*b>>20, cfg.FreeMB)
			}
		})
	}
}

func TestBuildImageCacheByContent(t *testing.T) {
	needEnv(t)
	cfg := buildCfg(t, shortDir(t))
	dir1, err := makeBusyboxDir(filepath.Join(t.TempDir(), "one"))
	if err != nil {
		t.Fatal(err)
	}
	first, err := BuildImage(t.Context(), cfg, dir1)
	if err != nil {
		t.Fatal(err)
	}
	fi1, _ := os.Stat(first.Path)

	// Same content elsewhere: same digest, served from the cache.
	dir2 := filepath.Join(t.TempDir(), "two")
	if err := exec.Command("cp", "-a", dir1, dir2).Run(); err != nil {
		t.Fatal(err)
	}
	second, err := BuildImage(t.Context(), cfg, dir2)
	if err != nil {
		t.Fatal(err)
	}
	fi2, _ := os.Stat(second.Path)
	if second.Digest != first.Digest || second.Path != first.Path || !fi2.ModTime().Equal(fi1.ModTime()) {
		t.Errorf("identical content at another path was rebuilt: %+v vs %+v", second, first)
	}

	// Changed content: a new digest.
	if err := os.WriteFile(filepath.Join(dir2, "etc", "hostname"), []byte("changed\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	third, err := BuildImage(t.Context(), cfg, dir2)
	if err != nil {
		t.Fatal(err)
	}
	if third.Digest == first.Digest {
		t.Error("changed content kept its digest")
	}

	// A different agent binary: a new digest for the same source.
	agent2 := filepath.Join(t.TempDir(), "stacyvm-agent")
	b, _ := os.ReadFile(testEnv.agent)
	os.WriteFile(agent2, append(b, 0), 0o755)
	cfg2 := cfg
	cfg2.AgentPath = agent2
	fourth, err := BuildImage(t.Context(), cfg2, dir1)
	if err != nil {
		t.Fatal(err)
	}
	if fourth.Digest == first.Digest || fourth.SourceDigest != first.SourceDigest {
		t.Errorf("new agent: digest %s (was %s), source digest %s (was %s)", fourth.Digest, first.Digest, fourth.SourceDigest, first.SourceDigest)
	}
}

func TestBuildImageConcurrentBuildsOnce(t *testing.T) {
	needEnv(t)
	cfg := buildCfg(t, shortDir(t))
	cfg, _ = cfg.withDefaults()
	ic, err := newImageCache(cfg)
	if err != nil {
		t.Fatal(err)
	}
	type res struct {
		img Image
		err error
	}
	out := make(chan res, 4)
	for range 4 {
		go func() {
			img, _, err := ic.ensure(t.Context(), testEnv.image)
			out <- res{img, err}
		}()
	}
	var digest string
	for range 4 {
		r := <-out
		if r.err != nil {
			t.Fatal(r.err)
		}
		if digest != "" && r.img.Digest != digest {
			t.Error("concurrent builds disagree")
		}
		digest = r.img.Digest
	}
	ents, _ := os.ReadDir(ic.dir)
	n := 0
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".ext4") {
			n++
		}
		if strings.HasPrefix(e.Name(), "build-") {
			t.Errorf("leftover build dir %s", e.Name())
		}
	}
	if n != 1 {
		t.Errorf("%d cached file systems, want 1", n)
	}
}

// A tarball cannot write outside the staging directory, whatever its
// entry names and links say.
func TestExtractTarConfined(t *testing.T) {
	outside := filepath.Join(t.TempDir(), "outside")
	if err := os.Mkdir(outside, 0o755); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(h *tar.Header, body string) {
		h.Size = int64(len(body))
		if h.Typeflag == tar.TypeSymlink || h.Typeflag == tar.TypeDir {
			h.Size = 0
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		tw.WriteHeader(h)
		io.WriteString(tw, body)
	}
	add(&tar.Header{Name: "../../escape-dotdot", Typeflag: tar.TypeReg}, "x")
	add(&tar.Header{Name: "/escape-abs", Typeflag: tar.TypeReg}, "x")
	add(&tar.Header{Name: "out", Typeflag: tar.TypeSymlink, Linkname: outside}, "")
	add(&tar.Header{Name: "out/planted", Typeflag: tar.TypeReg}, "x")
	add(&tar.Header{Name: "hl", Typeflag: tar.TypeLink, Linkname: "../../../etc/passwd"}, "")
	tw.Close()

	stage := t.TempDir()
	root, err := os.OpenRoot(stage)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	_, err = rootfs.Extract(context.Background(), &buf, root)
	if err == nil {
		t.Error("extraction through a symlink leading out of the root succeeded")
	}
	if _, err := os.Stat(filepath.Join(outside, "planted")); err == nil {
		t.Error("a tar entry was written through a symlink outside the root")
	}
	for _, n := range []string{"escape-dotdot", "escape-abs"} {
		if _, err := os.Stat(filepath.Join(stage, n)); err != nil {
			t.Errorf("%s was not kept inside the root: %v", n, err)
		}
	}
}

func TestAgentTargetFollowsImageSymlinks(t *testing.T) {
	tests := []struct {
		name  string
		setup func(dir string)
		want  string
	}{
		{"plain", func(d string) { os.Mkdir(filepath.Join(d, "sbin"), 0o755) }, "sbin/stacyvm-agent"},
		{"relative merged usr", func(d string) {
			os.MkdirAll(filepath.Join(d, "usr", "sbin"), 0o755)
			os.Symlink("usr/sbin", filepath.Join(d, "sbin"))
		}, "usr/sbin/stacyvm-agent"},
		{"absolute merged usr", func(d string) {
			os.MkdirAll(filepath.Join(d, "usr", "sbin"), 0o755)
			os.Symlink("/usr/sbin", filepath.Join(d, "sbin"))
		}, "usr/sbin/stacyvm-agent"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := t.TempDir()
			tt.setup(d)
			root, err := os.OpenRoot(d)
			if err != nil {
				t.Fatal(err)
			}
			defer root.Close()
			got, err := agentTarget(root)
			if err != nil || got != tt.want {
				t.Errorf("agentTarget = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestBuildImageErrors(t *testing.T) {
	needEnv(t)
	cfg := buildCfg(t, shortDir(t))
	if _, err := BuildImage(t.Context(), cfg, "/does/not/exist"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("missing path: %v, want class not found", err)
	}
	if _, err := BuildImage(t.Context(), cfg, ""); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("empty ref: %v, want invalid argument", err)
	}
	garbage := filepath.Join(t.TempDir(), "garbage.tar")
	os.WriteFile(garbage, bytes.Repeat([]byte("not a tar "), 100), 0o600)
	if _, err := BuildImage(t.Context(), cfg, garbage); err == nil {
		t.Error("a file that is no tarball built")
	}
}

// dockerOrSkip returns a client of a reachable Docker daemon.
func dockerOrSkip(t *testing.T) *client.Client {
	t.Helper()
	cli, err := client.New(client.FromEnv)
	if err != nil {
		t.Skipf("docker client: %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	if _, err := cli.Ping(ctx, client.PingOptions{}); err != nil {
		cli.Close()
		t.Skipf("no Docker daemon reachable (DOCKER_HOST or /var/run/docker.sock): %v", err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

func TestBuildImageFromDocker(t *testing.T) {
	needEnv(t)
	cli := dockerOrSkip(t)
	ref := fmt.Sprintf("stacyvm-fc-test:%d", time.Now().UnixNano())
	tarball, err := os.Open(tarOf(t, testEnv.image, false))
	if err != nil {
		t.Fatal(err)
	}
	defer tarball.Close()
	rc, err := cli.ImageImport(t.Context(), client.ImageImportSource{Source: tarball, SourceName: "-"}, ref, client.ImageImportOptions{})
	if err != nil {
		t.Fatalf("importing the test image: %v", err)
	}
	io.Copy(io.Discard, rc)
	rc.Close()
	t.Cleanup(func() {
		cli.ImageRemove(context.Background(), ref, client.ImageRemoveOptions{Force: true, PruneChildren: true})
	})
	inspect, err := cli.ImageInspect(t.Context(), ref)
	if err != nil {
		t.Fatal(err)
	}

	cfg := buildCfg(t, shortDir(t))
	img, err := BuildImage(t.Context(), cfg, ref)
	if err != nil {
		t.Fatal(err)
	}
	if img.Kind != KindDocker || img.SourceDigest != inspect.ID {
		t.Errorf("image %+v, want kind docker and source digest %s", img, inspect.ID)
	}
	if debugfsStat(t, img.Path, GuestAgentPath) == "" || debugfsStat(t, img.Path, "/bin/busybox") == "" {
		t.Error("the exported image lacks the agent or busybox")
	}
	// No export container is left behind.
	list, err := cli.ContainerList(t.Context(), client.ContainerListOptions{All: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range list.Items {
		if c.Labels["stacyvm.purpose"] == "firecracker-rootfs-export" && c.Image == ref {
			t.Errorf("export container %s left behind", c.ID)
		}
	}
	if _, err := BuildImage(t.Context(), cfg, "stacyvm-fc-test:no-such-tag"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("missing Docker image: %v, want class not found", err)
	}
}

func TestCloneFileKeepsHoles(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	f, _ := os.Create(src)
	f.WriteAt([]byte("head"), 0)
	f.WriteAt([]byte("middle"), 64<<20)
	f.Truncate(256 << 20)
	f.Close()
	dst := filepath.Join(dir, "dst")
	if err := cloneFile(src, dst); err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(src)
	b, _ := os.ReadFile(dst)
	if !bytes.Equal(a, b) {
		t.Fatal("clone differs from the source")
	}
	var st unixStat
	if err := statBlocks(dst, &st); err != nil {
		t.Fatal(err)
	}
	if st.allocated > 8<<20 {
		t.Errorf("clone allocates %d bytes for 10 bytes of data: holes were filled", st.allocated)
	}
	if err := cloneFile(src, dst); err == nil {
		t.Error("clone over an existing file succeeded")
	}
}
