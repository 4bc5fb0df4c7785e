//go:build linux

package proot

import (
	"context"
	"io"
	"io/fs"

	"github.com/stacyvm/stacyvm/internal/agent"
	"github.com/stacyvm/stacyvm/internal/provider"
)

// guest is the provider.Guest the embedded GuestRouter uses for file
// operations: the host-side agent.
func (p *Provider) guest(ctx context.Context, id string) (provider.Guest, error) {
	sb, err := p.running(id)
	if err != nil {
		return nil, err
	}
	return fileGuest{p: p, id: id, files: sb.files}, nil
}

// fileGuest sends file operations to the host-side agent and reports
// failures that raced with Destroy as such.
type fileGuest struct {
	p     *Provider
	id    string
	files *agent.Client
}

func (g fileGuest) Exec(ctx context.Context, req provider.ExecRequest, stdout, stderr io.Writer) (provider.ExitStatus, error) {
	return g.p.Exec(ctx, g.id, req, stdout, stderr)
}

func (g fileGuest) WriteFile(ctx context.Context, path string, r io.Reader, mode fs.FileMode) error {
	return g.p.gone(g.id, g.files.WriteFile(ctx, path, r, mode))
}

func (g fileGuest) ReadFile(ctx context.Context, path string) (io.ReadCloser, error) {
	rc, err := g.files.ReadFile(ctx, path)
	return rc, g.p.gone(g.id, err)
}

func (g fileGuest) ListFiles(ctx context.Context, path string) ([]provider.FileInfo, error) {
	out, err := g.files.ListFiles(ctx, path)
	return out, g.p.gone(g.id, err)
}

func (g fileGuest) StatFile(ctx context.Context, path string) (provider.FileInfo, error) {
	fi, err := g.files.StatFile(ctx, path)
	return fi, g.p.gone(g.id, err)
}

func (g fileGuest) DeleteFile(ctx context.Context, path string, recursive bool) error {
	return g.p.gone(g.id, g.files.DeleteFile(ctx, path, recursive))
}

func (g fileGuest) MoveFile(ctx context.Context, oldPath, newPath string) error {
	return g.p.gone(g.id, g.files.MoveFile(ctx, oldPath, newPath))
}

func (g fileGuest) Chmod(ctx context.Context, path string, mode fs.FileMode) error {
	return g.p.gone(g.id, g.files.Chmod(ctx, path, mode))
}

func (g fileGuest) Glob(ctx context.Context, pattern string) ([]string, error) {
	out, err := g.files.Glob(ctx, pattern)
	return out, g.p.gone(g.id, err)
}
