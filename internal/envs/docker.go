package envs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/build"
	"github.com/moby/moby/api/types/jsonstream"
	"github.com/moby/moby/api/types/registry"
	"github.com/moby/moby/client"

	"github.com/stacyvm/stacyvm/internal/errdefs"
)

// Image is a built image as dockerd reports it.
type Image struct {
	ID   string // sha256:… content digest of the image configuration
	Size int64
}

// Builder is what the service needs from an image builder. Docker is the
// implementation; the interface keeps the queue's own logic testable
// without a daemon.
type Builder interface {
	// Build builds the tar build context into tag, writing the build's
	// output to log as it comes. Canceling ctx aborts the build on the
	// daemon; then nothing is tagged.
	Build(ctx context.Context, buildContext []byte, tag string, labels map[string]string, log io.Writer) (Image, error)
	// Inspect returns the image ref names; a missing one is
	// errdefs.ErrNotFound.
	Inspect(ctx context.Context, ref string) (Image, error)
	// Remove untags ref (and deletes the image when no tag is left).
	Remove(ctx context.Context, ref string) error
	// Push tags local as remote and pushes it with the given credentials,
	// returning the manifest digest and the image size.
	Push(ctx context.Context, local, remote string, auth registry.AuthConfig, log io.Writer) (digest string, err error)
	// Export writes the root file system of ref as a tar stream.
	Export(ctx context.Context, ref string, w io.Writer) error
}

// Docker builds through the Docker Engine API (classic builder: dockerd
// 20.10 has no BuildKit session here, and the classic builder aborts the
// running step when the request's connection closes).
type Docker struct {
	cli     *client.Client
	network string
}

var _ Builder = (*Docker)(nil)

// NewDocker connects to dockerd at host ("" for DOCKER_HOST or the
// default socket); network is the build containers' network mode ("" is
// dockerd's default bridge, "host" the host's network).
func NewDocker(ctx context.Context, host, network string) (*Docker, error) {
	opts := []client.Opt{client.FromEnv}
	if host != "" {
		opts = append(opts, client.WithHost(host))
	}
	cli, err := client.New(opts...)
	if err != nil {
		return nil, errdefs.Wrap(errdefs.ErrInvalidArgument, err, "environments: docker client for host %q", host)
	}
	if _, err := cli.Ping(ctx, client.PingOptions{}); err != nil {
		cli.Close()
		return nil, classify(err, "environments: docker daemon")
	}
	return &Docker{cli: cli, network: network}, nil
}

// Close releases the client.
func (d *Docker) Close() error { return d.cli.Close() }

// Client is the underlying Docker client, for tests that check what the
// daemon holds.
func (d *Docker) Client() *client.Client { return d.cli }

func classify(err error, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%s: %w", msg, err)
	case client.IsErrConnectionFailed(err), cerrdefs.IsUnavailable(err):
		return errdefs.WithHint(errdefs.Wrap(errdefs.ErrProviderUnavailable, err, "%s", msg),
			"environments are built by dockerd: start it, or set docker.host")
	case cerrdefs.IsNotFound(err):
		return errdefs.Wrap(errdefs.ErrNotFound, err, "%s", msg)
	case cerrdefs.IsInvalidArgument(err):
		return errdefs.Wrap(errdefs.ErrInvalidArgument, err, "%s", msg)
	}
	return fmt.Errorf("%s: %w", msg, err)
}

// Build implements Builder.
func (d *Docker) Build(ctx context.Context, buildContext []byte, tag string, labels map[string]string, log io.Writer) (Image, error) {
	res, err := d.cli.ImageBuild(ctx, bytes.NewReader(buildContext), client.ImageBuildOptions{
		Tags:        []string{tag},
		Remove:      true,
		ForceRemove: true, // intermediate containers go even when a step fails
		NetworkMode: d.network,
		Labels:      labels,
		Version:     build.BuilderV1,
	})
	if err != nil {
		return Image{}, classify(err, "build %s", tag)
	}
	defer res.Body.Close()
	if err := followStream(ctx, res.Body, log, nil); err != nil {
		return Image{}, err
	}
	return d.Inspect(ctx, tag)
}

// followStream copies a daemon's JSON progress stream to log and returns
// the error it reports; onAux sees each aux payload.
func followStream(ctx context.Context, r io.Reader, log io.Writer, onAux func(json.RawMessage)) error {
	dec := json.NewDecoder(r)
	for {
		var m jsonstream.Message
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("reading the daemon's progress: %w", err)
		}
		switch {
		case m.Error != nil:
			fmt.Fprintln(log, m.Error.Message)
			return errors.New(strings.TrimSpace(m.Error.Message))
		case m.Stream != "":
			io.WriteString(log, m.Stream)
		case m.Status != "" && m.Progress == nil:
			// Pull and push status lines; per-layer progress bars are noise
			// in a stored log.
			if m.ID != "" {
				fmt.Fprintf(log, "%s: %s\n", m.ID, m.Status)
			} else {
				fmt.Fprintln(log, m.Status)
			}
		}
		if m.Aux != nil && onAux != nil {
			onAux(*m.Aux)
		}
	}
}

// Inspect implements Builder.
func (d *Docker) Inspect(ctx context.Context, ref string) (Image, error) {
	res, err := d.cli.ImageInspect(ctx, ref)
	if err != nil {
		return Image{}, classify(err, "image %s", ref)
	}
	return Image{ID: res.ID, Size: res.Size}, nil
}

// Remove implements Builder.
func (d *Docker) Remove(ctx context.Context, ref string) error {
	// Untagged parent layers go too, as `docker rmi` does.
	_, err := d.cli.ImageRemove(ctx, ref, client.ImageRemoveOptions{PruneChildren: true})
	return classify(err, "remove image %s", ref)
}

// Push implements Builder.
func (d *Docker) Push(ctx context.Context, local, remote string, auth registry.AuthConfig, log io.Writer) (string, error) {
	if _, err := d.cli.ImageTag(ctx, client.ImageTagOptions{Source: local, Target: remote}); err != nil {
		return "", classify(err, "tag %s as %s", local, remote)
	}
	encoded, err := encodeAuth(auth)
	if err != nil {
		return "", err
	}
	resp, err := d.cli.ImagePush(ctx, remote, client.ImagePushOptions{RegistryAuth: encoded})
	if err != nil {
		return "", classify(err, "push %s", remote)
	}
	defer resp.Close()
	var digest string
	err = followStream(ctx, resp, log, func(aux json.RawMessage) {
		var p struct {
			Digest string `json:"Digest"`
		}
		if json.Unmarshal(aux, &p) == nil && p.Digest != "" {
			digest = p.Digest
		}
	})
	if err != nil {
		return "", fmt.Errorf("push %s: %w", remote, err)
	}
	if digest == "" {
		return "", fmt.Errorf("push %s: the daemon reported no digest", remote)
	}
	return digest, nil
}

// Export implements Builder: a container is created (never started) from
// ref, its file system streamed out, and the container removed.
func (d *Docker) Export(ctx context.Context, ref string, w io.Writer) error {
	created, err := d.cli.ContainerCreate(ctx, client.ContainerCreateOptions{Image: ref})
	if err != nil {
		return classify(err, "export %s", ref)
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		_, _ = d.cli.ContainerRemove(rctx, created.ID, client.ContainerRemoveOptions{Force: true})
	}()
	rc, err := d.cli.ContainerExport(ctx, created.ID, client.ContainerExportOptions{})
	if err != nil {
		return classify(err, "export %s", ref)
	}
	defer rc.Close()
	if _, err := io.Copy(w, rc); err != nil {
		return fmt.Errorf("export %s: %w", ref, err)
	}
	return nil
}

// digestWriter counts and hashes what passes through it.
type digestWriter struct {
	h interface {
		io.Writer
		Sum([]byte) []byte
	}
	n int64
}

func newDigestWriter() *digestWriter { return &digestWriter{h: sha256.New()} }

func (d *digestWriter) Write(p []byte) (int, error) {
	d.n += int64(len(p))
	return d.h.Write(p)
}

func (d *digestWriter) Digest() string { return "sha256:" + hex.EncodeToString(d.h.Sum(nil)) }

// encodeAuth is the Engine API's X-Registry-Auth form of credentials.
func encodeAuth(auth registry.AuthConfig) (string, error) {
	b, err := json.Marshal(auth)
	if err != nil {
		return "", err
	}
	return base64.URLEncoding.EncodeToString(b), nil
}
