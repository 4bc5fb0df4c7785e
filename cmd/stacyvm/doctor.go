package main

import (
	"github.com/spf13/cobra"

	"github.com/stacyvm/stacyvm/internal/server"
)

// checkJSON is server.Check with JSON names in the API's style.
type checkJSON struct {
	Provider  string `json:"provider"`
	Available bool   `json:"available"`
	Isolation string `json:"isolation"`
	Problem   string `json:"problem,omitempty"`
	Warning   string `json:"warning,omitempty"`
}

func (a *app) doctorCmd() *cobra.Command {
	var (
		cf     configFlags
		asJSON *bool
	)
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Check which providers can run on this machine, and what the others lack",
		Long: `Check every provider the configuration enables on this machine: whether it
is available, how strongly it isolates sandboxes, and exactly what is
missing when it is not available. It reads the same configuration as
serve and does not need a running server. It exits 0 whatever it finds;
an unavailable provider is a finding, not a failure.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, _, err := cf.load(cmd, a.env)
			if err != nil {
				return err
			}
			checks := server.Doctor(cmd.Context(), cfg)
			if *asJSON {
				out := make([]checkJSON, 0, len(checks))
				for _, c := range checks {
					out = append(out, checkJSON(c))
				}
				return printJSON(a.out, out)
			}
			t := newTable(a.out, "PROVIDER", "AVAILABLE", "ISOLATION", "DETAILS")
			for _, c := range checks {
				details := c.Problem
				if c.Warning != "" {
					if details != "" {
						details += "; "
					}
					details += "warning: " + c.Warning
				}
				t.row(c.Provider, yesNo(c.Available), orDash(c.Isolation), orDash(details))
			}
			return t.flush()
		},
	}
	cf.addFile(cmd)
	asJSON = jsonFlag(cmd)
	return cmd
}
