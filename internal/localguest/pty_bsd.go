//go:build unix && !linux

package localguest

import "syscall"

// killSession kills the session leader's process group; without /proc the
// groups of its jobs cannot be found.
func killSession(sid int) { _ = syscall.Kill(-sid, syscall.SIGKILL) }

// signalKey finds no key here: the signal goes to the foreground group
// that TIOCGPGRP names.
func signalKey(int, syscall.Signal) byte { return 0 }
