package docker

import (
	"context"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/provider"
)

// netDevices lists the sandbox's network interfaces from /proc/net/dev,
// which gVisor provides too.
func netDevices(t *testing.T, p provider.Provider, id string) []string {
	t.Helper()
	out := mustRun(t, p, id, `tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort`)
	return strings.Fields(out)
}

func TestNetwork(t *testing.T) {
	for _, rt := range []string{"runc", "runsc"} {
		t.Run(rt, func(t *testing.T) {
			t.Parallel()
			off := newProvider(t, rt) // default network: none
			on := newProvider(t, rt, func(c *Config) { c.Network = "bridge" })
			cases := []struct {
				name    string
				p       *Provider
				spec    string
				want    string
				devices []string
			}{
				{"default none", off, "", "none", []string{"lo"}},
				{"spec bridge overrides", off, "bridge", "bridge", []string{"eth0", "lo"}},
				{"default bridge", on, "", "bridge", []string{"eth0", "lo"}},
				{"spec none overrides", on, "none", "none", []string{"lo"}},
			}
			for _, c := range cases {
				id := spawn(t, c.p, provider.Spec{Network: c.spec}).ID
				if mode := inspect(t, id).HostConfig.NetworkMode; string(mode) != c.want {
					t.Errorf("%s: network mode %q, want %q", c.name, mode, c.want)
				}
				if got := netDevices(t, c.p, id); !slices.Equal(got, c.devices) {
					t.Errorf("%s: interfaces %v, want %v", c.name, got, c.devices)
				}
			}
		})
	}
}

// TestNamedNetwork: a configured user-defined network is what "bridge"
// means in a Spec.
func TestNamedNetwork(t *testing.T) {
	needRuntime(t, "runc")
	ctx := testCtx(t)
	name := "stacyvm-test-" + env.runID
	if _, err := env.cli.NetworkCreate(ctx, name, client.NetworkCreateOptions{Labels: testLabels()}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { env.cli.NetworkRemove(context.Background(), name, client.NetworkRemoveOptions{}) })
	p := newProvider(t, "runc", func(c *Config) { c.Network = name })
	for spec, want := range map[string]string{"": name, "bridge": name, "none": "none"} {
		id := spawn(t, p, provider.Spec{Network: spec}).ID
		if got := string(inspect(t, id).HostConfig.NetworkMode); got != want {
			t.Errorf("Spec.Network %q: network %q, want %q", spec, got, want)
		}
	}
}

func TestReadOnlyRootNonRoot(t *testing.T) {
	for _, rt := range []string{"runc", "runsc"} {
		t.Run(rt, func(t *testing.T) {
			t.Parallel()
			p := newProvider(t, rt, func(c *Config) { c.ReadOnlyRoot = true; c.User = "65534:65534"; c.TmpfsMB = 64 })
			ctx := testCtx(t)
			id := spawn(t, p, provider.Spec{}).ID
			hc := inspect(t, id).HostConfig
			if !hc.ReadonlyRootfs || hc.Tmpfs["/tmp"] == "" || !strings.Contains(hc.Tmpfs["/workspace"], "uid=65534") {
				t.Errorf("readonly %v tmpfs %v", hc.ReadonlyRootfs, hc.Tmpfs)
			}
			if got := mustRun(t, p, id, `id -u; id -g; echo "$HOME"`); got != "65534\n65534\n/workspace" {
				t.Errorf("identity: %q", got)
			}
			if _, _, code := run(t, p, id, "touch /etc/x 2>/dev/null || touch /x 2>/dev/null"); code == 0 {
				t.Error("wrote to the read-only root")
			}
			mustRun(t, p, id, "echo a >/workspace/a && echo b >/tmp/b && cat /workspace/a /tmp/b")
			if err := p.WriteFile(ctx, id, "/workspace/sub/f", strings.NewReader("x"), 0o600); err != nil {
				t.Errorf("WriteFile into the workspace: %v", err)
			}
			if err := p.WriteFile(ctx, id, "/etc/forbidden", strings.NewReader("x"), 0o600); err == nil {
				t.Error("WriteFile into the read-only root succeeded")
			}
			// The tmpfs is bounded: 64 MiB, not the memory limit.
			if _, _, code := run(t, p, id, "dd if=/dev/zero of=/workspace/big bs=1M count=80 2>/dev/null"); code == 0 {
				t.Error("wrote 80 MiB into a 64 MiB workspace")
			}
		})
	}
}

func TestNonRootWritableRoot(t *testing.T) {
	p := newProvider(t, "runc", func(c *Config) { c.User = "1000:1000" })
	id := spawn(t, p, provider.Spec{}).ID
	if got := mustRun(t, p, id, "id -u; stat -c %u /workspace; touch /workspace/ok && echo ok"); got != "1000\n1000\nok" {
		t.Errorf("non-root workspace: %q", got)
	}
}

func TestResourceLimits(t *testing.T) {
	p := newProvider(t, "runc", func(c *Config) { c.PidsLimit = 24 })
	id := spawn(t, p, provider.Spec{MemoryMB: 96, VCPUs: 2}).ID
	hc := inspect(t, id).HostConfig
	if hc.Memory != 96<<20 || hc.NanoCPUs != 2e9 || *hc.PidsLimit != 24 {
		t.Errorf("memory %d nanocpus %d pids %d", hc.Memory, hc.NanoCPUs, *hc.PidsLimit)
	}
	// The kernel enforces them (cgroup v1 here; v2 names the files differently).
	if got := mustRun(t, p, id, "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max"); got != "100663296" {
		t.Errorf("memory limit in the cgroup: %q", got)
	}
	out, errOut, _ := run(t, p, id, `i=0; while [ $i -lt 40 ]; do sleep 30 & i=$((i+1)); done; echo started $i`)
	if !strings.Contains(out+errOut, "fork") {
		t.Errorf("40 processes under a limit of 24: stdout %q stderr %q", out, errOut)
	}
}

func TestSpawnRejectsBadSpecs(t *testing.T) {
	p := newProvider(t, "runc")
	needImage(t, busyboxImage)
	ctx := testCtx(t)
	for name, spec := range map[string]provider.Spec{
		"path id":      {ID: "../../etc", Image: busyboxImage},
		"empty id":     {ID: "", Image: busyboxImage},
		"no image":     {ID: newID()},
		"bad network":  {ID: newID(), Image: busyboxImage, Network: "host"},
		"neg memory":   {ID: newID(), Image: busyboxImage, MemoryMB: -1},
		"bad env":      {ID: newID(), Image: busyboxImage, Env: map[string]string{"A=B": "c"}},
		"bad image":    {ID: newID(), Image: "UPPER/Case:!!"},
		"too many cpu": {ID: newID(), Image: busyboxImage, VCPUs: 4096},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := p.Spawn(ctx, spec)
			if !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Errorf("Spawn = %v (class %v), want invalid argument", err, errdefs.Classify(err))
			}
			t.Log(err)
			if checkID(spec.ID) == nil {
				if containerExists(t, spec.ID) {
					t.Error("a container was left behind")
				}
				if _, err := os.Stat(p.socketDir(spec.ID)); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("socket dir left behind: %v", err)
				}
			}
		})
	}
}

func TestMissingImage(t *testing.T) {
	reg := env.registry
	if reg == "" {
		reg = "127.0.0.1:9" // the discard port: nothing listens, the pull fails fast
	}
	for _, c := range []struct{ pull, image string }{
		{PullNever, "stacyvm/no-such-image:test"},
		{PullMissing, reg + "/stacyvm/no-such-image:test"},
	} {
		t.Run(c.pull, func(t *testing.T) {
			p := newProvider(t, "runc", func(cfg *Config) { cfg.Pull = c.pull })
			id := newID()
			_, err := p.Spawn(testCtx(t), provider.Spec{ID: id, Image: c.image})
			if !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), c.image) {
				t.Errorf("Spawn = %v (class %v), want not found naming the image", err, errdefs.Classify(err))
			}
			if errdefs.Hint(err) == "" {
				t.Error("no hint")
			}
			if containerExists(t, id) {
				t.Error("container left behind")
			}
			if _, err := os.Stat(p.socketDir(id)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("socket dir left behind: %v", err)
			}
		})
	}
}

// TestPullFromRegistry pushes the busybox image to the loopback registry,
// deletes it locally, and spawns from the registry.
func TestPullFromRegistry(t *testing.T) {
	needImage(t, busyboxImage)
	if env.registry == "" {
		need(t, "no registry on "+os.Getenv("STACYVM_REGISTRY")+" (default 127.0.0.1:5000)")
	}
	ctx := testCtx(t)
	ref := env.registry + "/stacyvm-test/busybox:" + env.runID
	if _, err := env.cli.ImageTag(ctx, client.ImageTagOptions{Source: busyboxImage, Target: ref}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		env.cli.ImageRemove(context.Background(), ref, client.ImageRemoveOptions{Force: true})
	})
	// The registry has no auth, but dockerd wants the header anyway.
	push, err := env.cli.ImagePush(ctx, ref, client.ImagePushOptions{RegistryAuth: base64.URLEncoding.EncodeToString([]byte("{}"))})
	if err != nil {
		t.Fatal(err)
	}
	if err := push.Wait(ctx); err != nil {
		t.Fatalf("push: %v", err)
	}
	push.Close()
	if _, err := env.cli.ImageRemove(ctx, ref, client.ImageRemoveOptions{}); err != nil {
		t.Fatal(err)
	}

	p := newProvider(t, "runc", func(c *Config) { c.Pull = PullMissing })
	start := time.Now()
	info, err := p.Spawn(ctx, provider.Spec{ID: newID(), Image: ref})
	if err != nil {
		t.Fatalf("Spawn from the registry: %v", err)
	}
	t.Cleanup(func() { p.Destroy(context.Background(), info.ID) })
	t.Logf("spawn with pull: %v", time.Since(start))
	if info.Image != ref {
		t.Errorf("image %q", info.Image)
	}
	if got := mustRun(t, p, info.ID, "echo pulled"); got != "pulled" {
		t.Errorf("exec: %q", got)
	}
	if _, err := env.cli.ImageInspect(ctx, ref); err != nil {
		t.Errorf("image not present after the pull: %v", err)
	}
}

// TestAdoption: a second provider (a restarted server) finds the first
// one's sandbox by its labels, reaches its agent, and destroys it along
// with its socket directory, even when configured with another state dir.
func TestAdoption(t *testing.T) {
	for _, sameDir := range []bool{true, false} {
		name := map[bool]string{true: "same state dir", false: "other state dir"}[sameDir]
		t.Run(name, func(t *testing.T) {
			p1 := newProvider(t, "runc")
			ctx := testCtx(t)
			spec := provider.Spec{Metadata: map[string]string{"k": "v"}, OwnerID: "bob", Env: map[string]string{"ADOPTED": "yes"}}
			info := spawn(t, p1, spec)
			id := info.ID
			mustRun(t, p1, id, "echo before >/workspace/mark")

			p2 := newProvider(t, "runc", func(c *Config) {
				if sameDir {
					c.StateDir = p1.cfg.StateDir
				}
			})
			list, err := p2.List(ctx)
			if err != nil {
				t.Fatal(err)
			}
			i := slices.IndexFunc(list, func(in provider.Info) bool { return in.ID == id })
			if i < 0 {
				t.Fatalf("List of a new provider lacks %s: %+v", id, list)
			}
			got := list[i]
			if got.State != provider.StateRunning || got.OwnerID != "bob" || got.Metadata["k"] != "v" ||
				got.Image != busyboxImage || got.Runtime != "runc" || got.Handle != info.Handle || !got.Created.Equal(info.Created) {
				t.Errorf("listed %+v, spawned %+v", got, info)
			}
			if out := mustRun(t, p2, id, `cat /workspace/mark; echo "$ADOPTED"`); out != "before\nyes" {
				t.Errorf("adopted exec: %q", out)
			}
			if err := p2.Destroy(ctx, id); err != nil {
				t.Fatal(err)
			}
			if containerExists(t, id) {
				t.Error("container survived the adopting provider's Destroy")
			}
			if _, err := os.Stat(p1.socketDir(id)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("original socket dir: %v", err)
			}
			// The first provider's cached connection must now report the
			// sandbox gone, not an unreachable agent.
			_, err = p1.Exec(ctx, id, provider.ExecRequest{Argv: []string{"true"}}, io.Discard, io.Discard)
			if !errors.Is(err, errdefs.ErrSandboxNotFound) {
				t.Errorf("old provider Exec after adoption and destroy: %v", err)
			}
		})
	}
}

// TestListIsolatedByName: providers with different names share a daemon
// without adopting each other's containers.
func TestListIsolatedByName(t *testing.T) {
	a := newProvider(t, "runc")
	b := newProvider(t, "runc", func(c *Config) { c.Name = "docker-b" })
	id := spawn(t, a, provider.Spec{}).ID
	list, err := b.List(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if slices.ContainsFunc(list, func(in provider.Info) bool { return in.ID == id }) {
		t.Error("provider docker-b lists docker's sandbox")
	}
	if _, err := b.Status(testCtx(t), id); !errors.Is(err, errdefs.ErrSandboxNotFound) {
		t.Errorf("docker-b Status: %v", err)
	}
	if err := b.Destroy(testCtx(t), id); err != nil {
		t.Fatal(err)
	}
	if !containerExists(t, id) {
		t.Error("docker-b destroyed docker's container")
	}
}

// TestListIsolatedByTestRun: a provider lists the containers of its own
// test run only, and a server's provider (no test label) none of a test's:
// a server restarting next to running tests must not adopt their sandboxes,
// nor sweep their half-made ones.
func TestListIsolatedByTestRun(t *testing.T) {
	a := newProvider(t, "runc")
	server := newProvider(t, "runc", func(c *Config) { c.Labels = nil })
	other := newProvider(t, "runc", func(c *Config) { c.Labels = map[string]string{LabelTest: "another-run"} })
	id := spawn(t, a, provider.Spec{}).ID
	has := func(p *Provider) bool {
		list, err := p.List(testCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		return slices.ContainsFunc(list, func(in provider.Info) bool { return in.ID == id })
	}
	if !has(a) {
		t.Error("the test run's own provider does not list its sandbox")
	}
	if has(server) {
		t.Error("a provider without a test label lists a test's sandbox")
	}
	if has(other) {
		t.Error("another test run's provider lists this run's sandbox")
	}
}

// TestContainerGoneBehindOurBack: removed or stopped outside StacyVM, the
// sandbox reads as gone or not running, never as an unreachable agent.
func TestContainerGoneBehindOurBack(t *testing.T) {
	p := newProvider(t, "runc")
	ctx := testCtx(t)

	stopped := spawn(t, p, provider.Spec{}).ID
	mustRun(t, p, stopped, "true")
	if _, err := env.cli.ContainerKill(ctx, containerName(stopped), client.ContainerKillOptions{Signal: "KILL"}); err != nil {
		t.Fatal(err)
	}
	waitStopped(t, stopped)
	if _, err := p.Exec(ctx, stopped, provider.ExecRequest{Argv: []string{"true"}}, io.Discard, io.Discard); !errors.Is(err, errdefs.ErrConflict) {
		t.Errorf("Exec in a killed container: %v, want conflict (not running)", err)
	}
	if st, err := p.Status(ctx, stopped); err != nil || st.State != provider.StateStopped {
		t.Errorf("Status of a killed container: %+v, %v", st, err)
	}
	list, _ := p.List(ctx)
	if i := slices.IndexFunc(list, func(in provider.Info) bool { return in.ID == stopped }); i < 0 || list[i].State != provider.StateStopped {
		t.Errorf("List: %+v", list)
	}

	removed := spawn(t, p, provider.Spec{}).ID
	mustRun(t, p, removed, "true")
	if _, err := env.cli.ContainerRemove(ctx, containerName(removed), client.ContainerRemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Exec(ctx, removed, provider.ExecRequest{Argv: []string{"true"}}, io.Discard, io.Discard); !errors.Is(err, errdefs.ErrSandboxNotFound) {
		t.Errorf("Exec in a removed container: %v, want sandbox not found", err)
	}
	if _, err := p.Status(ctx, removed); !errors.Is(err, errdefs.ErrSandboxNotFound) {
		t.Errorf("Status of a removed container: %v", err)
	}
	if err := p.Destroy(ctx, removed); err != nil {
		t.Errorf("Destroy of a removed container: %v", err)
	}
	if _, err := os.Stat(p.socketDir(removed)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket dir after Destroy: %v", err)
	}
}

func waitStopped(t *testing.T, id string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if st := inspect(t, id).State; st != nil && !st.Running {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("container of %s did not stop", id)
}

func TestSpawnConflict(t *testing.T) {
	p := newProvider(t, "runc")
	id := spawn(t, p, provider.Spec{}).ID
	if _, err := p.Spawn(testCtx(t), provider.Spec{ID: id, Image: busyboxImage}); !errors.Is(err, errdefs.ErrConflict) {
		t.Errorf("second Spawn of %s: %v, want conflict", id, err)
	}
	if got := mustRun(t, p, id, "echo still here"); got != "still here" {
		t.Errorf("first sandbox after the conflict: %q", got)
	}
}

// TestAgentExitsFailsFast: when the container's PID 1 dies before
// answering, Spawn fails at once (not after ReadyTimeout), says why, and
// leaves nothing behind.
func TestAgentExitsFailsFast(t *testing.T) {
	const bb = "/bin/busybox"
	if err := checkStaticELF(bb, ""); err != nil {
		need(t, "no static "+bb+" to stand in for a broken agent (apt-get install busybox-static): "+err.Error())
	}
	// busybox started as "stacyvm-agent" knows no such applet and exits.
	p := newProvider(t, "runc", func(c *Config) { c.AgentPath = bb; c.ReadyTimeout = 20 * time.Second })
	needImage(t, busyboxImage)
	id := newID()
	start := time.Now()
	_, err := p.Spawn(testCtx(t), provider.Spec{ID: id, Image: busyboxImage})
	if err == nil {
		p.Destroy(context.Background(), id)
		t.Fatal("Spawn succeeded with a broken agent")
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Spawn took %v to notice the agent exited", d)
	}
	if !strings.Contains(err.Error(), "exited") || !strings.Contains(err.Error(), "applet not found") {
		t.Errorf("error lacks the exit and the container's log: %v", err)
	}
	if containerExists(t, id) {
		t.Error("container left behind")
	}
	if _, err := os.Stat(p.socketDir(id)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket dir left behind: %v", err)
	}
}

func TestNewReportsWhy(t *testing.T) {
	needDocker(t)
	ctx := testCtx(t)
	cases := map[string]Config{
		"no daemon":       {Host: "unix://" + filepath.Join(shortTempDir(t), "absent.sock")},
		"unknown runtime": {Runtime: "no-such-runtime"},
		"missing agent":   {AgentPath: filepath.Join(shortTempDir(t), "absent")},
		"dynamic agent":   {AgentPath: "/bin/sh"},
		"missing network": {Network: "stacyvm-no-such-network"},
	}
	if _, ok := dynamicBinary(); !ok {
		delete(cases, "dynamic agent")
	}
	for name, cfg := range cases {
		t.Run(name, func(t *testing.T) {
			if cfg.AgentPath == "" {
				cfg.AgentPath = env.agentPath
			}
			cfg.StateDir = shortTempDir(t)
			p, err := New(ctx, cfg)
			if err == nil {
				p.Close()
				t.Fatal("New succeeded")
			}
			if !errors.Is(err, errdefs.ErrProviderUnavailable) {
				t.Errorf("New = %v (class %v), want provider unavailable", err, errdefs.Classify(err))
			}
			if errdefs.Hint(err) == "" {
				t.Errorf("no hint in %v", err)
			}
		})
	}
}

// TestHealthFollowsDaemon puts a proxy between the provider and dockerd
// and cuts it.
func TestHealthFollowsDaemon(t *testing.T) {
	needDocker(t)
	sock := filepath.Join(shortTempDir(t), "proxy.sock")
	stop := proxyDocker(t, sock)
	p := newProvider(t, "runc", func(c *Config) { c.Host = "unix://" + sock })
	ctx := testCtx(t)
	if err := p.Health(ctx); err != nil {
		t.Fatalf("Health through the proxy: %v", err)
	}
	stop()
	if err := p.Health(ctx); !errors.Is(err, errdefs.ErrProviderUnavailable) {
		t.Errorf("Health with the daemon gone: %v, want provider unavailable", err)
	}
	if _, err := p.Spawn(ctx, provider.Spec{ID: newID(), Image: busyboxImage}); !errors.Is(err, errdefs.ErrProviderUnavailable) {
		t.Errorf("Spawn with the daemon gone: %v, want provider unavailable", err)
	}
}

// proxyDocker relays a unix socket to dockerd's; the returned func closes
// the listener and every relayed connection.
func proxyDocker(t *testing.T, sock string) (stop func()) {
	t.Helper()
	target := strings.TrimPrefix(os.Getenv("DOCKER_HOST"), "unix://")
	if target == "" {
		target = "/var/run/docker.sock"
	}
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			d, err := net.Dial("unix", target)
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c, d)
			mu.Unlock()
			wg.Go(func() { io.Copy(d, c); d.Close() })
			wg.Go(func() { io.Copy(c, d); c.Close() })
		}
	})
	var once sync.Once
	stop = func() {
		once.Do(func() {
			ln.Close()
			mu.Lock()
			for _, c := range conns {
				c.Close()
			}
			mu.Unlock()
			wg.Wait()
		})
	}
	t.Cleanup(stop)
	return stop
}

func TestLogs(t *testing.T) {
	p := newProvider(t, "runc")
	ctx := testCtx(t)
	id := spawn(t, p, provider.Spec{}).ID
	lines, err := p.Logs(ctx, id, 50)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(lines, func(l string) bool { return strings.Contains(l, "agent serving") }) {
		t.Errorf("console log lacks the agent's start line: %q", lines)
	}
	if one, err := p.Logs(ctx, id, 1); err != nil || len(one) != 1 {
		t.Errorf("Logs(1) = %q, %v", one, err)
	}
	if _, err := p.Logs(ctx, newID(), 10); !errors.Is(err, errdefs.ErrSandboxNotFound) {
		t.Errorf("Logs of an unknown sandbox: %v", err)
	}
}

// TestLongStateDir: a state dir too deep for a unix socket path still works.
func TestLongStateDir(t *testing.T) {
	deep := filepath.Join(shortTempDir(t), strings.Repeat("d", 60), strings.Repeat("e", 60))
	p := newProvider(t, "runc", func(c *Config) { c.StateDir = deep })
	id := spawn(t, p, provider.Spec{}).ID
	if n := len(filepath.Join(p.socketDir(id), socketName)); n <= maxSocketPath {
		t.Fatalf("socket path is only %d bytes; the test needs more than %d", n, maxSocketPath)
	}
	if got := mustRun(t, p, id, "echo deep"); got != "deep" {
		t.Errorf("exec: %q", got)
	}
}

func TestDebianImage(t *testing.T) {
	p := newProvider(t, "runc")
	id := spawn(t, p, provider.Spec{Image: debianImage, Env: map[string]string{"X": "7"}}).ID
	if got := mustRun(t, p, id, `python3 -c 'import os; print(6*int(os.environ["X"]))'`); got != "42" {
		t.Errorf("python3: %q", got)
	}
}

// TestSpawnCancelled abandons Spawn at several points; whatever stage it
// reached, nothing may be left behind.
func TestSpawnCancelled(t *testing.T) {
	p := newProvider(t, "runc")
	needImage(t, busyboxImage)
	for _, after := range []time.Duration{time.Millisecond, 20 * time.Millisecond, 60 * time.Millisecond, 120 * time.Millisecond, 200 * time.Millisecond} {
		id := newID()
		ctx, cancel := context.WithTimeout(context.Background(), after)
		_, err := p.Spawn(ctx, provider.Spec{ID: id, Image: busyboxImage})
		cancel()
		if err == nil {
			// Fast enough to finish: fine, but it must then be destroyable.
			if err := p.Destroy(context.Background(), id); err != nil {
				t.Fatal(err)
			}
		} else if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("after %v: %v, want the context's error", after, err)
		}
		if containerExists(t, id) {
			t.Errorf("after %v: container left behind", after)
		}
		if _, err := os.Stat(p.socketDir(id)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("after %v: socket dir left behind: %v", after, err)
		}
	}
}

// TestImageEnvReachesCommands: dockerd starts the agent with the image's
// ENV plus Spec.Env (Spec.Env wins), and commands start from the agent's
// environment; a command's own variables win over both.
func TestImageEnvReachesCommands(t *testing.T) {
	p := newProvider(t, "runc")
	needImage(t, busyboxImage)
	ctx := testCtx(t)
	// An image with ENV of its own: busybox plus two variables.
	ctr, err := env.cli.ContainerCreate(ctx, client.ContainerCreateOptions{
		Config: &container.Config{Image: busyboxImage, Cmd: []string{"true"}, Labels: testLabels()},
	})
	if err != nil {
		t.Fatal(err)
	}
	ref := "stacyvm-test/env:" + env.runID
	_, err = env.cli.ContainerCommit(ctx, ctr.ID, client.ContainerCommitOptions{
		Reference: ref, Changes: []string{"ENV FROM_IMAGE=yes", "ENV SHARED=image"},
	})
	env.cli.ContainerRemove(ctx, ctr.ID, client.ContainerRemoveOptions{Force: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		env.cli.ImageRemove(context.Background(), ref, client.ImageRemoveOptions{Force: true})
	})
	id := newID()
	if _, err := p.Spawn(ctx, provider.Spec{ID: id, Image: ref, Env: map[string]string{"SHARED": "spec", "FROM_SPEC": "1"}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Destroy(context.Background(), id) })
	if got := mustRun(t, p, id, `echo "$FROM_IMAGE $SHARED $FROM_SPEC"; [ -n "$PATH" ] && echo path`); got != "yes spec 1\npath" {
		t.Errorf("image and sandbox environment in a command: %q", got)
	}
	var out strings.Builder
	st, err := p.Exec(ctx, id, provider.ExecRequest{Argv: provider.ShellArgv(`echo "$SHARED $FROM_IMAGE"`), Env: map[string]string{"SHARED": "request"}}, &out, io.Discard)
	if err != nil || st.ExitCode != 0 || out.String() != "request yes\n" {
		t.Errorf("request environment over the image's: %q, %+v, %v", out.String(), st, err)
	}
}
