package docker

import (
	"context"
	"errors"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/provider"
)

func TestDiskQuota(t *testing.T) {
	const mounts = "/dev/sda1 / ext4 rw,relatime 0 0\n" +
		"/dev/sdb1 /var/lib/docker xfs rw,relatime,attr2,inode64,prjquota 0 0\n" +
		"/dev/sdc1 /srv/docker\\040root xfs rw,relatime,attr2 0 0\n"
	xfs := [][2]string{{"Backing Filesystem", "xfs"}, {"Supports d_type", "true"}}
	for _, tc := range []struct {
		name, driver string
		status       [][2]string
		mounts, root string
		want         bool
		why          string
	}{
		{"overlay2 on ext4 (this CI host)", "overlay2", [][2]string{{"Backing Filesystem", "extfs"}}, mounts, "/var/lib/docker", false, "overlay2 on extfs"},
		{"overlay2 on xfs with prjquota", "overlay2", xfs, mounts, "/var/lib/docker", true, ""},
		{"overlay2 on xfs, a subdirectory of the quota mount", "overlay2", xfs, mounts, "/var/lib/docker/x", true, ""},
		{"overlay2 on xfs without quotas", "overlay2", xfs, mounts, "/srv/docker root", false, "without pquota"},
		{"overlay2 on xfs, remote daemon", "overlay2", xfs, "", "/var/lib/docker", false, "cannot tell"},
		{"btrfs", "btrfs", nil, "", "", true, ""},
		{"zfs", "zfs", nil, "", "", true, ""},
		{"devicemapper", "devicemapper", nil, "", "", true, ""},
		{"vfs", "vfs", nil, "", "", false, "vfs has no size quota"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ok, why := diskQuota(tc.driver, tc.status, tc.mounts, tc.root)
			if ok != tc.want || !strings.Contains(why, tc.why) || (ok && why != "") {
				t.Errorf("diskQuota = %v, %q; want %v, %q", ok, why, tc.want, tc.why)
			}
		})
	}
}

// TestDiskLimitOption: a spawn's disk_mb becomes the "size" storage option
// of its container where the driver enforces it, and no option otherwise.
func TestDiskLimitOption(t *testing.T) {
	p := &Provider{cfg: Config{Network: "none", TmpfsMB: 64, PidsLimit: 10}, runtime: "runc", diskLimit: true}
	_, hc := p.containerConfig(provider.Spec{ID: "sb-x", Image: "img", DiskMB: 512}, nil, "none", "/tmp/s", time.Now())
	if want := map[string]string{"size": "512M"}; !maps.Equal(hc.StorageOpt, want) {
		t.Errorf("StorageOpt = %v, want %v", hc.StorageOpt, want)
	}
	_, hc = p.containerConfig(provider.Spec{ID: "sb-x", Image: "img"}, nil, "none", "/tmp/s", time.Now())
	if hc.StorageOpt != nil {
		t.Errorf("StorageOpt without disk_mb = %v", hc.StorageOpt)
	}
}

// TestDiskLimitDeclared runs against the real daemon: whatever its storage
// driver, the capability matches what a spawn with disk_mb does. On a host
// without quota support (overlay2 on ext4, as in CI) the spawn is refused
// with ErrUnimplemented before anything is created.
func TestDiskLimitDeclared(t *testing.T) {
	p := newProvider(t, "runc")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	id := "sb-disk-limit"
	_, err := p.Spawn(ctx, provider.Spec{ID: id, Image: busyboxImage, DiskMB: 64})
	t.Cleanup(func() { _ = p.Destroy(context.Background(), id) })
	if p.Capabilities().DiskLimit {
		if err != nil {
			t.Fatalf("the driver declares a disk limit but a spawn with disk_mb failed: %v", err)
		}
		return
	}
	t.Logf("disk limit unsupported here: %s", p.diskWhyNot)
	if !errors.Is(err, errdefs.ErrUnimplemented) || !strings.Contains(err.Error(), "disk_mb") {
		t.Fatalf("spawn with disk_mb on a host without quotas: %v; want unimplemented", err)
	}
	if _, err := p.Status(ctx, id); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("the refused spawn left something behind: %v", err)
	}
}
