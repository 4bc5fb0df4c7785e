package fcapi

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"

	"go.yaml.in/yaml/v3"
)

//go:embed firecracker-api.yaml
var specYAML []byte

// SpecYAML returns the embedded API description, unchanged.
func SpecYAML() []byte { return bytes.Clone(specYAML) }

// Spec is a parsed Swagger 2.0 API description, reduced to what request
// and response validation needs.
type Spec struct {
	Version     string
	definitions map[string]*Schema
	ops         []*operation
}

// Schema is a Swagger 2.0 schema object. Decoding is strict: a keyword
// this validator does not know fails Parse instead of being ignored, so a
// newer description cannot silently weaken validation.
type Schema struct {
	Ref                  string             `yaml:"$ref"`
	Type                 string             `yaml:"type"`
	Format               string             `yaml:"format"`
	Required             []string           `yaml:"required"`
	Properties           map[string]*Schema `yaml:"properties"`
	AdditionalProperties yaml.Node          `yaml:"additionalProperties"`
	Items                *Schema            `yaml:"items"`
	Enum                 []any              `yaml:"enum"`
	Minimum              *float64           `yaml:"minimum"`
	Maximum              *float64           `yaml:"maximum"`
	ReadOnly             bool               `yaml:"readOnly"`
	// Annotations without validation meaning.
	Description string `yaml:"description"`
	Default     any    `yaml:"default"`
	Example     any    `yaml:"example"`
}

type document struct {
	Swagger     string                               `yaml:"swagger"`
	Info        map[string]any                       `yaml:"info"`
	Paths       map[string]map[string]*yamlOperation `yaml:"paths"`
	Definitions map[string]*Schema                   `yaml:"definitions"`
	Rest        map[string]any                       `yaml:",inline"`
}

type yamlOperation struct {
	Summary     string `yaml:"summary"`
	Description string `yaml:"description"`
	OperationID string `yaml:"operationId"`
	Parameters  []struct {
		Name        string  `yaml:"name"`
		In          string  `yaml:"in"`
		Description string  `yaml:"description"`
		Required    bool    `yaml:"required"`
		Type        string  `yaml:"type"`
		Schema      *Schema `yaml:"schema"`
	} `yaml:"parameters"`
	Responses map[string]struct {
		Description string  `yaml:"description"`
		Schema      *Schema `yaml:"schema"`
	} `yaml:"responses"`
}

type operation struct {
	id           string
	method       string // upper case
	segments     []string
	pathParams   map[string]string // name → type
	body         *Schema
	bodyRequired bool
	responses    map[string]*Schema // status or "default" → schema (nil: no body)
}

var (
	loadOnce sync.Once
	loaded   *Spec
	loadErr  error
)

// Load parses the embedded description once.
func Load() (*Spec, error) {
	loadOnce.Do(func() { loaded, loadErr = Parse(specYAML) })
	return loaded, loadErr
}

// Parse reads a Swagger 2.0 document.
func Parse(b []byte) (*Spec, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var doc document
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("fcapi: parsing API description: %w", err)
	}
	if doc.Swagger != "2.0" {
		return nil, fmt.Errorf("fcapi: want a Swagger 2.0 document, got swagger %q", doc.Swagger)
	}
	version, _ := doc.Info["version"].(string)
	s := &Spec{Version: version, definitions: doc.Definitions}
	for path, methods := range doc.Paths {
		for method, yo := range methods {
			op := &operation{
				id:         yo.OperationID,
				method:     strings.ToUpper(method),
				segments:   splitPath(path),
				pathParams: map[string]string{},
				responses:  map[string]*Schema{},
			}
			for _, p := range yo.Parameters {
				switch p.In {
				case "body":
					op.body, op.bodyRequired = p.Schema, p.Required
				case "path":
					op.pathParams[p.Name] = p.Type
				default:
					return nil, fmt.Errorf("fcapi: %s %s: parameters in %q are not supported", op.method, path, p.In)
				}
			}
			for code, r := range yo.Responses {
				op.responses[code] = r.Schema
			}
			s.ops = append(s.ops, op)
		}
	}
	// Resolve every reference now, so that a dangling one fails Parse.
	for name, d := range s.definitions {
		if err := s.checkRefs(d, "#/definitions/"+name); err != nil {
			return nil, err
		}
	}
	for _, op := range s.ops {
		if err := s.checkRefs(op.body, op.id); err != nil {
			return nil, err
		}
		for _, r := range op.responses {
			if err := s.checkRefs(r, op.id); err != nil {
				return nil, err
			}
		}
	}
	return s, nil
}

func (s *Spec) checkRefs(sc *Schema, at string) error {
	if sc == nil {
		return nil
	}
	if sc.Ref != "" {
		if _, err := s.resolve(sc); err != nil {
			return fmt.Errorf("fcapi: %s: %w", at, err)
		}
	}
	for n, p := range sc.Properties {
		if err := s.checkRefs(p, at+"."+n); err != nil {
			return err
		}
	}
	if ap, err := additional(sc); err != nil {
		return fmt.Errorf("fcapi: %s: %w", at, err)
	} else if err := s.checkRefs(ap.schema, at+".additionalProperties"); err != nil {
		return err
	}
	return s.checkRefs(sc.Items, at+"[]")
}

func splitPath(p string) []string {
	p = strings.Trim(p, "/")
	if p == "" {
		return nil
	}
	return strings.Split(p, "/")
}

// match returns the operation for method and path, and the path parameters.
func (s *Spec) match(method, path string) (*operation, map[string]string, error) {
	segs := splitPath(path)
	methodSeen := false
	for _, op := range s.ops {
		if len(op.segments) != len(segs) {
			continue
		}
		params := map[string]string{}
		ok := true
		for i, t := range op.segments {
			if strings.HasPrefix(t, "{") && strings.HasSuffix(t, "}") {
				if segs[i] == "" {
					ok = false
					break
				}
				params[t[1:len(t)-1]] = segs[i]
				continue
			}
			if t != segs[i] {
				ok = false
				break
			}
		}
		if !ok {
			continue
		}
		methodSeen = true
		if op.method == strings.ToUpper(method) {
			return op, params, nil
		}
	}
	if methodSeen {
		return nil, nil, fmt.Errorf("the API has no %s %s", method, path)
	}
	return nil, nil, fmt.Errorf("the API has no path %s", path)
}

// OperationID names the operation method and path map to, or fails.
func (s *Spec) OperationID(method, path string) (string, error) {
	op, _, err := s.match(method, path)
	if err != nil {
		return "", err
	}
	return op.id, nil
}

// ValidateRequest checks a request against the description: the operation
// exists, path parameters have their types, and the body is present when
// required, absent when the operation takes none, and valid against its
// schema.
func (s *Spec) ValidateRequest(method, path string, body []byte) error {
	op, params, err := s.match(method, path)
	if err != nil {
		return err
	}
	for name, typ := range op.pathParams {
		if err := checkScalar(typ, params[name]); err != nil {
			return fmt.Errorf("%s: path parameter %s: %w", op.id, name, err)
		}
	}
	empty := len(bytes.TrimSpace(body)) == 0
	switch {
	case op.body == nil && !empty:
		return fmt.Errorf("%s takes no body", op.id)
	case op.body == nil:
		return nil
	case empty && op.bodyRequired:
		return fmt.Errorf("%s requires a body", op.id)
	case empty:
		return nil
	}
	v, err := decodeJSON(body)
	if err != nil {
		return fmt.Errorf("%s: body: %w", op.id, err)
	}
	if err := s.validate(op.body, v, "body", true); err != nil {
		return fmt.Errorf("%s: %w", op.id, err)
	}
	return nil
}

// ValidateResponse checks a reply: its status is one the operation
// declares (or covered by "default"), and its body matches that response's
// schema, or is empty when the response has none.
func (s *Spec) ValidateResponse(method, path string, status int, body []byte) error {
	op, _, err := s.match(method, path)
	if err != nil {
		return err
	}
	sc, ok := op.responses[strconv.Itoa(status)]
	if !ok {
		if status/100 == 2 {
			return fmt.Errorf("%s: success status %d is not declared", op.id, status)
		}
		if sc, ok = op.responses["default"]; !ok {
			return fmt.Errorf("%s: status %d is not declared and there is no default", op.id, status)
		}
	}
	empty := len(bytes.TrimSpace(body)) == 0
	if sc == nil {
		if !empty {
			return fmt.Errorf("%s: status %d carries no body, got %d bytes", op.id, status, len(body))
		}
		return nil
	}
	if empty {
		return fmt.Errorf("%s: status %d requires a body", op.id, status)
	}
	v, err := decodeJSON(body)
	if err != nil {
		return fmt.Errorf("%s: reply body: %w", op.id, err)
	}
	if err := s.validate(sc, v, "reply", false); err != nil {
		return fmt.Errorf("%s: %w", op.id, err)
	}
	return nil
}

// ValidateDefinition checks a JSON value the VMM sends (read-only fields
// allowed) against a named definition.
func (s *Spec) ValidateDefinition(name string, body []byte) error {
	d, ok := s.definitions[name]
	if !ok {
		return fmt.Errorf("no definition %q", name)
	}
	v, err := decodeJSON(body)
	if err != nil {
		return err
	}
	return s.validate(d, v, name, false)
}

func decodeJSON(b []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("not JSON: %w", err)
	}
	if dec.More() {
		return nil, errors.New("trailing data after the JSON value")
	}
	return v, nil
}

func (s *Spec) resolve(sc *Schema) (*Schema, error) {
	seen := 0
	for sc.Ref != "" {
		name, ok := strings.CutPrefix(sc.Ref, "#/definitions/")
		if !ok {
			return nil, fmt.Errorf("unsupported reference %q", sc.Ref)
		}
		d, ok := s.definitions[name]
		if !ok {
			return nil, fmt.Errorf("dangling reference %q", sc.Ref)
		}
		sc = d
		if seen++; seen > 32 {
			return nil, fmt.Errorf("reference loop at %q", name)
		}
	}
	return sc, nil
}

type addProps struct {
	allowed bool
	schema  *Schema
}

// additional interprets additionalProperties. When absent the object is
// closed: Firecracker's request types reject unknown fields (serde's
// deny_unknown_fields), so an extra field is a request Firecracker refuses.
func additional(sc *Schema) (addProps, error) {
	n := &sc.AdditionalProperties
	if n.Kind == 0 {
		return addProps{}, nil
	}
	if n.Kind == yaml.ScalarNode {
		var b bool
		if err := n.Decode(&b); err != nil {
			return addProps{}, fmt.Errorf("additionalProperties: %w", err)
		}
		return addProps{allowed: b}, nil
	}
	var inner Schema
	if err := n.Decode(&inner); err != nil {
		return addProps{}, fmt.Errorf("additionalProperties: %w", err)
	}
	return addProps{allowed: true, schema: &inner}, nil
}

// proseRules are constraints Firecracker's description states in prose
// rather than in schema keywords. They are checked too, since Firecracker
// enforces them.
var proseRules = map[string]func(obj map[string]any) error{
	"SnapshotLoadParams": func(obj map[string]any) error {
		_, file := obj["mem_file_path"]
		_, backend := obj["mem_backend"]
		if file == backend {
			return errors.New("exactly one of mem_file_path and mem_backend must be present")
		}
		return nil
	},
}

func (s *Spec) validate(sc *Schema, v any, at string, request bool) error {
	name := ""
	if sc.Ref != "" {
		name = strings.TrimPrefix(sc.Ref, "#/definitions/")
		r, err := s.resolve(sc)
		if err != nil {
			return fmt.Errorf("%s: %w", at, err)
		}
		sc = r
	}
	typ := sc.Type
	if typ == "" && (sc.Properties != nil || sc.Required != nil) {
		typ = "object"
	}
	if len(sc.Enum) > 0 {
		if !slices.ContainsFunc(sc.Enum, func(e any) bool { return fmt.Sprint(e) == fmt.Sprint(v) && scalarKindsMatch(e, v) }) {
			return fmt.Errorf("%s: %v is not one of %v", at, v, sc.Enum)
		}
	}
	switch typ {
	case "":
		return nil // no constraint
	case "object":
		obj, ok := v.(map[string]any)
		if !ok {
			return fmt.Errorf("%s: want an object, got %s", at, jsonKind(v))
		}
		for _, r := range sc.Required {
			if _, ok := obj[r]; !ok {
				return fmt.Errorf("%s: required field %q is missing", at, r)
			}
		}
		ap, err := additional(sc)
		if err != nil {
			return fmt.Errorf("%s: %w", at, err)
		}
		keys := make([]string, 0, len(obj))
		for k := range obj {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			p, ok := sc.Properties[k]
			if !ok {
				if !ap.allowed {
					return fmt.Errorf("%s: unknown field %q", at, k)
				}
				if ap.schema != nil {
					if err := s.validate(ap.schema, obj[k], at+"."+k, request); err != nil {
						return err
					}
				}
				continue
			}
			if request && p.ReadOnly {
				return fmt.Errorf("%s: field %q is read-only", at, k)
			}
			if err := s.validate(p, obj[k], at+"."+k, request); err != nil {
				return err
			}
		}
		if rule := proseRules[name]; rule != nil {
			if err := rule(obj); err != nil {
				return fmt.Errorf("%s: %w", at, err)
			}
		}
		return nil
	case "array":
		arr, ok := v.([]any)
		if !ok {
			return fmt.Errorf("%s: want an array, got %s", at, jsonKind(v))
		}
		if sc.Items == nil {
			return nil
		}
		for i, e := range arr {
			if err := s.validate(sc.Items, e, fmt.Sprintf("%s[%d]", at, i), request); err != nil {
				return err
			}
		}
		return nil
	case "string":
		if _, ok := v.(string); !ok {
			return fmt.Errorf("%s: want a string, got %s", at, jsonKind(v))
		}
		return nil
	case "boolean":
		if _, ok := v.(bool); !ok {
			return fmt.Errorf("%s: want a boolean, got %s", at, jsonKind(v))
		}
		return nil
	case "integer", "number":
		n, ok := v.(json.Number)
		if !ok {
			return fmt.Errorf("%s: want %s, got %s", at, typ, jsonKind(v))
		}
		f, err := n.Float64()
		if err != nil {
			return fmt.Errorf("%s: %w", at, err)
		}
		if typ == "integer" {
			i, err := strconv.ParseInt(n.String(), 10, 64)
			if err != nil {
				return fmt.Errorf("%s: %s is not an integer", at, n)
			}
			if sc.Format == "int32" && (i < math.MinInt32 || i > math.MaxInt32) {
				return fmt.Errorf("%s: %d does not fit int32", at, i)
			}
		}
		if sc.Minimum != nil && f < *sc.Minimum {
			return fmt.Errorf("%s: %s is below the minimum %v", at, n, *sc.Minimum)
		}
		if sc.Maximum != nil && f > *sc.Maximum {
			return fmt.Errorf("%s: %s is above the maximum %v", at, n, *sc.Maximum)
		}
		return nil
	}
	return fmt.Errorf("%s: schema type %q is not supported by this validator", at, typ)
}

// scalarKindsMatch keeps enum "1" from accepting the number 1.
func scalarKindsMatch(enum, v any) bool {
	_, es := enum.(string)
	_, vs := v.(string)
	return es == vs
}

func checkScalar(typ, val string) error {
	switch typ {
	case "string", "":
		if val == "" {
			return errors.New("empty")
		}
		return nil
	case "integer":
		_, err := strconv.ParseInt(val, 10, 64)
		return err
	}
	return fmt.Errorf("parameter type %q is not supported", typ)
}

func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case map[string]any:
		return "an object"
	case []any:
		return "an array"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case json.Number:
		return "a number"
	}
	return fmt.Sprintf("%T", v)
}
