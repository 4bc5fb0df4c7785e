//go:build linux

package firecracker

import (
	"errors"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/provider/firecracker/fcapi"
)

type recorded struct {
	method, path string
	body         string
	invalid      error
}

// specServer answers every request with 204 after validating it against
// Firecracker's API description, and records it.
func specServer(t *testing.T) (*vmmClient, func() []recorded) {
	t.Helper()
	spec, err := fcapi.Load()
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(shortDir(t), "api.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var reqs []recorded
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		err := spec.ValidateRequest(r.Method, r.URL.Path, b)
		mu.Lock()
		reqs = append(reqs, recorded{r.Method, r.URL.Path, string(b), err})
		mu.Unlock()
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, `{"fault_message":"invalid"}`)
			return
		}
		if r.Method == http.MethodGet {
			io.WriteString(w, `{"app_name":"Firecracker","id":"t","state":"Running","vmm_version":"test"}`)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	c := newVMMClient(sock)
	t.Cleanup(c.close)
	return c, func() []recorded {
		mu.Lock()
		defer mu.Unlock()
		return append([]recorded(nil), reqs...)
	}
}

// Every request body the provider can send is valid against Firecracker's
// API description.
func TestVMMClientRequestsMatchSpec(t *testing.T) {
	c, reqs := specServer(t)
	ctx := t.Context()
	calls := []struct {
		name string
		call func() error
		want string // method and path
	}{
		{"machine config", func() error {
			return c.putMachineConfig(ctx, fcapi.MachineConfiguration{VCPUCount: 2, MemSizeMiB: 1024})
		}, "PUT /machine-config"},
		{"boot source", func() error {
			return c.putBootSource(ctx, fcapi.BootSource{KernelImagePath: "/k", BootArgs: DefaultBootArgs + " -- " + agentArgs})
		}, "PUT /boot-source"},
		{"drive", func() error {
			return c.putDrive(ctx, fcapi.Drive{DriveID: driveID, PathOnHost: driveName, IsRootDevice: true})
		}, "PUT /drives/rootfs"},
		{"vsock", func() error { return c.putVsock(ctx, fcapi.Vsock{GuestCID: GuestCID, UDSPath: vsockName}) }, "PUT /vsock"},
		{"entropy", func() error { return c.putEntropy(ctx) }, "PUT /entropy"},
		{"start", func() error { return c.instanceStart(ctx) }, "PUT /actions"},
		{"pause", func() error { return c.setVMState(ctx, fcapi.VMPaused) }, "PATCH /vm"},
		{"resume", func() error { return c.setVMState(ctx, fcapi.VMResumed) }, "PATCH /vm"},
		{"snapshot create", func() error {
			return c.createSnapshot(ctx, fcapi.SnapshotCreateParams{SnapshotPath: "/s", MemFilePath: "/m", SnapshotType: "Full"})
		}, "PUT /snapshot/create"},
		{"snapshot load", func() error {
			return c.loadSnapshot(ctx, fcapi.SnapshotLoadParams{
				SnapshotPath: "/s", MemBackend: &fcapi.MemoryBackend{BackendType: fcapi.BackendFile, BackendPath: "/m"}, ResumeVM: true,
			})
		}, "PUT /snapshot/load"},
		{"describe", func() error { _, err := c.describe(ctx); return err }, "GET /"},
	}
	for i, cl := range calls {
		if err := cl.call(); err != nil {
			t.Errorf("%s: %v", cl.name, err)
		}
		got := reqs()
		if len(got) != i+1 {
			t.Fatalf("%s: %d requests recorded, want %d", cl.name, len(got), i+1)
		}
		r := got[i]
		if r.method+" "+r.path != cl.want {
			t.Errorf("%s sent %s %s, want %s", cl.name, r.method, r.path, cl.want)
		}
		if r.invalid != nil {
			t.Errorf("%s: body %s violates the API description: %v", cl.name, r.body, r.invalid)
		}
	}
}

func TestVMMClientErrors(t *testing.T) {
	c, _ := specServer(t)
	// An off-spec body gets Firecracker's 400 with a fault message.
	err := c.putMachineConfig(t.Context(), fcapi.MachineConfiguration{VCPUCount: 0, MemSizeMiB: 128})
	var ve *vmmError
	if !errors.As(err, &ve) || ve.Status != http.StatusBadRequest || ve.Fault != "invalid" {
		t.Errorf("invalid request: %v, want a vmmError with status 400 and the fault message", err)
	}
	// No VMM behind the socket: provider unavailable.
	gone := newVMMClient(filepath.Join(shortDir(t), "missing.sock"))
	if _, err := gone.describe(t.Context()); !errors.Is(err, errdefs.ErrProviderUnavailable) {
		t.Errorf("missing socket: %v, want class provider unavailable", err)
	}
}
