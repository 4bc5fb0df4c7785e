// Package wire is the custom provider protocol's vocabulary, shared by the
// client (package custom) and the reference backend (package
// custom/backend): routes, JSON bodies, stream lines, and the mapping
// between errdefs classes, error codes and HTTP status codes.
// docs/custom-provider-protocol.md is the normative description.
package wire

import (
	"fmt"
	"net/http"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/provider"
)

// Version is the protocol's major version, and its route prefix.
const Version = 1

// Routes, relative to the backend's base URL. {id} is a sandbox ID.
const (
	PathHealth       = "/v1/health"
	PathCapabilities = "/v1/capabilities"
	PathSnapshots    = "/v1/snapshots"
	PathSandboxes    = "/v1/sandboxes"
	PathSandbox      = "/v1/sandboxes/{id}"
	PathLogs         = "/v1/sandboxes/{id}/logs"
	PathExec         = "/v1/sandboxes/{id}/exec"
	PathExecStdin    = "/v1/sandboxes/{id}/exec/stdin"
	PathFiles        = "/v1/sandboxes/{id}/files"
	PathFilesList    = "/v1/sandboxes/{id}/files/list"
	PathFilesStat    = "/v1/sandboxes/{id}/files/stat"
	PathFilesMove    = "/v1/sandboxes/{id}/files/move"
	PathFilesChmod   = "/v1/sandboxes/{id}/files/chmod"
	PathFilesGlob    = "/v1/sandboxes/{id}/files/glob"
	PathPause        = "/v1/sandboxes/{id}/pause"
	PathResume       = "/v1/sandboxes/{id}/resume"
)

// Content types.
const (
	ContentJSON   = "application/json"
	ContentNDJSON = "application/x-ndjson"
	ContentOctets = "application/octet-stream"
)

// Limits a receiver enforces on what the other side sends.
const (
	// MaxJSON bounds a JSON reply or request body.
	MaxJSON = 8 << 20
	// MaxErrorBody bounds an error reply.
	MaxErrorBody = 64 << 10
	// MaxLine bounds one NDJSON line of an exec stream.
	MaxLine = 1 << 20
	// MaxChunk is the most output one stream line carries.
	MaxChunk = 32 << 10
)

// Error is the body of every failed reply, and of error lines in an exec
// stream (with Type "error").
type Error struct {
	Type    string `json:"type,omitempty"`
	Code    string `json:"code"`
	Message string `json:"message"`
	Hint    string `json:"hint,omitempty"`
}

// statuses gives the HTTP status of each errdefs class. The code is the
// class's own (errdefs.Class.Code); the status differs from the agent
// protocol's where a backend author's HTTP habits are the better guide
// (410 for destroyed, 429 for a resource limit).
var statuses = map[*errdefs.Class]int{
	errdefs.ErrSandboxNotFound:     http.StatusNotFound,
	errdefs.ErrSandboxDestroyed:    http.StatusGone,
	errdefs.ErrProviderNotFound:    http.StatusNotFound,
	errdefs.ErrFileNotFound:        http.StatusNotFound,
	errdefs.ErrNotFound:            http.StatusNotFound,
	errdefs.ErrConflict:            http.StatusConflict,
	errdefs.ErrInvalidArgument:     http.StatusBadRequest,
	errdefs.ErrUnauthorized:        http.StatusUnauthorized,
	errdefs.ErrUnimplemented:       http.StatusNotImplemented,
	errdefs.ErrResourceLimit:       http.StatusTooManyRequests,
	errdefs.ErrProviderUnavailable: http.StatusServiceUnavailable,
	errdefs.ErrExecTimeout:         http.StatusRequestTimeout,
}

// CodeInternal is the code of an error that belongs to no class.
const CodeInternal = errdefs.CodeInternal

// Classify returns the wire code and HTTP status of err.
func Classify(err error) (code string, status int) { return errdefs.CodeAndStatus(err, statuses) }

// ToError returns the wire form of err.
func ToError(err error) Error {
	return Error{Code: errdefs.CodeOf(err), Message: err.Error(), Hint: errdefs.Hint(err)}
}

// FromError rebuilds the error a peer reported. The code decides the
// class; when it is missing or unknown (a newer peer) the HTTP status does
// (0 for an error line in a stream, which then stays unclassified).
func FromError(e Error, status int) error {
	msg := e.Message
	if msg == "" {
		msg = "the backend reported an error without a message"
	}
	class := errdefs.ClassByCode(e.Code)
	if class == nil && e.Code != CodeInternal {
		class = ClassOfStatus(status)
	}
	var err error
	if class == nil {
		err = fmt.Errorf("backend: %s", msg)
	} else {
		err = errdefs.New(class, "%s", msg)
	}
	if e.Hint != "" {
		err = errdefs.WithHint(err, e.Hint)
	}
	return err
}

// ClassOfStatus maps an HTTP status to the broadest class it stands for,
// or nil for a status that names none (500 and anything unexpected).
func ClassOfStatus(status int) *errdefs.Class {
	switch status {
	case http.StatusBadRequest:
		return errdefs.ErrInvalidArgument
	case http.StatusRequestEntityTooLarge, http.StatusTooManyRequests:
		return errdefs.ErrResourceLimit
	case http.StatusUnauthorized, http.StatusForbidden:
		return errdefs.ErrUnauthorized
	case http.StatusNotFound:
		return errdefs.ErrNotFound
	case http.StatusGone:
		return errdefs.ErrSandboxDestroyed
	case http.StatusRequestTimeout:
		return errdefs.ErrExecTimeout
	case http.StatusConflict:
		return errdefs.ErrConflict
	case http.StatusNotImplemented:
		return errdefs.ErrUnimplemented
	case http.StatusServiceUnavailable, http.StatusBadGateway, http.StatusGatewayTimeout:
		return errdefs.ErrProviderUnavailable
	}
	return nil
}

// Capabilities is provider.Capabilities on the wire, with the isolation
// level by name.
type Capabilities struct {
	Isolation      string `json:"isolation"`
	Streaming      bool   `json:"streaming"`
	Adoption       bool   `json:"adoption"`
	Snapshots      bool   `json:"snapshots"`
	Network        bool   `json:"network"`
	ResourceLimits bool   `json:"resource_limits"`
	Symlinks       bool   `json:"symlinks"`
	DiskLimit      bool   `json:"disk_limit,omitempty"`
	// Pause: the backend serves PathPause and PathResume.
	Pause bool `json:"pause,omitempty"`
	// Stdin: the backend serves POST …/exec/stdin.
	Stdin bool `json:"stdin,omitempty"`
}

// CapabilitiesToWire converts c.
func CapabilitiesToWire(c provider.Capabilities) Capabilities {
	return Capabilities{
		Isolation: c.Isolation.String(), Streaming: c.Streaming, Adoption: c.Adoption,
		Snapshots: c.Snapshots, Network: c.Network, ResourceLimits: c.ResourceLimits, Symlinks: c.Symlinks,
		DiskLimit: c.DiskLimit, Pause: c.Pause, Stdin: c.Stdin,
	}
}

// CapabilitiesFromWire converts c. An isolation level this version does
// not know counts as none: claiming less than the backend offers is the
// safe mistake.
func CapabilitiesFromWire(c Capabilities) provider.Capabilities {
	iso := provider.IsolationNone
	for i := provider.IsolationNone; i <= provider.IsolationVM; i++ {
		if i.String() == c.Isolation {
			iso = i
		}
	}
	return provider.Capabilities{
		Isolation: iso, Streaming: c.Streaming, Adoption: c.Adoption,
		Snapshots: c.Snapshots, Network: c.Network, ResourceLimits: c.ResourceLimits, Symlinks: c.Symlinks,
		DiskLimit: c.DiskLimit, Pause: c.Pause, Stdin: c.Stdin,
	}
}

// Health is the body of a healthy GET /v1/health.
type Health struct {
	Status   string `json:"status"`
	Name     string `json:"name,omitempty"`
	Protocol int    `json:"protocol"`
}

// Spec is the body of POST /v1/sandboxes.
type Spec struct {
	ID       string            `json:"id"`
	Image    string            `json:"image"`
	MemoryMB int               `json:"memory_mb,omitempty"`
	VCPUs    int               `json:"vcpus,omitempty"`
	DiskMB   int               `json:"disk_mb,omitempty"`
	Env      map[string]string `json:"env,omitempty"`
	OwnerID  string            `json:"owner_id,omitempty"`
	Template string            `json:"template,omitempty"`
	Metadata map[string]string `json:"metadata,omitempty"`
	Network  string            `json:"network,omitempty"`
	Instance string            `json:"instance,omitempty"`
}

func SpecToWire(s provider.Spec) Spec {
	return Spec{ID: s.ID, Image: s.Image, MemoryMB: s.MemoryMB, VCPUs: s.VCPUs, DiskMB: s.DiskMB, Env: s.Env,
		OwnerID: s.OwnerID, Template: s.Template, Metadata: s.Metadata, Network: s.Network, Instance: s.Instance}
}

func SpecFromWire(s Spec) provider.Spec {
	return provider.Spec{ID: s.ID, Image: s.Image, MemoryMB: s.MemoryMB, VCPUs: s.VCPUs, DiskMB: s.DiskMB, Env: s.Env,
		OwnerID: s.OwnerID, Template: s.Template, Metadata: s.Metadata, Network: s.Network, Instance: s.Instance}
}

// Info is one sandbox as the backend sees it.
type Info struct {
	ID       string            `json:"id"`
	State    string            `json:"state"`
	Image    string            `json:"image"`
	Handle   string            `json:"handle,omitempty"`
	Runtime  string            `json:"runtime,omitempty"`
	OwnerID  string            `json:"owner_id,omitempty"`
	Template string            `json:"template,omitempty"`
	Metadata map[string]string `json:"metadata,omitempty"`
	Created  time.Time         `json:"created"`
	Instance string            `json:"instance,omitempty"`
}

func InfoToWire(i provider.Info) Info {
	return Info{ID: i.ID, State: string(i.State), Image: i.Image, Handle: i.Handle, Runtime: i.Runtime,
		OwnerID: i.OwnerID, Template: i.Template, Metadata: i.Metadata, Created: i.Created, Instance: i.Instance}
}

func InfoFromWire(i Info) provider.Info {
	return provider.Info{ID: i.ID, State: provider.State(i.State), Image: i.Image, Handle: i.Handle, Runtime: i.Runtime,
		OwnerID: i.OwnerID, Template: i.Template, Metadata: i.Metadata, Created: i.Created, Instance: i.Instance}
}

// Snapshot is one entry of GET /v1/snapshots.
type Snapshot struct {
	Image    string    `json:"image"`
	Provider string    `json:"provider"`
	Created  time.Time `json:"created"`
}

// ExecRequest is the body of POST /v1/sandboxes/{id}/exec.
type ExecRequest struct {
	Argv      []string          `json:"argv"`
	Env       map[string]string `json:"env,omitempty"`
	WorkDir   string            `json:"workdir,omitempty"`
	TimeoutMS int64             `json:"timeout_ms,omitempty"`
}

// MaxTimeoutMS is the largest timeout whose nanoseconds fit a Duration.
const MaxTimeoutMS = int64(1<<63-1) / int64(time.Millisecond)

func ExecToWire(r provider.ExecRequest) ExecRequest {
	return ExecRequest{Argv: r.Argv, Env: r.Env, WorkDir: r.WorkDir,
		// Rounded up: a positive timeout under 1 ms must not become 0
		// ("none").
		TimeoutMS: int64((r.Timeout + time.Millisecond - 1) / time.Millisecond)}
}

// ExecFromWire converts r, rejecting a timeout no Duration can hold.
func ExecFromWire(r ExecRequest) (provider.ExecRequest, error) {
	if r.TimeoutMS < 0 || r.TimeoutMS > MaxTimeoutMS {
		return provider.ExecRequest{}, errdefs.New(errdefs.ErrInvalidArgument, "timeout_ms must be between 0 and %d", MaxTimeoutMS)
	}
	return provider.ExecRequest{Argv: r.Argv, Env: r.Env, WorkDir: r.WorkDir,
		Timeout: time.Duration(r.TimeoutMS) * time.Millisecond}, nil
}

// Line is one line of an exec stream: output ({"stream":"stdout","data":
// "..."}, or "data_b64" for bytes that are not UTF-8), an error
// ({"type":"error",...}, at most one, just before the exit line), or the
// exit line that ends every complete stream ({"type":"exit",...}).
type Line struct {
	Type       string `json:"type,omitempty"`   // "", "error" or "exit"
	Stream     string `json:"stream,omitempty"` // "stdout" or "stderr"
	Data       string `json:"data,omitempty"`
	DataB64    []byte `json:"data_b64,omitempty"`
	Code       string `json:"code,omitempty"`
	Message    string `json:"message,omitempty"`
	Hint       string `json:"hint,omitempty"`
	ExitCode   int    `json:"exit_code"`
	TimedOut   bool   `json:"timed_out,omitempty"`
	DurationNS int64  `json:"duration_ns,omitempty"`
}

// FileInfo is one file on the wire; Mode holds the permission and special
// bits in octal, Type the kind of file, so that no peer needs Go's
// fs.FileMode layout.
type FileInfo struct {
	Path    string    `json:"path"`
	Size    int64     `json:"size"`
	Mode    string    `json:"mode"`
	Type    string    `json:"type"` // file, dir, symlink, pipe, socket, device, char_device, irregular
	IsDir   bool      `json:"is_dir"`
	ModTime time.Time `json:"mod_time"`
}

// Move is the body of POST .../files/move.
type Move struct {
	OldPath string `json:"old_path"`
	NewPath string `json:"new_path"`
}

// Chmod is the body of POST .../files/chmod.
type Chmod struct {
	Path string `json:"path"`
	Mode string `json:"mode"`
}

func FileInfoToWire(fi provider.FileInfo) FileInfo {
	return FileInfo{Path: fi.Path, Size: fi.Size, Mode: provider.FormatMode(fi.Mode), Type: provider.FileTypeName(fi.Mode), IsDir: fi.IsDir, ModTime: fi.ModTime}
}

func FileInfoFromWire(w FileInfo) (provider.FileInfo, error) {
	m, err := provider.ParseMode(w.Mode)
	if err != nil {
		return provider.FileInfo{}, err
	}
	return provider.FileInfo{Path: w.Path, Size: w.Size, Mode: m | provider.FileTypeBits(w.Type), IsDir: w.IsDir, ModTime: w.ModTime}, nil
}
