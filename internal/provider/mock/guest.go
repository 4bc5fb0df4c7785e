package mock

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"maps"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/provider"
)

// sandboxGuest is one sandbox's localguest with the sandbox's environment
// applied to every command, exec lines in the console log, and the errors of
// an operation that raced with Destroy reported as the sandbox being
// destroyed.
type sandboxGuest struct {
	p  *Provider
	sb *sandbox
}

// fix reports a failure caused by a concurrent Destroy (the guest closed
// under the operation) as errdefs.ErrSandboxDestroyed.
func (g *sandboxGuest) fix(err error) error {
	if err == nil || errors.Is(err, errdefs.ErrNotFound) && !errors.Is(err, errdefs.ErrFileNotFound) {
		return err
	}
	if g.p.isDestroyed(g.sb.st.ID) {
		return errdefs.Wrap(errdefs.ErrSandboxDestroyed, err, "sandbox %s was destroyed", g.sb.st.ID)
	}
	return err
}

func (g *sandboxGuest) Exec(ctx context.Context, req provider.ExecRequest, stdout, stderr io.Writer) (provider.ExitStatus, error) {
	if len(g.sb.st.Env) > 0 {
		env := maps.Clone(g.sb.st.Env)
		maps.Copy(env, req.Env) // the command's own env wins
		req.Env = env
	}
	g.sb.logf("exec started: %q", req.Argv)
	st, err := g.sb.guest.Exec(ctx, req, stdout, stderr)
	switch {
	case st.TimedOut:
		g.sb.logf("exec timed out after %s: %q", req.Timeout, req.Argv)
	case err != nil:
		g.sb.logf("exec failed: %q: %v", req.Argv, err)
	default:
		g.sb.logf("exec exited with code %d after %s: %q", st.ExitCode, st.Duration.Round(1e6), req.Argv)
	}
	if err == nil && g.p.isDestroyed(g.sb.st.ID) {
		// Destroy killed the command: its exit status says nothing.
		return st, errdefs.New(errdefs.ErrSandboxDestroyed, "sandbox %s was destroyed while the command ran", g.sb.st.ID)
	}
	return st, g.fix(err)
}

func (g *sandboxGuest) WriteFile(ctx context.Context, path string, r io.Reader, mode fs.FileMode) error {
	return g.fix(g.sb.guest.WriteFile(ctx, path, r, mode))
}

func (g *sandboxGuest) ReadFile(ctx context.Context, path string) (io.ReadCloser, error) {
	rc, err := g.sb.guest.ReadFile(ctx, path)
	return rc, g.fix(err)
}

func (g *sandboxGuest) ListFiles(ctx context.Context, path string) ([]provider.FileInfo, error) {
	l, err := g.sb.guest.ListFiles(ctx, path)
	return l, g.fix(err)
}

func (g *sandboxGuest) StatFile(ctx context.Context, path string) (provider.FileInfo, error) {
	fi, err := g.sb.guest.StatFile(ctx, path)
	return fi, g.fix(err)
}

func (g *sandboxGuest) DeleteFile(ctx context.Context, path string, recursive bool) error {
	return g.fix(g.sb.guest.DeleteFile(ctx, path, recursive))
}

func (g *sandboxGuest) MoveFile(ctx context.Context, oldPath, newPath string) error {
	return g.fix(g.sb.guest.MoveFile(ctx, oldPath, newPath))
}

func (g *sandboxGuest) Chmod(ctx context.Context, path string, mode fs.FileMode) error {
	return g.fix(g.sb.guest.Chmod(ctx, path, mode))
}

func (g *sandboxGuest) Glob(ctx context.Context, pattern string) ([]string, error) {
	l, err := g.sb.guest.Glob(ctx, pattern)
	return l, g.fix(err)
}
