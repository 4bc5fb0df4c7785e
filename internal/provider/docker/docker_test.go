package docker

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/provider"
)

func testCtx(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// spawn spawns spec (ID and image filled in when empty) and destroys it
// at cleanup.
func spawn(t testing.TB, p *Provider, spec provider.Spec) provider.Info {
	t.Helper()
	if spec.ID == "" {
		spec.ID = newID()
	}
	if spec.Image == "" {
		spec.Image = busyboxImage
	}
	needImage(t, spec.Image)
	info, err := p.Spawn(testCtx(t), spec)
	if err != nil {
		t.Fatalf("Spawn(%s): %v", spec.ID, err)
	}
	t.Cleanup(func() {
		if err := p.Destroy(context.Background(), spec.ID); err != nil {
			t.Errorf("cleanup Destroy(%s): %v", spec.ID, err)
		}
	})
	return info
}

// run executes a shell command and returns stdout, stderr and the exit code.
func run(t testing.TB, p provider.Provider, id, command string) (string, string, int) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	st, err := p.Exec(testCtx(t), id, provider.ExecRequest{Argv: provider.ShellArgv(command)}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("Exec(%q): %v (stderr %q)", command, err, stderr.String())
	}
	return stdout.String(), stderr.String(), st.ExitCode
}

// mustRun is run for commands that must succeed; it returns trimmed stdout.
func mustRun(t testing.TB, p provider.Provider, id, command string) string {
	t.Helper()
	out, errOut, code := run(t, p, id, command)
	if code != 0 {
		t.Fatalf("%q exited %d; stdout %q stderr %q", command, code, out, errOut)
	}
	return strings.TrimSpace(out)
}

func inspect(t testing.TB, id string) container.InspectResponse {
	t.Helper()
	res, err := env.cli.ContainerInspect(testCtx(t), containerName(id), client.ContainerInspectOptions{})
	if err != nil {
		t.Fatalf("inspect %s: %v", id, err)
	}
	return res.Container
}

func containerExists(t testing.TB, id string) bool {
	t.Helper()
	_, err := env.cli.ContainerInspect(testCtx(t), containerName(id), client.ContainerInspectOptions{})
	if err != nil && !isNotFound(err) {
		t.Fatalf("inspect %s: %v", id, err)
	}
	return err == nil
}

var runtimes = []string{"runc", "crun", "runsc"}

// TestLifecycle spawns, uses and destroys a sandbox on each runtime and
// checks what dockerd was told: the secure defaults, the labels, the agent
// as PID 1, and that Destroy leaves nothing on the host.
func TestLifecycle(t *testing.T) {
	for _, rt := range runtimes {
		t.Run(rt, func(t *testing.T) {
			t.Parallel()
			p := newProvider(t, rt)
			ctx := testCtx(t)
			id := newID()
			spec := provider.Spec{
				ID: id, Image: busyboxImage, MemoryMB: 256, VCPUs: 1,
				Env:     map[string]string{"GREETING": "hello from spec"},
				OwnerID: "alice", Template: "tiny",
				Metadata: map[string]string{"purpose": "test", "k.with.dots": "v"},
			}
			needImage(t, busyboxImage)
			before := time.Now().Add(-time.Second)
			info, err := p.Spawn(ctx, spec)
			if err != nil {
				t.Fatalf("Spawn: %v", err)
			}
			t.Cleanup(func() { p.Destroy(context.Background(), id) })

			if info.ID != id || info.State != provider.StateRunning || info.Image != busyboxImage ||
				info.Runtime != rt || info.Handle == "" || info.OwnerID != "alice" || info.Template != "tiny" ||
				info.Metadata["purpose"] != "test" || info.Metadata["k.with.dots"] != "v" || info.Created.Before(before) {
				t.Errorf("Spawn info = %+v", info)
			}
			if got := p.Capabilities().Isolation; (rt == "runsc") != (got == provider.IsolationUserKernel) {
				t.Errorf("isolation %s for runtime %s", got, rt)
			}

			ctr := inspect(t, id)
			hc := ctr.HostConfig
			if ctr.ID != info.Handle {
				t.Errorf("handle %s, container %s", info.Handle, ctr.ID)
			}
			if hc.Runtime != rt {
				t.Errorf("runtime %q", hc.Runtime)
			}
			if !slices.Equal(hc.CapDrop, []string{"ALL"}) || len(hc.CapAdd) != 0 {
				t.Errorf("caps: drop %v add %v", hc.CapDrop, hc.CapAdd)
			}
			if !slices.ContainsFunc(hc.SecurityOpt, func(s string) bool { return strings.HasPrefix(s, "no-new-privileges") }) {
				t.Errorf("security opts %v lack no-new-privileges", hc.SecurityOpt)
			}
			if hc.PidsLimit == nil || *hc.PidsLimit != 512 || hc.Memory != 256<<20 || hc.MemorySwap != 256<<20 || hc.NanoCPUs != 1e9 {
				t.Errorf("limits: pids %v memory %d swap %d nanocpus %d", hc.PidsLimit, hc.Memory, hc.MemorySwap, hc.NanoCPUs)
			}
			if hc.NetworkMode != "none" || hc.Privileged || hc.ReadonlyRootfs {
				t.Errorf("network %q privileged %v readonly %v", hc.NetworkMode, hc.Privileged, hc.ReadonlyRootfs)
			}
			wantLabels := map[string]string{
				LabelID: id, LabelProvider: "docker", LabelImage: busyboxImage, LabelOwner: "alice",
				LabelTemplate: "tiny", LabelMeta + "purpose": "test", LabelRuntime: rt, LabelTest: env.runID,
			}
			for k, v := range wantLabels {
				if ctr.Config.Labels[k] != v {
					t.Errorf("label %s = %q, want %q", k, ctr.Config.Labels[k], v)
				}
			}
			if _, err := time.Parse(time.RFC3339Nano, ctr.Config.Labels[LabelCreated]); err != nil {
				t.Errorf("label %s: %v", LabelCreated, err)
			}
			var agentRO bool
			for _, m := range ctr.Mounts {
				if m.Destination == agentTarget && !m.RW && m.Source == env.agentPath {
					agentRO = true
				}
			}
			if !agentRO {
				t.Errorf("agent is not bind-mounted read-only: %+v", ctr.Mounts)
			}

			// The agent is PID 1, commands see the spec's env and start in
			// /workspace.
			if got := mustRun(t, p, id, "tr '\\0' ' ' </proc/1/cmdline"); !strings.HasPrefix(got, agentTarget) {
				t.Errorf("PID 1 is %q, want the agent", got)
			}
			if got := mustRun(t, p, id, `echo "$GREETING"; pwd`); got != "hello from spec\n/workspace" {
				t.Errorf("env/workdir: %q", got)
			}
			// No capabilities at all, not even for root.
			if got := mustRun(t, p, id, "grep CapEff /proc/self/status"); !strings.HasSuffix(got, "0000000000000000") {
				t.Errorf("effective capabilities: %q", got)
			}
			// gVisor's /proc/self/status has no NoNewPrivs line; dockerd was
			// still told (SecurityOpt, checked above).
			if got := mustRun(t, p, id, "grep NoNewPrivs /proc/self/status || echo absent"); got != "NoNewPrivs:\t1" && !(rt == "runsc" && got == "absent") {
				t.Errorf("no_new_privs: %q", got)
			}

			// Files through the agent.
			if err := p.WriteFile(ctx, id, "/workspace/a.txt", strings.NewReader("content"), 0o640); err != nil {
				t.Fatalf("WriteFile: %v", err)
			}
			if got := mustRun(t, p, id, "cat /workspace/a.txt; echo; stat -c %a /workspace/a.txt"); got != "content\n640" {
				t.Errorf("file via exec: %q", got)
			}

			st, err := p.Status(ctx, id)
			if err != nil || st.State != provider.StateRunning || st.Runtime != rt || st.Metadata["purpose"] != "test" {
				t.Errorf("Status = %+v, %v", st, err)
			}

			sockDir := p.socketDir(id)
			if _, err := os.Stat(sockDir); err != nil {
				t.Errorf("socket dir: %v", err)
			}
			if err := p.Destroy(ctx, id); err != nil {
				t.Fatalf("Destroy: %v", err)
			}
			if containerExists(t, id) {
				t.Error("container still exists after Destroy")
			}
			if _, err := os.Stat(sockDir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("socket dir after Destroy: %v", err)
			}
			if _, err := p.Exec(ctx, id, provider.ExecRequest{Argv: []string{"true"}}, io.Discard, io.Discard); !errors.Is(err, errdefs.ErrSandboxDestroyed) {
				t.Errorf("Exec after Destroy: %v, want ErrSandboxDestroyed", err)
			}
			if _, err := p.Status(ctx, id); !errors.Is(err, errdefs.ErrNotFound) {
				t.Errorf("Status after Destroy: %v", err)
			}
			if err := p.Destroy(ctx, id); err != nil {
				t.Errorf("second Destroy: %v", err)
			}
		})
	}
}
