package docker

import (
	"debug/elf"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/provider"
)

func TestConfigDefaults(t *testing.T) {
	c, err := Config{StateDir: "rel/dir"}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if c.Name != "docker" || c.Network != "none" || c.PidsLimit != 512 || c.MemoryMB != 1024 || c.VCPUs != 1 ||
		c.Pull != PullMissing || c.ReadyTimeout != 30*time.Second || c.TmpfsMB != 512 || c.Logger == nil {
		t.Errorf("defaults: %+v", c)
	}
	if !filepath.IsAbs(c.StateDir) || !strings.HasSuffix(c.StateDir, "rel/dir") {
		t.Errorf("state dir %q not made absolute", c.StateDir)
	}
}

func TestConfigInvalid(t *testing.T) {
	for name, c := range map[string]Config{
		"network host":      {Network: "host"},
		"network container": {Network: "container:abc"},
		"network junk":      {Network: "a b"},
		"named user":        {User: "nobody"},
		"user and group":    {User: "1000:staff"},
		"empty group":       {User: "1000:"},
		"negative tmpfs":    {TmpfsMB: -1},
		"negative memory":   {MemoryMB: -5},
		"negative vcpus":    {VCPUs: -1},
		"pull sometimes":    {Pull: "sometimes"},
		"reserved label":    {Labels: map[string]string{"stacyvm.sandbox-id": "x"}},
		"reserved prefix2":  {Labels: map[string]string{"stacyvm.anything": "x"}},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := c.withDefaults(); !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Errorf("withDefaults(%+v) = %v, want invalid argument", c, err)
			}
		})
	}
	for name, c := range map[string]Config{
		"test and foreign labels": {Labels: map[string]string{LabelTest: "1", "team": "x"}},
		"named network":           {Network: "my-net_1"},
		"uid and gid":             {User: "65534:65534"},
	} {
		if _, err := c.withDefaults(); err != nil {
			t.Errorf("%s rejected: %v", name, err)
		}
	}
}

func TestUIDGID(t *testing.T) {
	for user, want := range map[string][2]int{
		"": {-1, -1}, "0": {0, 0}, "1000": {1000, 1000}, "1000:50": {1000, 50},
	} {
		uid, gid := Config{User: user}.uidGID()
		if uid != want[0] || gid != want[1] {
			t.Errorf("uidGID(%q) = %d, %d; want %v", user, uid, gid, want)
		}
	}
	for user, want := range map[string]bool{"": false, "0": false, "0:100": false, "1000": true, "1000:0": true} {
		if got := (Config{User: user}).nonRoot(); got != want {
			t.Errorf("nonRoot(%q) = %v", user, got)
		}
	}
}

func TestCheckID(t *testing.T) {
	for _, id := range []string{"sb-0123456789abcdef", "a", "x.y_z-1"} {
		if err := checkID(id); err != nil {
			t.Errorf("checkID(%q): %v", id, err)
		}
	}
	for _, id := range []string{"", "../etc", "a/b", "-lead", ".hidden", "with space", strings.Repeat("a", 64)} {
		if err := checkID(id); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("checkID(%q) = %v, want invalid argument", id, err)
		}
	}
}

func TestEnvList(t *testing.T) {
	got, err := envList(map[string]string{"B": "2", "A": "1=one", "EMPTY": ""})
	if err != nil || strings.Join(got, ",") != "A=1=one,B=2,EMPTY=" {
		t.Errorf("envList = %q, %v", got, err)
	}
	for _, bad := range []map[string]string{{"": "x"}, {"A=B": "x"}, {"A": "nul\x00"}, {"NUL\x00": "x"}} {
		if _, err := envList(bad); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("envList(%q) = %v, want invalid argument", bad, err)
		}
	}
}

func TestLabelsRoundTrip(t *testing.T) {
	p := &Provider{cfg: Config{Name: "gvisor", Labels: map[string]string{"team": "x"}}}
	created := time.Date(2026, 5, 1, 12, 0, 0, 123456789, time.UTC)
	spec := provider.Spec{ID: "sb-1", Image: "img:1", OwnerID: "o", Template: "t",
		Metadata: map[string]string{"a": "1", "b.c": "2"}}
	l := p.labels(spec, created)
	if l[LabelProvider] != "gvisor" || l["team"] != "x" || l[LabelMeta+"b.c"] != "2" {
		t.Errorf("labels = %v", l)
	}
	info := infoFromLabels(l, "cid", time.Time{})
	if info.ID != "sb-1" || info.Image != "img:1" || info.Handle != "cid" || info.OwnerID != "o" ||
		info.Template != "t" || !info.Created.Equal(created) || len(info.Metadata) != 2 || info.Metadata["b.c"] != "2" {
		t.Errorf("infoFromLabels = %+v", info)
	}
	fallback := time.Unix(1700000000, 0)
	if got := infoFromLabels(map[string]string{LabelID: "x"}, "c", fallback); !got.Created.Equal(fallback) || got.Metadata != nil {
		t.Errorf("without created label: %+v", got)
	}
}

func TestStateOf(t *testing.T) {
	for s, want := range map[container.ContainerState]provider.State{
		container.StateCreated: provider.StateCreating, container.StateRunning: provider.StateRunning,
		container.StateRestarting: provider.StateRunning, container.StatePaused: provider.StatePaused,
		container.StateRemoving: provider.StateDestroyed, container.StateExited: provider.StateStopped,
		container.StateDead: provider.StateStopped, "bogus": provider.StateError,
	} {
		if got := stateOf(s); got != want {
			t.Errorf("stateOf(%s) = %s, want %s", s, got, want)
		}
	}
}

func TestCheckStaticELF(t *testing.T) {
	if env.agentPath == "" {
		t.Skip("skipping: the agent binary was not built (see TestMain output)")
	}
	if err := checkStaticELF(env.agentPath, runtime.GOARCH); err != nil {
		t.Errorf("agent: %v", err)
	}
	other := "aarch64"
	if runtime.GOARCH == "arm64" {
		other = "x86_64"
	}
	if err := checkStaticELF(env.agentPath, other); err == nil {
		t.Errorf("agent built for %s accepted for a %s daemon", runtime.GOARCH, other)
	}
	dir := t.TempDir()
	text := filepath.Join(dir, "script")
	os.WriteFile(text, []byte("#!/bin/sh\necho hi\n"), 0o755)
	noexec := filepath.Join(dir, "noexec")
	data, _ := os.ReadFile(env.agentPath)
	os.WriteFile(noexec, data, 0o644)
	for name, path := range map[string]string{"script": text, "not executable": noexec, "missing": filepath.Join(dir, "nope"), "directory": dir} {
		if err := checkStaticELF(path, ""); err == nil {
			t.Errorf("%s accepted", name)
		}
	}
	if sh, ok := dynamicBinary(); ok {
		if err := checkStaticELF(sh, ""); err == nil || !strings.Contains(err.Error(), "dynamically linked") {
			t.Errorf("%s: %v, want dynamically linked", sh, err)
		}
	} else {
		t.Log("no dynamically linked /bin/sh here; that case is unchecked")
	}
	if _, err := findAgent(filepath.Join(dir, "nope"), ""); !errors.Is(err, errdefs.ErrProviderUnavailable) || errdefs.Hint(err) == "" {
		t.Errorf("findAgent(missing) = %v, want provider unavailable with a hint", err)
	}
}

// dynamicBinary returns /bin/sh when it has an ELF interpreter.
func dynamicBinary() (string, bool) {
	f, err := elf.Open("/bin/sh")
	if err != nil {
		return "", false
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return "/bin/sh", true
		}
	}
	return "", false
}
