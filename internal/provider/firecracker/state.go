package firecracker

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Files in a sandbox's state directory. The VMM runs with that directory
// as its working directory and is given these relative names, so a
// snapshot (which records device paths) restores onto the drive and vsock
// socket of whichever sandbox loads it.
const (
	handleLen   = 16
	apiSockName = "fc.sock"
	vsockName   = "v.sock"
	driveName   = "rootfs.ext4"
	consoleName = "console.log"
	stateName   = "state.json"
	driveID     = "rootfs"
	// pausedName is the directory of the full snapshot (snapStateName,
	// snapMemName) of a sandbox paused to disk; its drive stays
	// driveName.
	pausedName = "paused"
)

// Sandbox phases recorded in state.json.
const (
	phaseStarting = "starting" // a VMM may exist but the sandbox was never handed out
	phaseRunning  = "running"
	// phaseSuspended: paused to disk. The snapshot in pausedName is the
	// VM; no VMM runs (one left by a crash mid-pause or mid-resume is
	// killed when found).
	phaseSuspended = "suspended"
)

// vmState is state.json: everything needed to find a VM again after a
// server restart.
type vmState struct {
	ID     string `json:"id"`
	Handle string `json:"handle"`
	Phase  string `json:"phase"`
	// PID and PIDStart (the process's start time in clock ticks since
	// boot, from /proc/<pid>/stat) identify the VMM; the pair survives PID
	// reuse, the PID alone does not.
	PID         int               `json:"pid"`
	PIDStart    uint64            `json:"pid_start"`
	Image       string            `json:"image"`
	ImageDigest string            `json:"image_digest"`
	VCPUs       int               `json:"vcpus"`
	MemoryMB    int               `json:"memory_mb"`
	DiskMB      int               `json:"disk_mb,omitempty"`
	Env         map[string]string `json:"env,omitempty"`
	OwnerID     string            `json:"owner_id,omitempty"`
	Instance    string            `json:"instance,omitempty"`
	Template    string            `json:"template,omitempty"`
	Metadata    map[string]string `json:"metadata,omitempty"`
	Created     time.Time         `json:"created"`
	// Restored is true when the VM was restored from a base snapshot.
	Restored bool `json:"restored"`
}

// handleFor names a sandbox's directory and VMM instance. A hash keeps it
// short (socket paths) and free of characters Firecracker's --id rejects.
func handleFor(id string) string {
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:])[:handleLen]
}

func writeState(dir string, st vmState) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, stateName), b, 0o600)
}

func readState(dir string) (vmState, error) {
	var st vmState
	b, err := os.ReadFile(filepath.Join(dir, stateName))
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("%s: %w", stateName, err)
	}
	return st, nil
}

// vmmProcess is a started VMM.
type vmmProcess struct {
	pid   int
	start uint64
	// exited closes when the process is gone; nil for an adopted VMM,
	// which is not our child.
	exited chan struct{}
}

// startVMM starts the VMM in dir, in a session of its own so that it
// outlives the server (adoption) and no terminal signal reaches it.
// Console output goes to console.log.
func startVMM(binary, dir, handle string) (*vmmProcess, error) {
	console, err := os.OpenFile(filepath.Join(dir, consoleName), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer console.Close()
	cmd := exec.Command(binary, "--api-sock", apiSockName, "--id", handle)
	cmd.Dir = dir
	cmd.Stdout = console
	cmd.Stderr = console
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", filepath.Base(binary), err)
	}
	p := &vmmProcess{pid: cmd.Process.Pid, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.exited)
	}()
	p.start, _ = procStartTime(p.pid)
	return p, nil
}

// procStartTime reads field 22 (starttime) of /proc/<pid>/stat.
func procStartTime(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may contain spaces and parentheses; the
	// fields after it start after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("malformed stat")
	}
	fields := strings.Fields(string(b[i+1:]))
	// fields[0] is field 3 (state); starttime is field 22.
	if len(fields) < 20 {
		return 0, errors.New("short stat")
	}
	if fields[0] == "Z" || fields[0] == "X" {
		return 0, errors.New("process is a zombie")
	}
	return strconv.ParseUint(fields[19], 10, 64)
}

// alive reports whether the process recorded as (pid, start) still runs.
func alive(pid int, start uint64) bool {
	if pid <= 0 {
		return false
	}
	s, err := procStartTime(pid)
	return err == nil && s == start
}

func (p *vmmProcess) running() bool {
	if p.exited != nil {
		select {
		case <-p.exited:
			return false
		default:
		}
	}
	return alive(p.pid, p.start)
}

// kill stops the VMM with SIGKILL (a VM has nothing to flush that
// StacyVM keeps) and waits until it is gone.
func (p *vmmProcess) kill(timeout time.Duration) error {
	if !p.running() {
		return nil
	}
	if err := syscall.Kill(p.pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("killing firecracker pid %d: %w", p.pid, err)
	}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if p.exited != nil {
			select {
			case <-p.exited:
				return nil
			case <-time.After(5 * time.Millisecond):
			}
		} else {
			if !alive(p.pid, p.start) {
				return nil
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	return fmt.Errorf("firecracker pid %d did not exit after SIGKILL", p.pid)
}
