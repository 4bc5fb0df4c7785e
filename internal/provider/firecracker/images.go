package firecracker

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/rootfs"
)

// Image is a root file system built for Firecracker.
type Image struct {
	// Ref is what the caller named: a Docker image reference, or the path
	// of a directory, tarball or prebuilt ext4 file.
	Ref string `json:"ref"`
	// Kind is "docker", "dir", "tar" or "ext4".
	Kind string `json:"kind"`
	// SourceDigest is the content digest of the source: the Docker image
	// ID, or sha256 of the tarball, of the directory's canonical tar
	// stream, or of the ext4 file.
	SourceDigest string `json:"source_digest"`
	// Digest identifies the built file system: sha256 over SourceDigest,
	// the agent binary's digest and the build parameters. It is the cache
	// key, so a rebuilt source or a new agent yields a new file system.
	Digest string `json:"digest"`
	// Path is the cached ext4 file. Sandboxes get clones of it.
	Path    string    `json:"path"`
	Size    int64     `json:"size"`
	Created time.Time `json:"created"`
}

// Source kinds.
const (
	KindDocker = "docker"
	KindDir    = "dir"
	KindTar    = "tar"
	KindExt4   = "ext4"
)

// buildFormat versions the build recipe; bumping it rebuilds every image.
const buildFormat = "stacyvm-firecracker-rootfs-v1"

// BuildImage turns source into a cached ext4 root file system with the
// agent installed, or returns the cached one. source is a local Docker
// image reference, or a path (absolute, or starting with ./ or ../) to a
// directory, a tarball (optionally gzipped) or a prebuilt ext4 file. It
// needs mkfs.ext4 from e2fsprogs and no privileges: no loop mounts, no
// helper containers. Only cfg's StateDir, AgentPath, FreeMB, DockerHost
// and Logger matter. This is what `stacyvm build-image IMAGE` runs.
func BuildImage(ctx context.Context, cfg Config, source string) (Image, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return Image{}, err
	}
	ic, err := newImageCache(cfg)
	if err != nil {
		return Image{}, err
	}
	img, _, err := ic.ensure(ctx, source)
	return img, err
}

// imageCache builds and keeps root file systems under dir, keyed by
// Digest, and remembers which digest each ref resolved to last so that a
// changed source can invalidate what was derived from the old one.
type imageCache struct {
	dir         string
	agentPath   string
	agentDigest string
	freeMB      int
	dockerHost  string
	log         *slog.Logger

	mu       sync.Mutex
	inflight map[string]*buildFlight
	memo     map[string]fileMemo // ext4/tar digests by path and stat
}

type buildFlight struct {
	done chan struct{}
	img  Image
	err  error
}

// fileMemo saves rehashing an unchanged large file on every spawn; the
// digest, not the path, is still what keys the cache.
type fileMemo struct {
	size, mtime int64
	ino         uint64
	digest      string
}

func newImageCache(cfg Config) (*imageCache, error) {
	agentPath, err := resolveAgent(cfg.AgentPath)
	if err != nil {
		return nil, errdefs.Wrap(errdefs.ErrProviderUnavailable, err, "firecracker")
	}
	ad, err := sha256File(agentPath)
	if err != nil {
		return nil, errdefs.Wrap(errdefs.ErrProviderUnavailable, err, "hashing the agent binary")
	}
	dir := filepath.Join(cfg.StateDir, "images")
	if err := os.MkdirAll(filepath.Join(dir, "refs"), 0o700); err != nil {
		return nil, fmt.Errorf("firecracker: image cache: %w", err)
	}
	return &imageCache{
		dir: dir, agentPath: agentPath, agentDigest: ad, freeMB: cfg.FreeMB,
		dockerHost: cfg.DockerHost, log: cfg.Logger,
		inflight: map[string]*buildFlight{}, memo: map[string]fileMemo{},
	}, nil
}

// ensure resolves ref to a built image, building it if needed. previous is
// the digest ref resolved to before, when that differs (the source
// changed); the caller invalidates whatever it derived from it.
func (ic *imageCache) ensure(ctx context.Context, ref string) (img Image, previous string, err error) {
	if strings.TrimSpace(ref) == "" {
		return Image{}, "", errdefs.New(errdefs.ErrInvalidArgument, "firecracker: an image is required")
	}
	kind, srcPath, err := classifySource(ref)
	if err != nil {
		return Image{}, "", err
	}
	srcDigest, err := ic.sourceDigest(ctx, kind, srcPath, ref)
	if err != nil {
		return Image{}, "", err
	}
	key := ic.key(kind, srcDigest)
	img, err = ic.buildOnce(ctx, key, func(ctx context.Context) (Image, error) {
		return ic.build(ctx, kind, srcPath, ref, srcDigest, key)
	})
	if err != nil {
		return Image{}, "", err
	}
	img.Ref = ref
	previous, err = ic.recordRef(ref, img.Digest)
	if err != nil {
		ic.log.Warn("firecracker: recording image ref", "ref", ref, "err", err)
	}
	return img, previous, nil
}

func (ic *imageCache) key(kind, srcDigest string) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%s\x00%s\x00%d", buildFormat, kind, srcDigest, ic.agentDigest, ic.freeMB)
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

func (ic *imageCache) paths(digest string) (ext4, meta string) {
	hexd := strings.TrimPrefix(digest, "sha256:")
	return filepath.Join(ic.dir, hexd+".ext4"), filepath.Join(ic.dir, hexd+".json")
}

// buildOnce runs build at most once at a time per key and serves the
// cached result afterwards.
func (ic *imageCache) buildOnce(ctx context.Context, key string, build func(context.Context) (Image, error)) (Image, error) {
	for {
		if img, ok := ic.cached(key); ok {
			return img, nil
		}
		ic.mu.Lock()
		if f, ok := ic.inflight[key]; ok {
			ic.mu.Unlock()
			select {
			case <-f.done:
				if f.err != nil {
					return Image{}, f.err
				}
				continue
			case <-ctx.Done():
				return Image{}, context.Cause(ctx)
			}
		}
		f := &buildFlight{done: make(chan struct{})}
		ic.inflight[key] = f
		ic.mu.Unlock()

		f.img, f.err = build(ctx)
		ic.mu.Lock()
		delete(ic.inflight, key)
		ic.mu.Unlock()
		close(f.done)
		return f.img, f.err
	}
}

func (ic *imageCache) cached(key string) (Image, bool) {
	ext4, meta := ic.paths(key)
	b, err := os.ReadFile(meta)
	if err != nil {
		return Image{}, false
	}
	var img Image
	if json.Unmarshal(b, &img) != nil || img.Digest != key {
		return Image{}, false
	}
	fi, err := os.Stat(ext4)
	if err != nil || fi.Size() != img.Size {
		return Image{}, false
	}
	img.Path = ext4
	return img, true
}

// classifySource tells a path from a Docker reference: paths are absolute
// or start with ./ or ../, which no Docker reference does.
func classifySource(ref string) (kind, path string, err error) {
	if !filepath.IsAbs(ref) && !strings.HasPrefix(ref, "./") && !strings.HasPrefix(ref, "../") {
		return KindDocker, "", nil
	}
	abs, err := filepath.Abs(ref)
	if err != nil {
		return "", "", errdefs.Wrap(errdefs.ErrInvalidArgument, err, "image path")
	}
	fi, err := os.Stat(abs)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", "", errdefs.New(errdefs.ErrNotFound, "image %s does not exist", ref)
		}
		return "", "", errdefs.Wrap(errdefs.ErrInvalidArgument, err, "image %s", ref)
	}
	switch {
	case fi.IsDir():
		return KindDir, abs, nil
	case !fi.Mode().IsRegular():
		return "", "", errdefs.New(errdefs.ErrInvalidArgument, "image %s is neither a directory nor a file", ref)
	case strings.HasSuffix(abs, ".ext4") || strings.HasSuffix(abs, ".img"):
		return KindExt4, abs, nil
	}
	return KindTar, abs, nil
}

func (ic *imageCache) sourceDigest(ctx context.Context, kind, path, ref string) (string, error) {
	switch kind {
	case KindDocker:
		cli, err := ic.docker()
		if err != nil {
			return "", err
		}
		defer cli.Close()
		res, err := cli.ImageInspect(ctx, ref)
		if err != nil {
			return "", dockerErr(ctx, err, ref)
		}
		return res.ID, nil
	case KindDir:
		h := sha256.New()
		if err := writeDirTar(ctx, path, h); err != nil {
			return "", errdefs.Wrap(errdefs.ErrInvalidArgument, err, "reading image directory %s", ref)
		}
		return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
	default:
		return ic.fileDigest(path)
	}
}

func (ic *imageCache) fileDigest(path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	m := fileMemo{size: fi.Size(), mtime: fi.ModTime().UnixNano(), ino: inode(fi)}
	ic.mu.Lock()
	old, ok := ic.memo[path]
	ic.mu.Unlock()
	if ok && old.size == m.size && old.mtime == m.mtime && old.ino == m.ino {
		return old.digest, nil
	}
	d, err := sha256File(path)
	if err != nil {
		return "", err
	}
	m.digest = d
	ic.mu.Lock()
	ic.memo[path] = m
	ic.mu.Unlock()
	return d, nil
}

func sha256File(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

func (ic *imageCache) docker() (*client.Client, error) {
	opts := []client.Opt{client.FromEnv}
	if ic.dockerHost != "" {
		opts = append(opts, client.WithHost(ic.dockerHost))
	}
	cli, err := client.New(opts...)
	if err != nil {
		return nil, errdefs.Wrap(errdefs.ErrProviderUnavailable, err, "docker client")
	}
	return cli, nil
}

func dockerErr(ctx context.Context, err error, ref string) error {
	if cerr := context.Cause(ctx); cerr != nil {
		return fmt.Errorf("docker: %w", cerr)
	}
	if cerrdefs.IsNotFound(err) {
		return errdefs.Wrap(errdefs.ErrNotFound, err, "image %q is not a local Docker image", ref)
	}
	return errdefs.Wrap(errdefs.ErrProviderUnavailable, err, "docker, exporting %q", ref)
}

// build makes the ext4 file for key from the source.
func (ic *imageCache) build(ctx context.Context, kind, srcPath, ref, srcDigest, key string) (Image, error) {
	start := time.Now()
	ext4, meta := ic.paths(key)
	tmp, err := os.MkdirTemp(ic.dir, "build-")
	if err != nil {
		return Image{}, err
	}
	defer os.RemoveAll(tmp)
	out := filepath.Join(tmp, "rootfs.ext4")

	if kind == KindExt4 {
		// Prebuilt: used as is (it must already contain the agent).
		if err := cloneFile(srcPath, out); err != nil {
			return Image{}, fmt.Errorf("copying %s: %w", ref, err)
		}
	} else {
		stage := filepath.Join(tmp, "root")
		if err := os.Mkdir(stage, 0o755); err != nil {
			return Image{}, err
		}
		if err := ic.stage(ctx, kind, srcPath, ref, stage); err != nil {
			return Image{}, err
		}
		if err := makeExt4(ctx, stage, out, ic.freeMB); err != nil {
			return Image{}, err
		}
	}
	fi, err := os.Stat(out)
	if err != nil {
		return Image{}, err
	}
	img := Image{Ref: ref, Kind: kind, SourceDigest: srcDigest, Digest: key, Size: fi.Size(), Created: time.Now().UTC()}
	b, _ := json.MarshalIndent(img, "", "  ")
	if err := os.Rename(out, ext4); err != nil {
		return Image{}, err
	}
	if err := writeFileAtomic(meta, b, 0o600); err != nil {
		return Image{}, err
	}
	img.Path = ext4
	ic.log.Info("firecracker: built root file system", "image", ref, "digest", key, "size", fi.Size(), "took", time.Since(start).Round(time.Millisecond))
	return img, nil
}

// stage unpacks the source into the directory stage and finishes it.
func (ic *imageCache) stage(ctx context.Context, kind, srcPath, ref, stage string) error {
	root, err := os.OpenRoot(stage)
	if err != nil {
		return err
	}
	defer root.Close()
	var st rootfs.Stats
	switch kind {
	case KindDir:
		pr, pw := io.Pipe()
		go func() { pw.CloseWithError(writeDirTar(ctx, srcPath, pw)) }()
		st, err = rootfs.Extract(ctx, pr, root)
		pr.CloseWithError(errors.New("extraction ended"))
	case KindTar:
		var f *os.File
		if f, err = os.Open(srcPath); err != nil {
			return err
		}
		defer f.Close()
		var r io.Reader
		if r, err = maybeGunzip(f); err != nil {
			return errdefs.Wrap(errdefs.ErrInvalidArgument, err, "image %s", ref)
		}
		st, err = rootfs.Extract(ctx, r, root)
	case KindDocker:
		st, err = ic.exportDocker(ctx, ref, root)
	}
	if err != nil {
		return fmt.Errorf("unpacking image %s: %w", ref, err)
	}
	if st.Skipped > 0 {
		ic.log.Debug("firecracker: skipped device nodes and FIFOs (the guest's /dev is devtmpfs)", "image", ref, "count", st.Skipped)
	}
	return finishRoot(root, ic.agentPath)
}

func maybeGunzip(f *os.File) (io.Reader, error) {
	br := bufio.NewReader(f)
	magic, _ := br.Peek(2)
	if bytes.Equal(magic, []byte{0x1f, 0x8b}) {
		return gzip.NewReader(br)
	}
	return br, nil
}

// exportDocker streams the file system of a created (never started)
// container of ref, the same bytes `docker export` prints.
func (ic *imageCache) exportDocker(ctx context.Context, ref string, root *os.Root) (rootfs.Stats, error) {
	cli, err := ic.docker()
	if err != nil {
		return rootfs.Stats{}, err
	}
	defer cli.Close()
	created, err := cli.ContainerCreate(ctx, client.ContainerCreateOptions{
		Config: &container.Config{
			Image: ref,
			// Never run: a command is required only by images without one.
			Entrypoint: []string{"/stacyvm-export-placeholder"},
			Labels:     map[string]string{"stacyvm.purpose": "firecracker-rootfs-export"},
		},
		HostConfig: &container.HostConfig{NetworkMode: "none"},
	})
	if err != nil {
		return rootfs.Stats{}, dockerErr(ctx, err, ref)
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if _, err := cli.ContainerRemove(rctx, created.ID, client.ContainerRemoveOptions{Force: true}); err != nil {
			ic.log.Warn("firecracker: removing export container", "id", created.ID, "err", err)
		}
	}()
	rc, err := cli.ContainerExport(ctx, created.ID, client.ContainerExportOptions{})
	if err != nil {
		return rootfs.Stats{}, dockerErr(ctx, err, ref)
	}
	defer rc.Close()
	return rootfs.Extract(ctx, rc, root)
}

// makeExt4 builds an ext4 file system from stage with mkfs.ext4 -d, which
// needs neither a loop device nor privileges. The file is sparse: the
// free space costs nothing until the guest writes.
func makeExt4(ctx context.Context, stage, out string, freeMB int) error {
	bytes, entries, err := dirUsage(stage)
	if err != nil {
		return err
	}
	// Content plus 10% and 4 KiB per inode of slack, journal and metadata
	// headroom, and the free space asked for.
	contentMB := (bytes+bytes/10+entries*4096)>>20 + 1
	sizeMB := contentMB + 64 + int64(freeMB)
	mkfs, err := exec.LookPath("mkfs.ext4")
	if err != nil {
		return errdefs.Wrap(errdefs.ErrProviderUnavailable, err, "mkfs.ext4 (e2fsprogs) is needed to build root file systems")
	}
	if err := os.WriteFile(out, nil, 0o600); err != nil {
		return err
	}
	if err := os.Truncate(out, sizeMB<<20); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, mkfs, "-q", "-F", "-t", "ext4", "-L", "stacyvm-root",
		"-m", "0", "-i", "8192", "-E", "root_owner=0:0", "-d", stage, out)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("mkfs.ext4 -d: %w: %s", err, strings.TrimSpace(string(b)))
	}
	return nil
}

// recordRef remembers that ref now resolves to digest and returns the
// digest it resolved to before, if different.
func (ic *imageCache) recordRef(ref, digest string) (string, error) {
	sum := sha256.Sum256([]byte(ref))
	p := filepath.Join(ic.dir, "refs", hex.EncodeToString(sum[:16])+".json")
	type refRecord struct {
		Ref    string `json:"ref"`
		Digest string `json:"digest"`
	}
	var old refRecord
	if b, err := os.ReadFile(p); err == nil {
		_ = json.Unmarshal(b, &old)
	}
	if old.Ref == ref && old.Digest == digest {
		return "", nil
	}
	b, _ := json.Marshal(refRecord{Ref: ref, Digest: digest})
	if err := writeFileAtomic(p, b, 0o600); err != nil {
		return "", err
	}
	if old.Ref == ref && old.Digest != "" {
		return old.Digest, nil
	}
	return "", nil
}

// refsTo reports whether any recorded ref resolves to digest.
func (ic *imageCache) refsTo(digest string) bool {
	ents, _ := os.ReadDir(filepath.Join(ic.dir, "refs"))
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(ic.dir, "refs", e.Name()))
		if err == nil && bytes.Contains(b, []byte(strconv.Quote(digest))) {
			return true
		}
	}
	return false
}

// remove deletes a cached image nobody refers to any more. Sandboxes hold
// clones, so removing the file affects none of them.
func (ic *imageCache) remove(digest string) {
	if ic.refsTo(digest) {
		return
	}
	ext4, meta := ic.paths(digest)
	_ = os.Remove(meta)
	_ = os.Remove(ext4)
}

func writeFileAtomic(path string, b []byte, mode fs.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
