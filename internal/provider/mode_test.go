package provider_test

import (
	"errors"
	"io/fs"
	"testing"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/provider"
)

func TestNormalizeMode(t *testing.T) {
	tests := []struct {
		in   fs.FileMode
		want fs.FileMode
	}{
		{0, 0},
		{0o644, 0o644},
		{0o777, 0o777},
		{0o4755, fs.ModeSetuid | 0o755},
		{0o2750, fs.ModeSetgid | 0o750},
		{0o1777, fs.ModeSticky | 0o777},
		{0o7000, fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky},
		{fs.ModeSetuid | 0o755, fs.ModeSetuid | 0o755},
		{fs.ModeSetgid | fs.ModeSticky | 0o700, fs.ModeSetgid | fs.ModeSticky | 0o700},
		// Both spellings of one bit at once are still that one bit.
		{fs.ModeSetuid | 0o4755, fs.ModeSetuid | 0o755},
	}
	for _, tt := range tests {
		got, err := provider.NormalizeMode(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("NormalizeMode(%#o) = %v (%#o), %v; want %v (%#o)", uint32(tt.in), got, uint32(got), err, tt.want, uint32(tt.want))
		}
		// Normalising is idempotent: a normalised mode is accepted as is.
		if again, err := provider.NormalizeMode(got); err != nil || again != got {
			t.Errorf("NormalizeMode(NormalizeMode(%#o)) = %v, %v", uint32(tt.in), again, err)
		}
	}
}

func TestNormalizeModeRejects(t *testing.T) {
	for _, m := range []fs.FileMode{
		0o10000,
		0o17777,
		fs.ModeDir | 0o755,
		fs.ModeSymlink,
		fs.ModeNamedPipe | 0o644,
		fs.ModeDevice,
		fs.ModeIrregular,
		fs.ModeAppend | 0o644,
		fs.ModeTemporary,
		1 << 15, // no meaning in either spelling
	} {
		got, err := provider.NormalizeMode(m)
		if !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("NormalizeMode(%#o) = %v, %v; want invalid argument", uint32(m), got, err)
		}
	}
}

func TestFileTypes(t *testing.T) {
	tests := []struct {
		mode fs.FileMode
		name string
	}{
		{0, "file"},
		{fs.ModeDir, "dir"},
		{fs.ModeSymlink, "symlink"},
		{fs.ModeNamedPipe, "pipe"},
		{fs.ModeSocket, "socket"},
		{fs.ModeDevice, "device"},
		{fs.ModeDevice | fs.ModeCharDevice, "char_device"},
		{fs.ModeIrregular, "irregular"},
	}
	for _, tt := range tests {
		// Permission and special bits do not change the type.
		if got := provider.FileTypeName(tt.mode | fs.ModeSetuid | 0o755); got != tt.name {
			t.Errorf("FileTypeName(%v) = %q, want %q", tt.mode, got, tt.name)
		}
		if got := provider.FileTypeBits(tt.name); got != tt.mode {
			t.Errorf("FileTypeBits(%q) = %v, want %v", tt.name, got, tt.mode)
		}
	}
	for _, unknown := range []string{"", "door", "DIR"} {
		if got := provider.FileTypeBits(unknown); got != fs.ModeIrregular {
			t.Errorf("FileTypeBits(%q) = %v, want irregular", unknown, got)
		}
	}
}
