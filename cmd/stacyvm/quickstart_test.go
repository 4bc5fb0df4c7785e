package main

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestREADMEQuickStart runs the README's quick start as written: the
// README's first command (scripts/serve, which builds the binaries and
// serves) with no configuration file in an empty directory, then the curl
// block and the CLI block with bash, then SIGTERM. Only the address is
// substituted, and the state directories are kept inside the test's.
func TestREADMEQuickStart(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the real binary; skipped in -short mode")
	}
	for _, tool := range []string{"bash", "curl", "python3"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("the README's quick start needs %s, which is not installed", tool)
		}
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := bashBlocks(t, string(readme), "## Quick start")
	if len(blocks) < 2 {
		t.Fatalf("the quick start must have a curl block and a CLI block; found %d bash blocks", len(blocks))
	}

	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	first := strings.Fields(strings.SplitN(bashBlocks(t, string(readme), "# StacyVM")[0], "\n", 2)[0])[0]
	if first != "scripts/serve" {
		t.Fatalf("the README's first command is %q; this test runs scripts/serve", first)
	}
	dir := t.TempDir()
	addr := "127.0.0.1:" + freePort(t)
	srv := exec.Command(filepath.Join(repo, "scripts/serve"), "--listen", addr)
	srv.Dir = dir
	srv.Env = os.Environ()
	logs := &syncBuffer{}
	srv.Stdout, srv.Stderr = logs, logs
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- srv.Wait() }()
	t.Cleanup(func() { srv.Process.Kill() })
	waitHealthy(t, "http://"+addr, exited, logs)
	if strings.Contains(logs.String(), "no default provider can serve") && os.Getenv("STACYVM_TEST_DOCKER") != "1" {
		// The mock is never chosen implicitly: the quick start needs a
		// provider that isolates (scripts/test starts Docker and proot).
		t.Skipf("no isolating provider works on this host (see `stacyvm doctor`); the quick start needs Docker or proot")
	}

	run := func(script string) string {
		t.Helper()
		script = strings.ReplaceAll(script, "localhost:7423", addr)
		cmd := exec.Command("bash", "-euo", "pipefail", "-c", script)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "STACYVM_SERVER=http://"+addr,
			"PATH="+filepath.Join(repo, "bin")+string(os.PathListSeparator)+os.Getenv("PATH"))
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("quick start failed: %v\n--- script\n%s\n--- output\n%s\n--- server log\n%s", err, script, out, logs.String())
		}
		return string(out)
	}

	out := run(blocks[0])
	for _, want := range []string{`"exit_code":0`, "hello", `{"stream":"stdout","data":"1\n"}`, `"type":"exit"`, `"status":"written"`, "hi there", `"status":"destroyed"`} {
		if !strings.Contains(out, want) {
			t.Errorf("curl quick start output lacks %q:\n%s", want, out)
		}
	}
	out = run(blocks[1])
	for _, want := range []string{"hello", "hi there"} {
		if !strings.Contains(out, want) {
			t.Errorf("CLI quick start output lacks %q:\n%s", want, out)
		}
	}

	srv.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("serve after SIGTERM: %v\n%s", err, logs.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatal("serve did not stop on SIGTERM")
	}
	if _, err := os.Stat(filepath.Join(dir, "stacyvm.db")); err != nil {
		t.Errorf("serve with no configuration must create ./stacyvm.db: %v", err)
	}
}

// bashBlocks returns the ```bash blocks in the section that starts with
// heading, up to the next "## " heading.
func bashBlocks(t *testing.T, doc, heading string) []string {
	t.Helper()
	i := strings.Index(doc, heading)
	if i < 0 {
		t.Fatalf("README has no %q section", heading)
	}
	section := doc[i+len(heading):]
	if j := strings.Index(section, "\n## "); j >= 0 {
		section = section[:j]
	}
	var blocks []string
	for {
		start := strings.Index(section, "```bash\n")
		if start < 0 {
			return blocks
		}
		section = section[start+len("```bash\n"):]
		end := strings.Index(section, "```")
		if end < 0 {
			t.Fatal("unterminated code block in README")
		}
		blocks = append(blocks, section[:end])
		section = section[end+3:]
	}
}

func waitHealthy(t *testing.T, base string, exited <-chan error, logs *syncBuffer) {
	t.Helper()
	// scripts/serve compiles both binaries first.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, "GET", base+"/api/v1/health", nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		select {
		case err := <-exited:
			t.Fatalf("serve exited early: %v\n%s", err, logs.String())
		case <-ctx.Done():
			t.Fatalf("serve never became healthy\n%s", logs.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
}
