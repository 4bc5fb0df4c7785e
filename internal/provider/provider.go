// Package provider defines the contract every isolation backend implements
// (Docker, Firecracker, PRoot, a custom HTTP backend, the mock), the types
// they share, and the registry the server picks them from.
//
// docs/provider-contract.md states every rule; package providertest checks
// them. The orchestrator is the only caller: providers never see HTTP.
package provider

import (
	"context"
	"io"
	"io/fs"
	"time"
)

// Provider runs sandboxes. Every method is safe for concurrent use and
// honours ctx. Sandboxes are addressed by the ID the orchestrator chose at
// spawn. After Destroy every operation on that ID fails with
// errdefs.ErrSandboxDestroyed or errdefs.ErrSandboxNotFound.
type Provider interface {
	Name() string
	Capabilities() Capabilities
	// Health reports whether the runtime behind the provider works now. A
	// non-nil error is classified errdefs.ErrProviderUnavailable.
	Health(ctx context.Context) error

	// Spawn creates and starts a sandbox and returns once it accepts Exec.
	// On failure it leaves nothing behind.
	Spawn(ctx context.Context, spec Spec) (Info, error)
	// Status reports the runtime's view of a sandbox.
	Status(ctx context.Context, id string) (Info, error)
	// Destroy stops the sandbox and removes everything it owned. Destroying
	// an unknown or already destroyed sandbox is not an error.
	Destroy(ctx context.Context, id string) error
	// Logs returns up to the last n lines of the sandbox's console log.
	Logs(ctx context.Context, id string, n int) ([]string, error)

	// Guest operations, addressed by sandbox ID.
	Exec(ctx context.Context, id string, req ExecRequest, stdout, stderr io.Writer) (ExitStatus, error)
	WriteFile(ctx context.Context, id, path string, r io.Reader, mode fs.FileMode) error
	ReadFile(ctx context.Context, id, path string) (io.ReadCloser, error)
	ListFiles(ctx context.Context, id, path string) ([]FileInfo, error)
	StatFile(ctx context.Context, id, path string) (FileInfo, error)
	DeleteFile(ctx context.Context, id, path string, recursive bool) error
	MoveFile(ctx context.Context, id, oldPath, newPath string) error
	Chmod(ctx context.Context, id, path string, mode fs.FileMode) error
	Glob(ctx context.Context, id, pattern string) ([]string, error)
}

// Guest is what runs inside one sandbox: commands and files. It is the
// Provider's guest half without the sandbox ID, implemented on the local
// machine by package localguest and over a connection by the agent client.
type Guest interface {
	Exec(ctx context.Context, req ExecRequest, stdout, stderr io.Writer) (ExitStatus, error)
	WriteFile(ctx context.Context, path string, r io.Reader, mode fs.FileMode) error
	ReadFile(ctx context.Context, path string) (io.ReadCloser, error)
	ListFiles(ctx context.Context, path string) ([]FileInfo, error)
	StatFile(ctx context.Context, path string) (FileInfo, error)
	DeleteFile(ctx context.Context, path string, recursive bool) error
	MoveFile(ctx context.Context, oldPath, newPath string) error
	Chmod(ctx context.Context, path string, mode fs.FileMode) error
	Glob(ctx context.Context, pattern string) ([]string, error)
}

// Inventory is implemented by providers that can list the runtimes they
// manage, including ones started before a server restart, so that reconcile
// can adopt or remove runtimes the store has no record of.
type Inventory interface {
	List(ctx context.Context) ([]Info, error)
}

// Pauser is implemented by providers that can freeze every process of a
// sandbox and thaw them again (Capabilities.Pause). A paused sandbox keeps
// its memory, processes and files but makes no progress, and Status
// reports StatePaused, after a server restart too. Pause of a paused
// sandbox and Resume of a running one do nothing. Guest operations on a
// paused sandbox may block until it resumes (the orchestrator never sends
// them); Destroy works on a paused sandbox.
type Pauser interface {
	Pause(ctx context.Context, id string) error
	Resume(ctx context.Context, id string) error
}

// SnapshotLister is implemented by providers that keep reusable snapshots.
type SnapshotLister interface {
	Snapshots(ctx context.Context) ([]Snapshot, error)
}

// Isolation ranks how strongly a provider separates a sandbox from the host.
// The registry's "auto" choice prefers the highest healthy one.
type Isolation int

const (
	IsolationNone       Isolation = iota // test double: commands run on the host
	IsolationProcess                     // ptrace/namespace tricks, not a security boundary
	IsolationContainer                   // shared kernel, namespaces and cgroups
	IsolationUserKernel                  // user-space kernel (gVisor)
	IsolationVM                          // own kernel in a hardware VM
)

func (i Isolation) String() string {
	switch i {
	case IsolationNone:
		return "none"
	case IsolationProcess:
		return "process"
	case IsolationContainer:
		return "container"
	case IsolationUserKernel:
		return "user-kernel"
	case IsolationVM:
		return "vm"
	}
	return "unknown"
}

// MarshalText makes Isolation read as its name in JSON.
func (i Isolation) MarshalText() ([]byte, error) { return []byte(i.String()), nil }

// Capabilities declares what a provider supports. The conformance suite
// skips, by name, the parts a provider declares it lacks.
type Capabilities struct {
	Isolation Isolation `json:"isolation"`
	// Streaming: Exec delivers output while the command runs.
	Streaming bool `json:"streaming"`
	// Adoption: the provider implements Inventory and finds its runtimes
	// again after a server restart.
	Adoption bool `json:"adoption"`
	// Snapshots: the provider implements SnapshotLister.
	Snapshots bool `json:"snapshots"`
	// Network: sandboxes can be given network access.
	Network bool `json:"network"`
	// ResourceLimits: memory, vCPU and process limits are enforced.
	ResourceLimits bool `json:"resource_limits"`
	// Symlinks: code in the sandbox can create symbolic links.
	Symlinks bool `json:"symlinks"`
	// DiskLimit: Spec.DiskMB is enforced. A spawn that asks for a disk
	// limit on a provider without it is refused (errdefs.ErrUnimplemented)
	// rather than run unlimited.
	DiskLimit bool `json:"disk_limit"`
	// Terminal: the provider implements Terminals (interactive sessions on
	// a pseudo-terminal).
	Terminal bool `json:"terminal"`
	// Stdin: Exec feeds ExecRequest.Stdin to the command as its standard
	// input, as it is read. Without it, an Exec with Stdin is refused
	// (errdefs.ErrUnimplemented) rather than run without its input.
	Stdin bool `json:"stdin"`
	// Signals: Exec delivers ExecRequest.Signals to the command's process
	// group while it runs. Without it, an Exec with Signals is refused
	// (errdefs.ErrUnimplemented).
	Signals bool `json:"signals"`
	// Pause: the provider implements Pauser.
	Pause bool `json:"pause"`
}

// State is a sandbox's lifecycle state as the API reports it. Providers
// report only the states a runtime can be in (running, paused, stopped,
// creating for one never started, error, destroyed); the others are the
// orchestrator's (docs/lifecycle.md).
type State string

const (
	StateCreating   State = "creating"
	StatePooled     State = "pooled"
	StateRunning    State = "running"
	StatePausing    State = "pausing"
	StatePaused     State = "paused"
	StateResuming   State = "resuming"
	StateStopped    State = "stopped"
	StateError      State = "error"
	StateDestroying State = "destroying"
	StateDestroyed  State = "destroyed"
)

// Spec describes a sandbox to spawn.
type Spec struct {
	ID       string // chosen by the orchestrator: "sb-" + hex
	Image    string
	MemoryMB int
	VCPUs    int
	DiskMB   int
	Env      map[string]string // applies to every command in the sandbox
	OwnerID  string
	Template string
	Metadata map[string]string
	// Network is "" (the provider's configured default), "none" or "bridge".
	Network string
	// Instance is the spawning server's instance id. The provider keeps it
	// with the runtime (a label, the state file) and reports it in Info,
	// so that each server reconciles only its own runtimes.
	Instance string
}

// Info is a provider's view of one runtime.
type Info struct {
	ID       string
	State    State
	Image    string
	Handle   string // the runtime's own name for it (container ID, directory…)
	Runtime  string // e.g. "runc", "runsc"; empty when it does not apply
	OwnerID  string
	Template string
	Metadata map[string]string
	Created  time.Time
	// Instance is the Spec's Instance; "" for a runtime made before
	// instance ids existed (or by a server that gave none).
	Instance string
}

// ExecRequest is one command. Argv is run directly, without a shell; use
// ShellArgv for a shell string.
type ExecRequest struct {
	Argv    []string
	Env     map[string]string
	WorkDir string        // sandbox path; "" means DefaultWorkDir
	Timeout time.Duration // 0 means no timeout beyond ctx
	// Stdin, when set, is the command's standard input (providers whose
	// Capabilities say Stdin): Exec copies what it reads to the command as
	// it arrives, and closes the command's stdin when Stdin returns io.EOF
	// (any other error closes it too). Nil means the null device. Exec
	// stops reading once the command has exited, but a Read in progress
	// then is the caller's to end (close the pipe it reads from) after
	// Exec returns.
	Stdin io.Reader
	// Signals, when set, carries signal names (TerminalSignals: "TERM",
	// "INT"…) to send to the command's whole process group while it runs
	// (providers whose Capabilities say Signals). Exec receives from it
	// until the command has ended, and not after: a sender must also
	// watch for the command's end.
	Signals <-chan string
}

// DefaultWorkDir is where commands start and relative file paths resolve.
const DefaultWorkDir = "/workspace"

// ShellArgv wraps a shell command string for ExecRequest.Argv.
func ShellArgv(command string) []string { return []string{"/bin/sh", "-c", command} }

// ExitStatus ends every Exec. A non-zero ExitCode is not an error. When the
// command's timeout fires, Exec returns ExitCode -1, TimedOut, and an error
// of class errdefs.ErrExecTimeout, having killed the command's whole
// process tree.
type ExitStatus struct {
	ExitCode int
	TimedOut bool
	Duration time.Duration
}

// FileInfo describes one file in a sandbox.
type FileInfo struct {
	Path    string // absolute sandbox path
	Size    int64
	Mode    fs.FileMode // permission bits plus fs.ModeDir, fs.ModeSymlink…
	IsDir   bool
	ModTime time.Time
}

// Snapshot is a reusable saved state of an image.
type Snapshot struct {
	Image    string
	Provider string
	Created  time.Time
}

// ImageVersioner is implemented by providers that can tell which build of
// an image a runtime was made from, so that warm pools replace members
// whose image changed under the same name (a rebuilt or re-pulled tag).
type ImageVersioner interface {
	// ImageVersion is the identity of what image names now (Docker: the
	// image ID); errdefs.ErrNotFound when it is not on the host.
	ImageVersion(ctx context.Context, image string) (string, error)
	// SandboxImageVersion is the identity of the image sandbox id was
	// created from.
	SandboxImageVersion(ctx context.Context, id string) (string, error)
}
