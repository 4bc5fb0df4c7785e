//go:build linux

package firecracker

import (
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stacyvm/stacyvm/internal/provider/firecracker/fcapi"
)

// The FAKE VMM must refuse what Firecracker refuses, or the provider's
// tests would pass against behaviour no real VMM has.
func TestFakeVMMRefusesWhatFirecrackerRefuses(t *testing.T) {
	needEnv(t)
	entries := journal(t)
	dir := shortDir(t)
	proc, err := startVMM(testEnv.fakeVMM, dir, "fake-honesty")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proc.kill(5 * time.Second) })
	api := newVMMClient(filepath.Join(dir, apiSockName))
	t.Cleanup(api.close)
	if err := api.waitAPI(t.Context(), proc.exited); err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	want400 := func(what string, err error) {
		t.Helper()
		var ve *vmmError
		if !errors.As(err, &ve) || ve.Status != http.StatusBadRequest || ve.Fault == "" {
			t.Errorf("%s: %v, want a 400 with a fault message", what, err)
		}
	}
	// Off-spec bodies.
	want400("unknown field", api.do(ctx, http.MethodPut, fcapi.PathMachineConfig, map[string]any{"vcpu_count": 1, "mem_size_mib": 128, "cpus": 2}, nil))
	want400("vCPUs out of range", api.putMachineConfig(ctx, fcapi.MachineConfiguration{VCPUCount: 64, MemSizeMiB: 128}))
	want400("unknown path", api.do(ctx, http.MethodPut, "/network", map[string]any{}, nil))
	// Semantics.
	want400("start without a kernel", api.instanceStart(ctx))
	want400("pause before start", api.setVMState(ctx, fcapi.VMPaused))
	want400("kernel that does not exist", api.putBootSource(ctx, fcapi.BootSource{KernelImagePath: "/nonexistent"}))
	want400("drive that does not exist", api.putDrive(ctx, fcapi.Drive{DriveID: driveID, PathOnHost: "missing.ext4", IsRootDevice: true}))
	want400("drive id mismatch", api.do(ctx, http.MethodPut, "/drives/other", fcapi.Drive{DriveID: driveID, PathOnHost: "x", IsRootDevice: true}, nil))

	// Configure and boot a guest from a real image.
	img, err := BuildImage(ctx, buildCfg(t, shortDir(t)), testEnv.image)
	if err != nil {
		t.Fatal(err)
	}
	if err := cloneFile(img.Path, filepath.Join(dir, driveName)); err != nil {
		t.Fatal(err)
	}
	if err := api.putMachineConfig(ctx, fcapi.MachineConfiguration{VCPUCount: 1, MemSizeMiB: 128}); err != nil {
		t.Fatal(err)
	}
	want400("snapshot load after configuring", api.loadSnapshot(ctx, fcapi.SnapshotLoadParams{SnapshotPath: "s", MemBackend: &fcapi.MemoryBackend{BackendType: fcapi.BackendFile, BackendPath: "m"}}))
	for _, err := range []error{
		api.putBootSource(ctx, fcapi.BootSource{KernelImagePath: testEnv.fakeKernel, BootArgs: DefaultBootArgs + " -- " + agentArgs}),
		api.putDrive(ctx, fcapi.Drive{DriveID: driveID, PathOnHost: driveName, IsRootDevice: true}),
		api.putVsock(ctx, fcapi.Vsock{GuestCID: GuestCID, UDSPath: vsockName}),
		api.instanceStart(ctx),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	want400("configuring after start", api.putMachineConfig(ctx, fcapi.MachineConfiguration{VCPUCount: 2, MemSizeMiB: 128}))
	want400("second start", api.instanceStart(ctx))
	want400("snapshot of a running VM", api.createSnapshot(ctx, fcapi.SnapshotCreateParams{SnapshotPath: filepath.Join(dir, "s"), MemFilePath: filepath.Join(dir, "m")}))
	if err := api.setVMState(ctx, fcapi.VMPaused); err != nil {
		t.Fatal(err)
	}
	if ii, err := api.describe(ctx); err != nil || ii.State != fcapi.StatePaused {
		t.Errorf("describe after pause: %+v, %v", ii, err)
	}
	if err := api.createSnapshot(ctx, fcapi.SnapshotCreateParams{SnapshotPath: filepath.Join(dir, "s"), MemFilePath: filepath.Join(dir, "m")}); err != nil {
		t.Errorf("snapshot of a paused VM: %v", err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "m")); err != nil || fi.Size() != 128<<20 {
		t.Errorf("memory file: %v, %v; want the guest's 128 MiB", fi, err)
	}
	for _, l := range entries() {
		if l.BadReply != "" {
			t.Errorf("the fake answered %s %s off-spec: %s", l.Method, l.Path, l.BadReply)
		}
	}
}
