package docker

import (
	"context"
	"errors"

	"github.com/moby/moby/client"

	"github.com/stacyvm/stacyvm/internal/errdefs"
)

// ensureImage makes image available locally according to the pull policy.
// An image that is neither present nor pullable is errdefs.ErrNotFound,
// naming the image.
func (p *Provider) ensureImage(ctx context.Context, image string) error {
	if p.cfg.Pull != PullAlways {
		_, err := p.cli.ImageInspect(ctx, image)
		if err == nil {
			return nil
		}
		if !isNotFound(err) {
			return classify(err, "docker: inspect image %q", image)
		}
		if p.cfg.Pull == PullNever {
			return errdefs.WithHint(errdefs.New(errdefs.ErrNotFound, "image %q not found on the docker host", image),
				"build or pull the image on the docker host; this provider does not pull (pull: never)")
		}
	}
	perr := p.pull(ctx, image)
	if perr == nil {
		return nil
	}
	if ctx.Err() != nil {
		return classify(perr, "docker: pull image %q", image)
	}
	// The reason a pull failed (unknown repository, unknown tag, no
	// registry) arrives as text in the progress stream; what matters is
	// whether the image is there now, which is a typed answer.
	if _, err := p.cli.ImageInspect(ctx, image); err == nil {
		return nil
	} else if !isNotFound(err) {
		return classify(err, "docker: inspect image %q", image)
	}
	if errdefs.Classify(perr) == errdefs.ErrInvalidArgument || errdefs.Classify(perr) == errdefs.ErrProviderUnavailable {
		return perr
	}
	return errdefs.WithHint(errdefs.Wrap(errdefs.ErrNotFound, perr, "image %q not found locally and could not be pulled", image),
		"check the image name and tag, and that its registry is reachable from the docker host")
}

func (p *Provider) pull(ctx context.Context, image string) error {
	var opts client.ImagePullOptions
	if p.cfg.PullAuth != nil {
		auth, err := p.cfg.PullAuth(image)
		if err != nil {
			return errdefs.Wrap(errdefs.ErrProviderUnavailable, err, "docker: credentials to pull %q", image)
		}
		opts.RegistryAuth = auth
	}
	resp, err := p.cli.ImagePull(ctx, image, opts)
	if err != nil {
		return classify(err, "docker: pull image %q", image)
	}
	defer resp.Close()
	if err := resp.Wait(ctx); err != nil {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return classify(err, "docker: pull image %q", image)
		}
		return err
	}
	return nil
}
