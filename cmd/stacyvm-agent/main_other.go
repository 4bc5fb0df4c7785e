//go:build !linux

// Command stacyvm-agent runs inside Linux sandboxes only; on other systems
// it exists so that the module builds everywhere.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "stacyvm-agent: linux only")
	os.Exit(1)
}
