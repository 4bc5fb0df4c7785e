package firecracker

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// checkKVM tells whether /dev/kvm can run a VM: it exists, this user may
// open it read-write, it speaks the stable KVM API, it creates a VM, and
// the CPU advertises hardware virtualization (a /dev/kvm without vmx/svm
// is a paravirtual or nested device that cannot boot stock kernels).
func checkKVM() error {
	f, err := os.OpenFile(kvmDevice, os.O_RDWR|unix.O_CLOEXEC, 0)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%s does not exist: KVM is not available (no hardware virtualization, or the kvm module is not loaded)", kvmDevice)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("%s is not readable and writable by this user (add it to the kvm group)", kvmDevice)
	case err != nil:
		return fmt.Errorf("%s: %w", kvmDevice, err)
	}
	defer f.Close()
	v, err := unix.IoctlRetInt(int(f.Fd()), kvmGetAPIVersion)
	if err != nil {
		return fmt.Errorf("%s does not answer KVM_GET_API_VERSION: %w", kvmDevice, err)
	}
	if v != kvmAPIVersion {
		return fmt.Errorf("%s speaks KVM API %d, Firecracker needs %d", kvmDevice, v, kvmAPIVersion)
	}
	vmfd, err := unix.IoctlRetInt(int(f.Fd()), kvmCreateVM)
	if err != nil {
		return fmt.Errorf("%s cannot create a VM (KVM_CREATE_VM: %w)", kvmDevice, err)
	}
	unix.Close(vmfd)
	if runtime.GOARCH == "amd64" {
		if b, err := os.ReadFile("/proc/cpuinfo"); err == nil && !hasVirtFlag(b) {
			return fmt.Errorf("%s exists but the CPU advertises no hardware virtualization (no vmx or svm flag in /proc/cpuinfo): it is a paravirtual or nested KVM device that cannot boot stock guest kernels", kvmDevice)
		}
	}
	return nil
}
