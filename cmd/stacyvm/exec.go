package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/stacyvm/stacyvm/internal/client"
)

func (a *app) execCmd() *cobra.Command {
	var (
		timeout time.Duration
		env     []string
		workdir string
	)
	cmd := &cobra.Command{
		Use:   "exec ID -- COMMAND [ARG...]",
		Short: "Run a command in a sandbox, streaming its output",
		Long: `Run a command in a sandbox. Its stdout and stderr are copied to this
terminal's as they are produced, and stacyvm exits with the command's exit
code (124 when it ran past --timeout, as timeout(1) does).

One argument after the ID is a shell string, run by /bin/sh -c, so pipes,
globs and variables work: stacyvm exec ID -- 'ls /tmp | wc -l'.
Several arguments are an argv, run without a shell, each argument passed as
is: stacyvm exec ID -- python3 -c 'print(1)'.

Put "--" before the command whenever the command has flags of its own.`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if timeout < 0 {
				return usagef("--timeout must be positive")
			}
			envMap, err := parseKV("env", env)
			if err != nil {
				return err
			}
			req := client.ExecRequest{Command: args[1], Env: envMap, WorkDir: workdir, Timeout: timeout}
			if len(args) > 2 {
				req.Args = args[2:]
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			st, err := c.ExecStreamTo(cmd.Context(), args[0], req, a.out, a.err)
			if err != nil {
				return err
			}
			switch {
			case st.TimedOut:
				// The server has already said so on stderr; add what the
				// user can do about it.
				if timeout > 0 {
					fmt.Fprintf(a.err, "stacyvm: timed out after --timeout %s; exit status %d\n", timeout, exitTimeout)
				} else {
					fmt.Fprintf(a.err, "stacyvm: timed out after the server's default timeout (raise it with --timeout); exit status %d\n", exitTimeout)
				}
				return exitCode(exitTimeout)
			case st.ExitCode == 0:
				return nil
			case st.ExitCode < 0 || st.ExitCode > 255:
				// Not representable as a process exit status.
				return exitCode(exitFailure)
			}
			return exitCode(st.ExitCode)
		},
	}
	fl := cmd.Flags()
	fl.DurationVar(&timeout, "timeout", 0, "kill the command after this long, e.g. 30s (default: the server's, 60s)")
	fl.StringArrayVarP(&env, "env", "e", nil, "environment variable KEY=VALUE (repeatable)")
	fl.StringVarP(&workdir, "workdir", "w", "", "working directory in the sandbox (default /workspace)")
	return cmd
}
