package orchestrator

import (
	"context"
	"errors"
	"io/fs"
	"strings"
	"testing"

	"github.com/stacyvm/stacyvm/internal/errdefs"
)

// TestModesFollowNormalizeMode: the manager admits exactly the modes
// provider.NormalizeMode does, so the API can set setuid, setgid and
// sticky bits.
func TestModesFollowNormalizeMode(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	sb := e.spawn(t, SpawnRequest{})
	for _, m := range []fs.FileMode{0, 0o644, 0o4755, 0o2750, 0o1777, 0o7777, fs.ModeSetuid | 0o755, fs.ModeSticky | 0o777} {
		// The fake provider has no Chmod: reaching it is passing.
		if err := e.m.Chmod(ctx, sb.ID, "/a", m); !errors.Is(err, errdefs.ErrUnimplemented) {
			t.Errorf("Chmod(%#o) = %v, want the fake provider's unimplemented", uint32(m), err)
		}
		if err := e.m.WriteFile(ctx, sb.ID, "/a", strings.NewReader("x"), m); err != nil {
			t.Errorf("WriteFile(%#o): %v", uint32(m), err)
		}
	}
	for _, m := range []fs.FileMode{0o10000, fs.ModeDir | 0o755, fs.ModeSymlink, fs.ModeAppend | 0o644} {
		if err := e.m.Chmod(ctx, sb.ID, "/a", m); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("Chmod(%#o) = %v, want invalid argument", uint32(m), err)
		}
		if err := e.m.WriteFile(ctx, sb.ID, "/a", strings.NewReader("x"), m); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("WriteFile(%#o) = %v, want invalid argument", uint32(m), err)
		}
	}
}
