//go:build linux

package firecracker

import (
	"errors"
	"io/fs"
	"slices"
	"strings"
	"testing"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/provider"
)

func execOut(t *testing.T, p *Provider, id string, req provider.ExecRequest) string {
	t.Helper()
	var out, errOut strings.Builder
	st, err := p.Exec(t.Context(), id, req, &out, &errOut)
	if err != nil || st.ExitCode != 0 {
		t.Fatalf("Exec %q: %+v, %v, %s", req.Argv, st, err, errOut.String())
	}
	return out.String()
}

// TestGuestIsSetUpByItsInit: the agent, started as the guest's init
// (chrooted by the fake VMM into a root with no /proc, in its own mount and
// network namespaces), mounts the kernel's file systems and brings up lo
// before it serves; commands start from the default environment plus the
// sandbox's.
func TestGuestIsSetUpByItsInit(t *testing.T) {
	p, _ := newFake(t, shortDir(t))
	id := spawnT(t, p, provider.Spec{Env: map[string]string{"FROM_SPEC": "yes"}})

	mounts := map[string]string{}
	for _, l := range strings.Split(execOut(t, p, id, provider.ExecRequest{Argv: []string{"cat", "/proc/self/mounts"}}), "\n") {
		if f := strings.Fields(l); len(f) > 2 {
			mounts[f[1]] = f[2]
		}
	}
	for dir, fstype := range map[string]string{"/proc": "proc", "/sys": "sysfs", "/dev/pts": "devpts", "/dev/shm": "tmpfs"} {
		if mounts[dir] != fstype {
			t.Errorf("%s in the guest: %q mounted, want %s (mounts: %v)", dir, mounts[dir], fstype, mounts)
		}
	}
	if got := execOut(t, p, id, provider.ExecRequest{Argv: []string{"cat", "/sys/class/net/lo/flags"}}); got != "0x9\n" {
		t.Errorf("lo flags in the guest %q, want 0x9 (up, loopback)", got)
	}
	env := strings.Split(strings.TrimSpace(execOut(t, p, id, provider.ExecRequest{Argv: []string{"env"}})), "\n")
	for _, want := range []string{"FROM_SPEC=yes", "HOME=/root", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"} {
		if !slices.Contains(env, want) {
			t.Errorf("guest command environment %q lacks %s", env, want)
		}
	}
	for _, kv := range env {
		if strings.HasPrefix(kv, "STACYVM_AGENT_") || strings.HasPrefix(kv, "TERM=") {
			t.Errorf("guest command environment has %s, which the agent should keep to itself", kv)
		}
	}
}

// TestModes: both spellings of the set-ID bits reach the guest, and what
// no mode string can carry is refused.
func TestModes(t *testing.T) {
	p, _ := newFake(t, shortDir(t))
	id := spawnT(t, p, provider.Spec{})
	const f = "/workspace/tool"
	if err := p.WriteFile(t.Context(), id, f, strings.NewReader("#!/bin/sh\n"), 0o4755); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ mode, want fs.FileMode }{
		{0, fs.ModeSetuid | 0o755}, // as written
		{fs.ModeSetgid | 0o750, fs.ModeSetgid | 0o750},
		{0o1777, fs.ModeSticky | 0o777},
	} {
		if tt.mode != 0 {
			if err := p.Chmod(t.Context(), id, f, tt.mode); err != nil {
				t.Fatalf("Chmod(%#o): %v", uint32(tt.mode), err)
			}
		}
		fi, err := p.StatFile(t.Context(), id, f)
		if err != nil || fi.Mode != tt.want {
			t.Errorf("mode after %#o: %v, %v; want %v", uint32(tt.mode), fi.Mode, err, tt.want)
		}
	}
	if err := p.Chmod(t.Context(), id, f, 0o10000); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("Chmod(010000) = %v, want invalid argument", err)
	}
}
