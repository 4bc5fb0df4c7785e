package main

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/stacyvm/stacyvm/internal/client"
)

func (a *app) filesCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "files",
		Short: "Move and manage files in a sandbox",
		RunE:  helpOrUnknown,
	}
	cmd.AddCommand(a.filesPutCmd(), a.filesGetCmd(), a.filesLsCmd(), a.filesRmCmd(),
		a.filesMvCmd(), a.filesChmodCmd(), a.filesStatCmd(), a.filesGlobCmd())
	return cmd
}

func (a *app) filesPutCmd() *cobra.Command {
	var mode string
	cmd := &cobra.Command{
		Use:   "put ID LOCAL REMOTE",
		Short: "Upload a file (LOCAL - reads stdin), streamed",
		Long: `Upload LOCAL to REMOTE in the sandbox, creating parent directories. The
content is streamed, so a file of any size moves without being held in
memory. LOCAL "-" reads standard input.

Without --mode the file keeps LOCAL's permission bits; from stdin it gets
the server's default, 0644.`,
		Args: cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, local, remote := args[0], args[1], args[2]
			var perm fs.FileMode
			if mode != "" {
				m, err := client.ParseMode(mode)
				if err != nil {
					return usagef("--mode: %v", err)
				}
				perm = m
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			var r io.Reader = a.in
			if local != "-" {
				f, err := os.Open(local)
				if err != nil {
					return err
				}
				defer f.Close()
				fi, err := f.Stat()
				if err != nil {
					return err
				}
				if fi.IsDir() {
					return fmt.Errorf("%s is a directory; upload files one at a time", local)
				}
				if mode == "" {
					perm = fi.Mode().Perm()
				}
				r = f
			}
			return c.WriteFile(cmd.Context(), id, remote, r, perm)
		},
	}
	cmd.Flags().StringVar(&mode, "mode", "", "octal permission bits, e.g. 0644")
	return cmd
}

func (a *app) filesGetCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "get ID REMOTE [LOCAL|-]",
		Short: "Download a file, streamed (- writes stdout)",
		Long: `Download REMOTE from the sandbox to LOCAL, streamed. LOCAL "-" writes
standard output; without LOCAL the file lands in the current directory
under REMOTE's base name. A local file appears only once the download
is complete, so a failed transfer never leaves a truncated copy behind.`,
		Args: cobra.RangeArgs(2, 3),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, remote := args[0], args[1]
			local := path.Base(remote)
			if len(args) == 3 {
				local = args[2]
			}
			if local == "/" || local == "." || local == "" {
				return usagef("name a LOCAL file for %q", remote)
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			rc, err := c.ReadFile(cmd.Context(), id, remote)
			if err != nil {
				return err
			}
			defer rc.Close()
			if local == "-" {
				_, err := io.Copy(a.out, rc)
				return err
			}
			if fi, err := os.Stat(local); err == nil && fi.IsDir() {
				local = filepath.Join(local, path.Base(remote))
			}
			return writeFileAtomic(local, rc)
		},
	}
}

// writeFileAtomic copies r into a temporary file next to name and renames
// it into place once everything has arrived.
func writeFileAtomic(name string, r io.Reader) (err error) {
	f, err := os.CreateTemp(filepath.Dir(name), "."+filepath.Base(name)+".part-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if _, err = io.Copy(f, r); err != nil {
		return err
	}
	// CreateTemp makes the file private; a download is an ordinary file.
	if err = f.Chmod(0o644); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), name)
}

func (a *app) filesLsCmd() *cobra.Command {
	var asJSON *bool
	cmd := &cobra.Command{
		Use:   "ls ID [PATH]",
		Short: "List a directory (default /)",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir := "/"
			if len(args) == 2 {
				dir = args[1]
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			list, err := c.ListFiles(cmd.Context(), args[0], dir)
			if err != nil {
				return err
			}
			if *asJSON {
				if list == nil {
					list = []client.FileInfo{}
				}
				return printJSON(a.out, list)
			}
			t := newTable(a.out, "MODE", "SIZE", "MODIFIED", "PATH")
			for _, fi := range list {
				t.row(fi.Mode.String(), strconv.FormatInt(fi.Size, 10), timestamp(fi.ModTime), fi.Path)
			}
			return t.flush()
		},
	}
	asJSON = jsonFlag(cmd)
	return cmd
}

func (a *app) filesRmCmd() *cobra.Command {
	var recursive bool
	cmd := &cobra.Command{
		Use:   "rm ID PATH...",
		Short: "Delete files (-r for directories and their contents)",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			failed := 0
			for _, p := range args[1:] {
				if err := c.DeleteFile(cmd.Context(), args[0], p, recursive); err != nil {
					printError(a.err, p, err)
					failed++
				}
			}
			if failed > 0 {
				return exitCode(exitFailure)
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&recursive, "recursive", "r", false, "delete directories and their contents")
	return cmd
}

func (a *app) filesMvCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "mv ID OLD NEW",
		Short: "Rename or move a file",
		Args:  cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			return c.MoveFile(cmd.Context(), args[0], args[1], args[2])
		},
	}
}

func (a *app) filesChmodCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "chmod ID MODE PATH",
		Short: "Set a file's permission bits (octal MODE, e.g. 0755)",
		Args:  cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			mode, err := client.ParseMode(args[1])
			if err != nil {
				return usagef("%v", err)
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			return c.Chmod(cmd.Context(), args[0], args[2], mode)
		},
	}
}

func (a *app) filesStatCmd() *cobra.Command {
	var asJSON *bool
	cmd := &cobra.Command{
		Use:   "stat ID PATH",
		Short: "Describe a file",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			fi, err := c.StatFile(cmd.Context(), args[0], args[1])
			if err != nil {
				return err
			}
			if *asJSON {
				return printJSON(a.out, fi)
			}
			kind := "file"
			switch {
			case fi.IsDir:
				kind = "directory"
			case fi.Mode&fs.ModeSymlink != 0:
				kind = "symlink"
			}
			return keyValues(a.out,
				[2]string{"Path", fi.Path},
				[2]string{"Type", kind},
				[2]string{"Size", strconv.FormatInt(fi.Size, 10)},
				[2]string{"Mode", client.FormatMode(fi.Mode) + " (" + fi.Mode.String() + ")"},
				[2]string{"Modified", timestamp(fi.ModTime)},
			)
		},
	}
	asJSON = jsonFlag(cmd)
	return cmd
}

func (a *app) filesGlobCmd() *cobra.Command {
	var asJSON *bool
	cmd := &cobra.Command{
		Use:   "glob ID PATTERN",
		Short: "Print the sandbox paths matching PATTERN, one a line",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			matches, err := c.Glob(cmd.Context(), args[0], args[1])
			if err != nil {
				return err
			}
			if *asJSON {
				if matches == nil {
					matches = []string{}
				}
				return printJSON(a.out, matches)
			}
			for _, m := range matches {
				fmt.Fprintln(a.out, m)
			}
			return nil
		},
	}
	asJSON = jsonFlag(cmd)
	return cmd
}
