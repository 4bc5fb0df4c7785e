package config

import (
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
)

// EnvPrefix starts every configuration environment variable.
const EnvPrefix = "STACYVM_"

// field is one setting, found by reflection over Config's yaml tags.
type field struct {
	section, name string // yaml tags
	key           string // "section.name"
	env           string // STACYVM_SECTION_NAME
	index         []int  // into Config
	secret        bool
}

var durationType = reflect.TypeFor[time.Duration]()

// fields lists every setting in declaration order. A field of a type the
// parser cannot handle is a programming error, caught by the first call
// (and so by this package's tests).
var fields = sync.OnceValue(func() []field {
	var out []field
	ct := reflect.TypeFor[Config]()
	for i := range ct.NumField() {
		sf := ct.Field(i)
		if sf.Tag.Get("config") == "list" {
			continue // a list of items, read from the file only (decodeFile)
		}
		section := yamlName(sf)
		if sf.Type.Kind() != reflect.Struct || section == "" || strings.Contains(section, "_") {
			// Sections may not hold '_': STACYVM_<SECTION>_<KEY> splits at the first one.
			panic(fmt.Sprintf("config: Config.%s must be a struct with a yaml tag free of '_'", sf.Name))
		}
		for j := range sf.Type.NumField() {
			kf := sf.Type.Field(j)
			name := yamlName(kf)
			if name == "" {
				panic(fmt.Sprintf("config: %s.%s has no yaml tag", sf.Type.Name(), kf.Name))
			}
			if !parseable(kf.Type) {
				panic(fmt.Sprintf("config: %s.%s has type %s, which config cannot parse", sf.Type.Name(), kf.Name, kf.Type))
			}
			secret := kf.Tag.Get("secret") == "true"
			if secret && kf.Type.Kind() != reflect.String {
				panic(fmt.Sprintf("config: secret %s.%s must be a string", sf.Type.Name(), kf.Name))
			}
			out = append(out, field{
				section: section,
				name:    name,
				key:     section + "." + name,
				env:     EnvPrefix + strings.ToUpper(section+"_"+name),
				index:   []int{i, j},
				secret:  secret,
			})
		}
	}
	return out
})

func yamlName(sf reflect.StructField) string {
	name, _, _ := strings.Cut(sf.Tag.Get("yaml"), ",")
	if name == "-" {
		return ""
	}
	return name
}

func parseable(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.String, reflect.Bool, reflect.Int, reflect.Int64:
		return true
	case reflect.Slice:
		return t.Elem().Kind() == reflect.String
	}
	return false
}

func lookup(key string) (field, bool) {
	i := slices.IndexFunc(fields(), func(f field) bool { return f.key == key })
	if i < 0 {
		return field{}, false
	}
	return fields()[i], true
}

func lookupEnv(name string) (field, bool) {
	i := slices.IndexFunc(fields(), func(f field) bool { return f.env == name })
	if i < 0 {
		return field{}, false
	}
	return fields()[i], true
}

// Keys returns every setting's key ("server.listen", ...) in declaration
// order.
func Keys() []string {
	out := make([]string, 0, len(fields()))
	for _, f := range fields() {
		out = append(out, f.key)
	}
	return out
}

// EnvName returns the environment variable that sets key, or "" when key is
// unknown.
func EnvName(key string) string {
	f, _ := lookup(key)
	return f.env
}

// FieldError is a problem with one setting. It is classified
// errdefs.ErrInvalidArgument.
type FieldError struct {
	Key string // "section.key"
	Msg string
}

func (e *FieldError) Error() string { return e.Key + ": " + e.Msg }
func (e *FieldError) Unwrap() error { return errdefs.ErrInvalidArgument }

func fieldErr(key, format string, args ...any) *FieldError {
	return &FieldError{Key: key, Msg: fmt.Sprintf(format, args...)}
}

func unknownKey(key string) *FieldError {
	section, _, _ := strings.Cut(key, ".")
	var known []string
	for _, f := range fields() {
		if f.section == section {
			known = append(known, f.key)
		}
	}
	if len(known) == 0 {
		return fieldErr(key, "unknown key (sections: %s)", strings.Join(sections(), ", "))
	}
	return fieldErr(key, "unknown key (%s has %s)", section, strings.Join(known, ", "))
}

// listSection is the one top-level key that holds a list, not settings.
const listSection = "pools"

func sections() []string {
	out := []string{listSection}
	for _, f := range fields() {
		if !slices.Contains(out, f.section) {
			out = append(out, f.section)
		}
	}
	return out
}

// Set parses value into the setting key ("server.listen"), the way an
// environment variable is parsed: durations as Go durations ("90s"),
// booleans as strconv.ParseBool does, lists comma separated (empty items
// dropped). It does not validate the result against other settings; see
// Validate.
func (c *Config) Set(key, value string) error {
	f, ok := lookup(key)
	if !ok {
		return unknownKey(key)
	}
	return parseInto(reflect.ValueOf(c).Elem().FieldByIndex(f.index), key, value)
}

// Get returns the setting key formatted as Set parses it (secrets in clear).
func (c *Config) Get(key string) (string, error) {
	f, ok := lookup(key)
	if !ok {
		return "", unknownKey(key)
	}
	return format(reflect.ValueOf(c).Elem().FieldByIndex(f.index)), nil
}

func parseInto(v reflect.Value, key, s string) error {
	if v.Type() == durationType {
		d, err := time.ParseDuration(strings.TrimSpace(s))
		if err != nil {
			return fieldErr(key, "%q is not a duration (examples: 90s, 30m, 1h30m)", s)
		}
		v.SetInt(int64(d))
		return nil
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(s)
	case reflect.Bool:
		b, err := strconv.ParseBool(strings.TrimSpace(s))
		if err != nil {
			return fieldErr(key, "%q is not a boolean (true or false)", s)
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int64:
		n, err := strconv.ParseInt(strings.TrimSpace(s), 10, v.Type().Bits())
		if err != nil {
			return fieldErr(key, "%q is not an integer", s)
		}
		v.SetInt(n)
	case reflect.Slice:
		list := []string{}
		for item := range strings.SplitSeq(s, ",") {
			if item = strings.TrimSpace(item); item != "" {
				list = append(list, item)
			}
		}
		v.Set(reflect.ValueOf(list))
	default:
		panic("config: unparseable field " + key) // excluded by fields()
	}
	return nil
}

func format(v reflect.Value) string {
	if v.Type() == durationType {
		return time.Duration(v.Int()).String()
	}
	switch v.Kind() {
	case reflect.String:
		return v.String()
	case reflect.Bool:
		return strconv.FormatBool(v.Bool())
	case reflect.Int, reflect.Int64:
		return strconv.FormatInt(v.Int(), 10)
	case reflect.Slice:
		return strings.Join(v.Interface().([]string), ",")
	}
	panic("config: unformattable field of type " + v.Type().String())
}

// Redacted returns a copy of c whose non-empty secrets read "***".
func (c *Config) Redacted() *Config {
	out := *c
	rv := reflect.ValueOf(&out).Elem()
	for _, f := range fields() {
		v := rv.FieldByIndex(f.index)
		if v.Kind() == reflect.Slice && !v.IsNil() {
			v.Set(reflect.ValueOf(slices.Clone(v.Interface().([]string))))
		}
		if f.secret && v.String() != "" {
			v.SetString("***")
		}
	}
	return &out
}
