package provider

import (
	"fmt"
	"io/fs"
	"strconv"
	"strings"

	"github.com/stacyvm/stacyvm/internal/errdefs"
)

// The set-user-ID, set-group-ID and sticky bits as chmod(2) numbers them.
// Callers write modes the Unix way ("4755" parsed as octal), while Go keeps
// these bits elsewhere in an fs.FileMode (fs.ModeSetuid…), so both spellings
// reach providers.
const (
	unixSetuid fs.FileMode = 0o4000
	unixSetgid fs.FileMode = 0o2000
	unixSticky fs.FileMode = 0o1000
)

// goSpecial are Go's own spellings of the same three bits.
const goSpecial = fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky

// NormalizeMode is the one rule for a mode given to WriteFile or Chmod. It
// accepts permission bits (0777), the set-ID and sticky bits either as Unix
// bits (04000, 02000, 01000) or as fs.ModeSetuid, fs.ModeSetgid and
// fs.ModeSticky, and returns the mode in Go's form: permission bits plus
// Go's special bits, with no Unix special bits left. Anything else, a file
// type bit or a value above 07777, is errdefs.ErrInvalidArgument, so no bit
// is ever dropped silently.
func NormalizeMode(m fs.FileMode) (fs.FileMode, error) {
	if m&^(fs.ModePerm|unixSetuid|unixSetgid|unixSticky|goSpecial) != 0 {
		return 0, errdefs.New(errdefs.ErrInvalidArgument,
			"mode %#o is not a file mode: want permission bits with optional setuid, setgid and sticky bits (0 to 07777)", uint32(m))
	}
	out := m & (fs.ModePerm | goSpecial)
	if m&unixSetuid != 0 {
		out |= fs.ModeSetuid
	}
	if m&unixSetgid != 0 {
		out |= fs.ModeSetgid
	}
	if m&unixSticky != 0 {
		out |= fs.ModeSticky
	}
	return out, nil
}

// FormatMode renders a mode's permission, set-ID and sticky bits as the
// four-digit Unix octal string the API and the wire protocols use ("0644",
// "4755"). Type bits are not rendered: they travel apart (is_dir…).
func FormatMode(m fs.FileMode) string {
	u := uint32(m.Perm())
	if m&(fs.ModeSetuid|unixSetuid) != 0 {
		u |= 0o4000
	}
	if m&(fs.ModeSetgid|unixSetgid) != 0 {
		u |= 0o2000
	}
	if m&(fs.ModeSticky|unixSticky) != 0 {
		u |= 0o1000
	}
	return fmt.Sprintf("%04o", u)
}

// ParseMode parses a Unix octal mode ("644", "0644", "0o755", "4755") into
// Go's form (see NormalizeMode). Anything that is not octal, or is beyond
// 07777, is errdefs.ErrInvalidArgument.
func ParseMode(s string) (fs.FileMode, error) {
	t := strings.TrimPrefix(strings.TrimPrefix(s, "0o"), "0O")
	u, err := strconv.ParseUint(t, 8, 32)
	if err != nil || t == "" || u > 0o7777 {
		return 0, errdefs.WithHint(errdefs.New(errdefs.ErrInvalidArgument, "mode %q is not an octal file mode between 0 and 7777", s),
			`write the mode in octal, such as "0644" or "0755"`)
	}
	return NormalizeMode(fs.FileMode(u))
}

// fileTypes maps fs.FileMode type bits to the type names the wire
// protocols use. Order matters: a character device has both ModeDevice and
// ModeCharDevice.
var fileTypes = []struct {
	bits fs.FileMode
	name string
}{
	{fs.ModeDir, "dir"},
	{fs.ModeSymlink, "symlink"},
	{fs.ModeNamedPipe, "pipe"},
	{fs.ModeSocket, "socket"},
	{fs.ModeDevice | fs.ModeCharDevice, "char_device"},
	{fs.ModeDevice, "device"},
	{fs.ModeIrregular, "irregular"},
}

// FileTypeName names m's file type as the wire protocols do: file, dir,
// symlink, pipe, socket, device, char_device or irregular. Modes travel as
// permission string plus type name so that a non-Go peer never needs Go's
// fs.FileMode bit layout.
func FileTypeName(m fs.FileMode) string {
	for _, t := range fileTypes {
		if m&t.bits == t.bits {
			return t.name
		}
	}
	return "file"
}

// FileTypeBits is FileTypeName's inverse. A name this build does not know
// (a newer peer's) is fs.ModeIrregular: the file exists but is not regular.
func FileTypeBits(name string) fs.FileMode {
	if name == "file" {
		return 0
	}
	for _, t := range fileTypes {
		if t.name == name {
			return t.bits
		}
	}
	return fs.ModeIrregular
}
