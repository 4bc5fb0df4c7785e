package api

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"
)

func TestTemplates(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	body := map[string]any{
		"name": "py", "image": "python:3", "description": "Python", "setup": []string{"echo ready > setup.txt"},
		"env": map[string]string{"GREETING": "hi"}, "memory_mb": 256, "cpu_cores": 2, "ttl_seconds": 600, "pool_size": 0,
	}
	var tmpl templateJSON
	e.expectJSON(e.call("POST", "/api/v1/templates", body), http.StatusCreated, &tmpl)
	if tmpl.Name != "py" || tmpl.Version != 1 || tmpl.Image != "python:3" || tmpl.Description == nil || *tmpl.Description != "Python" ||
		len(tmpl.Setup) != 1 || tmpl.Env["GREETING"] != "hi" || tmpl.MemoryMB != 256 || tmpl.CPUCores != 2 ||
		tmpl.TTLSeconds != 600 || tmpl.Provider != nil || tmpl.CreatedAt == "" || tmpl.UpdatedAt == "" {
		t.Errorf("created = %+v", tmpl)
	}
	raw := map[string]json.RawMessage{}
	e.expectJSON(e.call("GET", "/api/v1/templates/py", nil), http.StatusOK, &raw)
	for _, f := range []string{"name", "version", "image", "description", "setup", "env", "memory_mb", "cpu_cores",
		"ttl_seconds", "pool_size", "provider", "created_at", "updated_at"} {
		if _, ok := raw[f]; !ok {
			t.Errorf("template JSON lacks %q", f)
		}
	}

	e.expectError(e.call("POST", "/api/v1/templates", body), http.StatusConflict, codeConflict)

	var list []templateJSON
	e.expectJSON(e.call("GET", "/api/v1/templates", nil), http.StatusOK, &list)
	if len(list) != 1 || list[0].Name != "py" {
		t.Errorf("list = %+v", list)
	}

	// A client may PUT back what it fetched, read-only fields included.
	var fetched map[string]any
	e.expectJSON(e.call("GET", "/api/v1/templates/py", nil), http.StatusOK, &fetched)
	fetched["image"] = "python:3.12"
	var upd templateJSON
	e.expectJSON(e.call("PUT", "/api/v1/templates/py", fetched), http.StatusOK, &upd)
	if upd.Image != "python:3.12" || upd.Version != 2 {
		t.Errorf("updated = %+v", upd)
	}

	// Spawning from a template, both ways, applies it.
	var sb sandboxJSON
	e.expectJSON(e.call("POST", "/api/v1/templates/py/spawn", map[string]any{"metadata": map[string]string{"via": "template"}}, "X-User-ID", "carol"), http.StatusCreated, &sb)
	if sb.Template == nil || *sb.Template != "py" || sb.Image != "python:3.12" || sb.MemoryMB != 256 || sb.VCPUs != 2 ||
		sb.OwnerID == nil || *sb.OwnerID != "carol" || sb.Metadata["via"] != "template" {
		t.Errorf("spawned = %+v", sb)
	}
	created, _ := time.Parse(time.RFC3339, sb.CreatedAt)
	expires, _ := time.Parse(time.RFC3339, sb.ExpiresAt)
	if d := expires.Sub(created); d < 9*time.Minute || d > 11*time.Minute {
		t.Errorf("template ttl_seconds 600 gave a life of %s", d)
	}
	var res execResultJSON
	e.expectJSON(e.call("POST", "/api/v1/sandboxes/"+sb.ID+"/exec", `{"command":"printf %s \"$GREETING\"; cat setup.txt"}`), http.StatusOK, &res)
	if res.Stdout != "hiready\n" {
		t.Errorf("template env and setup: stdout %q", res.Stdout)
	}
	var sb2 sandboxJSON
	e.expectJSON(e.call("POST", "/api/v1/sandboxes", map[string]any{"template": "py", "ttl": "1h"}), http.StatusCreated, &sb2)
	if sb2.Template == nil || *sb2.Template != "py" || sb2.Image != "python:3.12" {
		t.Errorf("POST /sandboxes with template = %+v", sb2)
	}
	// An empty body is fine for a template spawn.
	e.expectJSON(e.call("POST", "/api/v1/templates/py/spawn", nil), http.StatusCreated, nil)

	var st map[string]string
	e.expectJSON(e.call("DELETE", "/api/v1/templates/py", nil), http.StatusOK, &st)
	if st["status"] != "deleted" {
		t.Errorf("delete = %v", st)
	}
	e.expectError(e.call("GET", "/api/v1/templates/py", nil), http.StatusNotFound, codeNotFound)
	e.expectError(e.call("DELETE", "/api/v1/templates/py", nil), http.StatusNotFound, codeNotFound)
	e.expectError(e.call("POST", "/api/v1/templates/py/spawn", nil), http.StatusNotFound, codeNotFound)
	// Sandboxes spawned from it live on.
	e.expectJSON(e.call("GET", "/api/v1/sandboxes/"+sb.ID, nil), http.StatusOK, nil)
}

func TestTemplateErrors(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.expectJSON(e.call("POST", "/api/v1/templates", `{"name":"base","image":"img"}`), http.StatusCreated, nil)
	e.expectJSON(e.call("POST", "/api/v1/templates", `{"name":"broken","image":"img","setup":["exit 9"]}`), http.StatusCreated, nil)

	for _, tc := range []struct {
		name, method, path, body string
		status                   int
		code                     string
	}{
		{"create: missing name", "POST", "/api/v1/templates", `{"image":"img"}`, 400, codeBadRequest},
		{"create: missing image", "POST", "/api/v1/templates", `{"name":"x"}`, 400, codeBadRequest},
		{"create: bad name", "POST", "/api/v1/templates", `{"name":"a b","image":"img"}`, 400, codeBadRequest},
		{"create: negative ttl", "POST", "/api/v1/templates", `{"name":"x","image":"img","ttl_seconds":-1}`, 400, codeBadRequest},
		{"create: wrong type", "POST", "/api/v1/templates", `{"name":"x","image":"img","setup":"echo"}`, 400, codeBadRequest},
		{"create: unknown provider", "POST", "/api/v1/templates", `{"name":"x","image":"img","provider":"nope"}`, 400, codeBadRequest},
		{"create: unknown field", "POST", "/api/v1/templates", `{"name":"x","image":"img","cpus":1}`, 400, codeBadRequest},
		{"create: duplicate", "POST", "/api/v1/templates", `{"name":"base","image":"img"}`, 409, codeConflict},
		{"get: unknown", "GET", "/api/v1/templates/nope", ``, 404, codeNotFound},
		{"update: unknown", "PUT", "/api/v1/templates/nope", `{"image":"img"}`, 404, codeNotFound},
		{"update: missing image", "PUT", "/api/v1/templates/base", `{"name":"base"}`, 400, codeBadRequest},
		{"update: name mismatch", "PUT", "/api/v1/templates/base", `{"name":"other","image":"img"}`, 400, codeBadRequest},
		{"update: malformed", "PUT", "/api/v1/templates/base", `{`, 400, codeBadRequest},
		{"spawn: unknown template", "POST", "/api/v1/templates/nope/spawn", `{}`, 404, codeNotFound},
		{"spawn: bad ttl", "POST", "/api/v1/templates/base/spawn", `{"ttl":"1 hour"}`, 400, codeBadRequest},
		{"spawn: zero ttl", "POST", "/api/v1/templates/base/spawn", `{"ttl":"0s"}`, 400, codeBadRequest},
		{"spawn: image is not a spawn field here", "POST", "/api/v1/templates/base/spawn", `{"image":"x"}`, 400, codeBadRequest},
		{"spawn: unknown provider", "POST", "/api/v1/templates/base/spawn", `{"provider":"nope"}`, 404, codeNotFound},
		{"spawn: failing setup", "POST", "/api/v1/templates/broken/spawn", ``, 400, codeBadRequest},
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
