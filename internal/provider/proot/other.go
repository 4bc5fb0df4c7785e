//go:build !linux

package proot

import (
	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/provider"
)

// Provider is the PRoot provider; it exists only on Linux.
type Provider struct{ provider.Provider }

// New fails: PRoot runs only on Linux.
func New(Options) (*Provider, error) {
	return nil, errdefs.New(errdefs.ErrProviderUnavailable, "proot: PRoot runs only on Linux")
}

// Close does nothing.
func (p *Provider) Close() error { return nil }

// Warning is empty: there is nothing to warn about on a host where the
// provider cannot load.
func (p *Provider) Warning() string { return "" }

// DefaultStateDir fails: PRoot runs only on Linux.
func DefaultStateDir() (string, error) {
	return "", errdefs.New(errdefs.ErrProviderUnavailable, "proot: PRoot runs only on Linux")
}

// DefaultImagesDir fails: PRoot runs only on Linux.
func DefaultImagesDir() (string, error) {
	return "", errdefs.New(errdefs.ErrProviderUnavailable, "proot: PRoot runs only on Linux")
}
