// Package prootest prepares what tests of the PRoot provider (and of
// providers that wrap it) need: proot itself, the image directories that
// scripts/ci/proot-up.sh makes, and a static stacyvm-agent built from this
// module. Without them a test skips, naming what is missing, unless
// STACYVM_TEST_PROOT=1 asks for a failure instead (.ci/run sets it).
package prootest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// Environment variables the tests read.
const (
	// EnvRequire set to 1 turns every skip for a missing proot, image or
	// agent build into a failure.
	EnvRequire = "STACYVM_TEST_PROOT"
	// EnvImages is the images directory (default /var/lib/stacyvm/images).
	EnvImages = "STACYVM_PROOT_IMAGES"
)

// The images scripts/ci/proot-up.sh makes.
const (
	Busybox = "stacyvm/busybox:test"
	Debian  = "stacyvm/debian:test"
)

// ImagesDir returns the images directory the tests use.
func ImagesDir() string {
	if d := os.Getenv(EnvImages); d != "" {
		return d
	}
	return "/var/lib/stacyvm/images"
}

// imageDirName mirrors the provider's mapping for the test images.
func imageDirName(image string) string {
	return strings.NewReplacer("/", "_", ":", "_").Replace(image)
}

// Require returns the images directory, or skips t (fails it when
// STACYVM_TEST_PROOT=1) when proot or one of the images is missing.
func Require(t testing.TB, images ...string) string {
	t.Helper()
	if _, err := exec.LookPath("proot"); err != nil {
		missing(t, "proot is not installed (apt-get install proot, or scripts/ci/proot-up.sh)")
	}
	dir := ImagesDir()
	for _, img := range images {
		p := filepath.Join(dir, imageDirName(img))
		if fi, err := os.Stat(p); err != nil || !fi.IsDir() {
			missing(t, fmt.Sprintf("image %s is missing: no directory %s (run scripts/ci/proot-up.sh, or set %s)", img, p, EnvImages))
		}
	}
	return dir
}

func missing(t testing.TB, why string) {
	t.Helper()
	if os.Getenv(EnvRequire) == "1" {
		t.Fatalf("%s, and %s=1 requires the PRoot tests to run", why, EnvRequire)
	}
	t.Skip(why)
}

var agent struct {
	once sync.Once
	dir  string
	path string
	err  error
}

// EnvAgent names a prebuilt static stacyvm-agent for Agent to return
// instead of building one.
const EnvAgent = "STACYVM_TEST_AGENT"

// Agent builds a static cmd/stacyvm-agent once per test binary and
// returns its path (or returns $STACYVM_TEST_AGENT). Call Cleanup from
// TestMain to remove what it built.
func Agent(t testing.TB) string {
	t.Helper()
	if p := os.Getenv(EnvAgent); p != "" {
		return p
	}
	agent.once.Do(func() {
		agent.dir, agent.err = os.MkdirTemp("", "stacyvm-agent-build-")
		if agent.err != nil {
			return
		}
		agent.path = filepath.Join(agent.dir, "stacyvm-agent")
		cmd := exec.Command("go", "build", "-o", agent.path, "github.com/stacyvm/stacyvm/cmd/stacyvm-agent")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			agent.err = fmt.Errorf("building stacyvm-agent: %v\n%s", err, out)
		}
	})
	if agent.err != nil {
		if _, err := exec.LookPath("go"); err != nil {
			missing(t, "the go tool is not on PATH to build stacyvm-agent")
		}
		t.Fatal(agent.err)
	}
	return agent.path
}

// Cleanup removes what Agent built.
func Cleanup() {
	if agent.dir != "" {
		os.RemoveAll(agent.dir)
	}
}

// StateDir returns a fresh, short state directory that sandboxes running as
// unprivileged uids (the provider's choice when the tests run as root) can
// reach; it is removed when t ends.
func StateDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "pr")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	Reachable(t, dir)
	return dir
}

// Reachable makes dir and each of its parents below the temporary
// directory searchable by every user, as the provider requires of its
// state directory when the server is root. Directories that t.TempDir and
// os.MkdirTemp make are mode 0700.
func Reachable(t testing.TB, dir string) {
	t.Helper()
	if os.Geteuid() != 0 {
		return
	}
	top := filepath.Clean(os.TempDir())
	for d := filepath.Clean(dir); d != top && d != "/" && strings.HasPrefix(d, top+"/"); d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(d, fi.Mode().Perm()|0o011); err != nil {
			t.Fatal(err)
		}
	}
}
