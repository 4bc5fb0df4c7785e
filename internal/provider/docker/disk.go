package docker

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// diskQuota reports whether dockerd's storage driver can cap a container's
// writable layer (the "size" storage option), and if not, why. driver and
// status come from `docker info`; mounts is /proc/mounts of the daemon's
// host ("" when unknown, say for a remote daemon) and rootDir its
// DockerRootDir: overlay2 enforces a size only on xfs mounted with project
// quotas, which `docker info` does not show.
func diskQuota(driver string, status [][2]string, mounts, rootDir string) (bool, string) {
	switch driver {
	case "devicemapper", "btrfs", "zfs", "windowsfilter":
		return true, ""
	case "overlay2":
		backing := ""
		for _, kv := range status {
			if kv[0] == "Backing Filesystem" {
				backing = kv[1]
			}
		}
		if backing != "xfs" {
			return false, "storage driver overlay2 on " + cmpOr(backing, "an unknown file system") +
				" has no size quota (it needs xfs mounted with pquota)"
		}
		opts, ok := mountOptions(mounts, rootDir)
		if !ok {
			return false, "storage driver overlay2 on xfs: cannot tell whether " + rootDir + " is mounted with pquota"
		}
		if slices.Contains(opts, "prjquota") || slices.Contains(opts, "pquota") {
			return true, ""
		}
		return false, "storage driver overlay2 on xfs mounted without pquota has no size quota"
	}
	return false, "storage driver " + cmpOr(driver, "(unknown)") + " has no size quota"
}

func cmpOr(s, alt string) string {
	if s == "" {
		return alt
	}
	return s
}

// mountOptions returns the options of the mount that holds dir: the
// longest mount point that is dir or one of its parents.
func mountOptions(mounts, dir string) ([]string, bool) {
	if mounts == "" || dir == "" {
		return nil, false
	}
	dir = filepath.Clean(dir)
	best, bestOpts := "", ""
	for line := range strings.SplitSeq(mounts, "\n") {
		f := strings.Fields(line)
		if len(f) < 4 {
			continue
		}
		mp := unescapeMount(f[1])
		if (dir == mp || strings.HasPrefix(dir, strings.TrimSuffix(mp, "/")+"/")) && len(mp) >= len(best) {
			best, bestOpts = mp, f[3]
		}
	}
	if best == "" {
		return nil, false
	}
	return strings.Split(bestOpts, ","), true
}

// unescapeMount undoes /proc/mounts' octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// localMounts is /proc/mounts when dockerd runs on this machine (a unix
// socket), "" otherwise.
func localMounts(host string) string {
	if host != "" && !strings.HasPrefix(host, "unix://") {
		return ""
	}
	b, err := os.ReadFile("/proc/mounts")
	if err != nil {
		return ""
	}
	return string(b)
}

// storageOpt is the storage option that caps a container's writable layer
// at diskMB MiB.
func storageOpt(diskMB int) map[string]string {
	return map[string]string{"size": strconv.Itoa(diskMB) + "M"}
}
