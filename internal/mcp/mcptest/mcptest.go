// Package mcptest drives StacyVM's MCP tools through the official SDK's
// client, so that every transport (stdio, streamable HTTP) runs the same
// checks against a real server.
package mcptest

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"regexp"
	"slices"
	"strings"
	"testing"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// Tools are the tools the server must list, sorted.
var Tools = []string{"create_sandbox", "destroy_sandbox", "list_files", "list_sandboxes", "read_file", "run_command", "write_file"}

// Call calls a tool that must succeed and decodes its structured content
// into out. It also checks that the text content says the same thing.
func Call(t *testing.T, cs *sdk.ClientSession, name string, args map[string]any, out any) {
	t.Helper()
	res := call(t, cs, name, args)
	if res.IsError {
		t.Fatalf("%s(%v): tool error: %s", name, args, text(res))
	}
	if res.StructuredContent == nil {
		t.Fatalf("%s: no structured content", name)
	}
	raw, err := json.Marshal(res.StructuredContent)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, out); err != nil {
		t.Fatalf("%s: structured content %s: %v", name, raw, err)
	}
	var fromText any
	if err := json.Unmarshal([]byte(text(res)), &fromText); err != nil {
		t.Fatalf("%s: text content is not the JSON result: %q", name, text(res))
	}
}

// CallError calls a tool that must fail and returns its error text.
func CallError(t *testing.T, cs *sdk.ClientSession, name string, args map[string]any) string {
	t.Helper()
	res := call(t, cs, name, args)
	if !res.IsError {
		t.Fatalf("%s(%v) succeeded, want a tool error", name, args)
	}
	return text(res)
}

func call(t *testing.T, cs *sdk.ClientSession, name string, args map[string]any) *sdk.CallToolResult {
	t.Helper()
	res, err := cs.CallTool(t.Context(), &sdk.CallToolParams{Name: name, Arguments: args})
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return res
}

func text(res *sdk.CallToolResult) string {
	var b strings.Builder
	for _, c := range res.Content {
		if tc, ok := c.(*sdk.TextContent); ok {
			b.WriteString(tc.Text)
		}
	}
	return b.String()
}

type sandbox struct {
	ID       string            `json:"id"`
	State    string            `json:"state"`
	Provider string            `json:"provider"`
	Metadata map[string]string `json:"metadata"`
}

type execOut struct {
	ExitCode int    `json:"exit_code"`
	Stdout   string `json:"stdout"`
	Stderr   string `json:"stderr"`
	Duration string `json:"duration"`
	TimedOut bool   `json:"timed_out"`
}

// Exercise runs every tool through cs: the whole life of a sandbox, text
// and binary files, exit codes, a timeout, and failures as tool errors.
func Exercise(t *testing.T, cs *sdk.ClientSession) {
	tools, err := cs.ListTools(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tl := range tools.Tools {
		names = append(names, tl.Name)
		if tl.OutputSchema == nil {
			t.Errorf("tool %s has no output schema", tl.Name)
		}
	}
	slices.Sort(names)
	if !slices.Equal(names, Tools) {
		t.Fatalf("tools = %v, want %v", names, Tools)
	}

	var sb sandbox
	Call(t, cs, "create_sandbox", map[string]any{"ttl": "10m", "metadata": map[string]string{"via": "mcp"}}, &sb)
	if !regexp.MustCompile(`^sb-[0-9a-f]{16,}$`).MatchString(sb.ID) || sb.State != "running" || sb.Metadata["via"] != "mcp" {
		t.Fatalf("create_sandbox = %+v", sb)
	}

	var wrote struct {
		Size   int64  `json:"size"`
		Status string `json:"status"`
	}
	Call(t, cs, "write_file", map[string]any{"sandbox_id": sb.ID, "path": "notes/hello.txt", "content": "héllo\n"}, &wrote)
	if wrote.Status != "written" || wrote.Size != int64(len("héllo\n")) {
		t.Errorf("write_file = %+v", wrote)
	}
	var read struct {
		Content   string `json:"content"`
		Encoding  string `json:"encoding"`
		Size      int64  `json:"size"`
		Truncated bool   `json:"truncated"`
	}
	Call(t, cs, "read_file", map[string]any{"sandbox_id": sb.ID, "path": "/workspace/notes/hello.txt"}, &read)
	if read.Content != "héllo\n" || read.Encoding != "utf-8" || read.Truncated {
		t.Errorf("read_file = %+v", read)
	}

	binary := make([]byte, 256)
	for i := range binary {
		binary[i] = byte(i)
	}
	Call(t, cs, "write_file", map[string]any{"sandbox_id": sb.ID, "path": "bin.dat", "mode": "0600",
		"content": base64.StdEncoding.EncodeToString(binary), "encoding": "base64"}, &wrote)
	Call(t, cs, "read_file", map[string]any{"sandbox_id": sb.ID, "path": "bin.dat"}, &read)
	got, err := base64.StdEncoding.DecodeString(read.Content)
	if read.Encoding != "base64" || err != nil || !bytes.Equal(got, binary) {
		t.Errorf("binary read_file: encoding %q, %d bytes, err %v", read.Encoding, len(got), err)
	}
	Call(t, cs, "read_file", map[string]any{"sandbox_id": sb.ID, "path": "notes/hello.txt", "max_bytes": 1}, &read)
	if read.Content != "h" || !read.Truncated || read.Size != 1 {
		t.Errorf("read_file max_bytes=1 = %+v, want the first byte, truncated", read)
	}

	var listed struct {
		Path    string `json:"path"`
		Entries []struct {
			Path  string `json:"path"`
			Mode  string `json:"mode"`
			IsDir bool   `json:"is_dir"`
			Size  int64  `json:"size"`
		} `json:"entries"`
	}
	Call(t, cs, "list_files", map[string]any{"sandbox_id": sb.ID}, &listed)
	seen := map[string]string{}
	for _, e := range listed.Entries {
		seen[e.Path] = e.Mode
		if e.Path == "/workspace/notes" && !e.IsDir {
			t.Errorf("notes is not a directory: %+v", e)
		}
	}
	if listed.Path != "/workspace" || seen["/workspace/bin.dat"] != "0600" || seen["/workspace/notes"] == "" {
		t.Errorf("list_files = %+v", listed)
	}

	var ex execOut
	Call(t, cs, "run_command", map[string]any{"sandbox_id": sb.ID, "command": "cat notes/hello.txt; echo oops >&2; exit 3"}, &ex)
	if ex.ExitCode != 3 || ex.Stdout != "héllo\n" || ex.Stderr != "oops\n" || ex.TimedOut || ex.Duration == "" {
		t.Errorf("run_command = %+v", ex)
	}
	Call(t, cs, "run_command", map[string]any{"sandbox_id": sb.ID, "command": "printf", "args": []string{"%s|", "a b", "$HOME"},
		"env": map[string]string{"X": "1"}, "workdir": "/workspace/notes"}, &ex)
	if ex.ExitCode != 0 || ex.Stdout != "a b|$HOME|" {
		t.Errorf("run_command with args = %+v", ex)
	}
	Call(t, cs, "run_command", map[string]any{"sandbox_id": sb.ID, "command": "echo started; sleep 30", "timeout": "300ms"}, &ex)
	if !ex.TimedOut || ex.ExitCode != -1 || ex.Stdout != "started\n" {
		t.Errorf("run_command past its timeout = %+v", ex)
	}
	if msg := CallError(t, cs, "run_command", map[string]any{"sandbox_id": sb.ID, "command": "true", "timeout": "soon"}); !strings.Contains(msg, "duration") {
		t.Errorf("bad timeout: %q", msg)
	}

	var all struct {
		Sandboxes []sandbox `json:"sandboxes"`
	}
	Call(t, cs, "list_sandboxes", map[string]any{}, &all)
	if !slices.ContainsFunc(all.Sandboxes, func(s sandbox) bool { return s.ID == sb.ID }) {
		t.Errorf("list_sandboxes = %+v, want %s", all, sb.ID)
	}

	if msg := CallError(t, cs, "read_file", map[string]any{"sandbox_id": sb.ID, "path": "missing.txt"}); !strings.Contains(strings.ToLower(strings.ReplaceAll(msg, "_", " ")), "file not found") {
		t.Errorf("read_file of a missing file: %q", msg)
	}
	if msg := CallError(t, cs, "create_sandbox", map[string]any{"ttl": "-1s"}); !strings.Contains(msg, "ttl") {
		t.Errorf("create_sandbox with a bad ttl: %q", msg)
	}

	var destroyed struct {
		SandboxID string `json:"sandbox_id"`
		Status    string `json:"status"`
	}
	Call(t, cs, "destroy_sandbox", map[string]any{"sandbox_id": sb.ID}, &destroyed)
	if destroyed.Status != "destroyed" || destroyed.SandboxID != sb.ID {
		t.Errorf("destroy_sandbox = %+v", destroyed)
	}
	Call(t, cs, "list_sandboxes", map[string]any{}, &all)
	if slices.ContainsFunc(all.Sandboxes, func(s sandbox) bool { return s.ID == sb.ID }) {
		t.Errorf("list_sandboxes after destroy still has %s", sb.ID)
	}
	if msg := CallError(t, cs, "run_command", map[string]any{"sandbox_id": sb.ID, "command": "true"}); !strings.Contains(strings.ToLower(msg), "destroyed") {
		t.Errorf("run_command in a destroyed sandbox: %q", msg)
	}
}
