package localguest

import (
	"bytes"
	"os"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// signalKey returns the control character that makes the terminal on fd
// send sig to its foreground job (Ctrl-C for SIGINT…), or 0 when the
// terminal makes no signals from keys (ISIG off, as in raw mode) or has no
// key bound for sig.
func signalKey(fd int, sig syscall.Signal) byte {
	tio, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil || tio.Lflag&unix.ISIG == 0 {
		return 0
	}
	var key byte
	switch sig {
	case syscall.SIGINT:
		key = tio.Cc[unix.VINTR]
	case syscall.SIGQUIT:
		key = tio.Cc[unix.VQUIT]
	case syscall.SIGTSTP:
		key = tio.Cc[unix.VSUSP]
	}
	if key == 0xff { // _POSIX_VDISABLE: no key bound
		return 0
	}
	return key
}

// killSession kills every process of session sid: its leader's group and
// the groups a job-control shell made for its jobs. Processes that
// started sessions of their own (daemons) are not the terminal's any more.
func killSession(sid int) {
	_ = syscall.Kill(-sid, syscall.SIGKILL)
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == sid {
			continue
		}
		if procSession(pid) == sid {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// procSession reads the session ID from /proc/PID/stat, whose second field
// (the command name, in parentheses) may itself hold spaces and ")".
func procSession(pid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return -1
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return -1
	}
	// After ") ": state ppid pgrp session …
	f := bytes.Fields(b[i+1:])
	if len(f) < 4 {
		return -1
	}
	sid, err := strconv.Atoi(string(f[3]))
	if err != nil {
		return -1
	}
	return sid
}
