package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/stacyvm/stacyvm/internal/client"
	"github.com/stacyvm/stacyvm/internal/version"
)

// Exit codes. A command run by `exec` passes its own code through.
const (
	exitOK      = 0
	exitFailure = 1   // the server or the local system reported an error
	exitUsage   = 2   // bad flags or arguments
	exitTimeout = 124 // `exec` ran past --timeout, as timeout(1) reports it
	exitSignal  = 130 // interrupted, as a shell reports SIGINT
)

const (
	defaultServer = "http://127.0.0.1:7423"
	envServer     = "STACYVM_SERVER"
	envAPIKey     = "STACYVM_API_KEY"
)

type streams struct {
	in       io.Reader
	out, err io.Writer
}

// app is the state one invocation shares between commands.
type app struct {
	streams
	env []string // "NAME=value", as os.Environ returns them

	server string
	apiKey string
}

// run executes one CLI invocation and returns its exit code. Everything
// the process touches comes in as arguments, so tests run it in-process.
func run(ctx context.Context, args []string, s streams, env []string) int {
	a := &app{streams: s, env: env}
	root := a.newRoot()
	root.SetArgs(args)
	root.SetIn(s.in)
	root.SetOut(s.out)
	root.SetErr(s.err)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return exitOK
	}
	if code, ok := errors.AsType[exitCode](err); ok {
		return int(code)
	}
	if rf, ok := errors.AsType[*runFailure](err); ok {
		if errors.Is(rf.err, context.Canceled) && ctx.Err() != nil {
			fmt.Fprintln(s.err, "stacyvm: interrupted")
			return exitSignal
		}
		printError(s.err, "", rf.err)
		return exitFailure
	}
	// Anything else was raised by cobra while parsing (unknown command or
	// flag, wrong number of arguments) or by a command as a usageError.
	fmt.Fprintf(s.err, "stacyvm: %v\n", err)
	if cmd == nil {
		cmd = root
	}
	fmt.Fprintf(s.err, "Run '%s --help' for usage.\n", cmd.CommandPath())
	return exitUsage
}

// exitCode ends the process with a code and no message of its own: the
// command has already said what there was to say.
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// usageError is a problem with the command line that a command found
// itself (a malformed k=v, a bad mode).
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// runFailure marks an error a command's RunE returned, as opposed to one
// cobra raised while parsing, so that run can tell exit 1 from exit 2.
type runFailure struct{ err error }

func (e *runFailure) Error() string { return e.err.Error() }
func (e *runFailure) Unwrap() error { return e.err }

// markFailures wraps every RunE in the tree so that its errors become
// runFailures, except usage errors and exit codes, which keep their meaning.
func markFailures(cmd *cobra.Command) {
	if orig := cmd.RunE; orig != nil {
		cmd.RunE = func(c *cobra.Command, args []string) error {
			err := orig(c, args)
			if err == nil {
				return nil
			}
			if _, ok := errors.AsType[*usageError](err); ok {
				return err
			}
			if _, ok := errors.AsType[exitCode](err); ok {
				return err
			}
			return &runFailure{err: err}
		}
	}
	for _, sub := range cmd.Commands() {
		markFailures(sub)
	}
}

func (a *app) newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:   "stacyvm",
		Short: "Disposable sandboxes for AI agents",
		Long: `StacyVM gives an AI agent its own disposable computer.

"stacyvm serve" runs the server; every other command talks to a running
server at --server (env ` + envServer + `, default ` + defaultServer + `)
with --api-key (env ` + envAPIKey + `).`,
		Version:       version.String(),
		SilenceErrors: true,
		SilenceUsage:  true,
		Args:          cobra.NoArgs,
		RunE:          helpOrUnknown,
	}
	pf := root.PersistentFlags()
	// Defaults come from the environment at use time, not here, so that
	// --help never prints an API key.
	pf.StringVar(&a.server, "server", "", "server URL (env "+envServer+", default "+defaultServer+")")
	pf.StringVar(&a.apiKey, "api-key", "", "API key (env "+envAPIKey+")")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{msg: err.Error()} })

	root.AddCommand(
		a.spawnCmd(), a.lsCmd(), a.getCmd(), a.killCmd(), a.extendCmd(), a.logsCmd(), a.pruneCmd(),
		a.execCmd(), a.shellCmd(),
		a.mcpCmd(),
		a.filesCmd(),
		a.templatesCmd(),
		a.envCmd(),
		a.providersCmd(),
		a.versionCmd(),
		a.serveCmd(),
		a.doctorCmd(),
		a.buildImageCmd(),
		a.benchCmd(),
		a.serveBackendCmd(),
	)
	markFailures(root)
	return root
}

// helpOrUnknown is the RunE of commands that only group others: bare,
// they print help; with an argument, it named no subcommand.
func helpOrUnknown(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usagef("unknown command %q for %q", args[0], cmd.CommandPath())
	}
	return cmd.Help()
}

// getenv looks name up in the invocation's environment; the last entry
// wins, as it does for a process.
func (a *app) getenv(name string) string {
	for _, kv := range slices.Backward(a.env) {
		if k, v, ok := strings.Cut(kv, "="); ok && k == name {
			return v
		}
	}
	return ""
}

// client returns an API client for --server and --api-key, falling back
// to the environment.
func (a *app) client() (*client.Client, error) {
	server := a.server
	if server == "" {
		server = a.getenv(envServer)
	}
	if server == "" {
		server = defaultServer
	}
	key := a.apiKey
	if key == "" {
		key = a.getenv(envAPIKey)
	}
	c, err := client.New(server, key, client.WithUserAgent("stacyvm-cli/"+version.String()))
	if err != nil {
		return nil, usagef("%v", err)
	}
	return c, nil
}
