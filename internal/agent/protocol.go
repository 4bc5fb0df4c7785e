package agent

import (
	"errors"
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
const classInternal = errdefs.CodeInternal

// classStatus is the HTTP status the agent answers each errdefs class with
// (the status is for humans with curl; the client reads only the class,
// whose code errdefs defines).
var classStatus = map[*errdefs.Class]int{
	errdefs.ErrSandboxNotFound:     http.StatusNotFound,
	errdefs.ErrSandboxDestroyed:    http.StatusNotFound,
	errdefs.ErrProviderNotFound:    http.StatusNotFound,
	errdefs.ErrFileNotFound:        http.StatusNotFound,
	errdefs.ErrNotFound:            http.StatusNotFound,
	errdefs.ErrConflict:            http.StatusConflict,
	errdefs.ErrInvalidArgument:     http.StatusBadRequest,
	errdefs.ErrUnauthorized:        http.StatusUnauthorized,
	errdefs.ErrUnimplemented:       http.StatusNotImplemented,
	errdefs.ErrResourceLimit:       http.StatusRequestEntityTooLarge,
	errdefs.ErrProviderUnavailable: http.StatusServiceUnavailable,
	errdefs.ErrExecTimeout:         http.StatusRequestTimeout,
}

// ClassCode returns the wire code of err's most specific class, or
// "internal" for an unclassified error.
func ClassCode(err error) string { return errdefs.CodeOf(err) }

func toWireError(err error) wireError {
	return wireError{Class: errdefs.CodeOf(err), Message: err.Error()}
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
	if c := errdefs.ClassByCode(we.Class); c != nil {
		return errdefs.New(c, "%s", msg)
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
		Type:    provider.FileTypeName(fi.Mode),
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
		Mode:    m | provider.FileTypeBits(w.Type),
		IsDir:   w.IsDir,
		ModTime: w.ModTime,
	}, nil
}
