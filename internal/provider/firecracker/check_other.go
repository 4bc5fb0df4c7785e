//go:build !linux

package firecracker

import (
	"fmt"
	"runtime"
)

func checkKVM() error { return fmt.Errorf("KVM needs Linux, this is %s", runtime.GOOS) }
