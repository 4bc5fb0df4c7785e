package api

import (
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/provider"
)

// writeJSON sends v with status. HTML escaping is off: command output is
// shown as printed, not as \u003c.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v) // the client is gone; nothing left to tell it
}

// decodeJSON reads one JSON object into v, strictly: unknown fields,
// wrong types, trailing data and malformed JSON are all ErrInvalidArgument
// with the offending field named. An empty body leaves v untouched when
// optional, and is an error otherwise.
func decodeJSON(r io.Reader, v any, optional bool) error {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if errors.Is(err, io.EOF) {
		if optional {
			return nil
		}
		return errdefs.New(errdefs.ErrInvalidArgument, "the request body is empty; send a JSON object")
	}
	if err == nil {
		// One object per body: anything after it is a client bug that
		// would otherwise go unnoticed.
		var extra json.RawMessage
		if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
			if mbe, ok := errors.AsType[*http.MaxBytesError](err); ok {
				return mbe
			}
			return errdefs.New(errdefs.ErrInvalidArgument, "unexpected data after the JSON object in the request body")
		}
		return nil
	}
	return decodeError(err, v)
}

// decodeError classifies a json.Decoder error.
func decodeError(err error, v any) error {
	if mbe, ok := errors.AsType[*http.MaxBytesError](err); ok {
		return mbe
	}
	if errdefs.Classify(err) != nil {
		return err // from one of our UnmarshalJSON methods: already says what is wrong
	}
	if se, ok := errors.AsType[*json.SyntaxError](err); ok {
		return errdefs.New(errdefs.ErrInvalidArgument, "malformed JSON at byte %d: %v", se.Offset, se)
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return errdefs.New(errdefs.ErrInvalidArgument, "malformed JSON: the body ends in the middle of a value")
	}
	if te, ok := errors.AsType[*json.UnmarshalTypeError](err); ok {
		if te.Field == "" {
			return errdefs.New(errdefs.ErrInvalidArgument, "the request body must be a JSON object, not %s", te.Value)
		}
		e := errdefs.New(errdefs.ErrInvalidArgument, "field %q must be %s, not %s", te.Field, describeType(te.Type), te.Value)
		if te.Type == reflect.TypeFor[durationString]() {
			e = errdefs.WithHint(e, `durations are Go duration strings such as "30s", "5m" or "1h"`)
		}
		return e
	}
	// What remains is the decoder's unknown-field error, which has no type
	// of its own; its text names the field, and the hint lists the good ones.
	return errdefs.WithHint(errdefs.New(errdefs.ErrInvalidArgument, "invalid request body: %v", err),
		"accepted fields: "+strings.Join(jsonFields(v), ", "))
}

func describeType(t reflect.Type) string {
	if t == reflect.TypeFor[durationString]() {
		return "a duration string"
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Map:
		if t.Elem().Kind() == reflect.String {
			return "an object of strings"
		}
		return "an object"
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.String {
			return "an array of strings"
		}
		return "an array"
	case reflect.Pointer:
		return describeType(t.Elem())
	case reflect.Struct:
		return "an object"
	}
	return t.String()
}

// jsonFields lists the JSON names of the struct v points to.
func jsonFields(v any) []string {
	t := reflect.TypeOf(v)
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil || t.Kind() != reflect.Struct {
		return nil
	}
	var out []string
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out = append(out, name)
	}
	return out
}

// durationString is a Go duration string in a request body. It is a
// string type so that a JSON number is a type error naming the field.
type durationString string

// parseDuration parses an optional duration field; nil means absent. A
// present duration must be positive.
func parseDuration(field string, s *durationString) (time.Duration, error) {
	if s == nil {
		return 0, nil
	}
	d, err := time.ParseDuration(string(*s))
	if err != nil {
		return 0, errdefs.WithHint(errdefs.New(errdefs.ErrInvalidArgument, "%s %q is not a duration", field, string(*s)),
			`durations are Go duration strings such as "30s", "5m" or "1h"`)
	}
	if d <= 0 {
		return 0, errdefs.New(errdefs.ErrInvalidArgument, "%s must be positive, not %s", field, string(*s))
	}
	return d, nil
}

// fileMode is a file mode in a request body: an octal string ("0644",
// "755", "0o700", "4755") or a JSON number holding the permission bits'
// value (420 for 0644). A number written as if octal (755) is out of range
// and refused rather than misread.
type fileMode struct {
	mode fs.FileMode
	set  bool
}

func (m *fileMode) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	if len(b) > 0 && b[0] == '"' {
		var str string
		if err := json.Unmarshal(b, &str); err != nil {
			return errdefs.New(errdefs.ErrInvalidArgument, "mode must be an octal string such as \"0644\"")
		}
		mode, err := provider.ParseMode(str)
		if err != nil {
			return err
		}
		m.mode, m.set = mode, true
		return nil
	}
	n, err := strconv.ParseUint(string(b), 10, 32)
	if err != nil {
		return errdefs.New(errdefs.ErrInvalidArgument, "mode must be an octal string such as \"0644\", not %s", b)
	}
	// A number is taken at its value, so 755 (meant as octal) would be
	// 01363: refuse numbers beyond permission bits rather than misread them.
	if n > 0o777 {
		return errdefs.WithHint(errdefs.New(errdefs.ErrInvalidArgument, "mode %d is not a permission mode (0 to 0777) as a number", n),
			`send the mode as an octal string such as "0755" (strings may carry setuid, setgid and sticky bits: "4755")`)
	}
	mode, err := provider.NormalizeMode(fs.FileMode(n))
	if err != nil {
		return err
	}
	m.mode, m.set = mode, true
	return nil
}

// formatMode renders a mode the way the contract shows it ("0644").
var formatMode = provider.FormatMode

// queryBool parses an optional boolean query parameter.
func queryBool(r *http.Request, name string) (bool, error) {
	s := r.URL.Query().Get(name)
	if s == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(s)
	if err != nil {
		return false, errdefs.New(errdefs.ErrInvalidArgument, "query parameter %s must be true or false, not %q", name, s)
	}
	return b, nil
}
