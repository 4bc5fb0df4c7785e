package api

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// TestHostileInput sends what a fuzzer or an attacker sends, through the
// real server stack: every answer is a clear 4xx with the JSON error body,
// never a 500 or a panic, and nothing is created or left behind.
func TestHostileInput(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	sb := e.spawn(map[string]any{})
	before := e.count()
	ex := "/api/v1/sandboxes/" + sb.ID + "/exec"
	files := "/api/v1/sandboxes/" + sb.ID + "/files"
	deep := strings.Repeat("[", 100000) + strings.Repeat("]", 100000)
	deepObj := strings.Repeat(`{"a":`, 100000) + "1" + strings.Repeat("}", 100000)
	big := `{"image":"` + strings.Repeat("x", 2<<20) + `"}`

	for _, tc := range []struct {
		name, method, path, body string
		headers                  []string
		status                   int // 0: any 4xx
	}{
		// Size and shape.
		{"oversized body", "POST", "/api/v1/sandboxes", big, nil, 413},
		{"deeply nested array", "POST", "/api/v1/sandboxes", deep, nil, 400},
		{"deeply nested object", "POST", "/api/v1/sandboxes", deepObj, nil, 400},
		{"nested in a field", "POST", "/api/v1/sandboxes", `{"metadata":` + deep + `}`, nil, 400},
		{"nested exec", "POST", ex, `{"command":` + deep + `}`, nil, 400},
		{"array body", "POST", "/api/v1/sandboxes", `[]`, nil, 400},
		{"string body", "POST", "/api/v1/sandboxes", `"x"`, nil, 400},
		{"null body", "POST", ex, `null`, nil, 400},
		{"two objects", "POST", "/api/v1/sandboxes", `{}{}`, nil, 400},
		{"truncated", "POST", "/api/v1/sandboxes", `{"image":"x`, nil, 400},
		{"unknown field", "POST", "/api/v1/sandboxes", `{"imagee":"x"}`, nil, 400},
		{"unknown nested type", "POST", "/api/v1/sandboxes", `{"metadata":{"a":1}}`, nil, 400},
		{"duplicate keys of two types", "POST", "/api/v1/sandboxes", `{"ttl":"1m","ttl":5}`, nil, 400},

		// Numbers.
		{"memory 1e30", "POST", "/api/v1/sandboxes", `{"memory_mb":1e30}`, nil, 400},
		{"memory huge integer", "POST", "/api/v1/sandboxes", `{"memory_mb":99999999999999999999999}`, nil, 400},
		{"memory max int64", "POST", "/api/v1/sandboxes", `{"memory_mb":9223372036854775807}`, nil, 400},
		{"memory negative", "POST", "/api/v1/sandboxes", `{"memory_mb":-1}`, nil, 400},
		{"vcpus negative", "POST", "/api/v1/sandboxes", `{"vcpus":-4}`, nil, 400},
		{"vcpus huge", "POST", "/api/v1/sandboxes", `{"vcpus":2147483648}`, nil, 400},
		{"disk negative", "POST", "/api/v1/sandboxes", `{"disk_mb":-1}`, nil, 400},
		{"memory fraction", "POST", "/api/v1/sandboxes", `{"memory_mb":1.5}`, nil, 400},
		{"ttl negative", "POST", "/api/v1/sandboxes", `{"ttl":"-5s"}`, nil, 400},
		{"ttl zero", "POST", "/api/v1/sandboxes", `{"ttl":"0s"}`, nil, 400},
		{"ttl huge", "POST", "/api/v1/sandboxes", `{"ttl":"2562047h"}`, nil, 400},
		{"ttl overflow", "POST", "/api/v1/sandboxes", `{"ttl":"9999999999999h"}`, nil, 400},
		{"ttl number", "POST", "/api/v1/sandboxes", `{"ttl":300}`, nil, 400},
		{"timeout huge", "POST", ex, `{"command":"true","timeout":"2562047h"}`, nil, 400},
		{"timeout negative", "POST", ex, `{"command":"true","timeout":"-1ns"}`, nil, 400},
		{"extend negative", "POST", "/api/v1/sandboxes/" + sb.ID + "/extend", `{"ttl":"-1h"}`, nil, 400},
		{"extend huge", "POST", "/api/v1/sandboxes/" + sb.ID + "/extend", `{"ttl":"2562047h"}`, nil, 400},
		{"mode huge", "POST", files + "/chmod", `{"path":"/workspace","mode":1e30}`, nil, 400},
		{"mode negative", "POST", files + "/chmod", `{"path":"/workspace","mode":-1}`, nil, 400},
		{"mode string garbage", "POST", files + "/chmod", `{"path":"/workspace","mode":"0o99"}`, nil, 400},
		{"template negative memory", "POST", "/api/v1/templates", `{"name":"neg","image":"x","memory_mb":-5}`, nil, 400},
		{"template huge ttl", "POST", "/api/v1/templates", `{"name":"huge","image":"x","ttl_seconds":9223372036854775807}`, nil, 400},
		{"logs lines huge", "GET", "/api/v1/sandboxes/" + sb.ID + "/logs?lines=99999999999999999999", "", nil, 400},
		{"events id garbage", "GET", "/api/v1/events?last_event_id=-1", "", nil, 400},

		// NUL bytes and invalid UTF-8 in paths, commands and environments.
		{"NUL in command", "POST", ex, `{"command":"echo a\u0000b"}`, nil, 400},
		{"NUL in args", "POST", ex, `{"command":"echo","args":["a\u0000b"]}`, nil, 400},
		{"NUL in env key", "POST", ex, `{"command":"true","env":{"A\u0000B":"x"}}`, nil, 400},
		{"NUL in env value", "POST", ex, `{"command":"true","env":{"A":"x\u0000y"}}`, nil, 400},
		{"= in env key", "POST", ex, `{"command":"true","env":{"A=B":"x"}}`, nil, 400},
		{"empty env key", "POST", ex, `{"command":"true","env":{"":"x"}}`, nil, 400},
		{"NUL in workdir", "POST", ex, `{"command":"true","workdir":"/work\u0000space"}`, nil, 400},
		{"NUL in write path", "POST", files, `{"path":"/workspace/a\u0000b","content":"x"}`, nil, 400},
		{"NUL in read path", "GET", files + "?path=" + url.QueryEscape("/workspace/a\x00b"), "", nil, 400},
		{"NUL in stat path", "GET", files + "/stat?path=" + url.QueryEscape("/a\x00"), "", nil, 400},
		{"NUL in list path", "GET", files + "/list?path=" + url.QueryEscape("/\x00"), "", nil, 400},
		{"NUL in delete path", "DELETE", files + "?path=" + url.QueryEscape("/workspace/\x00"), "", nil, 400},
		{"NUL in glob", "GET", files + "/glob?pattern=" + url.QueryEscape("/workspace/*\x00"), "", nil, 400},
		{"NUL in move", "POST", files + "/move", `{"old_path":"/workspace/a\u0000","new_path":"/workspace/b"}`, nil, 400},
		{"NUL in chmod", "POST", files + "/chmod", `{"path":"/work\u0000space","mode":"0755"}`, nil, 400},
		{"NUL in upload path", "PUT", files + "/raw?path=" + url.QueryEscape("/workspace/\x00"), "x", []string{"Content-Type", "application/octet-stream"}, 400},
		{"NUL in image", "POST", "/api/v1/sandboxes", `{"image":"busy\u0000box"}`, nil, 400},
		{"NUL in metadata", "POST", "/api/v1/sandboxes", `{"metadata":{"k\u0000":"v"}}`, nil, 400},
		{"NUL in owner", "POST", "/api/v1/sandboxes", `{"owner_id":"a\u0000"}`, nil, 400},
		{"NUL in template name", "POST", "/api/v1/templates", `{"name":"t\u0000","image":"x"}`, nil, 400},
		{"invalid UTF-8 in command", "POST", ex, "{\"command\":\"echo \xff\xfe\"}", nil, 400},
		{"invalid UTF-8 in path", "POST", files, "{\"path\":\"/workspace/\xc3\x28\",\"content\":\"x\"}", nil, 400},
		{"invalid UTF-8 in env", "POST", ex, "{\"command\":\"true\",\"env\":{\"\xff\":\"\xfe\"}}", nil, 400},
		{"invalid UTF-8 in query path", "GET", files + "/stat?path=%2Fworkspace%2F%FF", "", nil, 400},
		{"invalid UTF-8 in image", "POST", "/api/v1/sandboxes", "{\"image\":\"\xff\"}", nil, 400},

		// Headers.
		{"huge header", "GET", "/api/v1/sandboxes", "", []string{"X-Big", strings.Repeat("a", 200<<10)}, 431},
		{"huge owner header", "POST", "/api/v1/sandboxes", `{}`, []string{"X-User-ID", strings.Repeat("o", 100<<10)}, 431},
		{"long owner header", "POST", "/api/v1/sandboxes", `{}`, []string{"X-User-ID", strings.Repeat("o", 4<<10)}, 400},
		{"NUL-free control chars in owner", "POST", "/api/v1/sandboxes", `{}`, []string{"X-User-ID", "a\tb"}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var body any
			if tc.body != "" {
				body = tc.body
			}
			resp := e.call(tc.method, tc.path, body, tc.headers...)
			if tc.status == 0 {
				b := readAll(t, resp)
				if resp.StatusCode >= 500 {
					t.Errorf("status %d: %s", resp.StatusCode, b)
				}
				return
			}
			if resp.StatusCode < 400 || resp.StatusCode >= 500 {
				t.Fatalf("status %d, want a 4xx (%d): %.300s", resp.StatusCode, tc.status, readAll(t, resp))
			}
			code := map[int]string{400: codeBadRequest, 413: codeResourceLimit, 431: codeResourceLimit}[tc.status]
			e.expectError(resp, tc.status, code)
		})
	}
	// Past the http.Server's own limit (1 MiB), net/http answers 431 itself,
	// in plain text, before any handler: still a 4xx, never a 500.
	req, _ := http.NewRequest("GET", e.srv.URL+"/api/v1/sandboxes", nil)
	req.Header.Set("X-Big", strings.Repeat("a", 2<<20))
	if resp, err := e.srv.Client().Do(req); err == nil {
		readAll(t, resp)
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Errorf("2 MiB of headers: status %d, want 431", resp.StatusCode)
		}
	}
	if strings.Contains(e.logs.String(), "panic serving request") {
		t.Error("a hostile request panicked a handler")
	}
	if n := e.count(); n != before+1 {
		// the control-character owner is accepted (a 201): one more.
		t.Errorf("%d sandboxes, want %d: a refused request created one", n, before+1)
	}
}
