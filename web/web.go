// Package web is the dashboard: plain HTML, CSS and JavaScript modules,
// embedded in the binary, with no build step. `stacyvm serve` mounts
// Handler at / next to the API (docs/dashboard.md). The pages call the
// public API under /api/v1 from the browser, with the same key, Host and
// Origin rules as every other client; nothing here touches the
// orchestrator.
package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

// files are the dashboard's sources and the vendored xterm.js
// (scripts/vendor-xterm.sh).
//
//go:embed index.html app vendor
var files embed.FS

// Prefix is where the dashboard's assets are served; index.html is served
// at / itself. Everything else on the listener is the API's.
const Prefix = "/ui/"

// CSP allows nothing but this origin: scripts, styles, fonts and
// connections (fetch, the event stream, the terminal WebSocket) come from
// the server itself, and no page may frame the dashboard. Inline styles
// are allowed because xterm.js sizes its rows with a <style> element.
const CSP = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; " +
	"font-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

type asset struct {
	body        []byte
	etag        string
	contentType string
}

// contentTypes is fixed rather than read from the host's mime tables,
// which differ between systems (and may not know .mjs).
var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".mjs":  "text/javascript; charset=utf-8",
	".svg":  "image/svg+xml",
}

// Handler serves the dashboard: index.html at /, assets under Prefix.
// Responses revalidate every time (an ETag of the content), so a new
// binary's pages are never mixed with a cached old script.
func Handler() http.Handler {
	assets := map[string]asset{}
	err := fs.WalkDir(files, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		ct, ok := contentTypes[path.Ext(p)]
		if !ok {
			return nil // LICENSE, SHA256SUMS: in the repository, not served
		}
		b, err := files.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		assets[p] = asset{body: b, etag: `"` + hex.EncodeToString(sum[:16]) + `"`, contentType: ct}
		return nil
	})
	if err != nil {
		panic("web: embedded files: " + err.Error()) // the embed is fixed at build time
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		serve(w, r, assets["index.html"])
	})
	mux.HandleFunc("GET "+Prefix+"{file...}", func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("file")
		a, ok := assets[name]
		if !ok || name == "index.html" || strings.HasPrefix(name, ".") {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.Header().Set("X-Content-Type-Options", "nosniff")
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte("404: no dashboard file " + name + "\n"))
			return
		}
		serve(w, r, a)
	})
	return mux
}

func serve(w http.ResponseWriter, r *http.Request, a asset) {
	h := w.Header()
	h.Set("Content-Type", a.contentType)
	h.Set("Content-Security-Policy", CSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-cache")
	h.Set("ETag", a.etag)
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(a.body))
}
