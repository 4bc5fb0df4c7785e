//go:build linux

package proot

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"time"
)

// Layout of a sandbox directory, StateDir/<id>/:
//
//	state.json      what Spawn was asked for, the slot and uid, and the
//	                file agent's process, to find again after a restart
//	console.log     lifecycle and exec lines, and the file agent's output
//	stacyvm-agent   the sandbox's copy of the agent binary
//	rootfs/         the sandbox's private copy of its image: its "/"
//	files/          the file agent's socket (not visible in the sandbox)
const (
	stateFile   = "state.json"
	consoleFile = "console.log"
	rootfsDir   = "rootfs"
	filesDir    = "files"
	agentName   = "stacyvm-agent"
	socketName  = "agent.sock"
)

// stateVersion is bumped when state.json changes incompatibly; a sandbox
// with another version is not adopted.
const stateVersion = 1

// Phases of a sandbox directory.
const (
	phaseCreating = "creating" // Spawn has not finished: never adopted
	phaseRunning  = "running"
)

// state is the content of state.json.
type state struct {
	Version  int               `json:"version"`
	ID       string            `json:"id"`
	Image    string            `json:"image"`
	Owner    string            `json:"owner,omitempty"`
	Instance string            `json:"instance,omitempty"`
	Template string            `json:"template,omitempty"`
	Metadata map[string]string `json:"metadata,omitempty"`
	Env      map[string]string `json:"env,omitempty"`
	Created  time.Time         `json:"created"`
	Phase    string            `json:"phase"`
	Slot     int               `json:"slot"`
	// UID is the private uid (and gid) the sandbox runs as, or -1 when it
	// runs as the server's user.
	UID int `json:"uid"`
	// Files is the host-side file agent.
	Files proc `json:"files_agent"`
	// Paused: Pause stopped the sandbox's processes.
	Paused bool `json:"paused,omitempty"`
}

// writeState replaces dir/state.json atomically, so a crash never leaves a
// half-written file.
func writeState(dir string, st state) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding sandbox state: %w", err)
	}
	tmp := filepath.Join(dir, stateFile+".tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, stateFile))
}

// readState reads dir/state.json; ok is false when there is none or it is
// not a state of this version for the directory's sandbox.
func readState(dir string) (st state, ok bool) {
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if err != nil {
		return state{}, false
	}
	if json.Unmarshal(b, &st) != nil || st.Version != stateVersion || st.ID != filepath.Base(dir) {
		return state{}, false
	}
	return st, true
}

// validID accepts IDs that are one safe path element and short enough for
// the socket paths under the sandbox directory.
var validID = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$`)

// maxSocketPath is the longest path a unix socket may have on Linux
// (sun_path is 108 bytes including the terminating NUL).
const maxSocketPath = 107

// socketOverhead is what a sandbox's socket paths add to StateDir besides
// the sandbox ID.
var socketOverhead = len("/") + len("/"+filesDir+"/"+socketName)

// typicalIDLen is the length of the orchestrator's IDs ("sb-" and 32 hex
// digits at most), which New checks StateDir against.
const typicalIDLen = 3 + 32
