//go:build linux

// Command fake-firecracker is a FAKE Firecracker VMM for tests on machines
// without KVM; see package fakevmm for what it does and does not do.
package main

import (
	"os"

	"github.com/stacyvm/stacyvm/internal/provider/firecracker/fakevmm"
)

func main() { os.Exit(fakevmm.Main(os.Args[1:])) }
