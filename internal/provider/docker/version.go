package docker

import (
	"context"

	"github.com/stacyvm/stacyvm/internal/errdefs"
)

// ImageVersion implements provider.ImageVersioner: the ID of the image the
// name resolves to on the docker host now.
func (p *Provider) ImageVersion(ctx context.Context, image string) (string, error) {
	res, err := p.cli.ImageInspect(ctx, image)
	if isNotFound(err) {
		return "", errdefs.New(errdefs.ErrNotFound, "image %q not found on the docker host", image)
	}
	if err != nil {
		return "", classify(err, "docker: inspect image %q", image)
	}
	return res.ID, nil
}

// SandboxImageVersion implements provider.ImageVersioner: the ID of the
// image the sandbox's container was created from, which a later build of
// the same tag does not change.
func (p *Provider) SandboxImageVersion(ctx context.Context, id string) (string, error) {
	if checkID(id) != nil {
		return "", errdefs.New(errdefs.ErrSandboxNotFound, "sandbox %q not found", id)
	}
	ctr, err := p.inspect(ctx, id)
	if err != nil {
		return "", err
	}
	return ctr.Image, nil
}
