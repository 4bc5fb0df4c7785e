//go:build unix

package main

import (
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/term"
)

// followWindowSize calls resize with the terminal's size whenever the
// window changes (SIGWINCH) until the returned stop is called.
func followWindowSize(fd int, resize func(rows, cols uint16) error) (stop func()) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGWINCH)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-done:
				return
			case <-ch:
				if cols, rows, err := term.GetSize(fd); err == nil && rows > 0 && cols > 0 {
					_ = resize(uint16(rows), uint16(cols))
				}
			}
		}
	}()
	return func() {
		signal.Stop(ch)
		close(done)
	}
}
