package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stacyvm/stacyvm/internal/agent"
	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/provider"
)

// The test binary doubles as the agent: with this variable set it runs the
// real main instead of the tests.
const runAgentEnv = "STACYVM_AGENT_TEST_RUN_MAIN"

// commandRoleEnv makes the test binary a command run through the agent
// instead. Its name is outside the agent's reserved prefix, so that it
// reaches commands.
const commandRoleEnv = "STACYVM_TEST_COMMAND_ROLE"

func TestMain(m *testing.M) {
	if os.Getenv(runAgentEnv) == "1" {
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
	if role := os.Getenv(commandRoleEnv); role != "" {
		os.Exit(commandRole(role))
	}
	os.Exit(m.Run())
}

// agentCmd prepares the agent with args; its stderr goes to the test log.
func agentCmd(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), runAgentEnv+"=1")
	cmd.Stderr = testLogWriter{t}
	t.Cleanup(func() {
		if cmd.Process != nil && cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	return cmd
}

type testLogWriter struct{ t *testing.T }

func (w testLogWriter) Write(p []byte) (int, error) {
	w.t.Logf("agent: %s", strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func socketPath(t *testing.T) string {
	dir, err := os.MkdirTemp("", "agt")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, "run", "agent.sock")
}

func waitExit(t *testing.T, cmd *exec.Cmd, within time.Duration) int {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if ee, ok := errors.AsType[*exec.ExitError](err); ok {
			return ee.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0
	case <-time.After(within):
		t.Fatalf("agent did not exit within %s", within)
		return -1
	}
}

func readyClient(t *testing.T, d agent.Dialer, opts ...agent.ClientOption) *agent.Client {
	t.Helper()
	c := agent.NewClient(d, opts...)
	t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	if err := c.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	return c
}

// exercise runs a command and a file round trip through c.
func exercise(t *testing.T, c *agent.Client, root string) {
	t.Helper()
	ctx := t.Context()
	var out strings.Builder
	st, err := c.Exec(ctx, provider.ExecRequest{Argv: []string{"echo", "hello"}, WorkDir: "/"}, &out, nil)
	if err != nil || st.ExitCode != 0 || out.String() != "hello\n" {
		t.Fatalf("exec: %+v %v %q", st, err, out.String())
	}
	if err := c.WriteFile(ctx, "/workspace/x.txt", strings.NewReader("data"), 0o640); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, "workspace", "x.txt"))
	if err != nil || string(b) != "data" {
		t.Fatalf("file under --root: %q, %v", b, err)
	}
	if _, err := c.StatFile(ctx, "/workspace/missing"); !errors.Is(err, errdefs.ErrFileNotFound) {
		t.Fatalf("stat missing: %v", err)
	}
}

func TestAgentOverUnixSocket(t *testing.T) {
	t.Parallel()
	sock, root := socketPath(t), t.TempDir()
	cmd := agentCmd(t, "--listen", "unix:"+sock, "--root", root)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := readyClient(t, agent.UnixDialer(sock))
	fi, err := os.Stat(sock)
	if err != nil || fi.Mode().Perm() != 0o666 {
		t.Fatalf("socket mode: %v, %v", fi, err)
	}
	exercise(t, c, root)

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := waitExit(t, cmd, 15*time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM", code)
	}
	if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket left behind: %v", err)
	}
}

func TestAgentOverTCPWithToken(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("tcp-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Pick a free port, then give it to the agent.
	addr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	cmd := agentCmd(t, "--listen", "tcp:"+addr, "--root", root, "--token-file", tokenFile)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exercise(t, readyClient(t, agent.TCPDialer(addr), agent.WithToken("tcp-secret")), root)
	anon := agent.NewClient(agent.TCPDialer(addr))
	defer anon.Close()
	if _, err := anon.Health(t.Context()); !errors.Is(err, errdefs.ErrUnauthorized) {
		t.Fatalf("request without the token: %v", err)
	}
	cmd.Process.Signal(syscall.SIGINT)
	if code := waitExit(t, cmd, 15*time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGINT", code)
	}
}

func TestAgentOverStdio(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	cmd := agentCmd(t, "--listen", "stdio", "--root", root)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	conn := agent.StdioConn(stdout, stdin)
	used := false
	c := readyClient(t, func(context.Context) (net.Conn, error) {
		if used {
			return nil, errors.New("stdio carries one connection")
		}
		used = true
		return conn, nil
	})
	exercise(t, c, root)
	stdin.Close() // hang up
	if code := waitExit(t, cmd, 15*time.Second); code != 0 {
		t.Fatalf("exit code %d after stdin closed", code)
	}
}

func TestFlags(t *testing.T) {
	root := t.TempDir()
	tests := []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"--version"}, 0, "stacyvm-agent"},
		{[]string{"--bogus"}, 2, "flag provided but not defined"},
		{[]string{"extra"}, 2, "unexpected arguments"},
		{[]string{"--log-level", "loud"}, 2, "log-level"},
		{[]string{"--root", root, "--listen", "carrier-pigeon:1"}, 1, "cannot listen"},
		{[]string{"--root", filepath.Join(root, "missing"), "--listen", "stdio"}, 1, "cannot serve the root"},
		{[]string{"--root", root, "--token-file", filepath.Join(root, "no-token")}, 1, "token"},
	}
	for _, tc := range tests {
		var out strings.Builder
		if code := run(tc.args, &out, &out); code != tc.code || !strings.Contains(out.String(), tc.msg) {
			t.Errorf("run(%q) = %d, output %q; want %d and %q", tc.args, code, out.String(), tc.code, tc.msg)
		}
	}
}

// TestAgentAsPID1 runs the binary as PID 1 of a new PID namespace: it must
// serve through its re-executed child, reap orphans that are reparented to
// it, and pass SIGTERM on.
func TestAgentAsPID1(t *testing.T) {
	t.Parallel()
	sock, root := socketPath(t), t.TempDir()
	cmd := agentCmd(t, "--listen", "unix:"+sock, "--root", root)
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID}
	if err := cmd.Start(); err != nil {
		if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EINVAL) {
			t.Skipf("creating a PID namespace needs CAP_SYS_ADMIN, unavailable here: %v", err)
		}
		t.Fatal(err)
	}
	pid1 := cmd.Process.Pid
	c := readyClient(t, agent.UnixDialer(sock))
	kids := children(t, pid1)
	if len(kids) != 1 {
		t.Fatalf("PID 1 should have exactly one child, the agent; has %v", kids)
	}
	agentPID := kids[0].pid

	// The shell exits at once; its background sleep is orphaned and, in a
	// PID namespace with no subreaper, reparented to PID 1.
	st, err := c.Exec(t.Context(), provider.ExecRequest{
		Argv: provider.ShellArgv("sleep 1 >/dev/null 2>&1 &"), WorkDir: "/",
	}, nil, nil)
	if err != nil || st.ExitCode != 0 {
		t.Fatalf("exec: %+v %v", st, err)
	}
	var orphan int
	deadline := time.Now().Add(5 * time.Second)
	for orphan == 0 {
		for _, k := range children(t, pid1) {
			if k.comm == "sleep" {
				orphan = k.pid
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no orphan was reparented to PID 1 (children %v)", children(t, pid1))
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Once it exits it must be reaped, not linger as a zombie.
	deadline = time.Now().Add(5 * time.Second)
	for {
		p, ok := stat(orphan)
		if !ok || p.ppid != pid1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("orphan %d still there as %q: PID 1 does not reap", orphan, p.state)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The agent's own exec statuses were not stolen by the reaping.
	st, err = c.Exec(t.Context(), provider.ExecRequest{Argv: provider.ShellArgv("exit 9"), WorkDir: "/"}, nil, nil)
	if err != nil || st.ExitCode != 9 {
		t.Fatalf("exit status through PID 1: %+v %v", st, err)
	}
	// PID 1 manages its guest, and the agent serving for it, which is
	// not PID 1, knows: it serves the refresh.
	if err := c.Refresh(t.Context(), entropy(t), time.Now()); err != nil {
		t.Errorf("Refresh through PID 1's agent: %v", err)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := waitExit(t, cmd, 15*time.Second); code != 0 {
		t.Fatalf("PID 1 exited %d after SIGTERM", code)
	}
	if _, ok := stat(agentPID); ok {
		t.Fatalf("agent child %d outlived PID 1", agentPID)
	}
}

type proc struct {
	pid, ppid   int
	comm, state string
}

func (p proc) String() string { return fmt.Sprintf("%d(%s %s)", p.pid, p.comm, p.state) }

// stat reads /proc/pid/stat; ok is false once the process is gone.
func stat(pid int) (proc, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return proc{}, false
	}
	s := string(b)
	lp, rp := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if lp < 0 || rp < lp {
		return proc{}, false
	}
	f := strings.Fields(s[rp+1:])
	if len(f) < 2 {
		return proc{}, false
	}
	ppid, _ := strconv.Atoi(f[1])
	return proc{pid: pid, ppid: ppid, comm: s[lp+1 : rp], state: f[0]}, true
}

func children(t *testing.T, ppid int) []proc {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var out []proc
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if p, ok := stat(pid); ok && p.ppid == ppid {
			out = append(out, p)
		}
	}
	return out
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
