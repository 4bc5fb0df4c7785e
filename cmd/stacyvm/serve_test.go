package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer the server's log may write to while the
// test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// writeConfig writes a server configuration that keeps everything in dir
// and loads only the mock provider.
func writeConfig(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "stacyvm.yaml")
	cfg := "store:\n  path: " + filepath.Join(dir, "stacyvm.db") + "\n" +
		"mock:\n  dir: " + filepath.Join(dir, "mock") + "\n" +
		"provider:\n  enabled: [mock]\n" +
		"sandbox:\n  default_image: serve-test\n" +
		"server:\n  shutdown_timeout: 5s\n"
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// freePort returns a loopback port nobody listens on right now.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}

func TestServe(t *testing.T) {
	dir := t.TempDir()
	cfgPath := writeConfig(t, dir)
	addr := "127.0.0.1:" + freePort(t)
	url := "http://" + addr

	ctx, stop := context.WithCancel(t.Context())
	defer stop()
	logs := &syncBuffer{}
	done := make(chan int, 1)
	go func() {
		// The flags override the file: the file names no listen address,
		// key or default provider.
		args := []string{"serve", "--config", cfgPath, "--listen", addr, "--api-key", "serve-key", "--provider", "mock"}
		done <- run(ctx, args, streams{in: strings.NewReader(""), out: logs, err: logs}, []string{"STACYVM_LOG_FORMAT=json"})
	}()

	client := func(args ...string) result {
		return cliWith(t, nil, invocation{env: []string{envServer + "=" + url, envAPIKey + "=serve-key"}}, args...)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := client("version")
		if strings.Contains(r.stdout, "server: ") && !strings.Contains(r.stdout, "unreachable") {
			break
		}
		select {
		case code := <-done:
			t.Fatalf("serve exited %d before serving:\n%s", code, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("server did not come up:\n%s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}

	id := strings.TrimSpace(client("spawn").ok(t).stdout)
	if r := client("exec", id, "--", "echo served"); r.code != 0 || r.stdout != "served\n" {
		t.Errorf("exec through serve: exit %d, %q, %q", r.code, r.stdout, r.stderr)
	}
	r := client("get", "--json", id).ok(t)
	if !strings.Contains(r.stdout, `"image": "serve-test"`) {
		t.Errorf("sandbox did not take the file's default image: %s", r.stdout)
	}
	// --api-key was applied.
	wantAPIError(t, cliWith(t, nil, invocation{env: []string{envServer + "=" + url}}, "ls"), "UNAUTHORIZED")

	stop()
	select {
	case code := <-done:
		if code != exitOK {
			t.Errorf("serve exited %d after its context ended, want 0:\n%s", code, logs.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("serve did not stop after its context ended")
	}
	// STACYVM_LOG_FORMAT=json from the environment chose the format.
	for line := range strings.Lines(strings.TrimSpace(logs.String())) {
		if !json.Valid([]byte(line)) {
			t.Errorf("log line is not JSON: %q", line)
		}
	}
	if !strings.Contains(logs.String(), `"addr":"`+addr+`"`) {
		t.Errorf("logs do not show the listen address:\n%s", logs.String())
	}
}

func TestServePrintConfig(t *testing.T) {
	dir := t.TempDir()
	cfgPath := writeConfig(t, dir)
	r := cliWith(t, nil, invocation{env: []string{"STACYVM_SANDBOX_DEFAULT_TTL=45m"}},
		"serve", "--config", cfgPath, "--print-config", "--listen", "127.0.0.1:7555", "--db", filepath.Join(dir, "other.db"),
		"--provider", "mock", "--api-key", "very-secret").ok(t)
	for _, re := range []string{
		`listen: 127\.0\.0\.1:7555 # override`,
		`path: \S*other\.db # override`,
		`default: mock # override`,
		`api_key: '\*\*\*' # override`,
		`default_ttl: 45m0s # env STACYVM_SANDBOX_DEFAULT_TTL`,
		`default_image: serve-test # file `,
	} {
		if !regexp.MustCompile(re).MatchString(r.stdout) {
			t.Errorf("print-config lacks %s:\n%s", re, r.stdout)
		}
	}
	if strings.Contains(r.stdout, "very-secret") {
		t.Error("print-config shows the API key")
	}

	for _, tt := range []struct {
		args []string
		code int
	}{
		{[]string{"serve", "--config", filepath.Join(dir, "missing.yaml")}, exitFailure},
		{[]string{"serve", "--config", cfgPath, "--listen", "not-an-address"}, exitFailure},
		{[]string{"serve", "extra"}, exitUsage},
	} {
		if r := cli(t, nil, tt.args...); r.code != tt.code || r.stderr == "" {
			t.Errorf("%v: exit %d, stderr %q; want %d", tt.args, r.code, r.stderr, tt.code)
		}
	}
}

func TestDoctor(t *testing.T) {
	dir := t.TempDir()
	cfgPath := writeConfig(t, dir)
	r := cli(t, nil, "doctor", "--config", cfgPath).ok(t)
	if !regexp.MustCompile(`(?m)^PROVIDER\s+AVAILABLE\s+ISOLATION\s+DETAILS$`).MatchString(r.stdout) ||
		!regexp.MustCompile(`(?m)^mock\s+yes\s+none\s+warning: .*no isolation`).MatchString(r.stdout) {
		t.Errorf("doctor:\n%s", r.stdout)
	}
	r = cli(t, nil, "doctor", "--config", cfgPath, "--json").ok(t)
	var checks []checkJSON
	if err := json.Unmarshal([]byte(r.stdout), &checks); err != nil || len(checks) == 0 {
		t.Fatalf("doctor --json = %q (%v)", r.stdout, err)
	}
	for _, c := range checks {
		// Every provider is either available or says what it lacks.
		if c.Available == (c.Problem != "") {
			t.Errorf("check %+v: available and problem disagree", c)
		}
	}
}
