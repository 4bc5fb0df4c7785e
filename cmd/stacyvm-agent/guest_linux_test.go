package main

import (
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stacyvm/stacyvm/internal/agent"
	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/localguest"
	"github.com/stacyvm/stacyvm/internal/provider"
)

// commandRole is the test binary run as a command through the agent.
func commandRole(role string) int {
	switch role {
	case "lo-flags":
		// The flags of lo in the network namespace the command runs in.
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		ifr, _ := unix.NewIfreq("lo")
		if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Println(ifr.Uint16())
		return 0
	}
	fmt.Fprintln(os.Stderr, "unknown role", role)
	return 99
}

func entropy(t *testing.T) []byte {
	t.Helper()
	b := make([]byte, 64)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestCommandEnv(t *testing.T) {
	tests := []struct {
		name    string
		environ []string
		want    []string
	}{
		{
			"a container's environment is kept, the agent's own variables dropped",
			[]string{"PATH=/opt/bin:/bin", "LANG=de_DE.UTF-8", "STACYVM_AGENT_MANAGES_GUEST=1", "X=a=b", "junk", "=v"},
			[]string{"PATH=/opt/bin:/bin", "LANG=de_DE.UTF-8", "X=a=b"},
		},
		{
			"a kernel's environment for init has no PATH",
			[]string{"HOME=/", "TERM=linux"},
			localguest.DefaultEnv,
		},
		{"an empty PATH is no PATH", []string{"PATH=", "A=1"}, localguest.DefaultEnv},
		{"nothing at all", nil, localguest.DefaultEnv},
	}
	for _, tt := range tests {
		if got := commandEnv(tt.environ); !slices.Equal(got, tt.want) {
			t.Errorf("%s: commandEnv(%q) = %q, want %q", tt.name, tt.environ, got, tt.want)
		}
	}
	// The default is a copy: a caller appending to it cannot change it.
	got := commandEnv(nil)
	got[0] = "PATH=/changed"
	if localguest.DefaultEnv[0] == "PATH=/changed" {
		t.Error("commandEnv returned localguest.DefaultEnv itself")
	}
}

func TestChildEnv(t *testing.T) {
	got := childEnv([]string{"A=1", managedEnv + "=0", "B=2"})
	if want := []string{"A=1", "B=2", managedEnv + "=1"}; !slices.Equal(got, want) {
		t.Errorf("childEnv = %q, want %q", got, want)
	}
}

// envOf runs env(1) through c and returns its lines, sorted.
func envOf(t *testing.T, c *agent.Client, extra map[string]string) []string {
	t.Helper()
	var out, errOut strings.Builder
	st, err := c.Exec(t.Context(), provider.ExecRequest{Argv: []string{"/usr/bin/env"}, Env: extra, WorkDir: "/"}, &out, &errOut)
	if err != nil || st.ExitCode != 0 {
		t.Fatalf("env: %+v %v %s", st, err, errOut.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	slices.Sort(lines)
	return lines
}

// TestCommandsInheritTheAgentEnvironment: what a container runtime gives
// the agent (the image's ENV, the sandbox's variables) is what commands
// start from; a kernel's bare environment gives the default one.
func TestCommandsInheritTheAgentEnvironment(t *testing.T) {
	t.Parallel()
	start := func(env ...string) *agent.Client {
		sock := socketPath(t)
		cmd := agentCmd(t, "--listen", "unix:"+sock, "--root", t.TempDir())
		cmd.Env = append(env, runAgentEnv+"=1", "GORACE=atexit_sleep_ms=0")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return readyClient(t, agent.UnixDialer(sock))
	}
	path := "PATH=" + os.Getenv("PATH")
	c := start(path, "FROM_IMAGE=yes", "HOME=/home/img", agentEnvPrefix+"SECRET=x")
	got := envOf(t, c, nil)
	want := []string{"FROM_IMAGE=yes", "GORACE=atexit_sleep_ms=0", "HOME=/home/img", path}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("command environment %q, want %q", got, want)
	}
	got = envOf(t, c, map[string]string{"HOME": "/workspace", "NEW": "1"})
	want = []string{"FROM_IMAGE=yes", "GORACE=atexit_sleep_ms=0", "HOME=/workspace", "NEW=1", path}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("command environment with the request's variables %q, want %q", got, want)
	}

	c = start("HOME=/", "TERM=linux")
	want = slices.Sorted(slices.Values(localguest.DefaultEnv))
	if got := envOf(t, c, nil); !slices.Equal(got, want) {
		t.Errorf("command environment of an agent without PATH %q, want the default %q", got, want)
	}
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("refreshing the kernel's entropy and clock needs root (CAP_SYS_ADMIN, CAP_SYS_TIME)")
	}
}

// TestRefreshOnlyWhenManagingGuest: an agent that is neither PID 1 nor
// told to manage its guest never touches the kernel it shares.
func TestRefreshOnlyWhenManagingGuest(t *testing.T) {
	t.Parallel()
	sock := socketPath(t)
	cmd := agentCmd(t, "--listen", "unix:"+sock, "--root", t.TempDir())
	// The variable PID 1 sets for its child means nothing to an agent
	// whose parent is not PID 1.
	cmd.Env = append(cmd.Env, managedEnv+"=1")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := readyClient(t, agent.UnixDialer(sock))
	if err := c.Refresh(t.Context(), entropy(t), time.Now()); !errors.Is(err, errdefs.ErrUnimplemented) {
		t.Fatalf("Refresh on a host agent: %v, want unimplemented", err)
	}

	t.Run("manage-guest", func(t *testing.T) {
		needRoot(t)
		sock := socketPath(t)
		cmd := agentCmd(t, "--listen", "unix:"+sock, "--root", t.TempDir(), "--manage-guest")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		c := readyClient(t, agent.UnixDialer(sock))
		// The host's own time: the clock is within the tolerance and is
		// not stepped.
		if err := c.Refresh(t.Context(), entropy(t), time.Now()); err != nil {
			t.Fatalf("Refresh with --manage-guest: %v", err)
		}
		if err := c.Refresh(t.Context(), make([]byte, 16), time.Now()); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Fatalf("Refresh with 16 bytes: %v, want invalid argument", err)
		}
	})
}

// TestAgentAsVMInit runs the agent as PID 1 with --manage-guest in new PID,
// mount and network namespaces: before serving it brings up the namespace's
// lo, which starts down, and it serves the refresh. (The guest's file
// systems are checked by package guestinit's tests and, chrooted with no
// /proc at all, by the Firecracker provider's tests.)
func TestAgentAsVMInit(t *testing.T) {
	t.Parallel()
	needRoot(t)
	sock := socketPath(t)
	cmd := agentCmd(t, "--listen", "unix:"+sock, "--root", t.TempDir(), "--manage-guest")
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWPID | syscall.CLONE_NEWNET,
		// Go makes the new mount namespace private: whatever the init
		// mounts stays in it.
		Unshareflags: syscall.CLONE_NEWNS,
	}
	if err := cmd.Start(); err != nil {
		if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EINVAL) {
			t.Skipf("creating namespaces needs CAP_SYS_ADMIN, unavailable here: %v", err)
		}
		t.Fatal(err)
	}
	c := readyClient(t, agent.UnixDialer(sock))
	var out, errOut strings.Builder
	st, err := c.Exec(t.Context(), provider.ExecRequest{
		Argv: []string{os.Args[0]}, Env: map[string]string{commandRoleEnv: "lo-flags"}, WorkDir: "/",
	}, &out, &errOut)
	if err != nil || st.ExitCode != 0 {
		t.Fatalf("reading lo's flags in the guest: %+v %v %s", st, err, errOut.String())
	}
	flags, err := strconv.ParseUint(strings.TrimSpace(out.String()), 10, 16)
	if err != nil || flags&unix.IFF_UP == 0 {
		t.Errorf("lo in the guest has flags %q: not up", out.String())
	}
	if err := c.Refresh(t.Context(), entropy(t), time.Now()); err != nil {
		t.Errorf("Refresh: %v", err)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := waitExit(t, cmd, 15*time.Second); code != 0 {
		t.Fatalf("PID 1 exited %d after SIGTERM", code)
	}
}
