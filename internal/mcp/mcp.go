// Package mcp serves StacyVM as Model Context Protocol tools, on the
// official Go SDK: create and list sandboxes, run commands, read, write and
// list files, destroy. The tools are written once against Backend, which
// has two implementations: the orchestrator itself (for `serve`, which
// mounts the streamable HTTP handler at /mcp behind the API's middleware)
// and the REST client (for `stacyvm mcp`, which speaks stdio to an agent
// and HTTP to a running server). Either way the tools reach the one
// orchestrator of a server; this package is a client of it, never a second
// one.
package mcp

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/provider"
)

// Backend is what the tools need from a StacyVM server.
type Backend interface {
	Spawn(ctx context.Context, in SpawnInput) (Sandbox, error)
	List(ctx context.Context, state string) ([]Sandbox, error)
	Destroy(ctx context.Context, id string) error
	// Exec runs a buffered command. On a timeout it returns what the
	// command printed with TimedOut set, and an ErrExecTimeout error.
	Exec(ctx context.Context, id string, in ExecInput, timeout time.Duration) (ExecOutput, error)
	WriteFile(ctx context.Context, id, path string, r io.Reader, mode fs.FileMode) error
	ReadFile(ctx context.Context, id, path string) (io.ReadCloser, error)
	ListFiles(ctx context.Context, id, path string) ([]FileEntry, error)
}

// Sandbox is a sandbox as the tools report it.
type Sandbox struct {
	ID        string            `json:"id"`
	State     string            `json:"state"`
	Provider  string            `json:"provider"`
	Image     string            `json:"image"`
	Template  string            `json:"template,omitempty"`
	CreatedAt time.Time         `json:"created_at"`
	ExpiresAt time.Time         `json:"expires_at"`
	Metadata  map[string]string `json:"metadata,omitempty"`
	Error     string            `json:"error,omitempty"`
}

// FileEntry is one directory entry.
type FileEntry struct {
	Path    string    `json:"path"`
	Size    int64     `json:"size"`
	Mode    string    `json:"mode" jsonschema:"octal permission bits"`
	IsDir   bool      `json:"is_dir"`
	ModTime time.Time `json:"mod_time"`
}

// SpawnInput is create_sandbox's arguments.
type SpawnInput struct {
	Image    string            `json:"image,omitempty" jsonschema:"image to run; the server's default when empty"`
	Provider string            `json:"provider,omitempty" jsonschema:"provider name; the server's default when empty"`
	Template string            `json:"template,omitempty" jsonschema:"template to spawn from"`
	TTL      string            `json:"ttl,omitempty" jsonschema:"time to live as a Go duration such as 30m; the server's default when empty"`
	MemoryMB int               `json:"memory_mb,omitempty" jsonschema:"memory in MiB"`
	VCPUs    int               `json:"vcpus,omitempty" jsonschema:"virtual CPUs"`
	Metadata map[string]string `json:"metadata,omitempty" jsonschema:"labels kept with the sandbox"`
}

// ExecInput is run_command's arguments.
type ExecInput struct {
	SandboxID string            `json:"sandbox_id"`
	Command   string            `json:"command" jsonschema:"a shell command line, or with args the program to run without a shell"`
	Args      []string          `json:"args,omitempty" jsonschema:"arguments; when given, command runs without a shell"`
	Env       map[string]string `json:"env,omitempty"`
	Workdir   string            `json:"workdir,omitempty" jsonschema:"working directory; /workspace when empty"`
	Timeout   string            `json:"timeout,omitempty" jsonschema:"kill the command after this Go duration such as 30s; the server's default when empty"`
}

// ExecOutput is run_command's result.
type ExecOutput struct {
	ExitCode  int    `json:"exit_code"`
	Stdout    string `json:"stdout"`
	Stderr    string `json:"stderr"`
	Duration  string `json:"duration"`
	TimedOut  bool   `json:"timed_out"`
	Truncated bool   `json:"truncated"`
}

type sandboxRef struct {
	SandboxID string `json:"sandbox_id"`
}

type listSandboxesInput struct {
	State string `json:"state,omitempty" jsonschema:"only sandboxes in this state (creating, running, destroyed, error...)"`
}

type listSandboxesOutput struct {
	Sandboxes []Sandbox `json:"sandboxes"`
}

type destroyOutput struct {
	SandboxID string `json:"sandbox_id"`
	Status    string `json:"status"`
}

type readFileInput struct {
	SandboxID string `json:"sandbox_id"`
	Path      string `json:"path" jsonschema:"sandbox path; relative paths resolve against /workspace"`
	MaxBytes  int64  `json:"max_bytes,omitempty" jsonschema:"read at most this many bytes (default 1 MiB)"`
}

type readFileOutput struct {
	Path      string `json:"path"`
	Content   string `json:"content"`
	Encoding  string `json:"encoding" jsonschema:"utf-8, or base64 when the file is not valid UTF-8"`
	Size      int64  `json:"size" jsonschema:"bytes returned"`
	Truncated bool   `json:"truncated" jsonschema:"the file is longer than max_bytes"`
}

type writeFileInput struct {
	SandboxID string `json:"sandbox_id"`
	Path      string `json:"path" jsonschema:"sandbox path; parent directories are created"`
	Content   string `json:"content"`
	Encoding  string `json:"encoding,omitempty" jsonschema:"utf-8 (default) or base64"`
	Mode      string `json:"mode,omitempty" jsonschema:"octal permission bits such as 0755 (default 0644)"`
}

type writeFileOutput struct {
	Path   string `json:"path"`
	Size   int64  `json:"size"`
	Status string `json:"status"`
}

type listFilesInput struct {
	SandboxID string `json:"sandbox_id"`
	Path      string `json:"path,omitempty" jsonschema:"directory; /workspace when empty"`
}

type listFilesOutput struct {
	Path    string      `json:"path"`
	Entries []FileEntry `json:"entries"`
}

// defaultReadBytes bounds read_file: its result lands in a model's context.
const defaultReadBytes = 1 << 20

// NewServer returns an MCP server whose tools act on b.
func NewServer(b Backend, version string) *sdk.Server {
	s := sdk.NewServer(&sdk.Implementation{Name: "stacyvm", Version: version}, &sdk.ServerOptions{
		Instructions: "StacyVM runs disposable sandboxes. Create one with create_sandbox, " +
			"run commands in it with run_command, move files with write_file/read_file/list_files, " +
			"and destroy it with destroy_sandbox when done (it also expires after its TTL).",
	})
	sdk.AddTool(s, &sdk.Tool{Name: "create_sandbox", Description: "Create a sandbox and return it (its id is what the other tools take)."},
		func(ctx context.Context, _ *sdk.CallToolRequest, in SpawnInput) (*sdk.CallToolResult, Sandbox, error) {
			sb, err := b.Spawn(ctx, in)
			return nil, sb, toolError(err)
		})
	sdk.AddTool(s, &sdk.Tool{Name: "list_sandboxes", Description: "List sandboxes that are not destroyed, newest first."},
		func(ctx context.Context, _ *sdk.CallToolRequest, in listSandboxesInput) (*sdk.CallToolResult, listSandboxesOutput, error) {
			list, err := b.List(ctx, in.State)
			if list == nil {
				list = []Sandbox{}
			}
			return nil, listSandboxesOutput{Sandboxes: list}, toolError(err)
		})
	sdk.AddTool(s, &sdk.Tool{Name: "destroy_sandbox", Description: "Destroy a sandbox and everything in it.",
		Annotations: &sdk.ToolAnnotations{DestructiveHint: new(true)}},
		func(ctx context.Context, _ *sdk.CallToolRequest, in sandboxRef) (*sdk.CallToolResult, destroyOutput, error) {
			if err := b.Destroy(ctx, in.SandboxID); err != nil {
				return nil, destroyOutput{}, toolError(err)
			}
			return nil, destroyOutput{SandboxID: in.SandboxID, Status: "destroyed"}, nil
		})
	sdk.AddTool(s, &sdk.Tool{Name: "run_command", Description: "Run a command in a sandbox and return its exit code and output. " +
		"A non-zero exit code is a result, not an error; a command that outlives its timeout is killed and reported with timed_out."},
		func(ctx context.Context, _ *sdk.CallToolRequest, in ExecInput) (*sdk.CallToolResult, ExecOutput, error) {
			var timeout time.Duration
			if in.Timeout != "" {
				d, err := time.ParseDuration(in.Timeout)
				if err != nil || d <= 0 {
					return nil, ExecOutput{}, fmt.Errorf("timeout %q is not a positive Go duration such as 30s", in.Timeout)
				}
				timeout = d
			}
			out, err := b.Exec(ctx, in.SandboxID, in, timeout)
			if errors.Is(err, errdefs.ErrExecTimeout) {
				// The agent asked for a timeout: what happened is the
				// result, not a failure of the tool.
				out.TimedOut, out.ExitCode = true, -1
				return nil, out, nil
			}
			return nil, out, toolError(err)
		})
	sdk.AddTool(s, &sdk.Tool{Name: "read_file", Description: "Read a file from a sandbox. Text comes back as UTF-8, anything else as base64.",
		Annotations: &sdk.ToolAnnotations{ReadOnlyHint: true}},
		func(ctx context.Context, _ *sdk.CallToolRequest, in readFileInput) (*sdk.CallToolResult, readFileOutput, error) {
			limit := in.MaxBytes
			if limit <= 0 {
				limit = defaultReadBytes
			}
			rc, err := b.ReadFile(ctx, in.SandboxID, in.Path)
			if err != nil {
				return nil, readFileOutput{}, toolError(err)
			}
			defer rc.Close()
			data, err := io.ReadAll(io.LimitReader(rc, limit+1))
			if err != nil {
				return nil, readFileOutput{}, toolError(err)
			}
			out := readFileOutput{Path: in.Path, Encoding: "utf-8"}
			if int64(len(data)) > limit {
				data, out.Truncated = data[:limit], true
			}
			out.Size = int64(len(data))
			if utf8.Valid(data) {
				out.Content = string(data)
			} else {
				out.Encoding, out.Content = "base64", base64.StdEncoding.EncodeToString(data)
			}
			return nil, out, nil
		})
	sdk.AddTool(s, &sdk.Tool{Name: "write_file", Description: "Write a file in a sandbox, creating parent directories."},
		func(ctx context.Context, _ *sdk.CallToolRequest, in writeFileInput) (*sdk.CallToolResult, writeFileOutput, error) {
			data := []byte(in.Content)
			switch strings.ToLower(in.Encoding) {
			case "", "utf-8", "utf8":
			case "base64":
				var err error
				if data, err = base64.StdEncoding.DecodeString(in.Content); err != nil {
					return nil, writeFileOutput{}, fmt.Errorf("content is not valid base64: %v", err)
				}
			default:
				return nil, writeFileOutput{}, fmt.Errorf("encoding %q: want utf-8 or base64", in.Encoding)
			}
			mode := fs.FileMode(0o644)
			if in.Mode != "" {
				m, err := provider.ParseMode(in.Mode)
				if err != nil {
					return nil, writeFileOutput{}, toolError(err)
				}
				mode = m
			}
			if err := b.WriteFile(ctx, in.SandboxID, in.Path, bytes.NewReader(data), mode); err != nil {
				return nil, writeFileOutput{}, toolError(err)
			}
			return nil, writeFileOutput{Path: in.Path, Size: int64(len(data)), Status: "written"}, nil
		})
	sdk.AddTool(s, &sdk.Tool{Name: "list_files", Description: "List a directory in a sandbox.",
		Annotations: &sdk.ToolAnnotations{ReadOnlyHint: true}},
		func(ctx context.Context, _ *sdk.CallToolRequest, in listFilesInput) (*sdk.CallToolResult, listFilesOutput, error) {
			path := in.Path
			if path == "" {
				path = provider.DefaultWorkDir
			}
			entries, err := b.ListFiles(ctx, in.SandboxID, path)
			if entries == nil {
				entries = []FileEntry{}
			}
			return nil, listFilesOutput{Path: path, Entries: entries}, toolError(err)
		})
	return s
}

// toolError turns a failure into the text an agent sees in the tool's
// error result: the class, the message and the hint, if any.
func toolError(err error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	if c := errdefs.Classify(err); c != nil && !strings.Contains(msg, strings.ToUpper(c.Code())) {
		msg = c.Error() + ": " + msg
	}
	if h := errdefs.Hint(err); h != "" && !strings.Contains(msg, h) {
		msg += " (hint: " + h + ")"
	}
	return errors.New(msg)
}

// Handler serves s over streamable HTTP. It is stateless (every request
// stands alone, so GET and DELETE have no use and the API routes only
// POST) and answers with plain JSON. The API's middleware in front of it
// does auth, request IDs, Host and Origin checks and the body limit.
func Handler(s *sdk.Server) http.Handler {
	return sdk.NewStreamableHTTPHandler(func(*http.Request) *sdk.Server { return s }, &sdk.StreamableHTTPOptions{
		Stateless:           true,
		JSONResponse:        true,
		MaxRequestBodyBytes: -1,
	})
}

// ServeStdio runs s over r and w (newline-delimited JSON-RPC) until the
// peer closes r or ctx ends.
func ServeStdio(ctx context.Context, s *sdk.Server, r io.Reader, w io.Writer) error {
	err := s.Run(ctx, &sdk.IOTransport{Reader: io.NopCloser(r), Writer: nopWriteCloser{w}})
	if errors.Is(err, io.EOF) || errors.Is(err, context.Canceled) && ctx.Err() != nil {
		return nil
	}
	return err
}

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }
