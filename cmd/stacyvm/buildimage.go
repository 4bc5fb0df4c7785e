package main

import (
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/stacyvm/stacyvm/internal/provider/firecracker"
	"github.com/stacyvm/stacyvm/internal/server"
)

func (a *app) buildImageCmd() *cobra.Command {
	var (
		cf     configFlags
		asJSON *bool
	)
	cmd := &cobra.Command{
		Use:   "build-image SOURCE",
		Short: "Build a Firecracker root file system from a Docker image, a directory or a tarball",
		Long: `Build the ext4 root file system the Firecracker provider boots, with
stacyvm-agent installed, from SOURCE: a local Docker image reference
(python:3.12), or a path (absolute, or starting with ./ or ../) to a
directory, a tarball (.tar, .tar.gz) or a prebuilt .ext4 file. Results are
cached by content digest under firecracker.state_dir, so building the same
content again is instant, and spawns build lazily when needed anyway.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, _, err := cf.load(cmd, a.env)
			if err != nil {
				return err
			}
			log := newLogger(a.err, cfg.Log)
			img, err := firecracker.BuildImage(cmd.Context(), server.FirecrackerConfig(cfg, log), args[0])
			if err != nil {
				return err
			}
			if *asJSON {
				return printJSON(a.out, img)
			}
			log.Info("image ready", slog.String("digest", img.Digest), slog.Int64("bytes", img.Size))
			_, err = a.out.Write([]byte(img.Path + "\n"))
			return err
		},
	}
	cf.addFile(cmd)
	asJSON = jsonFlag(cmd)
	return cmd
}
