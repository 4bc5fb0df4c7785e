package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/stacyvm/stacyvm/internal/errdefs"
)

// File names searched when LoadOptions.File is empty, in order: the first
// that exists is read, the others are not.
const (
	LocalFile = "stacyvm.yaml"         // in the working directory
	UserFile  = ".stacyvm/config.yaml" // in the home directory
)

// ClientEnv names environment variables the CLI reads for itself (the server
// URL and API key to talk to); Load does not warn about them.
var ClientEnv = []string{"STACYVM_SERVER", "STACYVM_API_KEY"}

// LoadOptions says where Load looks. The zero value reads the process's
// environment and the default file locations.
type LoadOptions struct {
	// File is an explicit configuration file (the --config flag). It must
	// exist, and the default locations are then not consulted.
	File string
	// WorkDir and HomeDir locate ./stacyvm.yaml and ~/.stacyvm/config.yaml;
	// "" means the process's working and home directories.
	WorkDir, HomeDir string
	// Env holds "NAME=value" entries; nil means os.Environ().
	Env []string
	// Overrides are applied last, as Config.Set does: key "server.listen",
	// value "0.0.0.0:7423". The CLI passes the flags it was given here.
	Overrides map[string]string
}

// SourceKind says which layer a setting's value came from.
type SourceKind int

// The layers, lowest precedence first.
const (
	FromDefault SourceKind = iota
	FromFile
	FromEnv
	FromOverride
)

// Source is where a setting's value came from.
type Source struct {
	Kind SourceKind
	Name string // the file's path or the environment variable's name
}

func (s Source) String() string {
	switch s.Kind {
	case FromFile:
		return "file " + s.Name
	case FromEnv:
		return "env " + s.Name
	case FromOverride:
		return "override"
	}
	return "default"
}

// Info describes what Load read.
type Info struct {
	// File is the configuration file read, "" when there was none.
	File string
	// Sources holds, by key, the source of every setting not left at its
	// default.
	Sources map[string]Source
	// Warnings are problems that do not stop the server: unknown STACYVM_*
	// variables, an API open to the network without a key.
	Warnings []string
}

// Source returns where key's value came from.
func (i *Info) Source(key string) Source {
	if i == nil {
		return Source{}
	}
	return i.Sources[key]
}

// Load builds the configuration from defaults, the first configuration
// file found, the environment and opts.Overrides, in that order, and
// validates it. Every error is classified errdefs.ErrInvalidArgument and
// names the setting, file or variable at fault.
func Load(opts LoadOptions) (*Config, *Info, error) {
	cfg := Default()
	info := &Info{Sources: map[string]Source{}}

	file, err := findFile(opts)
	if err != nil {
		return nil, nil, err
	}
	if file != "" {
		keys, err := readFile(file, cfg)
		if err != nil {
			return nil, nil, err
		}
		info.File = file
		for _, k := range keys {
			info.Sources[k] = Source{FromFile, file}
		}
	}

	env := opts.Env
	if env == nil {
		env = os.Environ()
	}
	var errs []error
	warnings, err := applyEnv(cfg, env, info.Sources)
	errs = append(errs, err)
	info.Warnings = append(info.Warnings, warnings...)
	for _, key := range slices.Sorted(maps.Keys(opts.Overrides)) {
		if err := cfg.Set(key, opts.Overrides[key]); err != nil {
			errs = append(errs, err)
			continue
		}
		info.Sources[key] = Source{Kind: FromOverride}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, nil, err
	}

	if err := cfg.Validate(); err != nil {
		return nil, nil, err
	}
	if w := openAPIWarning(cfg.Server); w != "" {
		info.Warnings = append(info.Warnings, w)
	}
	return cfg, info, nil
}

func findFile(opts LoadOptions) (string, error) {
	if opts.File != "" {
		if err := checkFile(opts.File); err != nil {
			return "", errdefs.Wrap(errdefs.ErrInvalidArgument, err, "config file %s", opts.File)
		}
		return opts.File, nil
	}
	candidates := []string{filepath.Join(opts.WorkDir, LocalFile)}
	home := opts.HomeDir
	if home == "" {
		home, _ = os.UserHomeDir() // no home: no user file
	}
	if home != "" {
		candidates = append(candidates, filepath.Join(home, filepath.FromSlash(UserFile)))
	}
	for _, c := range candidates {
		err := checkFile(c)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return "", errdefs.Wrap(errdefs.ErrInvalidArgument, err, "config file %s", c)
		}
		return c, nil
	}
	return "", nil
}

func checkFile(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return errors.New("is a directory")
	}
	return nil
}

// readFile decodes the YAML file path into cfg and returns the keys it set.
// It walks the document rather than decoding it whole so that every problem
// is reported at once, each naming its line and key (and, for an unknown
// key, the keys that would be valid).
func readFile(path string, cfg *Config) ([]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, errdefs.Wrap(errdefs.ErrInvalidArgument, err, "config file %s", path)
	}
	keys, err := decodeFile(data, cfg)
	if err != nil {
		return nil, errdefs.Wrap(errdefs.ErrInvalidArgument, err, "config file %s", path)
	}
	return keys, nil
}

func decodeFile(data []byte, cfg *Config) ([]string, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
		return nil, nil // empty file
	} else if err != nil {
		return nil, err
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, errors.New("holds more than one YAML document")
	}

	root := doc.Content[0]
	if isNull(root) {
		return nil, nil
	}
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("line %d: want a mapping of sections (%s)", root.Line, strings.Join(sections(), ", "))
	}
	rv := reflect.ValueOf(cfg).Elem()
	var (
		keys []string
		errs []error
		seen = map[string]int{} // key or section → line
	)
	// A repeated key would silently win over its first value; yaml checks
	// that only when decoding a whole mapping, which this walk does not.
	repeated := func(key string, n *yaml.Node) bool {
		if first, ok := seen[key]; ok {
			errs = append(errs, fmt.Errorf("line %d: %s is already set at line %d", n.Line, key, first))
			return true
		}
		seen[key] = n.Line
		return false
	}
	for i := 0; i+1 < len(root.Content); i += 2 {
		sk, sv := root.Content[i], root.Content[i+1]
		if repeated(sk.Value, sk) {
			continue
		}
		if sk.Value == listSection {
			if err := decodePools(sv, &cfg.Pools); err != nil {
				errs = append(errs, err)
				continue
			}
			keys = append(keys, listSection)
			continue
		}
		if !slices.Contains(sections(), sk.Value) {
			errs = append(errs, fmt.Errorf("line %d: %w", sk.Line, unknownKey(sk.Value)))
			continue
		}
		if isNull(sv) {
			continue
		}
		if sv.Kind != yaml.MappingNode {
			errs = append(errs, fmt.Errorf("line %d: section %s must be a mapping of keys", sv.Line, sk.Value))
			continue
		}
		for j := 0; j+1 < len(sv.Content); j += 2 {
			kn, vn := sv.Content[j], sv.Content[j+1]
			key := sk.Value + "." + kn.Value
			if repeated(key, kn) {
				continue
			}
			f, ok := lookup(key)
			if !ok {
				errs = append(errs, fmt.Errorf("line %d: %w", kn.Line, unknownKey(key)))
				continue
			}
			dst := rv.FieldByIndex(f.index)
			if dst.Type() == durationType && (vn.Tag == "!!int" || vn.Tag == "!!float") {
				errs = append(errs, fmt.Errorf("line %d: %w", vn.Line, fieldErr(key, "%s has no unit; write a duration such as %ss or %sm", vn.Value, vn.Value, vn.Value)))
				continue
			}
			if err := vn.Decode(dst.Addr().Interface()); err != nil {
				errs = append(errs, fieldErr(key, "%s", yamlProblem(err))) // yaml names the line
				continue
			}
			keys = append(keys, key)
		}
	}
	return keys, errors.Join(errs...)
}

// decodePools reads the pools list, refusing keys a pool does not have
// (a typo would otherwise silently leave a setting at its default).
func decodePools(n *yaml.Node, out *[]PoolSpec) error {
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		return fmt.Errorf("line %d: pools must be a list of pools", n.Line)
	}
	var known []string
	pt := reflect.TypeFor[PoolSpec]()
	for i := range pt.NumField() {
		known = append(known, yamlName(pt.Field(i)))
	}
	var errs []error
	for i, item := range n.Content {
		key := fmt.Sprintf("pools[%d]", i)
		if item.Kind != yaml.MappingNode {
			errs = append(errs, fmt.Errorf("line %d: %w", item.Line, fieldErr(key, "must be a mapping of keys")))
			continue
		}
		ok := true
		for j := 0; j+1 < len(item.Content); j += 2 {
			kn, vn := item.Content[j], item.Content[j+1]
			if !slices.Contains(known, kn.Value) {
				errs = append(errs, fmt.Errorf("line %d: %w", kn.Line, fieldErr(key+"."+kn.Value, "unknown key (a pool has %s)", strings.Join(known, ", "))))
				ok = false
			}
			if kn.Value == "max_age" && (vn.Tag == "!!int" || vn.Tag == "!!float") {
				errs = append(errs, fmt.Errorf("line %d: %w", vn.Line, fieldErr(key+".max_age", "%s has no unit; write a duration such as %sm", vn.Value, vn.Value)))
				ok = false
			}
		}
		var spec PoolSpec
		if ok {
			if err := item.Decode(&spec); err != nil {
				errs = append(errs, fieldErr(key, "%s", yamlProblem(err)))
				continue
			}
			*out = append(*out, spec)
		}
	}
	return errors.Join(errs...)
}

// yamlProblem is err without yaml's "unmarshal errors" framing.
func yamlProblem(err error) string {
	if te, ok := errors.AsType[*yaml.TypeError](err); ok {
		return strings.Join(te.Errors, "; ")
	}
	return err.Error()
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

// applyEnv sets every STACYVM_<SECTION>_<KEY> variable of env into cfg,
// recording sources. Unknown STACYVM_ variables become warnings. An empty
// value counts as unset, as if the variable were absent: clearing a setting
// (an API key, say) by an empty variable is too easy to do by accident.
func applyEnv(cfg *Config, env []string, sources map[string]Source) (warnings []string, err error) {
	var errs []error
	vars := map[string]string{}
	for _, kv := range env {
		name, value, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, EnvPrefix) && !slices.Contains(ClientEnv, name) {
			vars[name] = value // later entries win, as in a shell
		}
	}
	for _, name := range slices.Sorted(maps.Keys(vars)) {
		f, ok := lookupEnv(name)
		if !ok {
			warnings = append(warnings, fmt.Sprintf("unknown environment variable %s ignored", name))
			continue
		}
		if vars[name] == "" {
			continue
		}
		if err := cfg.Set(f.key, vars[name]); err != nil {
			errs = append(errs, fmt.Errorf("environment variable %s: %w", name, err))
			continue
		}
		sources[f.key] = Source{FromEnv, name}
	}
	return warnings, errors.Join(errs...)
}

// openAPIWarning warns when the API listens beyond loopback with no key.
func openAPIWarning(s ServerConfig) string {
	if s.APIKey != "" {
		return ""
	}
	host, _, err := net.SplitHostPort(s.Listen)
	if err != nil {
		return ""
	}
	if host == "localhost" {
		return ""
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return ""
	}
	return fmt.Sprintf("server.listen %s accepts connections from other machines and server.api_key is empty: anyone who can reach it controls the sandboxes", s.Listen)
}

// Print writes c as YAML with secrets redacted. When info is given, each
// setting not at its default carries a comment naming its source.
func (c *Config) Print(w io.Writer, info *Info) error {
	var root yaml.Node
	if err := root.Encode(c.Redacted()); err != nil {
		return err
	}
	if info != nil && root.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(root.Content); i += 2 {
			section, body := root.Content[i].Value, root.Content[i+1]
			for j := 0; j+1 < len(body.Content); j += 2 {
				if src := info.Source(section + "." + body.Content[j].Value); src.Kind != FromDefault {
					body.Content[j+1].LineComment = src.String()
				}
			}
		}
	}
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(&root); err != nil {
		return err
	}
	return enc.Close()
}
