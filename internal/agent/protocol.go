package agent

import (
	"errors"
	"io/fs"
	"net/http"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/provider"
)

// ProtocolVersion is the protocol's major version. It is also the route
// prefix (/v1/). Additions that old peers can ignore (new routes, new
// response fields, new frame kinds) keep the version; anything else bumps it.
const ProtocolVersion = 1

// Routes. Paths are fixed by the protocol; see docs/agent-protocol.md.
const (
	pathHealth    = "/v1/health"
	pathExec      = "/v1/exec"
	pathFiles     = "/v1/files"
	pathFilesList = "/v1/files/list"
	pathFilesStat = "/v1/files/stat"
	pathFilesMove = "/v1/files/move"
	pathFilesMod  = "/v1/files/chmod"
	pathFilesGlob = "/v1/files/glob"
	pathRefresh   = "/v1/guest/refresh"
)

// Content types on the wire.
const (
	contentTypeJSON   = "application/json"
	contentTypeFrames = "application/vnd.stacyvm.exec-frames"
	contentTypeOctets = "application/octet-stream"
)

// MaxJSONBytes bounds every JSON request body the server accepts.
const MaxJSONBytes = 1 << 20

// Version is what GET /v1/health reports.
type Version struct {
	// Status is "ok" when the agent serves requests.
	Status string `json:"status"`
	// Version is the agent build's version string.
	Version string `json:"version"`
	// Protocol is the protocol major version the agent speaks.
	Protocol int    `json:"protocol"`
	OS       string `json:"os"`
	Arch     string `json:"arch"`
}

// wireError is the body of every failed response and of error frames.
type wireError struct {
	Class   string `json:"class"`
	Message string `json:"message"`
}

// classInternal is the wire class of an error that belongs to no errdefs
// class.
const classInternal = "internal"

// classCodes gives each errdefs class its stable wire code and the HTTP
// status the agent answers with (the status is for humans with curl; the
// client reads only the code). Specific classes come before their parents.
var classCodes = []struct {
	class  *errdefs.Class
	code   string
	status int
}{
	{errdefs.ErrSandboxNotFound, "sandbox_not_found", http.StatusNotFound},
	{errdefs.ErrSandboxDestroyed, "sandbox_destroyed", http.StatusNotFound},
	{errdefs.ErrProviderNotFound, "provider_not_found", http.StatusNotFound},
	{errdefs.ErrFileNotFound, "file_not_found", http.StatusNotFound},
	{errdefs.ErrNotFound, "not_found", http.StatusNotFound},
	{errdefs.ErrConflict, "conflict", http.StatusConflict},
	{errdefs.ErrInvalidArgument, "invalid_argument", http.StatusBadRequest},
	{errdefs.ErrUnauthorized, "unauthorized", http.StatusUnauthorized},
	{errdefs.ErrUnimplemented, "unimplemented", http.StatusNotImplemented},
	{errdefs.ErrResourceLimit, "resource_limit", http.StatusRequestEntityTooLarge},
	{errdefs.ErrProviderUnavailable, "provider_unavailable", http.StatusServiceUnavailable},
	{errdefs.ErrExecTimeout, "exec_timeout", http.StatusRequestTimeout},
}

// ClassCode returns the wire code of err's most specific class, or
// "internal" for an unclassified error.
func ClassCode(err error) string {
	code, _ := classify(err)
	return code
}

func classify(err error) (code string, status int) {
	c := errdefs.Classify(err)
	for _, cc := range classCodes {
		if cc.class == c {
			return cc.code, cc.status
		}
	}
	return classInternal, http.StatusInternalServerError
}

func toWireError(err error) wireError {
	code, _ := classify(err)
	return wireError{Class: code, Message: err.Error()}
}

// errorFromWire rebuilds the error the agent reported. The class travels
// as a protocol field, so the rebuilt error matches the same errdefs class
// with errors.Is. An unknown code (a newer agent) or "internal" yields an
// unclassified error.
func errorFromWire(we wireError) error {
	msg := we.Message
	if msg == "" {
		msg = "agent reported an error without a message"
	}
	for _, cc := range classCodes {
		if cc.code == we.Class {
			return errdefs.New(cc.class, "%s", msg)
		}
	}
	return errors.New(msg)
}

// wireExecRequest is the body of POST /v1/exec.
type wireExecRequest struct {
	Argv      []string          `json:"argv"`
	Env       map[string]string `json:"env,omitempty"`
	WorkDir   string            `json:"workdir,omitempty"`
	TimeoutMS int64             `json:"timeout_ms,omitempty"`
}

// maxTimeoutMS is the largest timeout whose nanoseconds fit a Duration.
const maxTimeoutMS = int64(1<<63-1) / int64(time.Millisecond)

func execRequestToWire(req provider.ExecRequest) wireExecRequest {
	return wireExecRequest{
		Argv:    req.Argv,
		Env:     req.Env,
		WorkDir: req.WorkDir,
		// Round up: a positive timeout below 1 ms must not become 0, which
		// means "no timeout".
		TimeoutMS: int64((req.Timeout + time.Millisecond - 1) / time.Millisecond),
	}
}

// wireExit is the payload of the exit frame.
type wireExit struct {
	ExitCode   int   `json:"exit_code"`
	TimedOut   bool  `json:"timed_out"`
	DurationNS int64 `json:"duration_ns"`
}

// wireFileInfo is one file on the wire. Mode and type are split so that
// a non-Go peer never needs Go's fs.FileMode bit layout.
type wireFileInfo struct {
	Path    string    `json:"path"`
	Size    int64     `json:"size"`
	Mode    string    `json:"mode"` // octal permission bits with setuid/setgid/sticky, "0644"
	Type    string    `json:"type"` // file, dir, symlink, pipe, socket, device, char_device, irregular
	IsDir   bool      `json:"is_dir"`
	ModTime time.Time `json:"mod_time"`
}

type wireMove struct {
	OldPath string `json:"old_path"`
	NewPath string `json:"new_path"`
}

type wireChmod struct {
	Path string `json:"path"`
	Mode string `json:"mode"`
}

// wireRefresh is the body of POST /v1/guest/refresh. Entropy is base64 in
// JSON (encoding/json's rule for []byte).
type wireRefresh struct {
	Entropy   []byte `json:"entropy"`
	UnixNanos int64  `json:"unix_nanos"`
}

// Bounds on a refresh's entropy. 32 bytes is the 256 bits the kernel's CRNG
// is keyed with; the upper bound only keeps a request small.
const (
	MinRefreshEntropy = 32
	MaxRefreshEntropy = 4096
)

// fileTypes maps fs.FileMode type bits to wire type names. Order matters:
// a character device has both ModeDevice and ModeCharDevice.
var fileTypes = []struct {
	bits fs.FileMode
	name string
}{
	{fs.ModeDir, "dir"},
	{fs.ModeSymlink, "symlink"},
	{fs.ModeNamedPipe, "pipe"},
	{fs.ModeSocket, "socket"},
	{fs.ModeDevice | fs.ModeCharDevice, "char_device"},
	{fs.ModeDevice, "device"},
	{fs.ModeIrregular, "irregular"},
}

func fileTypeName(m fs.FileMode) string {
	for _, t := range fileTypes {
		if m&t.bits == t.bits {
			return t.name
		}
	}
	return "file"
}

func fileTypeBits(name string) fs.FileMode {
	if name == "file" {
		return 0
	}
	for _, t := range fileTypes {
		if t.name == name {
			return t.bits
		}
	}
	// A type a newer agent invented: the file exists but is not regular.
	return fs.ModeIrregular
}

// FormatMode and ParseMode are the protocol's octal mode strings; the one
// rule lives in package provider.
var (
	FormatMode = provider.FormatMode
	ParseMode  = provider.ParseMode
)

func fileInfoToWire(fi provider.FileInfo) wireFileInfo {
	return wireFileInfo{
		Path:    fi.Path,
		Size:    fi.Size,
		Mode:    FormatMode(fi.Mode),
		Type:    fileTypeName(fi.Mode),
		IsDir:   fi.IsDir,
		ModTime: fi.ModTime,
	}
}

func fileInfoFromWire(w wireFileInfo) (provider.FileInfo, error) {
	m, err := ParseMode(w.Mode)
	if err != nil {
		return provider.FileInfo{}, err
	}
	return provider.FileInfo{
		Path:    w.Path,
		Size:    w.Size,
		Mode:    m | fileTypeBits(w.Type),
		IsDir:   w.IsDir,
		ModTime: w.ModTime,
	}, nil
}
