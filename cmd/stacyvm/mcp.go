package main

import (
	"github.com/spf13/cobra"

	"github.com/stacyvm/stacyvm/internal/mcp"
	"github.com/stacyvm/stacyvm/internal/version"
)

// mcpCmd serves MCP over stdio for an agent that starts it as a
// subprocess. It is a client of a running server (--server), not a server
// of its own: sandboxes it makes are the server's, visible to the API, the
// reaper and every other client, and it needs no database or provider.
func (a *app) mcpCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "mcp",
		Short: "Serve the Model Context Protocol over stdio, as a client of a running server",
		Long: `Serve the Model Context Protocol over stdin/stdout (newline-delimited
JSON-RPC) for an agent that starts this command as a subprocess. Every tool
call goes to the server at --server with --api-key; start that server with
"stacyvm serve" (which also serves MCP over streamable HTTP at /mcp).

Tools: create_sandbox, list_sandboxes, destroy_sandbox, run_command,
read_file, write_file, list_files.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			return mcp.ServeStdio(cmd.Context(), mcp.NewServer(mcp.FromClient(c), version.String()), a.in, a.out)
		},
	}
}
