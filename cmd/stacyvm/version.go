package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/stacyvm/stacyvm/internal/version"
)

func (a *app) versionCmd() *cobra.Command {
	var asJSON *bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the client's version and, when reachable, the server's",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := struct {
				Client      string `json:"client"`
				Server      string `json:"server,omitempty"`
				ServerError string `json:"server_error,omitempty"`
			}{Client: version.String()}
			c, err := a.client()
			if err == nil {
				out.Server, err = c.Version(cmd.Context())
			}
			if err != nil {
				// The client's version is worth printing on its own: an
				// unreachable server is not a failure of this command.
				out.ServerError = err.Error()
			}
			if *asJSON {
				return printJSON(a.out, out)
			}
			fmt.Fprintf(a.out, "client: %s\n", out.Client)
			if out.Server != "" {
				fmt.Fprintf(a.out, "server: %s\n", out.Server)
			} else {
				fmt.Fprintf(a.out, "server: unreachable (%s)\n", out.ServerError)
			}
			return nil
		},
	}
	asJSON = jsonFlag(cmd)
	return cmd
}
