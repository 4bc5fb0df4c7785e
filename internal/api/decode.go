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
	"unicode/utf8"

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
//
// Two things the decoder lets through are refused too: invalid UTF-8
// (which it would silently turn into U+FFFD, writing a file under a name
// nobody sent) and NUL bytes in any string but a file's content (no path,
// argument, environment entry or name can hold one; a store or runtime
// would cut it short or fail on it).
func decodeJSON(r io.Reader, v any, optional bool) error {
	dec := json.NewDecoder(&utf8Reader{r: r})
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		err = noNUL(reflect.ValueOf(v), "")
	}
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

// utf8Reader passes bytes through and fails once they stop being valid
// UTF-8, including a rune cut short at the end.
type utf8Reader struct {
	r    io.Reader
	tail []byte // the start of a rune that the last read split
	off  int64
}

func (u *utf8Reader) Read(p []byte) (int, error) {
	n, err := u.r.Read(p)
	chunk := p[:n]
	i := 0
	for len(u.tail) > 0 && i < len(chunk) {
		u.tail = append(u.tail, chunk[i])
		i++
		if utf8.FullRune(u.tail) {
			if !utf8.Valid(u.tail) {
				return 0, u.invalid()
			}
			u.tail = u.tail[:0]
		}
	}
	rest := chunk[i:]
	cut := completeUTF8(rest)
	if !utf8.Valid(rest[:cut]) {
		return 0, u.invalid()
	}
	u.tail = append(u.tail, rest[cut:]...)
	u.off += int64(n)
	if errors.Is(err, io.EOF) && len(u.tail) > 0 {
		return 0, u.invalid()
	}
	return n, err
}

func (u *utf8Reader) invalid() error {
	return errdefs.New(errdefs.ErrInvalidArgument, "the request body is not valid UTF-8 (near byte %d)", u.off)
}

// noNUL refuses a NUL byte in any string reachable from v, map keys
// included, except in a file's content; field names the offender.
func noNUL(v reflect.Value, field string) error {
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			return nil
		}
		return noNUL(v.Elem(), field)
	case reflect.String:
		if strings.IndexByte(v.String(), 0) >= 0 {
			return errdefs.New(errdefs.ErrInvalidArgument, "field %q holds a NUL byte", field)
		}
	case reflect.Struct:
		t := v.Type()
		for i := range t.NumField() {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "" {
				name = f.Name
			}
			if name == "content" {
				continue // file content is bytes: anything goes
			}
			if err := noNUL(v.Field(i), name); err != nil {
				return err
			}
		}
	case reflect.Slice, reflect.Array:
		for i := range v.Len() {
			if err := noNUL(v.Index(i), field); err != nil {
				return err
			}
		}
	case reflect.Map:
		for it := v.MapRange(); it.Next(); {
			if err := noNUL(it.Key(), field); err != nil {
				return err
			}
			if err := noNUL(it.Value(), field); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkQuery refuses query parameters that are not valid UTF-8 or hold a
// NUL byte: they name paths, patterns and filters, and none can.
func checkQuery(r *http.Request) error {
	for name, vs := range r.URL.Query() {
		for _, v := range vs {
			if !utf8.ValidString(v) || strings.IndexByte(v, 0) >= 0 {
				return errdefs.New(errdefs.ErrInvalidArgument, "query parameter %s is not valid UTF-8 or holds a NUL byte", strconv.Quote(name))
			}
		}
	}
	return nil
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
