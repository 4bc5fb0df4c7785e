// Package envstest serves a Python package index for environment build
// tests: a PEP 503 "simple" index on loopback holding one pure-Python
// wheel that the test builds itself (Python's public index is not
// reachable from test machines, and nothing is downloaded).
package envstest

import (
	"archive/zip"
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"html"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
)

// Index is a running package index.
type Index struct {
	// URL is the index's simple URL (http://127.0.0.1:PORT/simple/),
	// what environments.pip_index_url names.
	URL string
	// Downloads counts the wheel downloads: a cached build makes none.
	Downloads atomic.Int64
}

// Wheel is the one package the index serves.
type Wheel struct {
	Name    string // distribution and module name, e.g. "stacyhello"
	Version string
	// Module is the source of Name/__init__.py.
	Module string
}

// File is the wheel's file name.
func (w Wheel) File() string { return w.Name + "-" + w.Version + "-py3-none-any.whl" }

// Build returns the wheel's bytes: the module and its .dist-info
// (METADATA, WHEEL, RECORD with the hashes pip checks).
func (w Wheel) Build() ([]byte, error) {
	distInfo := w.Name + "-" + w.Version + ".dist-info"
	files := []struct{ name, body string }{
		{w.Name + "/__init__.py", w.Module},
		{distInfo + "/METADATA", "Metadata-Version: 2.1\nName: " + w.Name + "\nVersion: " + w.Version + "\nSummary: StacyVM test package\n"},
		{distInfo + "/WHEEL", "Wheel-Version: 1.0\nGenerator: stacyvm-envstest\nRoot-Is-Purelib: true\nTag: py3-none-any\n"},
	}
	var record strings.Builder
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, f := range files {
		fw, err := zw.Create(f.name)
		if err != nil {
			return nil, err
		}
		if _, err := fw.Write([]byte(f.body)); err != nil {
			return nil, err
		}
		sum := sha256.Sum256([]byte(f.body))
		fmt.Fprintf(&record, "%s,sha256=%s,%d\n", f.name, base64.RawURLEncoding.EncodeToString(sum[:]), len(f.body))
	}
	record.WriteString(distInfo + "/RECORD,,\n")
	fw, err := zw.Create(distInfo + "/RECORD")
	if err != nil {
		return nil, err
	}
	if _, err := fw.Write([]byte(record.String())); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Serve starts the index on loopback until the test ends.
func Serve(t testing.TB, w Wheel) *Index {
	t.Helper()
	whl, err := w.Build()
	if err != nil {
		t.Fatalf("build wheel: %v", err)
	}
	sum := sha256.Sum256(whl)
	ix := &Index{}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /simple/{$}", func(rw http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(rw, "<!DOCTYPE html><html><body><a href=\"%s/\">%s</a></body></html>\n", w.Name, w.Name)
	})
	mux.HandleFunc("GET /simple/{project}/{$}", func(rw http.ResponseWriter, r *http.Request) {
		if r.PathValue("project") != w.Name {
			http.NotFound(rw, r)
			return
		}
		fmt.Fprintf(rw, "<!DOCTYPE html><html><body><a href=\"../../files/%s#sha256=%s\">%s</a></body></html>\n",
			html.EscapeString(w.File()), hex.EncodeToString(sum[:]), html.EscapeString(w.File()))
	})
	mux.HandleFunc("GET /files/{file}", func(rw http.ResponseWriter, r *http.Request) {
		if r.PathValue("file") != w.File() {
			http.NotFound(rw, r)
			return
		}
		ix.Downloads.Add(1)
		rw.Header().Set("Content-Type", "application/octet-stream")
		_, _ = rw.Write(whl)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	ix.URL = "http://" + ln.Addr().String() + "/simple/"
	return ix
}
