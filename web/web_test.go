package web

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"path"
	"regexp"
	"strings"
	"testing"
)

func get(t *testing.T, h http.Handler, target string, header map[string]string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, target, nil)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func TestHandler(t *testing.T) {
	t.Parallel()
	h := Handler()
	for _, tc := range []struct {
		target, status, contentType, contains string
	}{
		{"/", "200", "text/html; charset=utf-8", `<script type="module" src="/ui/app/main.js">`},
		{"/ui/app/main.js", "200", "text/javascript; charset=utf-8", "export"},
		{"/ui/app/style.css", "200", "text/css; charset=utf-8", ":root"},
		{"/ui/vendor/xterm/xterm.mjs", "200", "text/javascript; charset=utf-8", "Terminal"},
		{"/ui/vendor/xterm/xterm.css", "200", "text/css; charset=utf-8", ".xterm"},
		// Only the page's own files: not the index twice, not licences or
		// checksums, not dotfiles, nothing outside the embed.
		{"/ui/index.html", "404", "text/plain; charset=utf-8", "no dashboard file"},
		{"/ui/vendor/SHA256SUMS", "404", "text/plain; charset=utf-8", ""},
		{"/ui/vendor/xterm/LICENSE", "404", "text/plain; charset=utf-8", ""},
		{"/ui/web.go", "404", "text/plain; charset=utf-8", ""},
	} {
		rec := get(t, h, tc.target, nil)
		if got := rec.Result().Status[:3]; got != tc.status {
			t.Errorf("GET %s: status %s, want %s", tc.target, got, tc.status)
			continue
		}
		if tc.contentType != "" && rec.Header().Get("Content-Type") != tc.contentType {
			t.Errorf("GET %s: Content-Type %q, want %q", tc.target, rec.Header().Get("Content-Type"), tc.contentType)
		}
		if !strings.Contains(rec.Body.String(), tc.contains) {
			t.Errorf("GET %s: body lacks %q", tc.target, tc.contains)
		}
		if tc.status == "200" {
			for k, want := range map[string]string{
				"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
				"X-Frame-Options": "DENY", "Cache-Control": "no-cache",
			} {
				if got := rec.Header().Get(k); got != want {
					t.Errorf("GET %s: %s = %q, want %q", tc.target, k, got, want)
				}
			}
		}
	}
}

// TestRevalidation: a browser that has the current file gets 304, and one
// with an old copy gets the new one.
func TestRevalidation(t *testing.T) {
	t.Parallel()
	h := Handler()
	first := get(t, h, "/ui/app/main.js", nil)
	etag := first.Header().Get("ETag")
	if etag == "" {
		t.Fatal("no ETag")
	}
	if rec := get(t, h, "/ui/app/main.js", map[string]string{"If-None-Match": etag}); rec.Code != http.StatusNotModified {
		t.Errorf("If-None-Match current: %d, want 304", rec.Code)
	}
	if rec := get(t, h, "/ui/app/main.js", map[string]string{"If-None-Match": `"old"`}); rec.Code != http.StatusOK || rec.Body.Len() == 0 {
		t.Errorf("If-None-Match old: %d with %d bytes, want 200 with the file", rec.Code, rec.Body.Len())
	}
	if other := get(t, h, "/ui/app/api.js", nil).Header().Get("ETag"); other == etag {
		t.Error("two different files share an ETag")
	}
}

// TestVendoredFilesMatchSums checks the embedded xterm.js files against
// web/vendor/SHA256SUMS, which scripts/vendor-xterm.sh writes from the
// pinned npm packages (and checks against them, with the network, in
// scripts/test). A hand edit of a vendored file fails here.
func TestVendoredFilesMatchSums(t *testing.T) {
	t.Parallel()
	sums, err := files.Open("vendor/SHA256SUMS")
	if err != nil {
		t.Fatal(err)
	}
	defer sums.Close()
	listed := map[string]bool{}
	packages := 0
	sc := bufio.NewScanner(sums)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") || line == "" {
			continue
		}
		if strings.HasPrefix(line, "package ") {
			packages++
			continue
		}
		want, name, ok := strings.Cut(line, "  ")
		if !ok {
			t.Fatalf("SHA256SUMS: bad line %q", line)
		}
		b, err := files.ReadFile("vendor/" + name)
		if err != nil {
			t.Errorf("%s is listed but not vendored: %v", name, err)
			continue
		}
		sum := sha256.Sum256(b)
		if got := hex.EncodeToString(sum[:]); got != want {
			t.Errorf("vendor/%s: sha256 %s, SHA256SUMS says %s (run scripts/vendor-xterm.sh; never edit vendored files)", name, got, want)
		}
		listed[name] = true
	}
	if packages == 0 || len(listed) == 0 {
		t.Fatal("SHA256SUMS names no packages or files")
	}
	_ = fs.WalkDir(files, "vendor", func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && p != "vendor/SHA256SUMS" && !listed[strings.TrimPrefix(p, "vendor/")] {
			t.Errorf("%s is vendored but not in SHA256SUMS", p)
		}
		return err
	})
}

// TestModuleImportsResolve: every module the pages import, statically or
// dynamically, and every file index.html names, is served. A typo in a
// path would otherwise only show in a browser.
func TestModuleImportsResolve(t *testing.T) {
	t.Parallel()
	h := Handler()
	ref := regexp.MustCompile(`(?:from\s+|import\(\s*)"([^"]+)"|(?:src|href)="(/ui/[^"]+)"`)
	checked := 0
	err := fs.WalkDir(files, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || (path.Ext(p) != ".js" && path.Ext(p) != ".html") || strings.HasPrefix(p, "vendor/") {
			return err
		}
		b, _ := files.ReadFile(p)
		for _, m := range ref.FindAllStringSubmatch(string(b), -1) {
			target := m[1] + m[2]
			if !strings.HasPrefix(target, "/") {
				target = "/ui/" + path.Join(path.Dir(p), target)
			}
			if rec := get(t, h, target, nil); rec.Code != http.StatusOK {
				t.Errorf("%s refers to %s, which answers %d", p, target, rec.Code)
			}
			checked++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 10 {
		t.Fatalf("only %d references found: the pattern is broken", checked)
	}
}
