// Package envspec checks environment specs and turns them into build
// recipes: the rules apt and pip accept for package names and versions,
// image reference syntax, and the reproducible build context (Dockerfile
// plus package lists) whose hash names the image.
//
// Validation is the first defence against hostile input; the second is
// that package lists reach the build as files read by the build's own
// script, never as text spliced into a Dockerfile or a shell command line.
package envspec

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/distribution/reference"

	"github.com/stacyvm/stacyvm/internal/errdefs"
)

// Limits on a spec's size: generous for real environments, small enough
// that one spec cannot make a huge build context or database row.
const (
	MaxPackages      = 200
	MaxPackageLength = 200
	MaxNameLength    = 128
)

// Spec is an environment spec as a client sends it.
type Spec struct {
	OwnerID        string
	Name           string
	BaseImage      string
	PythonPackages []string
	AptPackages    []string
	PythonVersion  string
}

var (
	specName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._-]*$`)
	// Debian Policy 5.6.1: lower case letters, digits, + - . ; at least
	// two characters, starting with an alphanumeric.
	aptName = regexp.MustCompile(`^[a-z0-9][a-z0-9+.-]+$`)
	// Debian Policy 5.6.12 parts: epoch digits; upstream starts with a
	// digit; revision alphanumerics and + . ~.
	aptEpoch    = regexp.MustCompile(`^[0-9]+$`)
	aptRevision = regexp.MustCompile(`^[A-Za-z0-9+.~]+$`)
	// PEP 508 names.
	pipName  = regexp.MustCompile(`^([A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9._-]*[A-Za-z0-9])$`)
	pipExtra = pipName
	// PEP 440 versions, in the permissive form pip normalises (a release
	// of dot-separated numbers, optional epoch, pre, post and dev parts
	// with their alternative spellings, and a local label).
	pipVersion = regexp.MustCompile(`(?i)^v?([0-9]+!)?[0-9]+(\.[0-9]+)*` +
		`([-_.]?(a|b|c|rc|alpha|beta|pre|preview)[-_.]?[0-9]*)?` +
		`((-[0-9]+)|([-_.]?(post|rev|r)[-_.]?[0-9]*))?` +
		`([-_.]?dev[-_.]?[0-9]*)?` +
		`(\+[a-z0-9]+([-_.][a-z0-9]+)*)?$`)
	pythonVersion  = regexp.MustCompile(`^3(\.[0-9]{1,2})?$`)
	nameSeparators = regexp.MustCompile(`[-_.]+`)
)

func invalid(hint, format string, args ...any) error {
	err := errdefs.New(errdefs.ErrInvalidArgument, format, args...)
	if hint != "" {
		err = errdefs.WithHint(err, hint)
	}
	return err
}

// Validate checks every field of s and returns the first problem as an
// errdefs.ErrInvalidArgument error naming the field.
func Validate(s Spec) error {
	switch {
	case strings.TrimSpace(s.OwnerID) == "":
		return invalid("send owner_id in the body or the X-User-ID header", "owner_id is required")
	case len(s.OwnerID) > MaxNameLength || strings.ContainsFunc(s.OwnerID, isControl):
		return invalid("", "owner_id must be at most %d printable characters", MaxNameLength)
	case s.Name == "":
		return invalid("", "name is required")
	case len(s.Name) > MaxNameLength || !specName.MatchString(s.Name):
		return invalid("", "name %q must start with a letter or digit and hold only letters, digits, '.', '_' and '-' (at most %d)", s.Name, MaxNameLength)
	}
	if err := ValidateImage(s.BaseImage); err != nil {
		return err
	}
	if s.PythonVersion != "" && !pythonVersion.MatchString(s.PythonVersion) {
		return invalid("the base image's python3 must match it; name a base image that has that Python",
			"python_version %q must be \"3\" or \"3.N\"", s.PythonVersion)
	}
	if len(s.AptPackages) > MaxPackages {
		return invalid("", "apt_packages has %d entries; at most %d", len(s.AptPackages), MaxPackages)
	}
	if len(s.PythonPackages) > MaxPackages {
		return invalid("", "python_packages has %d entries; at most %d", len(s.PythonPackages), MaxPackages)
	}
	seen := map[string]bool{}
	for i, p := range s.AptPackages {
		name, err := ParseAptPackage(p)
		if err != nil {
			return fmt.Errorf("apt_packages[%d]: %w", i, err)
		}
		if seen[name] {
			return invalid("", "apt_packages[%d]: package %q is listed twice", i, name)
		}
		seen[name] = true
	}
	seen = map[string]bool{}
	for i, p := range s.PythonPackages {
		req, err := ParseRequirement(p)
		if err != nil {
			return fmt.Errorf("python_packages[%d]: %w", i, err)
		}
		if seen[req.Name] {
			return invalid("", "python_packages[%d]: package %q is listed twice", i, req.Name)
		}
		seen[req.Name] = true
	}
	return nil
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

// ValidateImage checks a base image reference (name[:tag][@digest], as
// Docker parses it).
func ValidateImage(ref string) error {
	if ref == "" {
		return invalid("", "base_image is required")
	}
	if len(ref) > 255 {
		return invalid("", "base_image is longer than 255 characters")
	}
	if _, err := reference.ParseNormalizedNamed(ref); err != nil {
		return invalid("write it as Docker does: [registry/]name[:tag][@sha256:digest], lower case",
			"base_image %q is not a valid image reference: %v", ref, err)
	}
	return nil
}

// NormalizeImage returns ref in its canonical full form
// (docker.io/library/debian:latest), so that spellings of one image hash
// alike.
func NormalizeImage(ref string) (string, error) {
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return "", invalid("", "base_image %q is not a valid image reference: %v", ref, err)
	}
	return reference.TagNameOnly(named).String(), nil
}

// ParseAptPackage checks "name" or "name=version" by Debian Policy and
// returns the name.
func ParseAptPackage(s string) (string, error) {
	if len(s) > MaxPackageLength {
		return "", invalid("", "apt package %.40q… is longer than %d characters", s, MaxPackageLength)
	}
	name, version, pinned := strings.Cut(s, "=")
	if !aptName.MatchString(name) {
		return "", invalid("Debian package names are lower case letters, digits, '+', '-' and '.', at least two characters, starting with a letter or digit; pin a version as name=version",
			"apt package %q is not a valid Debian package name", name)
	}
	if pinned {
		if err := checkDebianVersion(version); err != nil {
			return "", invalid("Debian versions look like [epoch:]upstream[-revision], e.g. 1.6-2.1 or 7:5.1.4-0+deb12u1",
				"apt package %q: version %q is not a valid Debian version: %v", name, version, err)
		}
	}
	return name, nil
}

func checkDebianVersion(v string) error {
	if v == "" {
		return fmt.Errorf("empty")
	}
	upstream := v
	hasEpoch := false
	if e, rest, ok := strings.Cut(v, ":"); ok {
		if !aptEpoch.MatchString(e) {
			return fmt.Errorf("epoch %q is not a number", e)
		}
		upstream, hasEpoch = rest, true
	}
	hasRevision := false
	if i := strings.LastIndexByte(upstream, '-'); i >= 0 {
		if !aptRevision.MatchString(upstream[i+1:]) {
			return fmt.Errorf("revision %q holds characters other than letters, digits, '+', '.' and '~'", upstream[i+1:])
		}
		upstream, hasRevision = upstream[:i], true
	}
	if upstream == "" || upstream[0] < '0' || upstream[0] > '9' {
		return fmt.Errorf("the upstream version must start with a digit")
	}
	for _, r := range upstream {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', strings.ContainsRune(".+~", r):
		case r == '-' && hasRevision, r == ':' && hasEpoch:
		default:
			return fmt.Errorf("the upstream version holds %q", r)
		}
	}
	return nil
}

// Requirement is one parsed pip requirement.
type Requirement struct {
	// Name is the PEP 503 normalised name (lower case, runs of -_. as -).
	Name      string
	Extras    []string
	Specifier []VersionClause
}

// VersionClause is one comparison of a specifier, such as ">=1.2".
type VersionClause struct {
	Op      string
	Version string
}

// String is the requirement in the canonical form written to
// requirements.txt: name[extras]op1v1,op2v2.
func (r Requirement) String() string {
	var b strings.Builder
	b.WriteString(r.Name)
	if len(r.Extras) > 0 {
		b.WriteString("[" + strings.Join(r.Extras, ",") + "]")
	}
	for i, c := range r.Specifier {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(c.Op + c.Version)
	}
	return b.String()
}

var pipOps = []string{"===", "~=", "==", "!=", "<=", ">=", "<", ">"}

// NormalizeName is PEP 503's name normalisation.
func NormalizeName(name string) string {
	return strings.ToLower(nameSeparators.ReplaceAllString(name, "-"))
}

// ParseRequirement parses the subset of PEP 508 a spec may use: a name,
// optional [extras], and an optional comma-separated version specifier
// (==, !=, <=, >=, <, >, ~=, ===; == and != may end in .*). URLs,
// environment markers and options are refused: a requirement names a
// package on the configured index and nothing else.
func ParseRequirement(s string) (Requirement, error) {
	const hint = "write name, name[extra], or name with versions such as 'requests==2.31.0' or 'numpy>=1.26,<2'"
	if len(s) > MaxPackageLength {
		return Requirement{}, invalid(hint, "python package %.40q… is longer than %d characters", s, MaxPackageLength)
	}
	if strings.ContainsAny(s, "@;") || strings.HasPrefix(strings.TrimSpace(s), "-") {
		return Requirement{}, invalid(hint+"; URLs, markers and pip options are not accepted",
			"python package %q is not a plain requirement", s)
	}
	rest := strings.TrimSpace(s)
	end := strings.IndexFunc(rest, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-')
	})
	if end < 0 {
		end = len(rest)
	}
	name := rest[:end]
	if !pipName.MatchString(name) {
		return Requirement{}, invalid(hint, "python package %q: %q is not a valid package name", s, name)
	}
	req := Requirement{Name: NormalizeName(name)}
	rest = strings.TrimSpace(rest[end:])
	if strings.HasPrefix(rest, "[") {
		closeAt := strings.IndexByte(rest, ']')
		if closeAt < 0 {
			return Requirement{}, invalid(hint, "python package %q: unclosed [extras]", s)
		}
		for e := range strings.SplitSeq(rest[1:closeAt], ",") {
			e = strings.TrimSpace(e)
			if !pipExtra.MatchString(e) {
				return Requirement{}, invalid(hint, "python package %q: extra %q is not a valid name", s, e)
			}
			req.Extras = append(req.Extras, NormalizeName(e))
		}
		rest = strings.TrimSpace(rest[closeAt+1:])
	}
	if rest == "" {
		return req, nil
	}
	for clause := range strings.SplitSeq(rest, ",") {
		clause = strings.TrimSpace(clause)
		op := ""
		for _, o := range pipOps {
			if strings.HasPrefix(clause, o) {
				op = o
				break
			}
		}
		if op == "" {
			return Requirement{}, invalid(hint, "python package %q: %q does not start with a comparison (==, !=, <=, >=, <, >, ~=)", s, clause)
		}
		v := strings.TrimSpace(clause[len(op):])
		if err := checkPipVersion(op, v); err != nil {
			return Requirement{}, invalid(hint, "python package %q: %v", s, err)
		}
		req.Specifier = append(req.Specifier, VersionClause{Op: op, Version: v})
	}
	return req, nil
}

func checkPipVersion(op, v string) error {
	switch {
	case op == "===":
		// Arbitrary equality compares strings, but they still must not
		// carry anything a requirements file would read as syntax.
		if v == "" || strings.ContainsFunc(v, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune(".+-_!", r))
		}) {
			return fmt.Errorf("version %q is not valid", v)
		}
		return nil
	case (op == "==" || op == "!=") && strings.HasSuffix(v, ".*"):
		v = strings.TrimSuffix(v, ".*")
		if strings.Contains(v, "+") {
			return fmt.Errorf("a prefix match (.*) cannot have a local version: %q", v)
		}
	case strings.Contains(v, "+") && op != "==" && op != "!=":
		return fmt.Errorf("a local version (+label) is only allowed with == and !=: %q", v)
	}
	if !pipVersion.MatchString(v) {
		return fmt.Errorf("version %q is not a PEP 440 version", v)
	}
	release := v
	if _, after, ok := strings.Cut(v, "!"); ok {
		release = after
	}
	if op == "~=" && !strings.Contains(release, ".") {
		return fmt.Errorf("~= needs at least two release segments, as in ~=1.4, not %q", v)
	}
	return nil
}
