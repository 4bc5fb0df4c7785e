package main

import (
	"fmt"
	"os/user"
	"strings"

	"github.com/spf13/cobra"

	"github.com/stacyvm/stacyvm/internal/client"
)

func (a *app) envCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "env",
		Aliases: []string{"envs", "environments"},
		Short:   "Build environment images from specs (base image + apt and pip packages)",
		RunE:    helpOrUnknown,
	}
	cmd.AddCommand(a.envCreateCmd(), a.envBuildCmd(), a.envLogsCmd(), a.envLsCmd(), a.envCancelCmd())
	return cmd
}

func (a *app) envCreateCmd() *cobra.Command {
	var (
		spec   client.EnvSpec
		asJSON *bool
	)
	cmd := &cobra.Command{
		Use:   "create --name NAME --base IMAGE [--apt PKG]... [--pip REQ]...",
		Short: "Create an environment spec; prints its ID",
		Example: `  stacyvm env create --name data --base debian:bookworm --apt jq --pip 'pandas>=2' --owner alice
  stacyvm env build $(stacyvm env create --name tools --base debian:bookworm --apt ffmpeg) --follow`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if spec.Name == "" || spec.BaseImage == "" {
				return usagef("a spec needs --name and --base")
			}
			if spec.OwnerID == "" {
				// Specs belong to someone: by default, whoever runs this.
				if u, err := user.Current(); err == nil {
					spec.OwnerID = u.Username
				}
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			out, err := c.CreateEnvSpec(cmd.Context(), spec)
			if err != nil {
				return err
			}
			if *asJSON {
				return printJSON(a.out, out)
			}
			_, err = fmt.Fprintln(a.out, out.ID)
			return err
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&spec.Name, "name", "", "spec name, unique per owner")
	fl.StringVar(&spec.BaseImage, "base", "", "base image, e.g. debian:bookworm")
	fl.StringArrayVar(&spec.AptPackages, "apt", nil, "Debian package, optionally =version (repeatable)")
	fl.StringArrayVar(&spec.PythonPackages, "pip", nil, "Python requirement such as 'numpy>=1.26' (repeatable)")
	fl.StringVar(&spec.PythonVersion, "python", "", "Python version the base image must have, e.g. 3.11")
	fl.StringVar(&spec.OwnerID, "owner", "", "owner ID (default: your user name)")
	asJSON = jsonFlag(cmd)
	return cmd
}

func (a *app) envBuildCmd() *cobra.Command {
	var (
		targets []string
		follow  bool
		asJSON  *bool
	)
	cmd := &cobra.Command{
		Use:   "build SPEC_ID [--target TARGET]... [--follow]",
		Short: "Queue a build of a spec; prints the build ID, or with --follow its log and image",
		Long: `Queue a build. Targets: local (always), proot, firecracker, registry.
With --follow the build's log streams until it ends; the image is printed last and the
exit status is 1 unless the build is ready.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			b, err := c.CreateEnvBuild(cmd.Context(), args[0], targets)
			if err != nil {
				return err
			}
			if !follow {
				if *asJSON {
					return printJSON(a.out, b)
				}
				_, err = fmt.Fprintln(a.out, b.ID)
				return err
			}
			fmt.Fprintf(a.err, "build %s\n", b.ID)
			return a.followBuild(cmd, c, b.ID)
		},
	}
	cmd.Flags().StringArrayVar(&targets, "target", nil, "build target: local, proot, firecracker or registry (repeatable)")
	cmd.Flags().BoolVarP(&follow, "follow", "F", false, "stream the build's log until it ends")
	asJSON = jsonFlag(cmd)
	return cmd
}

// followBuild streams the log to stderr and prints the image alone on
// stdout, so that $(stacyvm env build -F …) is the image.
func (a *app) followBuild(cmd *cobra.Command, c *client.Client, id string) error {
	end, err := c.FollowEnvBuild(cmd.Context(), id, a.err)
	if err != nil {
		return err
	}
	if end.Status != "ready" {
		fmt.Fprintf(a.err, "stacyvm: build %s %s: %s\n", id, end.Status, end.Reason)
		return exitCode(1)
	}
	_, err = fmt.Fprintln(a.out, end.Image)
	return err
}

func (a *app) envLogsCmd() *cobra.Command {
	var follow bool
	cmd := &cobra.Command{
		Use:   "logs BUILD_ID [-f]",
		Short: "Print a build's log; -f follows it until the build ends",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			if follow {
				end, err := c.FollowEnvBuild(cmd.Context(), args[0], a.out)
				if err != nil {
					return err
				}
				if end.Status != "ready" {
					fmt.Fprintf(a.err, "stacyvm: build %s %s: %s\n", args[0], end.Status, end.Reason)
					return exitCode(1)
				}
				return nil
			}
			b, err := c.GetEnvBuild(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			_, err = fmt.Fprint(a.out, b.Log)
			return err
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "follow the log until the build ends")
	return cmd
}

func (a *app) envLsCmd() *cobra.Command {
	var (
		owner  string
		limit  int
		specs  bool
		asJSON *bool
	)
	cmd := &cobra.Command{
		Use:     "ls [--specs]",
		Aliases: []string{"list"},
		Short:   "List builds (newest first), or specs with --specs",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			if specs {
				list, err := c.ListEnvSpecs(cmd.Context(), owner)
				if err != nil {
					return err
				}
				if *asJSON {
					return printJSON(a.out, list)
				}
				t := newTable(a.out, "ID", "OWNER", "NAME", "BASE", "APT", "PIP")
				for _, s := range list {
					t.row(s.ID, s.OwnerID, s.Name, s.BaseImage, orDash(strings.Join(s.AptPackages, " ")),
						orDash(strings.Join(s.PythonPackages, " ")))
				}
				return t.flush()
			}
			list, err := c.ListEnvBuilds(cmd.Context(), owner, limit)
			if err != nil {
				return err
			}
			if *asJSON {
				return printJSON(a.out, list)
			}
			t := newTable(a.out, "ID", "SPEC", "STATUS", "IMAGE", "CREATED")
			for _, e := range list {
				t.row(e.Build.ID, e.Spec.Name, e.Build.Status, e.Build.Image, e.Build.CreatedAt)
			}
			return t.flush()
		},
	}
	cmd.Flags().StringVar(&owner, "owner", "", "only this owner's")
	cmd.Flags().IntVar(&limit, "limit", 0, "at most this many builds")
	cmd.Flags().BoolVar(&specs, "specs", false, "list specs instead of builds")
	asJSON = jsonFlag(cmd)
	return cmd
}

func (a *app) envCancelCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cancel BUILD_ID",
		Short: "Cancel a queued or running build",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			b, err := c.CancelEnvBuild(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(a.out, b.Status)
			return err
		},
	}
	return cmd
}
