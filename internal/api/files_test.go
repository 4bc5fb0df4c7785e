package api

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
)

func TestFiles(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	sb := e.spawn(nil)
	base := "/api/v1/sandboxes/" + sb.ID + "/files"
	q := func(s string) string { return url.QueryEscape(s) }

	var st map[string]string
	e.expectJSON(e.call("POST", base, map[string]string{"path": "/workspace/dir/hello.txt", "content": "héllo\n"}), http.StatusOK, &st)
	if st["status"] != "written" {
		t.Errorf("write = %v", st)
	}
	resp := e.call("GET", base+"?path="+q("/workspace/dir/hello.txt"), nil)
	if got := readAll(t, resp); string(got) != "héllo\n" || resp.Header.Get("Content-Type") != "application/octet-stream" {
		t.Errorf("read = %q (%s)", got, resp.Header.Get("Content-Type"))
	}

	// Binary content through JSON, as base64.
	bin := []byte{0, 1, 2, 0xff, 0xfe, '\n', 0x80}
	e.expectJSON(e.call("POST", base, map[string]string{"path": "/workspace/bin.dat", "content": base64.StdEncoding.EncodeToString(bin), "encoding": "base64", "mode": "0600"}), http.StatusOK, nil)
	if got := readAll(t, e.call("GET", base+"?path=/workspace/bin.dat", nil)); !bytes.Equal(got, bin) {
		t.Errorf("binary read = %v, want %v", got, bin)
	}

	var fi fileInfoJSON
	e.expectJSON(e.call("GET", base+"/stat?path=/workspace/bin.dat", nil), http.StatusOK, &fi)
	if fi.Path != "/workspace/bin.dat" || fi.Size != int64(len(bin)) || fi.Mode != "0600" || fi.IsDir || fi.ModTime == "" {
		t.Errorf("stat = %+v", fi)
	}
	e.expectJSON(e.call("GET", base+"/stat?path=/workspace/dir", nil), http.StatusOK, &fi)
	if !fi.IsDir {
		t.Errorf("stat dir = %+v", fi)
	}
	// A numeric mode is the mode's value: 493 is 0755.
	e.expectJSON(e.call("POST", base, `{"path":"/workspace/run.sh","content":"#!/bin/sh\n","mode":493}`), http.StatusOK, nil)
	e.expectJSON(e.call("GET", base+"/stat?path=/workspace/run.sh", nil), http.StatusOK, &fi)
	if fi.Mode != "0755" {
		t.Errorf("mode from 493 = %q", fi.Mode)
	}

	var list []fileInfoJSON
	e.expectJSON(e.call("GET", base+"/list?path=/workspace", nil), http.StatusOK, &list)
	var names []string
	for _, f := range list {
		names = append(names, f.Path)
	}
	slices.Sort(names)
	if strings.Join(names, ",") != "/workspace/bin.dat,/workspace/dir,/workspace/run.sh" {
		t.Errorf("list = %v", names)
	}
	e.expectJSON(e.call("GET", base+"/list", nil), http.StatusOK, &list)
	if !slices.ContainsFunc(list, func(f fileInfoJSON) bool { return f.Path == "/workspace" && f.IsDir }) {
		t.Errorf("list of / (the default) = %+v", list)
	}

	var glob []string
	e.expectJSON(e.call("GET", base+"/glob?pattern="+q("/workspace/*.dat"), nil), http.StatusOK, &glob)
	if !slices.Equal(glob, []string{"/workspace/bin.dat"}) {
		t.Errorf("glob = %v", glob)
	}
	e.expectJSON(e.call("GET", base+"/glob?pattern="+q("/nothing/*"), nil), http.StatusOK, &glob)
	if glob == nil || len(glob) != 0 {
		t.Errorf("empty glob = %#v, want []", glob)
	}

	e.expectJSON(e.call("POST", base+"/chmod", map[string]string{"path": "/workspace/bin.dat", "mode": "0640"}), http.StatusOK, &st)
	if st["status"] != "chmod applied" {
		t.Errorf("chmod = %v", st)
	}
	e.expectJSON(e.call("GET", base+"/stat?path=/workspace/bin.dat", nil), http.StatusOK, &fi)
	if fi.Mode != "0640" {
		t.Errorf("mode after chmod = %q", fi.Mode)
	}
	// Set-ID and sticky bits travel as Unix octal both ways.
	e.expectJSON(e.call("POST", base+"/chmod", map[string]string{"path": "/workspace/bin.dat", "mode": "4750"}), http.StatusOK, &st)
	e.expectJSON(e.call("GET", base+"/stat?path=/workspace/bin.dat", nil), http.StatusOK, &fi)
	if fi.Mode != "4750" {
		t.Errorf("mode after chmod 4750 = %q", fi.Mode)
	}
	e.expectJSON(e.call("POST", base+"/chmod", map[string]string{"path": "/workspace/bin.dat", "mode": "0640"}), http.StatusOK, &st)

	e.expectJSON(e.call("POST", base+"/move", map[string]string{"old_path": "/workspace/bin.dat", "new_path": "/workspace/dir/moved.dat"}), http.StatusOK, &st)
	if st["status"] != "moved" {
		t.Errorf("move = %v", st)
	}
	e.expectError(e.call("GET", base+"/stat?path=/workspace/bin.dat", nil), http.StatusNotFound, codeFileNotFound)
	if got := readAll(t, e.call("GET", base+"?path=/workspace/dir/moved.dat", nil)); !bytes.Equal(got, bin) {
		t.Errorf("moved file = %v", got)
	}

	e.expectJSON(e.call("DELETE", base+"?path=/workspace/run.sh", nil), http.StatusOK, &st)
	if st["status"] != "deleted" {
		t.Errorf("delete = %v", st)
	}
	e.expectError(e.call("GET", base+"?path=/workspace/run.sh", nil), http.StatusNotFound, codeFileNotFound)
	// A non-empty directory goes only with recursive=true.
	resp = e.call("DELETE", base+"?path=/workspace/dir", nil)
	if readAll(t, resp); resp.StatusCode == http.StatusOK {
		t.Error("a non-empty directory was deleted without recursive=true")
	}
	e.expectJSON(e.call("DELETE", base+"?path=/workspace/dir&recursive=true", nil), http.StatusOK, nil)
	e.expectError(e.call("GET", base+"/stat?path=/workspace/dir", nil), http.StatusNotFound, codeFileNotFound)
}

func TestFileErrors(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	sb := e.spawn(nil)
	gone := e.spawn(nil)
	e.expectJSON(e.call("DELETE", "/api/v1/sandboxes/"+gone.ID, nil), http.StatusOK, nil)
	base := "/api/v1/sandboxes/" + sb.ID + "/files"
	e.expectJSON(e.call("POST", base, `{"path":"/workspace/a.txt","content":"a"}`), http.StatusOK, nil)

	for _, tc := range []struct {
		name, method, path, body string
		status                   int
		code                     string
	}{
		{"write: missing path", "POST", base, `{"content":"x"}`, 400, codeBadRequest},
		{"write: missing content", "POST", base, `{"path":"/workspace/x"}`, 400, codeBadRequest},
		{"write: content not a string", "POST", base, `{"path":"/workspace/x","content":5}`, 400, codeBadRequest},
		{"write: bad base64", "POST", base, `{"path":"/workspace/x","content":"!!!","encoding":"base64"}`, 400, codeBadRequest},
		{"write: unknown encoding", "POST", base, `{"path":"/workspace/x","content":"x","encoding":"rot13"}`, 400, codeBadRequest},
		{"write: mode not octal", "POST", base, `{"path":"/workspace/x","content":"x","mode":"rwx"}`, 400, codeBadRequest},
		{"write: mode written as if octal", "POST", base, `{"path":"/workspace/x","content":"x","mode":755}`, 400, codeBadRequest},
		{"write: mode too big", "POST", base, `{"path":"/workspace/x","content":"x","mode":"010000"}`, 400, codeBadRequest},
		{"write: malformed", "POST", base, `{"path":`, 400, codeBadRequest},
		{"write: unknown sandbox", "POST", "/api/v1/sandboxes/sb-0000000000000000/files", `{"path":"/workspace/x","content":"x"}`, 404, codeNotFound},
		{"write: destroyed sandbox", "POST", "/api/v1/sandboxes/" + gone.ID + "/files", `{"path":"/workspace/x","content":"x"}`, 404, codeSandboxDestroyed},
		{"read: missing path", "GET", base, ``, 400, codeBadRequest},
		{"read: missing file", "GET", base + "?path=/workspace/none", ``, 404, codeFileNotFound},
		{"read: destroyed sandbox", "GET", "/api/v1/sandboxes/" + gone.ID + "/files?path=/x", ``, 404, codeSandboxDestroyed},
		{"delete: missing path", "DELETE", base, ``, 400, codeBadRequest},
		{"delete: missing file", "DELETE", base + "?path=/workspace/none", ``, 404, codeFileNotFound},
		{"delete: bad recursive", "DELETE", base + "?path=/workspace/a.txt&recursive=maybe", ``, 400, codeBadRequest},
		{"list: missing dir", "GET", base + "/list?path=/workspace/none", ``, 404, codeFileNotFound},
		{"list: unknown sandbox", "GET", "/api/v1/sandboxes/sb-0000000000000000/files/list", ``, 404, codeNotFound},
		{"stat: missing path", "GET", base + "/stat", ``, 400, codeBadRequest},
		{"stat: missing file", "GET", base + "/stat?path=/workspace/none", ``, 404, codeFileNotFound},
		{"glob: missing pattern", "GET", base + "/glob", ``, 400, codeBadRequest},
		{"move: missing paths", "POST", base + "/move", `{"old_path":"/workspace/a.txt"}`, 400, codeBadRequest},
		{"move: missing source", "POST", base + "/move", `{"old_path":"/workspace/none","new_path":"/workspace/b"}`, 404, codeFileNotFound},
		{"move: unknown field", "POST", base + "/move", `{"from":"/a","to":"/b"}`, 400, codeBadRequest},
		{"chmod: missing mode", "POST", base + "/chmod", `{"path":"/workspace/a.txt"}`, 400, codeBadRequest},
		{"chmod: missing path", "POST", base + "/chmod", `{"mode":"0644"}`, 400, codeBadRequest},
		{"chmod: missing file", "POST", base + "/chmod", `{"path":"/workspace/none","mode":"0644"}`, 404, codeFileNotFound},
		{"raw: missing path", "PUT", base + "/raw", `x`, 400, codeBadRequest},
		{"raw: bad mode", "PUT", base + "/raw?path=/workspace/r&mode=9", `x`, 400, codeBadRequest},
		{"raw: destroyed sandbox", "PUT", "/api/v1/sandboxes/" + gone.ID + "/files/raw?path=/x", `x`, 404, codeSandboxDestroyed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var body any
			if tc.body != "" {
				body = tc.body
			}
			e.expectError(e.call(tc.method, tc.path, body), tc.status, tc.code)
		})
	}
}

func TestFileEscapesStayInside(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	sb := e.spawn(nil)
	base := "/api/v1/sandboxes/" + sb.ID + "/files"
	// Plant a symlink that points out of the sandbox, from inside.
	e.expectJSON(e.call("POST", "/api/v1/sandboxes/"+sb.ID+"/exec", `{"command":"ln -s /etc link"}`), http.StatusOK, nil)
	for _, p := range []string{"/../../../../etc/hostname", "../../../etc/hostname", "/workspace/link/hostname"} {
		resp := e.call("GET", base+"?path="+url.QueryEscape(p), nil)
		b := readAll(t, resp)
		if resp.StatusCode == http.StatusOK || resp.StatusCode >= 500 {
			t.Errorf("read %q: status %d (%q), want a 4xx", p, resp.StatusCode, b)
		}
		e.noHostPath(b)
	}
}

func TestRawUploadRoundTrip(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	sb := e.spawn(nil)
	base := "/api/v1/sandboxes/" + sb.ID + "/files"
	data := make([]byte, 3<<20+17) // over the JSON body limit, not a multiple of any buffer
	_, _ = rand.Read(data)

	// Chunked, so that nothing on the way can rely on a Content-Length.
	req, _ := http.NewRequest("PUT", e.srv.URL+base+"/raw?path=/workspace/blob.bin&mode=0700", io.MultiReader(bytes.NewReader(data)))
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var out struct {
		Status string `json:"status"`
		Size   int64  `json:"size"`
	}
	e.expectJSON(resp, http.StatusOK, &out)
	if out.Status != "written" || out.Size != int64(len(data)) {
		t.Errorf("upload = %+v", out)
	}
	if got := readAll(t, e.call("GET", base+"?path=/workspace/blob.bin", nil)); !bytes.Equal(got, data) {
		t.Errorf("download differs: %d bytes, want %d", len(got), len(data))
	}
	var fi fileInfoJSON
	e.expectJSON(e.call("GET", base+"/stat?path=/workspace/blob.bin", nil), http.StatusOK, &fi)
	if fi.Mode != "0700" || fi.Size != int64(len(data)) {
		t.Errorf("stat = %+v", fi)
	}
}

func TestBodyLimits(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withOptions(func(o *Options) {
		o.MaxBodyBytes = 1 << 10
		o.MaxFileBytes = 4 << 10
		o.MaxUploadBytes = 8 << 10
	}))
	sb := e.spawn(nil)
	base := "/api/v1/sandboxes/" + sb.ID + "/files"
	big := strings.Repeat("x", 2<<10)

	e.expectError(e.call("POST", "/api/v1/sandboxes", map[string]any{"metadata": map[string]string{"k": big}}), http.StatusRequestEntityTooLarge, codeResourceLimit)
	// A JSON file write may be bigger than other JSON bodies, up to its own limit.
	e.expectJSON(e.call("POST", base, map[string]string{"path": "/workspace/f", "content": big}), http.StatusOK, nil)
	e.expectError(e.call("POST", base, map[string]string{"path": "/workspace/f", "content": big + big}), http.StatusRequestEntityTooLarge, codeResourceLimit)

	// Raw uploads: a declared length over the limit is refused before
	// reading; an undeclared one when the limit is crossed.
	e.expectJSON(e.call("PUT", base+"/raw?path=/workspace/r", strings.Repeat("y", 8<<10)), http.StatusOK, nil)
	e.expectError(e.call("PUT", base+"/raw?path=/workspace/r", strings.Repeat("y", 8<<10+1)), http.StatusRequestEntityTooLarge, codeResourceLimit)
	req, _ := http.NewRequest("PUT", e.srv.URL+base+"/raw?path=/workspace/r2", io.MultiReader(strings.NewReader(strings.Repeat("z", 9<<10))))
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	e.expectError(resp, http.StatusRequestEntityTooLarge, codeResourceLimit)
}
