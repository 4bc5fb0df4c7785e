// Command stacyvm-agent runs inside a sandbox and serves the agent protocol
// (docs/agent-protocol.md) for the host: exec and file operations on the
// sandbox's own file system.
//
//	stacyvm-agent --listen unix:/run/stacyvm/agent.sock|tcp:0.0.0.0:7424|vsock:1024|stdio
//	              [--root /] [--token-file PATH] [--log-level info] [--manage-guest]
//	stacyvm-agent --install PATH
//	stacyvm-agent --connect unix:PATH
//
// --install copies the agent's own binary to PATH and exits: an init
// container of the Kubernetes provider runs it to put the agent into a
// volume the sandbox's container shares, whatever its image. --connect
// relays stdin and stdout to an agent's unix socket: the Kubernetes
// provider reaches a pod's agent by running it through the API server's
// exec stream (docs/kubernetes.md).
//
// As PID 1 it re-executes itself as its only child and just reaps zombies
// and forwards SIGTERM/SIGINT (package reaper). As a microVM's init (PID 1
// with --manage-guest, or with no /proc mounted) it first mounts the
// kernel's file systems and brings up lo (package guestinit). An agent that
// manages its guest (PID 1 or --manage-guest) also serves the snapshot
// refresh. Commands inherit the agent's environment. It logs to stderr.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/stacyvm/stacyvm/internal/agent"
	"github.com/stacyvm/stacyvm/internal/agent/guestinit"
	"github.com/stacyvm/stacyvm/internal/agent/reaper"
	"github.com/stacyvm/stacyvm/internal/localguest"
	"github.com/stacyvm/stacyvm/internal/version"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fl := flag.NewFlagSet("stacyvm-agent", flag.ContinueOnError)
	fl.SetOutput(stderr)
	listen := fl.String("listen", "unix:/run/stacyvm/agent.sock", "where to listen: unix:PATH, tcp:HOST:PORT, vsock:PORT or stdio")
	root := fl.String("root", "/", "directory served as the sandbox's /")
	tokenFile := fl.String("token-file", "", "file holding a token every request must carry (Authorization: Bearer); needed when the listener is reachable by more than the host")
	logLevel := fl.String("log-level", "info", "debug, info, warn or error")
	showVersion := fl.Bool("version", false, "print the version and exit")
	install := fl.String("install", "", "copy this binary to `PATH` (mode 0755) and exit")
	connect := fl.String("connect", "", "relay stdin and stdout to the agent listening on `unix:PATH`, until either side closes")
	manageGuest := fl.Bool("manage-guest", false, "the agent is the init of a microVM's guest: as PID 1, mount /proc, /sys, /dev and bring up lo first; serve /v1/guest/refresh (reseed the kernel's random state, set the clock). Implied by PID 1 without /proc")
	if err := fl.Parse(args); err != nil {
		return 2
	}
	if fl.NArg() > 0 {
		fmt.Fprintf(stderr, "stacyvm-agent: unexpected arguments %q\n", fl.Args())
		return 2
	}
	if *showVersion {
		fmt.Fprintln(stdout, "stacyvm-agent", version.String())
		return 0
	}
	// Before the PID 1 duties: an init container runs --install as its
	// PID 1.
	if *install != "" {
		return installSelf(*install, stderr)
	}
	if *connect != "" {
		return relay(*connect, os.Stdin, stdout, stderr)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(stderr, "stacyvm-agent: --log-level: %v\n", err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	slog.SetDefault(log)

	if os.Getpid() == 1 {
		if vmInit(*manageGuest, guestinit.ProcMounted()) {
			log.Info("agent is the guest's init: setting up /proc, /sys, /dev and lo")
			if err := guestinit.Setup(log.With("role", "init")); err != nil {
				log.Error("cannot set up the guest", "err", err)
				return 1
			}
		}
		return supervise(log)
	}
	token := ""
	if *tokenFile != "" {
		b, err := os.ReadFile(*tokenFile)
		token = strings.TrimSpace(string(b))
		if err != nil || token == "" {
			log.Error("cannot read a token from --token-file", "err", err)
			return 1
		}
	}
	return serve(log, *listen, *root, token, *manageGuest || supervisedByInit())
}

// managedEnv is how PID 1 tells the agent it re-executes, which is not PID
// 1, that it manages the guest. Like every STACYVM_AGENT_ variable it never
// reaches commands.
const managedEnv = agentEnvPrefix + "MANAGES_GUEST"

// supervisedByInit reports whether this agent is the one PID 1 re-executed.
// The parent is checked too: the variable alone may have come from
// wherever the agent's environment came from.
func supervisedByInit() bool { return os.Getenv(managedEnv) == "1" && os.Getppid() == 1 }

// vmInit reports whether PID 1 has a microVM's init duties: asked to, or
// started by a kernel directly, which mounts no /proc. A container runtime
// always mounts /proc before starting its PID 1.
func vmInit(manageGuest, procMounted bool) bool { return manageGuest || !procMounted }

// childEnv is PID 1's environment for the agent it re-executes: its own,
// with managedEnv set (any value it had is dropped, since a duplicate would
// shadow it).
func childEnv(environ []string) []string {
	out := slices.DeleteFunc(slices.Clone(environ), func(kv string) bool {
		return strings.HasPrefix(kv, managedEnv+"=")
	})
	return append(out, managedEnv+"=1")
}

// agentEnvPrefix marks variables that are meant for the agent itself
// (tests use it too); commands never see them.
const agentEnvPrefix = "STACYVM_AGENT_"

// commandEnv is the base environment of every command: the agent's own,
// which is the image's ENV plus the sandbox's variables where a container
// runtime starts the agent, without variables meant for the agent. A
// kernel starts a VM's init without PATH, and then commands get
// localguest.DefaultEnv.
func commandEnv(environ []string) []string {
	out := make([]string, 0, len(environ))
	path := false
	for _, kv := range environ {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" || strings.HasPrefix(k, agentEnvPrefix) {
			continue
		}
		if k == "PATH" && v != "" {
			path = true
		}
		out = append(out, kv)
	}
	if !path {
		return slices.Clone(localguest.DefaultEnv)
	}
	return out
}

// supervise runs the agent as PID 1's child; see package reaper for why.
func supervise(log *slog.Logger) int {
	self, err := os.Executable()
	if err != nil {
		// No /proc yet (a bare microVM init): fall back to argv[0].
		if self, err = exec.LookPath(os.Args[0]); err != nil {
			log.Error("cannot find own executable to re-execute", "err", err)
			return 1
		}
	}
	code, err := reaper.Supervise(context.Background(), reaper.Config{
		Path:   self,
		Args:   os.Args,
		Env:    childEnv(os.Environ()),
		Logger: log.With("role", "init"),
	})
	if err != nil {
		log.Error("supervising the agent failed", "err", err)
		if code <= 0 {
			code = 1
		}
	}
	return code
}

func serve(log *slog.Logger, listen, root, token string, manageGuest bool) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	g, err := localguest.New(localguest.Options{Root: root, Env: commandEnv(os.Environ())})
	if err != nil {
		log.Error("cannot serve the root directory", "root", root, "err", err)
		return 1
	}
	// Kills whatever commands are still running when the agent stops.
	defer g.Close()

	ln, err := agent.Listen(listen)
	if err != nil {
		log.Error("cannot listen", "listen", listen, "err", err)
		return 1
	}
	log.Info("agent serving", "listen", listen, "root", root, "version", version.String(), "pid", os.Getpid(), "token", token != "", "manage_guest", manageGuest)
	opts := agent.ServerOptions{Version: version.String(), Logger: log, Token: token}
	if manageGuest {
		opts.Refresh = func(_ context.Context, entropy []byte, now time.Time) error {
			step, err := guestinit.Refresh(entropy, now)
			if err != nil {
				log.Error("guest refresh failed", "err", err)
				return err
			}
			log.Info("guest refreshed", "entropy_bytes", len(entropy), "clock_step", step)
			return nil
		}
	}
	h := agent.NewServer(g, opts)
	if err := agent.Serve(ctx, ln, h); err != nil && !errors.Is(err, context.Canceled) {
		log.Error("serving stopped", "err", err)
		return 1
	}
	log.Info("agent stopped")
	return 0
}
