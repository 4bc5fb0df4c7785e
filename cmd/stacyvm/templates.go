package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/stacyvm/stacyvm/internal/client"
)

func (a *app) templatesCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "templates",
		Aliases: []string{"template", "tpl"},
		Short:   "Manage sandbox templates",
		RunE:    helpOrUnknown,
	}
	cmd.AddCommand(a.templatesLsCmd(), a.templatesGetCmd(), a.templatesCreateCmd(),
		a.templatesRmCmd(), a.templatesSpawnCmd())
	return cmd
}

func (a *app) templatesLsCmd() *cobra.Command {
	var asJSON *bool
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List templates",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			list, err := c.ListTemplates(cmd.Context())
			if err != nil {
				return err
			}
			if *asJSON {
				if list == nil {
					list = []client.Template{}
				}
				return printJSON(a.out, list)
			}
			t := newTable(a.out, "NAME", "VERSION", "IMAGE", "PROVIDER", "MEMORY", "CPUS", "TTL", "DESCRIPTION")
			for _, tp := range list {
				t.row(tp.Name, strconv.Itoa(tp.Version), tp.Image, orDash(tp.Provider),
					megabytes(tp.MemoryMB), numberOrDash(tp.CPUCores), seconds(tp.TTLSeconds), orDash(tp.Description))
			}
			return t.flush()
		},
	}
	asJSON = jsonFlag(cmd)
	return cmd
}

func megabytes(mb int) string {
	if mb == 0 {
		return "-"
	}
	return strconv.Itoa(mb) + "Mi"
}

func numberOrDash(n int) string {
	if n == 0 {
		return "-"
	}
	return strconv.Itoa(n)
}

func seconds(s int) string {
	if s == 0 {
		return "-"
	}
	return (time.Duration(s) * time.Second).String()
}

func (a *app) templatesGetCmd() *cobra.Command {
	var asJSON *bool
	cmd := &cobra.Command{
		Use:   "get NAME",
		Short: "Show one template",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			t, err := c.GetTemplate(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if *asJSON {
				return printJSON(a.out, t)
			}
			setup := "-"
			if len(t.Setup) > 0 {
				setup = strings.Join(t.Setup, " && ")
			}
			return keyValues(a.out,
				[2]string{"Name", t.Name},
				[2]string{"Version", strconv.Itoa(t.Version)},
				[2]string{"Image", t.Image},
				[2]string{"Description", orDash(t.Description)},
				[2]string{"Provider", orDash(t.Provider)},
				[2]string{"Memory", megabytes(t.MemoryMB)},
				[2]string{"CPUs", numberOrDash(t.CPUCores)},
				[2]string{"TTL", seconds(t.TTLSeconds)},
				[2]string{"Pool size", strconv.Itoa(t.PoolSize)},
				[2]string{"Setup", setup},
				[2]string{"Env", joinKV(t.Env)},
				[2]string{"Created", timestamp(t.CreatedAt)},
				[2]string{"Updated", timestamp(t.UpdatedAt)},
			)
		},
	}
	asJSON = jsonFlag(cmd)
	return cmd
}

func (a *app) templatesCreateCmd() *cobra.Command {
	var (
		file                           string
		name, image, description, prov string
		environment                    string
		memory                         string
		cpus, poolSize                 int
		ttl                            time.Duration
		setup, env                     []string
		asJSON                         *bool
	)
	cmd := &cobra.Command{
		Use:   "create --name NAME --image IMAGE [flags] | --file template.json",
		Short: "Create a template from flags or a JSON file",
		Long: `Create a template. --file reads the API's template JSON (- for stdin);
flags given together with --file override the file's fields.`,
		Example: `  stacyvm templates create --name py --image python:3.12 --setup 'pip install requests' --ttl 1h
  stacyvm templates create --file py.json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var t client.Template
			if file != "" {
				var err error
				if t, err = a.readTemplate(file); err != nil {
					return err
				}
			}
			// Flags override the file, but only those actually given.
			fl := cmd.Flags()
			if fl.Changed("name") {
				t.Name = name
			}
			if fl.Changed("image") {
				t.Image = image
			}
			if fl.Changed("description") {
				t.Description = description
			}
			if fl.Changed("provider") {
				t.Provider = prov
			}
			if fl.Changed("environment") {
				t.Environment = environment
			}
			if fl.Changed("cpus") {
				t.CPUCores = cpus
			}
			if fl.Changed("pool-size") {
				t.PoolSize = poolSize
			}
			if fl.Changed("setup") {
				t.Setup = setup
			}
			if fl.Changed("memory") {
				var err error
				if t.MemoryMB, err = parseMemory("memory", memory); err != nil {
					return err
				}
			}
			if fl.Changed("ttl") {
				if ttl <= 0 || ttl%time.Second != 0 {
					return usagef("--ttl must be a positive whole number of seconds")
				}
				t.TTLSeconds = int(ttl / time.Second)
			}
			if fl.Changed("env") {
				var err error
				if t.Env, err = parseKV("env", env); err != nil {
					return err
				}
			}
			if t.Name == "" || (t.Image == "" && t.Environment == "") {
				return usagef("a template needs --name and --image or --environment (or a --file that has them)")
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			out, err := c.CreateTemplate(cmd.Context(), t)
			if err != nil {
				return err
			}
			if *asJSON {
				return printJSON(a.out, out)
			}
			_, err = fmt.Fprintln(a.out, out.Name)
			return err
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&file, "file", "f", "", "template JSON file (- for stdin)")
	fl.StringVar(&name, "name", "", "template name")
	fl.StringVar(&image, "image", "", "image sandboxes run")
	fl.StringVar(&environment, "environment", "", "environment spec or build ID whose image sandboxes run (instead of --image)")
	fl.StringVar(&description, "description", "", "what the template is for")
	fl.StringVar(&prov, "provider", "", "provider to run on (default: the server's)")
	fl.StringVar(&memory, "memory", "", "memory in MiB, or with a unit: 512m, 2g")
	fl.IntVar(&cpus, "cpus", 0, "CPU cores")
	fl.IntVar(&poolSize, "pool-size", 0, "warm sandboxes to keep ready")
	fl.DurationVar(&ttl, "ttl", 0, "time to live of sandboxes, e.g. 1h")
	fl.StringArrayVar(&setup, "setup", nil, "shell command run once after spawn (repeatable, in order)")
	fl.StringArrayVar(&env, "env", nil, "environment variable KEY=VALUE for every command (repeatable)")
	asJSON = jsonFlag(cmd)
	return cmd
}

// readTemplate reads a template's JSON from a file or, for "-", stdin.
func (a *app) readTemplate(file string) (client.Template, error) {
	var r io.Reader = a.in
	if file != "-" {
		f, err := os.Open(file)
		if err != nil {
			return client.Template{}, err
		}
		defer f.Close()
		r = f
	}
	var t client.Template
	dec := json.NewDecoder(io.LimitReader(r, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&t); err != nil {
		return client.Template{}, usagef("--file %s: %v", file, err)
	}
	return t, nil
}

func (a *app) templatesRmCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "rm NAME...",
		Aliases: []string{"delete"},
		Short:   "Delete templates",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			return a.eachArg(args, func(name string) error { return c.DeleteTemplate(cmd.Context(), name) })
		},
	}
}

func (a *app) templatesSpawnCmd() *cobra.Command {
	var (
		sf     spawnFlags
		asJSON *bool
	)
	cmd := &cobra.Command{
		Use:   "spawn NAME",
		Short: "Create a sandbox from a template and print its ID",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			meta, err := sf.check()
			if err != nil {
				return err
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			sb, err := c.SpawnTemplate(cmd.Context(), args[0], client.TemplateSpawnRequest{
				Provider: sf.provider, TTL: sf.ttl, OwnerID: sf.owner, Metadata: meta,
			})
			if err != nil {
				return err
			}
			return printSandbox(a.out, sb, *asJSON)
		},
	}
	sf.add(cmd)
	asJSON = jsonFlag(cmd)
	return cmd
}
