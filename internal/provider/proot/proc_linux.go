package proot

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"syscall"
	"time"
)

// proc identifies one process across server restarts: a PID alone may be
// reused by an unrelated process once the original exits, so every check
// also compares the start time the kernel recorded for it.
type proc struct {
	PID   int    `json:"pid"`
	Start uint64 `json:"start"` // clock ticks after boot, /proc/PID/stat field 22
}

func (p proc) valid() bool { return p.PID > 0 }

// procStat holds the fields of /proc/PID/stat this package needs.
type procStat struct {
	state byte
	start uint64
}

func readStat(pid int) (procStat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, err
	}
	// The command name (field 2) is in parentheses and may itself contain
	// spaces and parentheses; everything after the last ')' is regular.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	f := bytes.Fields(b[i+1:])
	// f[0] is field 3 (state); field 22 (starttime) is f[19].
	if len(f) < 20 || len(f[0]) != 1 {
		return procStat{}, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	start, err := strconv.ParseUint(string(f[19]), 10, 64)
	if err != nil {
		return procStat{}, fmt.Errorf("malformed /proc/%d/stat: %w", pid, err)
	}
	return procStat{state: f[0][0], start: start}, nil
}

// identify returns the proc of a process that was just started.
func identify(pid int) (proc, error) {
	st, err := readStat(pid)
	if err != nil {
		return proc{}, err
	}
	return proc{PID: pid, Start: st.start}, nil
}

// running reports whether p is still the same process and has not exited
// (a zombie has exited).
func (p proc) running() bool {
	if !p.valid() {
		return false
	}
	st, err := readStat(p.PID)
	if err != nil || st.start != p.Start {
		return false
	}
	return st.state != 'Z' && st.state != 'X' && st.state != 'x'
}

// signal sends sig to p if p is still the same process.
func (p proc) signal(sig syscall.Signal) {
	if p.running() {
		_ = syscall.Kill(p.PID, sig)
	}
}

// statusFields reads the TracerPid and the four user IDs (real,
// effective, saved, file system) of a process.
func statusFields(pid int) (tracer int, uids [4]int, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, uids, err
	}
	uids = [4]int{-1, -1, -1, -1}
	for line := range bytes.SplitSeq(b, []byte{'\n'}) {
		k, v, ok := bytes.Cut(line, []byte{':'})
		if !ok {
			continue
		}
		switch string(k) {
		case "TracerPid":
			tracer, _ = strconv.Atoi(string(bytes.TrimSpace(v)))
		case "Uid":
			for i, f := range bytes.Fields(v) {
				if i < 4 {
					uids[i], _ = strconv.Atoi(string(f))
				}
			}
		}
	}
	return tracer, uids, nil
}

// procInfo is what the sandbox's process scans read of one process.
type procInfo struct {
	pid    int
	tracer int    // TracerPid
	uids   [4]int // real, effective, saved, file system
}

// scan lists the live (not zombie) processes for which match is true.
// This process is never listed.
func scan(match func(procInfo) bool) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	self := os.Getpid()
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		t, uids, err := statusFields(pid)
		if err != nil || !match(procInfo{pid: pid, tracer: t, uids: uids}) {
			continue
		}
		if st, err := readStat(pid); err == nil && st.state != 'Z' && st.state != 'X' {
			out = append(out, pid)
		}
	}
	return out
}

// members lists the processes of a sandbox: the tracees of its PRoot
// processes and, when uid >= 0, every process running as the sandbox's
// private uid (which also catches processes that escaped their tracer, say
// by killing it). The tracers themselves are not listed.
func members(tracers []proc, uid int) []int {
	tset := map[int]bool{}
	for _, t := range tracers {
		if t.valid() {
			tset[t.PID] = true
		}
	}
	return scan(func(pi procInfo) bool {
		if tset[pi.pid] {
			return false
		}
		if tset[pi.tracer] {
			return true
		}
		if uid >= 0 {
			for _, u := range pi.uids {
				if u == uid {
					return true
				}
			}
		}
		return false
	})
}

// findTracers finds the PRoot processes of a sandbox, which each run as
// "proot -0 -r ROOTFS ...": commands started by an earlier server instance
// that still have processes.
func findTracers(rootfs string) []proc {
	want := []byte("\x00-0\x00-r\x00" + rootfs + "\x00")
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []proc
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		i := bytes.IndexByte(b, 0)
		if i < 0 || !bytes.HasPrefix(b[i:], want) {
			continue
		}
		if p, err := identify(pid); err == nil && p.running() {
			out = append(out, p)
		}
	}
	return out
}

// killProcs kills every process of a sandbox, or of one command, and waits
// until they are gone. Order matters: a tracee whose PRoot dies is
// detached and runs on with no path translation at all. So the tracers are
// stopped first, which freezes what they trace (a tracee blocks at its next
// traced system call, and a new child waits for its tracer before it
// runs); then every tracee is killed (each then waits, dying, for its
// stopped tracer); then the tracers are resumed, reap them and exit. helpers are
// processes PRoot does not trace (the host-side file agent). uid >= 0 adds
// every process running as the sandbox's private uid.
func killProcs(ctx context.Context, tracers []proc, uid int, helpers ...proc) error {
	for _, t := range tracers {
		t.signal(syscall.SIGSTOP)
	}
	for _, h := range helpers {
		h.signal(syscall.SIGKILL)
	}
	killed := map[int]bool{}
	// Two sweeps in a row that find nobody new: a child forked just before
	// the stop has had time to appear.
	for quiet := 0; quiet < 2; {
		quiet++
		for _, pid := range members(tracers, uid) {
			if !killed[pid] {
				_ = syscall.Kill(pid, syscall.SIGKILL)
				killed[pid] = true
				quiet = 0
			}
		}
		if err := sleepCtx(ctx, time.Millisecond); err != nil {
			return fmt.Errorf("killing the sandbox's processes: %w", err)
		}
	}
	// With nothing left to trace, a tracer exits by itself, cleaning up
	// after itself; SIGKILL is only the fallback. (A PRoot that wrote its
	// own loader to /tmp would leave it there if killed; the provider
	// gives them one in the state directory: loader_linux.go.)
	for _, t := range tracers {
		t.signal(syscall.SIGCONT)
	}
	for _, t := range tracers {
		wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := waitGone(wctx, t)
		cancel()
		if err != nil {
			t.signal(syscall.SIGKILL)
		}
	}
	for _, p := range append(slices.Clone(tracers), helpers...) {
		if err := waitGone(ctx, p); err != nil {
			return err
		}
	}
	// The killed tracees finish exiting once their tracer is gone.
	delay := time.Millisecond
	for {
		left := 0
		for pid := range killed {
			if st, err := readStat(pid); err == nil && st.state != 'Z' && st.state != 'X' {
				left++
			}
		}
		if uid >= 0 {
			for _, pid := range members(nil, uid) {
				_ = syscall.Kill(pid, syscall.SIGKILL)
				left++
			}
		}
		if left == 0 {
			return nil
		}
		if err := sleepCtx(ctx, delay); err != nil {
			return fmt.Errorf("waiting for the sandbox's processes to exit: %w", err)
		}
		delay = min(delay*2, 50*time.Millisecond)
	}
}

// waitGone waits until p has exited (a zombie counts: its parent, this
// server or init, reaps it).
func waitGone(ctx context.Context, p proc) error {
	delay := time.Millisecond
	for p.running() {
		if err := sleepCtx(ctx, delay); err != nil {
			return fmt.Errorf("waiting for process %d to exit: %w", p.PID, err)
		}
		delay = min(delay*2, 50*time.Millisecond)
	}
	return nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-t.C:
		return nil
	}
}

// peerPID returns the PID of the process on the other end of a connected
// unix socket (for a client, the process that called listen).
func peerPID(c syscall.Conn) (int, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *syscall.Ucred
	var serr error
	if err := raw.Control(func(fd uintptr) {
		cred, serr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if serr != nil {
		return 0, serr
	}
	if cred.Pid <= 0 {
		return 0, errors.New("peer process is outside this PID namespace")
	}
	return int(cred.Pid), nil
}
