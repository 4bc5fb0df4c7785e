package api

import (
	"cmp"
	"path/filepath"
	"slices"
	"strings"
)

// hostPathMark replaces a host path in a message a client sees.
const hostPathMark = "[host path]"

// runtimePaths are where container runtimes keep their state on a host: a
// daemon's error names them (an overlay directory, a socket), and they
// are never a sandbox's own paths.
var runtimePaths = []string{
	"/var/lib/docker", "/var/lib/containerd", "/run/containerd", "/run/docker",
	"/var/run/docker", "/var/run/docker.sock", "/run/docker.sock", "/run/runc", "/var/lib/stacyvm",
}

// scrubber removes host paths from text that leaves the server. Errors
// that still carry their type are judged by it (carriesHostPath); text
// whose type is gone (a sandbox's recorded error, an event, a provider's
// problem) is searched for the host paths the server knows: its own
// directories and files (Options.HostPaths) and the runtimes' state.
type scrubber struct {
	roots []string // cleaned absolute paths, longest first
}

func newScrubber(paths []string) *scrubber {
	var roots []string
	add := func(p string) {
		if !filepath.IsAbs(p) {
			return
		}
		p = filepath.Clean(p)
		// "/" or a top-level directory ("/tmp", "/root") would blank out
		// every sandbox path that happens to share it; the specific
		// paths under them are listed on their own.
		if strings.Count(p, "/") < 2 {
			return
		}
		roots = append(roots, p)
	}
	for _, p := range append(slices.Clone(runtimePaths), paths...) {
		add(p)
		if real, err := filepath.EvalSymlinks(p); err == nil && real != p {
			add(real)
		}
	}
	slices.SortFunc(roots, func(a, b string) int { return cmp.Compare(len(b), len(a)) })
	return &scrubber{roots: slices.Compact(roots)}
}

// text replaces every occurrence of a known host path, and the rest of the
// path it starts, with hostPathMark.
func (sc *scrubber) text(msg string) string {
	if sc == nil || msg == "" {
		return msg
	}
	for _, root := range sc.roots {
		msg = replacePath(msg, root)
	}
	return msg
}

// replacePath replaces root in msg with hostPathMark, swallowing the rest
// of the path it starts up to a character that ends it ("/srv/db-wal" for
// root "/srv/db" goes too: scrubbing a little more is the safe mistake).
func replacePath(msg, root string) string {
	var b strings.Builder
	rest := msg
	for {
		i := strings.Index(rest, root)
		if i < 0 {
			break
		}
		end := i + len(root)
		for end < len(rest) && !endsPath(rest[end]) {
			end++
		}
		b.WriteString(rest[:i])
		b.WriteString(hostPathMark)
		rest = rest[end:]
	}
	if b.Len() == 0 {
		return msg
	}
	b.WriteString(rest)
	return b.String()
}

// endsPath reports whether c ends a path inside a message: white space,
// quotes, and the separators error messages put after a path.
func endsPath(c byte) bool {
	switch c {
	case ' ', '\t', '\n', '\r', '"', '\'', '`', ':', ',', ';', ')', ']', '}', '>':
		return true
	}
	return false
}

// scrub is the one function every message a client sees passes through.
// Scrubber returns the scrubbing the API applies to every message, for
// other surfaces on the same listener: it replaces the runtime's and the
// given host paths with "[host path]".
func Scrubber(paths []string) func(string) string { return newScrubber(paths).text }

func (s *server) scrub(msg string) string { return s.scrubber.text(msg) }

// scrubData scrubs the values of an event's data.
func (s *server) scrubData(data map[string]string) map[string]string {
	if len(data) == 0 {
		return data
	}
	out := make(map[string]string, len(data))
	for k, v := range data {
		out[k] = s.scrub(v)
	}
	return out
}
