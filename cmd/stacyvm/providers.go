package main

import (
	"github.com/spf13/cobra"

	"github.com/stacyvm/stacyvm/internal/client"
)

func (a *app) providersCmd() *cobra.Command {
	var asJSON *bool
	cmd := &cobra.Command{
		Use:   "providers",
		Short: "List the server's providers, their health and capabilities",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			list, err := c.Providers(cmd.Context())
			if err != nil {
				return err
			}
			if *asJSON {
				if list == nil {
					list = []client.ProviderInfo{}
				}
				return printJSON(a.out, list)
			}
			t := newTable(a.out, "NAME", "DEFAULT", "HEALTHY", "ISOLATION", "STREAMING", "NETWORK", "LIMITS", "PROBLEM")
			for _, p := range list {
				caps := p.Capabilities
				t.row(p.Name, yesNo(p.Default), yesNo(p.Healthy), orDash(caps.Isolation),
					yesNo(caps.Streaming), yesNo(caps.Network), yesNo(caps.ResourceLimits), orDash(p.Problem))
			}
			return t.flush()
		},
	}
	asJSON = jsonFlag(cmd)
	return cmd
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
