package main

import (
	"fmt"
	"io"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/stacyvm/stacyvm/internal/config"
	"github.com/stacyvm/stacyvm/internal/server"
)

// configFlags are the server-side flags serve and doctor share: a
// configuration file and the few settings worth a flag of their own, each
// of which overrides the file and the environment.
type configFlags struct {
	// withOverrides is set by addOverrides: only then do the flags named in
	// overrideKeys belong to the configuration (serve-backend has its own
	// --listen and --provider).
	withOverrides bool

	file     string
	listen   string
	db       string
	provider string
	apiKey   string
}

// overrideKeys maps each override flag to its configuration key.
var overrideKeys = []struct{ flag, key string }{
	{"listen", "server.listen"},
	{"db", "store.path"},
	{"provider", "provider.default"},
	{"api-key", "server.api_key"},
}

func (f *configFlags) addFile(cmd *cobra.Command) {
	cmd.Flags().StringVarP(&f.file, "config", "c", "",
		"configuration file (default ./"+config.LocalFile+", then ~/"+config.UserFile+")")
}

func (f *configFlags) addOverrides(cmd *cobra.Command) {
	f.withOverrides = true
	fl := cmd.Flags()
	fl.StringVar(&f.listen, "listen", "", "address to serve on (server.listen, default 127.0.0.1:7423)")
	fl.StringVar(&f.db, "db", "", "SQLite database file (store.path, default ./stacyvm.db)")
	fl.StringVar(&f.provider, "provider", "", `default provider, or "auto" (provider.default)`)
	// Shadows the root's client --api-key: here it is the key the server
	// requires, not one it sends.
	fl.StringVar(&f.apiKey, "api-key", "", "API key clients must send (server.api_key)")
}

// load reads the configuration: defaults, file, STACYVM_<SECTION>_<KEY>
// environment, then the flags that were given.
func (f *configFlags) load(cmd *cobra.Command, env []string) (*config.Config, *config.Info, error) {
	values := map[string]string{"listen": f.listen, "db": f.db, "provider": f.provider, "api-key": f.apiKey}
	overrides := map[string]string{}
	for _, o := range overrideKeys {
		if fl := cmd.Flags().Lookup(o.flag); f.withOverrides && fl != nil && fl.Changed {
			overrides[o.key] = values[o.flag]
		}
	}
	if env == nil {
		// config.Load reads the process's environment for nil; an
		// invocation without one must not.
		env = []string{}
	}
	return config.Load(config.LoadOptions{File: f.file, Env: env, Overrides: overrides})
}

// newLogger builds the process logger the configuration asks for.
func newLogger(w io.Writer, lc config.LogConfig) *slog.Logger {
	opts := &slog.HandlerOptions{Level: lc.SlogLevel()}
	if lc.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func (a *app) serveCmd() *cobra.Command {
	var (
		cf          configFlags
		printConfig bool
	)
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the StacyVM server",
		Long: `Run the StacyVM server until SIGINT or SIGTERM, then drain: stop accepting
requests, let running ones finish (up to server.shutdown_timeout) and exit.

Settings come from built-in defaults, then the configuration file
(--config, else ./` + config.LocalFile + `, else ~/` + config.UserFile + `), then
STACYVM_<SECTION>_<KEY> environment variables (STACYVM_SERVER_LISTEN...),
then the flags below.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, info, err := cf.load(cmd, a.env)
			if err != nil {
				return err
			}
			if printConfig {
				return cfg.Print(a.out, info)
			}
			log := newLogger(a.err, cfg.Log)
			if info.File != "" {
				log.Info("configuration file read", "file", info.File)
			}
			for _, w := range info.Warnings {
				log.Warn(w)
			}
			if err := server.Run(cmd.Context(), cfg, log); err != nil {
				return fmt.Errorf("serve: %w", err)
			}
			return nil
		},
	}
	cf.addFile(cmd)
	cf.addOverrides(cmd)
	cmd.Flags().BoolVar(&printConfig, "print-config", false, "print the effective configuration (secrets redacted) and exit")
	return cmd
}
