package mcp

import (
	"context"
	"io"
	"io/fs"
	"time"

	"github.com/stacyvm/stacyvm/internal/client"
	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/orchestrator"
	"github.com/stacyvm/stacyvm/internal/provider"
	"github.com/stacyvm/stacyvm/internal/store"
)

// durationArg parses an optional duration argument; "" is zero (the
// server's default).
func durationArg(name, s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, errdefs.New(errdefs.ErrInvalidArgument, "%s %q is not a positive Go duration such as 30m", name, s)
	}
	return d, nil
}

// convert turns a backend's (list, error) answer into the tools' types.
func convert[T, U any](f func(T) U) func([]T, error) ([]U, error) {
	return func(list []T, err error) ([]U, error) {
		if err != nil {
			return nil, err
		}
		out := make([]U, 0, len(list))
		for _, v := range list {
			out = append(out, f(v))
		}
		return out, nil
	}
}

func fileEntry(fi provider.FileInfo) FileEntry {
	return FileEntry{Path: fi.Path, Size: fi.Size, Mode: provider.FormatMode(fi.Mode), IsDir: fi.IsDir, ModTime: fi.ModTime.UTC()}
}

// FromManager is the Backend of `serve`: the server's own orchestrator.
func FromManager(m *orchestrator.Manager) Backend { return managerBackend{m} }

type managerBackend struct{ m *orchestrator.Manager }

func fromRecord(sb store.Sandbox) Sandbox {
	return Sandbox{ID: sb.ID, State: sb.State, Provider: sb.Provider, Image: sb.Image, Template: sb.Template,
		CreatedAt: sb.CreatedAt.UTC(), ExpiresAt: sb.ExpiresAt.UTC(), Metadata: sb.Metadata, Error: sb.LastError}
}

func (b managerBackend) Spawn(ctx context.Context, in SpawnInput) (Sandbox, error) {
	ttl, err := durationArg("ttl", in.TTL)
	if err != nil {
		return Sandbox{}, err
	}
	sb, err := b.m.Spawn(ctx, orchestrator.SpawnRequest{Image: in.Image, Provider: in.Provider, Template: in.Template,
		TTL: ttl, MemoryMB: in.MemoryMB, VCPUs: in.VCPUs, Metadata: in.Metadata})
	if err != nil {
		return Sandbox{}, err
	}
	return fromRecord(sb), nil
}

func (b managerBackend) List(ctx context.Context, state string) ([]Sandbox, error) {
	return convert(fromRecord)(b.m.List(ctx, orchestrator.ListFilter{State: state}))
}

func (b managerBackend) Destroy(ctx context.Context, id string) error { return b.m.Destroy(ctx, id) }

func (b managerBackend) Exec(ctx context.Context, id string, in ExecInput, timeout time.Duration) (ExecOutput, error) {
	r, err := b.m.Exec(ctx, id, orchestrator.ExecRequest{Command: in.Command, Args: in.Args, Env: in.Env,
		WorkDir: in.Workdir, Timeout: timeout})
	return ExecOutput{ExitCode: r.ExitCode, Stdout: r.Stdout, Stderr: r.Stderr, Duration: r.Duration.String(),
		TimedOut: r.TimedOut, Truncated: r.Truncated}, err
}

func (b managerBackend) WriteFile(ctx context.Context, id, path string, r io.Reader, mode fs.FileMode) error {
	return b.m.WriteFile(ctx, id, path, r, mode)
}

func (b managerBackend) ReadFile(ctx context.Context, id, path string) (io.ReadCloser, error) {
	return b.m.ReadFile(ctx, id, path)
}

func (b managerBackend) ListFiles(ctx context.Context, id, path string) ([]FileEntry, error) {
	return convert(fileEntry)(b.m.ListFiles(ctx, id, path))
}

// FromClient is the Backend of `stacyvm mcp`: a running server, over its
// REST API.
func FromClient(c *client.Client) Backend { return clientBackend{c} }

type clientBackend struct{ c *client.Client }

func fromClient(sb client.Sandbox) Sandbox {
	return Sandbox{ID: sb.ID, State: sb.State, Provider: sb.Provider, Image: sb.Image, Template: sb.Template,
		CreatedAt: sb.CreatedAt.UTC(), ExpiresAt: sb.ExpiresAt.UTC(), Metadata: sb.Metadata, Error: sb.Error}
}

func (b clientBackend) Spawn(ctx context.Context, in SpawnInput) (Sandbox, error) {
	ttl, err := durationArg("ttl", in.TTL)
	if err != nil {
		return Sandbox{}, err
	}
	sb, err := b.c.Spawn(ctx, client.SpawnRequest{Image: in.Image, Provider: in.Provider, Template: in.Template,
		TTL: ttl, MemoryMB: in.MemoryMB, VCPUs: in.VCPUs, Metadata: in.Metadata})
	if err != nil {
		return Sandbox{}, err
	}
	return fromClient(sb), nil
}

func (b clientBackend) List(ctx context.Context, state string) ([]Sandbox, error) {
	return convert(fromClient)(b.c.List(ctx, client.ListOptions{State: state}))
}

func (b clientBackend) Destroy(ctx context.Context, id string) error { return b.c.Destroy(ctx, id) }

func (b clientBackend) Exec(ctx context.Context, id string, in ExecInput, timeout time.Duration) (ExecOutput, error) {
	r, err := b.c.Exec(ctx, id, client.ExecRequest{Command: in.Command, Args: in.Args, Env: in.Env,
		WorkDir: in.Workdir, Timeout: timeout})
	return ExecOutput{ExitCode: r.ExitCode, Stdout: r.Stdout, Stderr: r.Stderr, Duration: r.Duration.String(),
		TimedOut: r.TimedOut, Truncated: r.Truncated}, err
}

func (b clientBackend) WriteFile(ctx context.Context, id, path string, r io.Reader, mode fs.FileMode) error {
	return b.c.WriteFile(ctx, id, path, r, mode)
}

func (b clientBackend) ReadFile(ctx context.Context, id, path string) (io.ReadCloser, error) {
	return b.c.ReadFile(ctx, id, path)
}

func (b clientBackend) ListFiles(ctx context.Context, id, path string) ([]FileEntry, error) {
	// client.FileInfo has provider.FileInfo's fields, decoded from the wire.
	return convert(func(fi client.FileInfo) FileEntry { return fileEntry(provider.FileInfo(fi)) })(b.c.ListFiles(ctx, id, path))
}
