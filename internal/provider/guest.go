package provider

import (
	"context"
	"io"
	"io/fs"
	"sync"
)

// GuestRouter implements the guest half of Provider by finding the Guest of
// each sandbox. Providers whose sandboxes run an agent embed it so that each
// operation is written once, in the Guest.
type GuestRouter struct {
	// Lookup returns the sandbox's Guest or a classified error
	// (errdefs.ErrSandboxNotFound, errdefs.ErrSandboxDestroyed…).
	Lookup func(ctx context.Context, id string) (Guest, error)
}

func (r GuestRouter) Exec(ctx context.Context, id string, req ExecRequest, stdout, stderr io.Writer) (ExitStatus, error) {
	g, err := r.Lookup(ctx, id)
	if err != nil {
		return ExitStatus{}, err
	}
	return g.Exec(ctx, req, stdout, stderr)
}

func (r GuestRouter) WriteFile(ctx context.Context, id, path string, rd io.Reader, mode fs.FileMode) error {
	g, err := r.Lookup(ctx, id)
	if err != nil {
		return err
	}
	return g.WriteFile(ctx, path, rd, mode)
}

func (r GuestRouter) ReadFile(ctx context.Context, id, path string) (io.ReadCloser, error) {
	g, err := r.Lookup(ctx, id)
	if err != nil {
		return nil, err
	}
	return g.ReadFile(ctx, path)
}

func (r GuestRouter) ListFiles(ctx context.Context, id, path string) ([]FileInfo, error) {
	g, err := r.Lookup(ctx, id)
	if err != nil {
		return nil, err
	}
	return g.ListFiles(ctx, path)
}

func (r GuestRouter) StatFile(ctx context.Context, id, path string) (FileInfo, error) {
	g, err := r.Lookup(ctx, id)
	if err != nil {
		return FileInfo{}, err
	}
	return g.StatFile(ctx, path)
}

func (r GuestRouter) DeleteFile(ctx context.Context, id, path string, recursive bool) error {
	g, err := r.Lookup(ctx, id)
	if err != nil {
		return err
	}
	return g.DeleteFile(ctx, path, recursive)
}

func (r GuestRouter) MoveFile(ctx context.Context, id, oldPath, newPath string) error {
	g, err := r.Lookup(ctx, id)
	if err != nil {
		return err
	}
	return g.MoveFile(ctx, oldPath, newPath)
}

func (r GuestRouter) Chmod(ctx context.Context, id, path string, mode fs.FileMode) error {
	g, err := r.Lookup(ctx, id)
	if err != nil {
		return err
	}
	return g.Chmod(ctx, path, mode)
}

func (r GuestRouter) Glob(ctx context.Context, id, pattern string) ([]string, error) {
	g, err := r.Lookup(ctx, id)
	if err != nil {
		return nil, err
	}
	return g.Glob(ctx, pattern)
}

// SerialWriters returns stdout and stderr wrapped so that no two writes run
// at once, across both. Providers hand Exec's writers through it, which is
// how the contract's promise holds that the caller's writers are never
// called concurrently.
func SerialWriters(stdout, stderr io.Writer) (io.Writer, io.Writer) {
	var mu sync.Mutex
	return &serialWriter{mu: &mu, w: stdout}, &serialWriter{mu: &mu, w: stderr}
}

type serialWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (s *serialWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
