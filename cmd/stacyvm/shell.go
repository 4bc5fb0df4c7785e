package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/stacyvm/stacyvm/internal/client"
)

func (a *app) shellCmd() *cobra.Command {
	var workdir string
	cmd := &cobra.Command{
		Use:   "shell ID [-- COMMAND...]",
		Short: "Open an interactive terminal in a sandbox",
		Long: `Open an interactive terminal (a pseudo-terminal) in a sandbox: its login
shell, or COMMAND, run by /bin/sh -c. When this terminal is a terminal it
is put in raw mode, so every key (Ctrl-C included) goes to the sandbox, and
its size follows this window's; it is restored on exit. stacyvm exits with
the program's exit code. Closing the connection kills the session's
processes.

With input from a pipe, the input is typed into the terminal, followed by
an end-of-file (Ctrl-D): echo 'ls; exit' | stacyvm shell ID.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts := client.TerminalOptions{WorkDir: workdir, Command: strings.Join(args[1:], " ")}
			inFile, inTTY := a.in.(*os.File)
			inTTY = inTTY && term.IsTerminal(int(inFile.Fd()))
			outFile, outTTY := a.out.(*os.File)
			outTTY = outTTY && term.IsTerminal(int(outFile.Fd()))
			if outTTY {
				if cols, rows, err := term.GetSize(int(outFile.Fd())); err == nil && rows > 0 && cols > 0 {
					opts.Rows, opts.Cols = uint16(rows), uint16(cols)
				}
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			t, err := c.OpenTerminal(cmd.Context(), args[0], opts)
			if err != nil {
				return err
			}
			defer t.Close()
			if inTTY {
				old, err := term.MakeRaw(int(inFile.Fd()))
				if err != nil {
					return fmt.Errorf("putting the terminal in raw mode: %w", err)
				}
				defer term.Restore(int(inFile.Fd()), old)
			}
			if outTTY {
				stop := followWindowSize(int(outFile.Fd()), t.Resize)
				defer stop()
			}
			go func() {
				_, err := io.Copy(t, a.in)
				if err == nil && !inTTY {
					_, _ = t.Write([]byte{4}) // end of input: Ctrl-D
				}
			}()
			if _, err := io.Copy(a.out, t); err != nil {
				return err
			}
			st, err := t.Wait()
			if err != nil {
				return err
			}
			switch {
			case st.ExitCode == 0:
				return nil
			case st.ExitCode < 0 || st.ExitCode > 255:
				return exitCode(exitFailure)
			}
			return exitCode(st.ExitCode)
		},
	}
	cmd.Flags().StringVarP(&workdir, "workdir", "w", "", "working directory in the sandbox (default /workspace)")
	return cmd
}
