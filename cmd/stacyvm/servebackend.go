package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/stacyvm/stacyvm/internal/provider/custom/backend"
	"github.com/stacyvm/stacyvm/internal/server"
)

func (a *app) serveBackendCmd() *cobra.Command {
	var (
		cf           configFlags
		name, listen string
		key          string
	)
	cmd := &cobra.Command{
		Use:   "serve-backend",
		Short: "Serve one of this host's providers over the custom provider protocol",
		Long: `Serve one provider of this machine (proot, docker, mock…) over the custom
provider protocol (docs/custom-provider-protocol.md), so that a StacyVM
server elsewhere can use it through its "custom" provider (custom.url).
The provider is configured as for serve; --api-key is the key callers must
send. Like serve, it listens on loopback unless told otherwise.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, info, err := cf.load(cmd, a.env)
			if err != nil {
				return err
			}
			log := newLogger(a.err, cfg.Log)
			for _, w := range info.Warnings {
				log.Warn(w)
			}
			reg, closeProviders := server.BuildRegistry(cmd.Context(), cfg, log)
			defer closeProviders()
			p, err := reg.Get(name)
			if err != nil {
				return err
			}
			srv := backend.NewServer(listen, backend.NewHandler(p, key))
			log.Info("serving provider over the custom provider protocol", "provider", name,
				"addr", listen, "auth", key != "")
			if err := backend.Serve(cmd.Context(), srv, cfg.Server.ShutdownTimeout); err != nil {
				return fmt.Errorf("serve-backend on %s: %w", listen, err)
			}
			return nil
		},
	}
	cf.addFile(cmd)
	f := cmd.Flags()
	f.StringVar(&name, "provider", "proot", "provider to serve")
	f.StringVar(&listen, "listen", "127.0.0.1:7430", "address to serve on")
	f.StringVar(&key, "api-key", "", "key callers must send (Authorization: Bearer, or X-API-Key)")
	return cmd
}
