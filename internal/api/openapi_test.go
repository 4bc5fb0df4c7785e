package api

import (
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/stacyvm/stacyvm/docs"
)

var httpMethods = []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}

type openAPIDoc struct {
	OpenAPI string                          `yaml:"openapi"`
	Paths   map[string]map[string]yaml.Node `yaml:"paths"`
}

func loadOpenAPI(t *testing.T) (openAPIDoc, any) {
	t.Helper()
	var doc openAPIDoc
	if err := yaml.Unmarshal(docs.OpenAPI, &doc); err != nil {
		t.Fatalf("docs/openapi.yaml: %v", err)
	}
	var generic any
	if err := yaml.Unmarshal(docs.OpenAPI, &generic); err != nil {
		t.Fatal(err)
	}
	return doc, generic
}

// TestOpenAPIMatchesRoutes walks the document and the patterns registered
// on the mux, and fails on a route either lacks. The dashboard's static
// files (GET / and GET /ui/…, package web) and the E2B facade (/e2b/…) are
// not API routes: internal/server mounts them next to this handler, so
// they are neither on this mux nor in the document.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	t.Parallel()
	doc, _ := loadOpenAPI(t)
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Fatalf("openapi = %q, want 3.x", doc.OpenAPI)
	}
	var documented []string
	for path, item := range doc.Paths {
		for method := range item {
			if slices.Contains(httpMethods, method) {
				documented = append(documented, strings.ToUpper(method)+" "+path)
			}
		}
	}
	var served []string
	mux := (&server{}).newMux()
	for _, rt := range (&server{}).routes() {
		served = append(served, rt.method+" "+rt.path)
	}
	// Every documented operation must reach the mux pattern of the same
	// name: a request with sample values for the wildcards proves it.
	wildcard := regexp.MustCompile(`\{[^}]+\}`)
	for _, r := range documented {
		method, path, _ := strings.Cut(r, " ")
		req := httptest.NewRequest(method, wildcard.ReplaceAllString(path, "x1"), nil)
		if _, pattern := mux.Handler(req); pattern != r {
			t.Errorf("documented %s reaches mux pattern %q", r, pattern)
		}
	}
	slices.Sort(documented)
	slices.Sort(served)
	for _, r := range served {
		if !slices.Contains(documented, r) {
			t.Errorf("served but not in docs/openapi.yaml: %s", r)
		}
	}
	for _, r := range documented {
		if !slices.Contains(served, r) {
			t.Errorf("in docs/openapi.yaml but not served: %s", r)
		}
	}
	if len(served) != len(documented) {
		t.Errorf("%d routes served, %d documented", len(served), len(documented))
	}
}

// TestOpenAPIIsSound checks what a generator would trip on: every $ref
// resolves, every operation has an operationId (unique) and responses,
// and every {param} in a path is declared.
func TestOpenAPIIsSound(t *testing.T) {
	t.Parallel()
	_, generic := loadOpenAPI(t)
	root := generic.(map[string]any)

	var refs []string
	var walk func(v any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			for k, c := range x {
				if k == "$ref" {
					refs = append(refs, c.(string))
				}
				walk(c)
			}
		case []any:
			for _, c := range x {
				walk(c)
			}
		}
	}
	walk(root)
	if len(refs) == 0 {
		t.Fatal("no $ref at all: the walk is broken")
	}
	for _, ref := range refs {
		if !resolves(root, ref) {
			t.Errorf("$ref %q does not resolve", ref)
		}
	}

	ids := map[string]string{}
	paramRE := regexp.MustCompile(`\{([^}]+)\}`)
	for path, v := range root["paths"].(map[string]any) {
		item := v.(map[string]any)
		for method, op := range item {
			if !slices.Contains(httpMethods, method) {
				continue
			}
			o := op.(map[string]any)
			where := strings.ToUpper(method) + " " + path
			id, _ := o["operationId"].(string)
			if id == "" {
				t.Errorf("%s has no operationId", where)
			} else if other, dup := ids[id]; dup {
				t.Errorf("operationId %q used by %s and %s", id, other, where)
			}
			ids[id] = where
			if resp, _ := o["responses"].(map[string]any); len(resp) == 0 {
				t.Errorf("%s has no responses", where)
			}
			declared := declaredPathParams(root, item["parameters"])
			for n := range declaredPathParams(root, o["parameters"]) {
				declared[n] = true
			}
			for _, m := range paramRE.FindAllStringSubmatch(path, -1) {
				if !declared[m[1]] {
					t.Errorf("%s does not declare path parameter %q", where, m[1])
				}
			}
		}
	}
}

func resolves(root map[string]any, ref string) bool {
	p, ok := strings.CutPrefix(ref, "#/")
	if !ok {
		return false
	}
	var cur any = root
	for _, part := range strings.Split(p, "/") {
		m, ok := cur.(map[string]any)
		if !ok {
			return false
		}
		if cur, ok = m[part]; !ok {
			return false
		}
	}
	return true
}

func declaredPathParams(root map[string]any, params any) map[string]bool {
	out := map[string]bool{}
	list, _ := params.([]any)
	for _, p := range list {
		m, _ := p.(map[string]any)
		if ref, ok := m["$ref"].(string); ok {
			p, _ := strings.CutPrefix(ref, "#/")
			var cur any = root
			for _, part := range strings.Split(p, "/") {
				cur = cur.(map[string]any)[part]
			}
			m, _ = cur.(map[string]any)
		}
		if m["in"] == "path" {
			out[m["name"].(string)] = true
		}
	}
	return out
}
