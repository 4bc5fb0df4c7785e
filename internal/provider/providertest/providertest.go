// Package providertest is the conformance suite every StacyVM provider
// passes: lifecycle, exec, streaming, file operations, hostile paths,
// isolation between sandboxes, concurrency, adoption and pause/resume. A provider's own
// test calls Run with a Harness; parts that need a capability the provider
// declares it lacks are skipped, with the capability's name.
//
// docs/provider-contract.md states, in prose, every rule checked here.
package providertest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/provider"
)

// Harness tells Run how to make the provider under test.
type Harness struct {
	// New returns a provider; providers made with the same stateDir share
	// state, as a server restart with the same configuration would (used by
	// the adoption tests). New registers any cleanup with t.
	New func(t *testing.T, stateDir string) provider.Provider
	// Image is the image to spawn. It must have /bin/sh and coreutils-like
	// tools: sh, echo, printf, sleep, cat, ln, true.
	Image string
	// PauseKeepsFilesOnly, when set, says why this provider's processes do
	// not survive Pause and Resume although its files do (a stand-in for a
	// VMM whose snapshots cannot hold processes). The Pause cases then
	// check that the sandbox's files come back as they were when paused,
	// instead of that its processes go on.
	PauseKeepsFilesOnly string
}

// Run runs the whole suite against the provider h makes.
func Run(t *testing.T, h Harness) {
	t.Helper()
	s := newSuite(t, h)

	t.Run("Health", s.testHealth)
	t.Run("Lifecycle", s.testLifecycle)
	t.Run("Exec", s.testExec)
	t.Run("Stream", s.testStream)
	t.Run("Stdin", s.testStdin)
	t.Run("Signals", s.testSignals)
	t.Run("Files", s.testFiles)
	t.Run("Paths", s.testPaths)
	t.Run("Isolation", s.testIsolation)
	t.Run("Concurrency", s.testConcurrency)
	t.Run("Logs", s.testLogs)
	t.Run("Adoption", s.testAdoption)
	t.Run("Pause", s.testPause)
	t.Run("ResourceLimits", func(t *testing.T) {
		// Nothing portable to check yet beyond the declaration itself.
		s.need(t, "ResourceLimits", s.caps.ResourceLimits)
	})
	t.Run("Snapshots", func(t *testing.T) {
		s.need(t, "Snapshots", s.caps.Snapshots)
		sl, ok := s.p.(provider.SnapshotLister)
		if !ok {
			t.Fatal("provider declares Snapshots but does not implement provider.SnapshotLister")
		}
		if _, err := sl.Snapshots(t.Context()); err != nil {
			t.Fatalf("Snapshots: %v", err)
		}
	})
}

// RunPause runs only the Pause cases, for a provider configuration that
// changes nothing else (say, one that pauses to disk).
func RunPause(t *testing.T, h Harness) {
	t.Helper()
	t.Run("Pause", newSuite(t, h).testPause)
}

func newSuite(t *testing.T, h Harness) *suite {
	t.Helper()
	if h.New == nil || h.Image == "" {
		t.Fatal("providertest: Harness needs New and Image")
	}
	s := &suite{h: h, stateDir: t.TempDir()}
	s.p = h.New(t, s.stateDir)
	s.caps = s.p.Capabilities()
	t.Logf("provider %q, capabilities %+v", s.p.Name(), s.caps)
	return s
}

type suite struct {
	h        Harness
	p        provider.Provider
	caps     provider.Capabilities
	stateDir string
}

// need skips t, naming the capability, when the provider lacks it.
func (s *suite) need(t *testing.T, capability string, have bool) {
	t.Helper()
	if !have {
		t.Skipf("provider %q does not declare capability %s", s.p.Name(), capability)
	}
}

// NewID returns a fresh sandbox ID in the orchestrator's format.
func NewID() string {
	var b [10]byte
	rand.Read(b[:])
	return "sb-" + hex.EncodeToString(b[:])
}

func token() string {
	var b [6]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// cleanupCtx is for t.Cleanup, which runs after t.Context is cancelled.
func cleanupCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), time.Minute)
}

// spawn starts a sandbox on p that is destroyed when t ends.
func (s *suite) spawn(t *testing.T, p provider.Provider, spec provider.Spec) string {
	t.Helper()
	if spec.ID == "" {
		spec.ID = NewID()
	}
	if spec.Image == "" {
		spec.Image = s.h.Image
	}
	info, err := p.Spawn(t.Context(), spec)
	if err != nil {
		t.Fatalf("Spawn(%s): %v", spec.Image, err)
	}
	t.Cleanup(func() {
		ctx, cancel := cleanupCtx()
		defer cancel()
		if err := p.Destroy(ctx, spec.ID); err != nil {
			t.Errorf("Destroy(%s) in cleanup: %v", spec.ID, err)
		}
	})
	if info.ID != spec.ID {
		t.Fatalf("Spawn returned ID %q, want %q", info.ID, spec.ID)
	}
	if info.State != provider.StateRunning {
		t.Errorf("Spawn returned state %q, want %q", info.State, provider.StateRunning)
	}
	return spec.ID
}

// execResult is one command's outcome.
type execResult struct {
	st             provider.ExitStatus
	stdout, stderr string
	err            error
}

func (r execResult) String() string {
	return fmt.Sprintf("exit %d timedOut=%v err=%v stdout=%q stderr=%q", r.st.ExitCode, r.st.TimedOut, r.err, r.stdout, r.stderr)
}

func execIn(ctx context.Context, p provider.Provider, id string, req provider.ExecRequest) execResult {
	var out, errb lockedBuffer
	st, err := p.Exec(ctx, id, req, &out, &errb)
	return execResult{st: st, stdout: out.String(), stderr: errb.String(), err: err}
}

// mustExec runs a shell script that must exit 0 and returns its stdout.
func mustExec(t *testing.T, p provider.Provider, id, script string) string {
	t.Helper()
	r := execIn(t.Context(), p, id, sh(script))
	if r.err != nil || r.st.ExitCode != 0 {
		t.Fatalf("exec %q: %s", script, r)
	}
	return r.stdout
}

func sh(script string) provider.ExecRequest {
	return provider.ExecRequest{Argv: []string{"sh", "-c", script}}
}

// lockedBuffer is a bytes.Buffer safe to read while Exec writes to it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func writeFile(t *testing.T, p provider.Provider, id, path string, content []byte, mode fs.FileMode) {
	t.Helper()
	if err := p.WriteFile(t.Context(), id, path, bytes.NewReader(content), mode); err != nil {
		t.Fatalf("WriteFile(%s): %v", path, err)
	}
}

func readFile(ctx context.Context, p provider.Provider, id, path string) ([]byte, error) {
	rc, err := p.ReadFile(ctx, id, path)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

func mustRead(t *testing.T, p provider.Provider, id, path string) string {
	t.Helper()
	b, err := readFile(t.Context(), p, id, path)
	if err != nil {
		t.Fatalf("ReadFile(%s): %v", path, err)
	}
	return string(b)
}

// isGone reports whether err says the sandbox is destroyed or unknown.
func isGone(err error) bool {
	return errors.Is(err, errdefs.ErrSandboxDestroyed) || errors.Is(err, errdefs.ErrSandboxNotFound)
}

// isFileNotFound accepts ErrFileNotFound or the broader ErrNotFound, but
// not a sandbox-level miss.
func isFileNotFound(err error) bool {
	return errors.Is(err, errdefs.ErrNotFound) && !isGone(err)
}

func wantClass(t *testing.T, what string, err error, class *errdefs.Class) {
	t.Helper()
	if !errors.Is(err, class) {
		t.Errorf("%s: error %v (class %v), want class %q", what, err, errdefs.Classify(err), class)
	}
}

func wantFileNotFound(t *testing.T, what string, err error) {
	t.Helper()
	if !isFileNotFound(err) {
		t.Errorf("%s: error %v (class %v), want file not found", what, err, errdefs.Classify(err))
	}
}

func sortedEqual(got, want []string) bool {
	return slices.IsSorted(got) && slices.Equal(got, want)
}
