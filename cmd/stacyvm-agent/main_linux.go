// Command stacyvm-agent runs inside a sandbox and serves the agent protocol
// (docs/agent-protocol.md) for the host: exec and file operations on the
// sandbox's own file system.
//
//	stacyvm-agent --listen unix:/run/stacyvm/agent.sock|tcp:0.0.0.0:7424|vsock:1024|stdio
//	              [--root /] [--token-file PATH] [--log-level info]
//
// As PID 1 it re-executes itself as its only child and just reaps zombies
// and forwards SIGTERM/SIGINT (package reaper). It logs to stderr.
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
	"strings"
	"syscall"

	"github.com/stacyvm/stacyvm/internal/agent"
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
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(stderr, "stacyvm-agent: --log-level: %v\n", err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	slog.SetDefault(log)

	if os.Getpid() == 1 {
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
	return serve(log, *listen, *root, token)
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

func serve(log *slog.Logger, listen, root, token string) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	g, err := localguest.New(localguest.Options{Root: root})
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
	log.Info("agent serving", "listen", listen, "root", root, "version", version.String(), "pid", os.Getpid(), "token", token != "")
	h := agent.NewServer(g, agent.ServerOptions{Version: version.String(), Logger: log, Token: token})
	if err := agent.Serve(ctx, ln, h); err != nil && !errors.Is(err, context.Canceled) {
		log.Error("serving stopped", "err", err)
		return 1
	}
	log.Info("agent stopped")
	return 0
}
