package docker

import (
	"github.com/stacyvm/stacyvm/internal/agent"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
)

// Config configures the Docker provider. The zero value is usable: the
// daemon from DOCKER_HOST (or the default socket), its default runtime, no
// network, root inside the container with every capability dropped.
type Config struct {
	// Name is the provider's registry name and the value of its
	// stacyvm.provider label; "docker" when empty. Two providers on one
	// daemon (say "docker" with runc and "gvisor" with runsc) need
	// different names, so that each adopts only its own containers.
	Name string
	// Host is the daemon address ("unix:///var/run/docker.sock",
	// "tcp://…"); empty means DOCKER_HOST, then the default socket.
	Host string
	// Runtime is the OCI runtime registered with dockerd: "runc", "crun",
	// "runsc"…; empty means the daemon's default.
	Runtime string
	// Network is the network of sandboxes whose Spec.Network is empty:
	// "none" (the default), "bridge", or the name of a user-defined docker
	// network. A Spec asking for "bridge" gets this network when it is a
	// named one, since "bridge" in a Spec means "with a network". "host"
	// and "container:…" are refused: they defeat the isolation.
	Network string
	// StateDir holds one small directory per sandbox: the unix socket of
	// its agent. Default: $XDG_RUNTIME_DIR or /run, then stacyvm/docker.
	StateDir string
	// AgentPath is the static stacyvm-agent binary that is bind-mounted
	// read-only into every container as its PID 1. Empty means
	// stacyvm-agent next to the running executable, then on $PATH.
	AgentPath string
	// User runs the agent, and so every command, as this numeric
	// "uid[:gid]" instead of the image's user. A non-root user gets a
	// /workspace tmpfs owned by it, since the image's directories are not
	// writable by it, and HOME=/workspace. Names are refused: the provider
	// would have to look them up in each image to own the workspace, and
	// runc gives a tmpfs the mode of the image's directory under it.
	User string
	// ReadOnlyRoot makes the container's root file system read-only, with
	// writable tmpfs mounts on /workspace and /tmp.
	ReadOnlyRoot bool
	// TmpfsMB sizes each tmpfs mount (read-only root or non-root user);
	// tmpfs pages count against the memory limit. Default 512.
	TmpfsMB int
	// PidsLimit caps processes per sandbox. Default 512; negative means
	// unlimited.
	PidsLimit int64
	// MemoryMB and VCPUs apply when a Spec leaves them zero. Defaults 1024
	// and 1.
	MemoryMB int
	VCPUs    int
	// Pull is the image pull policy: "missing" (default: pull images not
	// present locally), "never" or "always".
	Pull string
	// PullAuth, when set, gives the encoded registry credentials (the
	// Engine API's X-Registry-Auth) for pulling image, or "" for none:
	// the server's own environment registry needs them.
	PullAuth func(image string) (string, error)
	// ReadyTimeout bounds how long Spawn waits for the agent. Default 30s.
	ReadyTimeout time.Duration
	// Labels are added to every container; tests use them to find their
	// leftovers. Keys must not start with "stacyvm." except "stacyvm.test".
	Labels map[string]string
	Logger *slog.Logger
	// AgentLimits bound what the host accepts from each sandbox's agent
	// (exec grace past a command's timeout, reply sizes); zero fields take
	// agent.DefaultLimits.
	AgentLimits agent.Limits
}

// Pull policies.
const (
	PullMissing = "missing"
	PullNever   = "never"
	PullAlways  = "always"
)

// maxIDLen bounds sandbox IDs: they become container names, hostnames (63)
// and socket path components.
const maxIDLen = 63

var (
	validID   = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)
	validName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)
	validUser = regexp.MustCompile(`^[0-9]+(:[0-9]+)?$`)
)

// withDefaults returns c with every default filled in, or an
// errdefs.ErrInvalidArgument error naming the bad field.
func (c Config) withDefaults() (Config, error) {
	if c.Name == "" {
		c.Name = "docker"
	}
	switch {
	case c.Network == "":
		c.Network = "none"
	case c.Network == "host" || strings.HasPrefix(c.Network, "container:") || !validName.MatchString(c.Network):
		return c, errdefs.New(errdefs.ErrInvalidArgument,
			"docker: network %q: want none, bridge or the name of a docker network (host would share the host's network)", c.Network)
	}
	if c.StateDir == "" {
		base := "/run"
		if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" && os.Geteuid() != 0 {
			base = d
		}
		c.StateDir = filepath.Join(base, "stacyvm", "docker")
	}
	abs, err := filepath.Abs(c.StateDir)
	if err != nil {
		return c, errdefs.Wrap(errdefs.ErrInvalidArgument, err, "docker: state_dir")
	}
	c.StateDir = abs
	if c.User != "" && !validUser.MatchString(c.User) {
		return c, errdefs.New(errdefs.ErrInvalidArgument, "docker: user %q: want a numeric uid or uid:gid (65534 is nobody on most images)", c.User)
	}
	if c.TmpfsMB == 0 {
		c.TmpfsMB = 512
	}
	if c.TmpfsMB < 0 {
		return c, errdefs.New(errdefs.ErrInvalidArgument, "docker: tmpfs_mb %d is negative", c.TmpfsMB)
	}
	if c.PidsLimit == 0 {
		c.PidsLimit = 512
	}
	if c.MemoryMB == 0 {
		c.MemoryMB = 1024
	}
	if c.VCPUs == 0 {
		c.VCPUs = 1
	}
	if c.MemoryMB < 0 || c.VCPUs < 0 {
		return c, errdefs.New(errdefs.ErrInvalidArgument, "docker: negative default memory_mb or vcpus")
	}
	switch c.Pull {
	case "":
		c.Pull = PullMissing
	case PullMissing, PullNever, PullAlways:
	default:
		return c, errdefs.New(errdefs.ErrInvalidArgument, "docker: pull %q: want missing, never or always", c.Pull)
	}
	if c.ReadyTimeout == 0 {
		c.ReadyTimeout = 30 * time.Second
	}
	for k := range c.Labels {
		if strings.HasPrefix(k, labelPrefix) && k != LabelTest {
			return c, errdefs.New(errdefs.ErrInvalidArgument, "docker: label %q: the stacyvm. prefix is reserved", k)
		}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

// uidGID splits User; both are -1 when User is empty (the image's user,
// taken to be root: the provider cannot know it).
func (c Config) uidGID() (uid, gid int) {
	if c.User == "" {
		return -1, -1
	}
	u, g, hasGID := strings.Cut(c.User, ":")
	uid, _ = strconv.Atoi(u)
	gid = uid
	if hasGID {
		gid, _ = strconv.Atoi(g)
	}
	return uid, gid
}

// nonRoot reports whether User names someone other than root.
func (c Config) nonRoot() bool {
	uid, _ := c.uidGID()
	return uid > 0
}

func checkID(id string) error {
	if len(id) > maxIDLen || !validID.MatchString(id) {
		return errdefs.New(errdefs.ErrInvalidArgument,
			"docker: sandbox id %q: want 1-%d letters, digits, '.', '_' or '-'", id, maxIDLen)
	}
	return nil
}
