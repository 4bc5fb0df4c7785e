//go:build !linux

package localguest

import (
	"io/fs"
	"os"
)

// chmodFallback has no other way to change a mode outside Linux.
func chmodFallback(*os.Root, string, fs.FileMode) error { return errNoFallback }
