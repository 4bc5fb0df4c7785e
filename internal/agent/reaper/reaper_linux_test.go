package reaper

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The test binary plays every role, chosen by this variable: a supervisor
// made a subreaper (so orphans come to it as they would to PID 1), and the
// children it supervises.
const roleEnv = "STACYVM_REAPER_TEST_ROLE"

func TestMain(m *testing.M) {
	switch os.Getenv(roleEnv) {
	case "":
		os.Exit(m.Run())
	case "supervisor":
		os.Exit(supervisorRole())
	case "orphan-maker":
		os.Exit(orphanMakerRole())
	case "term-waiter":
		os.Exit(termWaiterRole())
	case "self-killer":
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	default:
		fmt.Fprintln(os.Stderr, "unknown role")
		os.Exit(99)
	}
}

// supervisorRole supervises this binary in the role named by
// STACYVM_REAPER_TEST_CHILD, printing "reaped <pid>" per orphan reaped.
func supervisorRole() int {
	if os.Getenv("STACYVM_REAPER_TEST_SUPERVISED") != "" {
		fmt.Fprintln(os.Stderr, "supervisor started under a supervisor: refusing to recurse")
		return 94
	}
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		fmt.Fprintln(os.Stderr, "prctl:", err)
		return 98
	}
	// os.StartProcess does not de-duplicate the environment and Getenv
	// takes the first entry, so the supervisor role must be removed, not
	// overridden, or the child would supervise again, forever.
	env := []string{roleEnv + "=" + os.Getenv("STACYVM_REAPER_TEST_CHILD"), "STACYVM_REAPER_TEST_SUPERVISED=1"}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, roleEnv+"=") && !strings.HasPrefix(kv, "STACYVM_REAPER_TEST_CHILD=") {
			env = append(env, kv)
		}
	}
	code, err := Supervise(context.Background(), Config{
		Path: os.Args[0],
		Args: []string{os.Args[0]},
		Env:  env,
		OnReap: func(pid int, _ unix.WaitStatus) {
			fmt.Printf("reaped %d\n", pid)
		},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "supervise:", err)
		return 97
	}
	return code
}

// orphanMakerRole leaves a short-lived orphan behind, checks that its own
// os/exec child's exit status is intact, and exits 3.
func orphanMakerRole() int {
	// sh prints its background child's pid and exits at once, orphaning it.
	out, err := exec.Command("sh", "-c", "sleep 0.2 & echo $!; exit 7").Output()
	if ee, ok := errors.AsType[*exec.ExitError](err); !ok || ee.ExitCode() != 7 {
		fmt.Fprintln(os.Stderr, "own child's status lost:", err)
		return 96
	}
	fmt.Printf("orphan %s", out)
	time.Sleep(600 * time.Millisecond) // the orphan exits meanwhile
	return 3
}

func termWaiterRole() int {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGTERM)
	fmt.Println("ready")
	select {
	case <-c:
		return 42
	case <-time.After(30 * time.Second):
		return 95
	}
}

func startSupervisor(t *testing.T, child string) (*exec.Cmd, *bufio.Scanner) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), roleEnv+"=supervisor", "STACYVM_REAPER_TEST_CHILD="+child)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	return cmd, bufio.NewScanner(stdout)
}

func exitCode(t *testing.T, cmd *exec.Cmd) int {
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
	case <-time.After(20 * time.Second):
		t.Fatal("supervisor did not exit")
		return -1
	}
}

func TestSuperviseReapsOrphansAndReturnsChildStatus(t *testing.T) {
	t.Parallel()
	cmd, out := startSupervisor(t, "orphan-maker")
	var orphan int
	reaped := map[int]bool{}
	for out.Scan() {
		f := strings.Fields(out.Text())
		if len(f) != 2 {
			continue
		}
		pid, _ := strconv.Atoi(f[1])
		switch f[0] {
		case "orphan":
			orphan = pid
		case "reaped":
			reaped[pid] = true
		}
	}
	if code := exitCode(t, cmd); code != 3 {
		t.Fatalf("supervisor exited %d, want the child's 3", code)
	}
	if orphan == 0 {
		t.Fatal("the child never reported its orphan")
	}
	if !reaped[orphan] {
		t.Fatalf("orphan %d was not reaped by the supervisor (reaped: %v)", orphan, reaped)
	}
}

func TestSuperviseForwardsSIGTERM(t *testing.T) {
	t.Parallel()
	cmd, out := startSupervisor(t, "term-waiter")
	if !out.Scan() || out.Text() != "ready" {
		t.Fatalf("child not ready: %q", out.Text())
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := exitCode(t, cmd); code != 42 {
		t.Fatalf("supervisor exited %d, want 42 from the child's SIGTERM handler", code)
	}
}

func TestSuperviseReportsDeathBySignal(t *testing.T) {
	t.Parallel()
	cmd, _ := startSupervisor(t, "self-killer")
	if code := exitCode(t, cmd); code != 128+int(syscall.SIGKILL) {
		t.Fatalf("supervisor exited %d, want %d", code, 128+int(syscall.SIGKILL))
	}
}

func TestSuperviseStartFailure(t *testing.T) {
	_, err := Supervise(t.Context(), Config{Path: "/nonexistent/agent", Args: []string{"agent"}})
	if err == nil {
		t.Fatal("no error for a missing program")
	}
}

func TestExitCode(t *testing.T) {
	tests := []struct {
		ws   unix.WaitStatus
		want int
	}{
		{unix.WaitStatus(0), 0},
		{unix.WaitStatus(3 << 8), 3},
		{unix.WaitStatus(uint32(syscall.SIGTERM)), 128 + int(syscall.SIGTERM)},
		{unix.WaitStatus(uint32(syscall.SIGKILL)), 128 + int(syscall.SIGKILL)},
	}
	for _, tc := range tests {
		if got := ExitCode(tc.ws); got != tc.want {
			t.Errorf("ExitCode(%#x) = %d, want %d", uint32(tc.ws), got, tc.want)
		}
	}
}
