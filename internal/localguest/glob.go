package localguest

import (
	"context"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"

	"github.com/stacyvm/stacyvm/internal/errdefs"
)

// Glob returns the sorted absolute sandbox paths matching pattern. Each
// path segment is a path.Match pattern (which, unlike a shell, also matches
// names starting with a dot); a segment "**" matches zero or more
// directories, and a final "**" matches everything below. A relative
// pattern is relative to /workspace. Links are followed where a literal or
// single-level segment names them, never while "**" descends, so a link
// cycle cannot make Glob loop. Directories Glob cannot read are skipped; a
// pattern matching nothing returns an empty list.
func (g *Guest) Glob(ctx context.Context, pattern string) ([]string, error) {
	sp, err := SandboxPath(pattern)
	if err != nil {
		return nil, err
	}
	segs := splitPath(sp)
	for _, s := range segs {
		if _, err := path.Match(s, ""); err != nil {
			return nil, errdefs.New(errdefs.ErrInvalidArgument, "glob %s: malformed pattern", sp)
		}
	}
	w := globber{g: g, ctx: ctx, seen: map[string]struct{}{}}
	if len(segs) == 0 {
		return []string{"/"}, nil
	}
	if err := w.walk("/", ".", segs); err != nil {
		return nil, err
	}
	out := make([]string, 0, len(w.seen))
	for p := range w.seen {
		out = append(out, p)
	}
	slices.Sort(out)
	return out, nil
}

type globber struct {
	g     *Guest
	ctx   context.Context
	seen  map[string]struct{}
	steps int
}

// walk matches segs against the children of the directory whose sandbox
// path is dir and whose resolved root-relative path is rel.
func (w *globber) walk(dir, rel string, segs []string) error {
	if w.steps++; w.steps%64 == 0 {
		if err := w.ctx.Err(); err != nil {
			return err
		}
	}
	seg, rest := segs[0], segs[1:]
	if seg == "**" {
		if len(rest) == 0 {
			return w.everything(dir, rel)
		}
		if err := w.walk(dir, rel, rest); err != nil {
			return err
		}
		for _, e := range w.readDir(rel) {
			if e.IsDir() { // a link to a directory is not a directory here
				if err := w.walk(path.Join(dir, e.Name()), path.Join(rel, e.Name()), segs); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if !hasMeta(seg) {
		return w.visit(dir, rel, seg, rest)
	}
	for _, e := range w.readDir(rel) {
		if ok, _ := path.Match(seg, e.Name()); ok {
			if err := w.visit(dir, rel, e.Name(), rest); err != nil {
				return err
			}
		}
	}
	return nil
}

// visit handles the child name of dir that matched the current segment.
func (w *globber) visit(dir, rel, name string, rest []string) error {
	child := path.Join(dir, name)
	if len(rest) == 0 {
		if _, err := w.g.root.Lstat(path.Join(rel, name)); err == nil {
			w.seen[child] = struct{}{}
		}
		return nil
	}
	// Descend, following a link: resolve the child from its already
	// resolved parent.
	crel, err := w.g.resolve(relToSandbox(path.Join(rel, name)), true)
	if err != nil {
		return nil // a link loop matches nothing
	}
	fi, err := w.g.root.Stat(crel)
	if err != nil || !fi.IsDir() {
		return nil
	}
	return w.walk(child, crel, rest)
}

// everything adds every entry below dir, not descending into links.
func (w *globber) everything(dir, rel string) error {
	for _, e := range w.readDir(rel) {
		if w.steps++; w.steps%64 == 0 {
			if err := w.ctx.Err(); err != nil {
				return err
			}
		}
		child := path.Join(dir, e.Name())
		w.seen[child] = struct{}{}
		if e.IsDir() {
			if err := w.everything(child, path.Join(rel, e.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}

func (w *globber) readDir(rel string) []fs.DirEntry {
	f, err := w.g.root.OpenFile(rel, os.O_RDONLY|openReadFlag, 0)
	if err != nil {
		return nil
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.IsDir() {
		return nil
	}
	entries, _ := f.ReadDir(-1)
	return entries
}

func hasMeta(seg string) bool { return strings.ContainsAny(seg, `*?[\`) }
