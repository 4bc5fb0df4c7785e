package api

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/provider"
)

// The fuzz targets run their seed corpus as ordinary tests; to search for
// new failures run, for example:
//
//	go test -run '^$' -fuzz FuzzDecodeBodies -fuzztime 60s ./internal/api

// invalidOnly fails unless err is nil or an invalid-argument error (or the
// body limit): bad input is always the client's fault, never a 500.
func invalidOnly(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if _, ok := err.(*http.MaxBytesError); ok {
		return
	}
	if errdefs.Classify(err) != errdefs.ErrInvalidArgument {
		t.Fatalf("%s: %v (class %v), want an invalid-argument error", what, err, errdefs.Classify(err))
	}
	if status, _ := errorStatus(err); status != http.StatusBadRequest {
		t.Fatalf("%s: maps to %d", what, status)
	}
}

var bodySeeds = []string{
	``, `{}`, `null`, `[]`, `"x"`, `1`, `{}{}`, `{"a":1}`,
	`{"image":"stacyvm/busybox:test","ttl":"10m","memory_mb":256,"vcpus":1,"metadata":{"k":"v"}}`,
	`{"ttl":"-5s"}`, `{"ttl":300}`, `{"ttl":"9999999999999h"}`, `{"memory_mb":1e30}`, `{"memory_mb":-1}`,
	`{"command":"echo hi","args":["a"],"env":{"A":"1"},"workdir":"/workspace","timeout":"5s","stream":true}`,
	`{"command":"echo \u0000"}`, "{\"command\":\"\xff\"}", `{"env":{"A\u0000":"x"}}`,
	`{"path":"/workspace/a","content":"x\u0000y","mode":"0644","encoding":"base64"}`,
	`{"path":"/a","mode":420}`, `{"path":"/a","mode":755}`, `{"path":"/a","mode":"4755"}`, `{"mode":-1}`, `{"mode":1e99}`,
	`{"old_path":"/a","new_path":"/b"}`, `{"name":"t","image":"x","setup":["true"],"ttl_seconds":60,"version":3}`,
	strings.Repeat("[", 10000), strings.Repeat(`{"metadata":`, 100), "{\"image\":\"\xc3\x28\"}", "\xef\xbb\xbf{}",
}

// FuzzDecodeBodies decodes every request body type, then runs the checks
// the handlers run on the result.
func FuzzDecodeBodies(f *testing.F) {
	for _, s := range bodySeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, optional := range []bool{false, true} {
			var sp spawnBody
			if err := decodeJSON(bytes.NewReader(data), &sp, optional); err != nil {
				invalidOnly(t, "spawn", err)
			} else {
				_, err := parseDuration("ttl", sp.TTL)
				invalidOnly(t, "spawn ttl", err)
			}
			var ex execBody
			if err := decodeJSON(bytes.NewReader(data), &ex, optional); err != nil {
				invalidOnly(t, "exec", err)
			} else {
				_, err := ex.request()
				invalidOnly(t, "exec request", err)
			}
			var ext extendBody
			if err := decodeJSON(bytes.NewReader(data), &ext, optional); err != nil {
				invalidOnly(t, "extend", err)
			} else {
				_, err := parseDuration("ttl", ext.TTL)
				invalidOnly(t, "extend ttl", err)
			}
			var ts templateSpawnBody
			if err := decodeJSON(bytes.NewReader(data), &ts, optional); err != nil {
				invalidOnly(t, "template spawn", err)
			} else {
				_, err := parseDuration("ttl", ts.TTL)
				invalidOnly(t, "template spawn ttl", err)
			}
			for name, v := range map[string]any{
				"write": &writeFileBody{}, "move": &moveBody{}, "chmod": &chmodBody{}, "template": &templateBody{},
			} {
				invalidOnly(t, name, decodeJSON(bytes.NewReader(data), v, optional))
			}
		}
	})
}

// FuzzDuration: any string is a duration or a 400.
func FuzzDuration(f *testing.F) {
	for _, s := range []string{"", "30s", "1h30m", "-5s", "0", "0s", "1e9h", "9223372036854775807ns", "9999999999999h", "5", "µs", "\x00", "1.5h"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d := durationString(s)
		got, err := parseDuration("ttl", &d)
		invalidOnly(t, "duration "+s, err)
		if err == nil && got <= 0 {
			t.Fatalf("parseDuration(%q) = %v, want positive", s, got)
		}
	})
}

// FuzzFileMode: any JSON value or query string is a permission mode or a
// 400, and an accepted mode has no type bits.
func FuzzFileMode(f *testing.F) {
	for _, s := range []string{`"0644"`, `"755"`, `"0o700"`, `"4755"`, `420`, `755`, `-1`, `1e30`, `"0o99"`, `"x"`, `null`, `true`, `"\u0000"`, `0.5`, `"07777"`, `"017777"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var m fileMode
		err := m.UnmarshalJSON(b)
		invalidOnly(t, "mode "+string(b), err)
		if err == nil && m.set && m.mode.Type() != 0 {
			t.Fatalf("mode %s accepted as %v", b, m.mode)
		}
		mode, err := provider.ParseMode(string(b))
		invalidOnly(t, "query mode "+string(b), err)
		if err == nil && mode.Type() != 0 {
			t.Fatalf("query mode %q accepted as %v", b, mode)
		}
	})
}

// FuzzQuery sends any query string to each route that reads one, through
// the real handler: never a 500 or a panic, and errors have the contract's
// body.
func FuzzQuery(f *testing.F) {
	e := newEnv(f)
	sb := e.spawn(map[string]any{})
	h := New(e.m, e.opts)
	base := "/api/v1/sandboxes/" + sb.ID
	paths := []string{
		"/api/v1/sandboxes", base + "/logs", base + "/files", base + "/files/list", base + "/files/stat",
		base + "/files/glob", "/api/v1/providers",
	}
	for _, q := range []string{
		"", "path=/workspace", "path=%00", "path=%FF", "path=../../etc/passwd", "pattern=**/*", "pattern=[",
		"lines=0", "lines=-1", "lines=99999999999999999999", "state=running&owner_id=a", "state=nope",
		"recursive=maybe", "path=" + strings.Repeat("a/", 2000), "a=%zz", "path=/workspace&path=/tmp",
	} {
		for i := range paths {
			f.Add(q, uint8(i))
		}
	}
	f.Fuzz(func(t *testing.T, rawQuery string, route uint8) {
		p := paths[int(route)%len(paths)]
		for _, method := range []string{"GET", "DELETE"} {
			if method == "DELETE" && p != base+"/files" {
				continue
			}
			r := (&http.Request{
				Method: method, URL: &url.URL{Path: p, RawQuery: rawQuery}, Host: "127.0.0.1",
				Header: http.Header{}, Body: http.NoBody, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
			}).WithContext(context.Background())
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code >= 500 {
				t.Fatalf("%s %s?%s: %d %s", method, p, rawQuery, w.Code, w.Body)
			}
			if w.Code >= 400 {
				var body errorBody
				if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil || body.Code == "" || body.RequestID == "" {
					t.Fatalf("%s %s?%s: %d with body %q", method, p, rawQuery, w.Code, w.Body)
				}
			}
		}
	})
}

// FuzzEdge: any Host and Origin are judged without a panic, and a refused
// request never reaches the handler.
func FuzzEdge(f *testing.F) {
	for _, s := range [][2]string{
		{"127.0.0.1:7423", "http://127.0.0.1:7423"}, {"[::1]:7423", "null"}, {"[", "http://["}, {"evil.example", "http://evil.example"},
		{"localhost.:7423", "https://localhost:7423"}, {":", "://"}, {"[fe80::1%lo]:1", "http://[fe80::1%25lo]:1"}, {"", ""},
	} {
		f.Add(s[0], s[1])
	}
	s := &server{opts: Options{AllowedHosts: []string{"a.example", "b.example:8443"}, CORSOrigins: []string{"https://app.example"}}, log: slog.New(slog.DiscardHandler)}
	f.Fuzz(func(t *testing.T, host, origin string) {
		reached := false
		h := s.withRequestID(s.withEdge(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { reached = true })))
		r := (&http.Request{Method: "POST", URL: &url.URL{Path: "/x"}, Host: host, Header: http.Header{"Origin": {origin}}, Body: http.NoBody}).WithContext(context.Background())
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if reached != (w.Code == http.StatusOK) {
			t.Fatalf("Host %q Origin %q: status %d, handler reached %v", host, origin, w.Code, reached)
		}
		if !reached && w.Code != http.StatusMisdirectedRequest && w.Code != http.StatusForbidden {
			t.Fatalf("Host %q Origin %q: status %d", host, origin, w.Code)
		}
	})
}
