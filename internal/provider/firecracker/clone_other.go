//go:build !linux

package firecracker

import (
	"errors"
	"os"
)

func reflink(out, in *os.File) error { return errors.ErrUnsupported }
