package main

import (
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/stacyvm/stacyvm/internal/client"
)

// spawnFlags are the flags spawn and `templates spawn` share.
type spawnFlags struct {
	provider string
	ttl      time.Duration
	owner    string
	meta     []string
}

func (f *spawnFlags) add(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.provider, "provider", "", "provider to run the sandbox (default: the server's)")
	fl.DurationVar(&f.ttl, "ttl", 0, "time to live, e.g. 30m (default: the server's)")
	fl.StringVar(&f.owner, "owner", "", "owner ID recorded on the sandbox")
	fl.StringArrayVar(&f.meta, "meta", nil, "metadata KEY=VALUE (repeatable)")
}

func (f *spawnFlags) check() (map[string]string, error) {
	if f.ttl < 0 {
		return nil, usagef("--ttl must be positive")
	}
	return parseKV("meta", f.meta)
}

// printSandbox prints a new sandbox: its ID alone, so that scripts can
// capture it, or the whole object as JSON.
func printSandbox(w io.Writer, sb client.Sandbox, asJSON bool) error {
	if asJSON {
		return printJSON(w, sb)
	}
	_, err := fmt.Fprintln(w, sb.ID)
	return err
}

func (a *app) spawnCmd() *cobra.Command {
	var (
		sf              spawnFlags
		image, template string
		memory          string
		vcpus           int
		asJSON          *bool
	)
	cmd := &cobra.Command{
		Use:   "spawn",
		Short: "Create a sandbox and print its ID",
		Example: `  stacyvm spawn --image python:3.12 --ttl 1h --memory 1g
  ID=$(stacyvm spawn --template py) && stacyvm exec "$ID" -- python3 -V`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			meta, err := sf.check()
			if err != nil {
				return err
			}
			mem, err := parseMemory("memory", memory)
			if err != nil {
				return err
			}
			if vcpus < 0 {
				return usagef("--vcpus must be positive")
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			sb, err := c.Spawn(cmd.Context(), client.SpawnRequest{
				Image: image, Provider: sf.provider, MemoryMB: mem, VCPUs: vcpus, TTL: sf.ttl,
				Template: template, OwnerID: sf.owner, Metadata: meta,
			})
			if err != nil {
				return err
			}
			return printSandbox(a.out, sb, *asJSON)
		},
	}
	sf.add(cmd)
	fl := cmd.Flags()
	fl.StringVar(&image, "image", "", "image to run (default: the template's, then the server's)")
	fl.StringVar(&template, "template", "", "template to spawn from")
	fl.StringVar(&memory, "memory", "", "memory in MiB, or with a unit: 512m, 2g")
	fl.IntVar(&vcpus, "vcpus", 0, "virtual CPUs")
	asJSON = jsonFlag(cmd)
	return cmd
}

func (a *app) lsCmd() *cobra.Command {
	var (
		opts   client.ListOptions
		quiet  bool
		asJSON *bool
	)
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List sandboxes that are not destroyed, newest first",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			sbs, err := c.List(cmd.Context(), opts)
			if err != nil {
				return err
			}
			switch {
			case *asJSON:
				if sbs == nil {
					sbs = []client.Sandbox{}
				}
				return printJSON(a.out, sbs)
			case quiet:
				for _, sb := range sbs {
					fmt.Fprintln(a.out, sb.ID)
				}
				return nil
			}
			now := time.Now()
			t := newTable(a.out, "ID", "STATE", "PROVIDER", "IMAGE", "OWNER", "EXPIRES")
			for _, sb := range sbs {
				t.row(sb.ID, sb.State, sb.Provider, orDash(sb.Image), orDash(sb.OwnerID), until(sb.ExpiresAt, now))
			}
			return t.flush()
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&opts.OwnerID, "owner", "", "only sandboxes of this owner")
	fl.StringVar(&opts.State, "state", "", "only sandboxes in this state")
	fl.StringVar(&opts.Provider, "provider", "", "only sandboxes of this provider")
	fl.BoolVarP(&quiet, "quiet", "q", false, "print IDs only")
	asJSON = jsonFlag(cmd)
	return cmd
}

func (a *app) getCmd() *cobra.Command {
	var asJSON *bool
	cmd := &cobra.Command{
		Use:   "get ID",
		Short: "Show one sandbox",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			sb, err := c.Get(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if *asJSON {
				return printJSON(a.out, sb)
			}
			return keyValues(a.out,
				[2]string{"ID", sb.ID},
				[2]string{"State", sb.State},
				[2]string{"Provider", sb.Provider},
				[2]string{"Image", orDash(sb.Image)},
				[2]string{"Memory", strconv.Itoa(sb.MemoryMB) + " MiB"},
				[2]string{"vCPUs", strconv.Itoa(sb.VCPUs)},
				[2]string{"Owner", orDash(sb.OwnerID)},
				[2]string{"Template", orDash(sb.Template)},
				[2]string{"Created", timestamp(sb.CreatedAt)},
				[2]string{"Expires", timestamp(sb.ExpiresAt) + " (" + until(sb.ExpiresAt, time.Now()) + ")"},
				[2]string{"Metadata", joinKV(sb.Metadata)},
				[2]string{"Preview", orDash(sb.PreviewDomain)},
			)
		},
	}
	asJSON = jsonFlag(cmd)
	return cmd
}

func (a *app) killCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "kill ID...",
		Aliases: []string{"rm", "destroy"},
		Short:   "Destroy sandboxes",
		Long:    "Destroy each sandbox named, printing the IDs destroyed. All are attempted even when one fails.",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			return a.eachArg(args, func(id string) error { return c.Destroy(cmd.Context(), id) })
		},
	}
}

func (a *app) extendCmd() *cobra.Command {
	var (
		ttl    time.Duration
		asJSON *bool
	)
	cmd := &cobra.Command{
		Use:   "extend ID --ttl DURATION",
		Short: "Move a sandbox's expiry to now + ttl (never earlier than it was)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if ttl <= 0 {
				return usagef("--ttl must be positive")
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			sb, err := c.Extend(cmd.Context(), args[0], ttl)
			if err != nil {
				return err
			}
			if *asJSON {
				return printJSON(a.out, sb)
			}
			_, err = fmt.Fprintf(a.out, "%s expires at %s (%s)\n", sb.ID, timestamp(sb.ExpiresAt), until(sb.ExpiresAt, time.Now()))
			return err
		},
	}
	cmd.Flags().DurationVar(&ttl, "ttl", 0, "new time to live from now, e.g. 30m")
	_ = cmd.MarkFlagRequired("ttl")
	asJSON = jsonFlag(cmd)
	return cmd
}

func (a *app) logsCmd() *cobra.Command {
	var (
		lines  int
		asJSON *bool
	)
	cmd := &cobra.Command{
		Use:   "logs ID",
		Short: "Print the last lines of a sandbox's console log",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if lines < 0 {
				return usagef("--lines must be positive")
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			out, err := c.Logs(cmd.Context(), args[0], lines)
			if err != nil {
				return err
			}
			if *asJSON {
				if out == nil {
					out = []string{}
				}
				return printJSON(a.out, out)
			}
			for _, l := range out {
				fmt.Fprintln(a.out, l)
			}
			return nil
		},
	}
	cmd.Flags().IntVarP(&lines, "lines", "n", 0, "how many lines (default: the server's, 100)")
	asJSON = jsonFlag(cmd)
	return cmd
}

func (a *app) pruneCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "prune",
		Short: "Destroy every expired sandbox now",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			n, err := c.Prune(cmd.Context())
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(a.out, "pruned %d\n", n)
			return err
		},
	}
}
