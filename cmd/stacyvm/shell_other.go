//go:build !unix

package main

// followWindowSize does nothing where there is no SIGWINCH.
func followWindowSize(int, func(rows, cols uint16) error) (stop func()) { return func() {} }
