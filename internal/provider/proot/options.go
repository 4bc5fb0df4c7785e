package proot

import (
	"github.com/stacyvm/stacyvm/internal/agent"
	"log/slog"
	"time"
)

// Options configures the PRoot provider. The zero value is usable on a host
// with proot on $PATH, stacyvm-agent next to the running executable or on
// $PATH, and images under the default images directory.
type Options struct {
	// Name is the provider's registry name; "proot" when empty.
	Name string
	// ImagesDir holds one root file system directory per image (see
	// ImageDir for how image references map to directory names). Default:
	// /var/lib/stacyvm/images for root, else $XDG_DATA_HOME/stacyvm/images
	// (~/.local/share/stacyvm/images).
	ImagesDir string
	// StateDir holds one directory per sandbox: its private copy of the
	// image, its agent sockets, its state file and console log. Put it on
	// the file system of ImagesDir: copies are then cheap where the file
	// system can clone extents (btrfs, XFS). It must be short, because two
	// unix sockets live two levels below it (a socket path is at most 107
	// bytes), and must not contain ':'. When the server runs as root every
	// directory above it must be searchable by others (mode o+x), because
	// sandboxes run as unprivileged users. Default: /var/lib/stacyvm/proot
	// for root, else $XDG_STATE_HOME/stacyvm/proot
	// (~/.local/state/stacyvm/proot).
	StateDir string
	// ProotPath is the proot binary; empty means "proot" on $PATH.
	ProotPath string
	// AgentPath is the static stacyvm-agent binary. Empty means
	// stacyvm-agent next to the running executable, then on $PATH.
	AgentPath string
	// MaxSandboxes caps live sandboxes; a spawn beyond it fails with
	// errdefs.ErrResourceLimit. 0 means 16; negative means no cap.
	MaxSandboxes int
	// UIDBase is the first of the private uids (and gids) sandboxes run as
	// when the server runs as root: sandbox slot n runs as UIDBase+n. 0
	// means one of 4096 ranges of 65536 uids from 0x70000000 (a block
	// systemd leaves unassigned), chosen by hashing StateDir, so that
	// servers with different state directories do not share uids. It is
	// ignored when the server is not root: sandboxes then run as the
	// server's own user.
	UIDBase int
	// ReadyTimeout bounds how long Spawn waits for the sandbox's agents
	// after starting them. Default 30s.
	ReadyTimeout time.Duration
	Logger       *slog.Logger
	// AgentLimits bound what the host accepts from each sandbox's agent
	// (exec grace past a command's timeout, reply sizes); zero fields take
	// agent.DefaultLimits.
	AgentLimits agent.Limits
}

// Defaults.
const (
	DefaultName         = "proot"
	DefaultMaxSandboxes = 16
	DefaultUIDBase      = 0x70000000
	DefaultReadyTimeout = 30 * time.Second
)
