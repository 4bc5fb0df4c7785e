//go:build linux

package proot

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/provider"
)

// Spawn copies the image into a private root file system, starts the
// host-side file agent and the agent under PRoot, and returns once both
// answer.
func (p *Provider) Spawn(ctx context.Context, spec provider.Spec) (provider.Info, error) {
	if !validID.MatchString(spec.ID) {
		return provider.Info{}, errdefs.New(errdefs.ErrInvalidArgument, "proot: invalid sandbox id %q", spec.ID)
	}
	if spec.Image == "" {
		return provider.Info{}, errdefs.New(errdefs.ErrInvalidArgument, "proot: image is required")
	}
	if err := checkEnv(spec.Env); err != nil {
		return provider.Info{}, fmt.Errorf("proot: sandbox env: %w", err)
	}
	switch spec.Network {
	case "", "bridge":
	case "none":
		return provider.Info{}, errdefs.WithHint(
			errdefs.New(errdefs.ErrUnimplemented, "proot: sandboxes share the host's network; network \"none\" cannot be enforced"),
			"use a provider that isolates the network (docker) or leave network unset")
	default:
		return provider.Info{}, errdefs.New(errdefs.ErrInvalidArgument, "proot: network %q: want none or bridge", spec.Network)
	}
	dir := filepath.Join(p.stateDir, spec.ID)
	if len(dir)+socketOverhead-1 > maxSocketPath {
		return provider.Info{}, errdefs.New(errdefs.ErrInvalidArgument, "proot: sandbox id %q is too long for the socket paths under state_dir", spec.ID)
	}
	if err := p.check(ctx); err != nil {
		return provider.Info{}, err
	}
	image, err := findImage(p.imagesDir, spec.Image)
	if err != nil {
		return provider.Info{}, err
	}
	slot, err := p.reserve(spec.ID)
	if err != nil {
		return provider.Info{}, err
	}
	uid := -1
	if p.privateUIDs {
		uid = p.uidBase + slot
	}
	mode := fs.FileMode(0o700)
	if p.privateUIDs {
		mode = 0o711
	}
	if err := os.Mkdir(dir, mode); err != nil {
		p.release(slot, spec.ID)
		if errors.Is(err, fs.ErrExist) {
			return provider.Info{}, errdefs.New(errdefs.ErrConflict, "sandbox %s already exists", spec.ID)
		}
		return provider.Info{}, errdefs.Wrap(errdefs.ErrProviderUnavailable, unwrapPath(err), "proot: creating sandbox %s", spec.ID)
	}
	if err := os.Chmod(dir, mode); err != nil { // not subject to the umask
		p.release(slot, spec.ID)
		os.Remove(dir)
		return provider.Info{}, errdefs.Wrap(errdefs.ErrProviderUnavailable, unwrapPath(err), "proot: creating sandbox %s", spec.ID)
	}
	st := state{
		Version:  stateVersion,
		ID:       spec.ID,
		Image:    spec.Image,
		Owner:    spec.OwnerID,
		Instance: spec.Instance,
		Template: spec.Template,
		Metadata: maps.Clone(spec.Metadata),
		Env:      maps.Clone(spec.Env),
		Created:  time.Now().UTC().Truncate(time.Millisecond),
		Phase:    phaseCreating,
		Slot:     slot,
		UID:      uid,
	}
	start := time.Now()
	sb, err := p.create(ctx, dir, image, st)
	if err == nil {
		p.mu.Lock()
		if p.destroyed[spec.ID] {
			err = errdefs.New(errdefs.ErrSandboxDestroyed, "sandbox %s was destroyed while it was being spawned", spec.ID)
		} else {
			p.live[spec.ID] = sb
		}
		p.mu.Unlock()
	}
	if err != nil {
		p.abandon(dir, sb, st, slot)
		return provider.Info{}, err
	}
	p.log.Info("spawned sandbox", "id", spec.ID, "image", spec.Image, "uid", uid, "took", time.Since(start).Round(time.Millisecond))
	return sb.info(provider.StateRunning), nil
}

// reserve claims a free slot for id, or fails with errdefs.ErrResourceLimit
// when MaxSandboxes are live. Slots claimed by other instances on the same
// StateDir are seen through their state files.
func (p *Provider) reserve(id string) (int, error) {
	onDisk := p.diskSlots()
	p.mu.Lock()
	defer p.mu.Unlock()
	used := map[int]bool{}
	for s := range p.slots {
		used[s] = true
	}
	for s, owner := range onDisk {
		if !p.destroyed[owner] {
			used[s] = true
		}
	}
	if p.max > 0 && len(used) >= p.max {
		return 0, errdefs.WithHint(
			errdefs.New(errdefs.ErrResourceLimit, "proot: %d sandboxes are running, the configured maximum", p.max),
			"destroy a sandbox you no longer need, then retry")
	}
	for s := 0; ; s++ {
		if s >= uidsPerProvider {
			return 0, errdefs.New(errdefs.ErrResourceLimit, "proot: %d sandboxes are running, the most one provider can run", uidsPerProvider)
		}
		if used[s] {
			continue
		}
		// A uid that still has processes (left by a sandbox whose PRoot
		// was killed from outside) is not reused.
		if p.privateUIDs && len(members(nil, p.uidBase+s)) > 0 {
			continue
		}
		p.slots[s] = id
		return s, nil
	}
}

// release frees slot if id holds it.
func (p *Provider) release(slot int, id string) {
	p.mu.Lock()
	if p.slots[slot] == id {
		delete(p.slots, slot)
	}
	p.mu.Unlock()
}

// diskSlots reads the slots of every sandbox directory under StateDir.
func (p *Provider) diskSlots() map[int]string {
	out := map[int]string{}
	ents, err := os.ReadDir(p.stateDir)
	if err != nil {
		return out
	}
	for _, e := range ents {
		if !e.IsDir() || !validID.MatchString(e.Name()) {
			continue
		}
		if st, ok := readState(filepath.Join(p.stateDir, e.Name())); ok {
			out[st.Slot] = st.ID
		}
	}
	return out
}

// abandon undoes a failed spawn: kills whatever was started and removes the
// directory.
func (p *Provider) abandon(dir string, sb *sandbox, st state, slot int) {
	if sb != nil {
		sb.close()
		st = sb.st
	} else if disk, ok := readState(dir); ok {
		st = disk
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := killProcs(ctx, findTracers(filepath.Join(dir, rootfsDir)), st.UID, st.Files); err != nil {
		p.log.Warn("failed spawn: cannot kill its processes", "id", st.ID, "err", err)
	}
	if err := removeTree(dir); err != nil {
		p.log.Warn("failed spawn: cannot remove its directory", "id", st.ID, "err", err)
	}
	p.release(slot, st.ID)
}

// create fills a fresh sandbox directory and starts its file agent. On
// error the caller abandons the directory; the state file on disk then
// names every process started so far.
func (p *Provider) create(ctx context.Context, dir, image string, st state) (*sandbox, error) {
	if err := writeState(dir, st); err != nil {
		return nil, errdefs.Wrap(errdefs.ErrProviderUnavailable, unwrapPath(err), "proot: writing sandbox state")
	}
	own := owner{}
	if st.UID >= 0 {
		own = owner{set: true, uid: st.UID, gid: st.UID}
	}
	rootfs := filepath.Join(dir, rootfsDir)
	t0 := time.Now()
	if err := copyTree(ctx, image, rootfs, own); err != nil {
		if cerr := context.Cause(ctx); cerr != nil {
			return nil, fmt.Errorf("proot: copying image %q abandoned: %w", st.Image, cerr)
		}
		return nil, classifyFS(err, "proot: copying image %q", st.Image)
	}
	p.log.Debug("copied image", "id", st.ID, "image", st.Image, "took", time.Since(t0).Round(time.Millisecond))
	if err := prepareRootfs(rootfs, own); err != nil {
		if errdefs.Classify(err) != nil {
			return nil, fmt.Errorf("proot: image %q: %w", st.Image, err)
		}
		return nil, classifyFS(err, "proot: preparing the root file system of image %q", st.Image)
	}
	for _, d := range []string{filesDir} {
		path := filepath.Join(dir, d)
		if err := os.Mkdir(path, 0o700); err != nil {
			return nil, classifyFS(err, "proot: creating sandbox directories")
		}
		if err := own.lchown(path); err != nil {
			return nil, classifyFS(err, "proot: creating sandbox directories")
		}
	}
	// Each sandbox runs its own copy of the agent, root-owned when the
	// server is root: a sandbox running as the server's user can write the
	// binary it runs, and then changes nothing outside itself.
	agentCopy := filepath.Join(dir, agentName)
	if err := copyExecutable(p.agentPath, agentCopy); err != nil {
		return nil, classifyFS(err, "proot: installing the agent")
	}
	logf, err := os.OpenFile(filepath.Join(dir, consoleFile), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, classifyFS(err, "proot: creating the console log")
	}
	defer logf.Close()
	fmt.Fprintf(logf, "%s sandbox %s created from image %q (PRoot provider)\n", stamp(), st.ID, st.Image)

	// The file agent serves file operations from outside PRoot, confined
	// to rootfs/ by os.Root (see the package documentation for why).
	files, filesDone, err := p.start(st, logf, agentCopy,
		"--listen", "unix:"+filepath.Join(dir, filesDir, socketName), "--root", rootfs, "--log-level", "warn")
	if err != nil {
		return nil, err
	}
	st.Files = files
	if err := writeState(dir, st); err != nil {
		return nil, classifyFS(err, "proot: writing sandbox state")
	}

	sb := p.attach(dir, st)
	rctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	rctx, cancelT := context.WithTimeoutCause(rctx, p.ready, fmt.Errorf("the file agent was not ready within %s", p.ready))
	defer cancelT()
	go func() {
		select {
		case err := <-filesDone:
			cancel(fmt.Errorf("the file agent exited: %w", err))
		case <-rctx.Done():
		}
	}()
	if err := sb.files.WaitReady(rctx); err != nil {
		sb.close()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("proot: spawn of %s abandoned: %w", st.ID, context.Cause(ctx))
		}
		p.log.Warn("sandbox did not start", "id", st.ID, "cause", context.Cause(rctx), "console", tailString(filepath.Join(dir, consoleFile), 10))
		return nil, errdefs.Wrap(errdefs.ErrProviderUnavailable, context.Cause(rctx), "proot: sandbox %s did not start", st.ID)
	}
	st.Phase = phaseRunning
	sb.st = st
	if err := writeState(dir, st); err != nil {
		sb.close()
		return nil, classifyFS(err, "proot: writing sandbox state")
	}
	return sb, nil
}

func stamp() string { return time.Now().UTC().Format(time.RFC3339Nano) }

// start starts one process of a sandbox: in its own session (so it
// survives the server and never gets its terminal's signals), as the
// sandbox's uid, with output to the console log. The channel delivers the
// process's exit, once reaped.
func (p *Provider) start(st state, logf *os.File, path string, args ...string) (proc, <-chan error, error) {
	newCmd := func() *exec.Cmd {
		cmd := exec.Command(path, args...)
		cmd.Dir = "/"
		cmd.Env = []string{
			"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
			"HOME=/root",
			"LANG=C.UTF-8",
		}
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if st.UID >= 0 {
			cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(st.UID), Gid: uint32(st.UID), Groups: []uint32{}}
		}
		return cmd
	}
	cmd := newCmd()
	err := cmd.Start()
	// A freshly copied executable can be "busy" for a moment: a fork in
	// another goroutine may still hold the copy's write descriptor until
	// it execs (golang/go#22315). That passes; retry briefly.
	for i := 0; errors.Is(err, syscall.ETXTBSY) && i < 20; i++ {
		time.Sleep(time.Duration(i+1) * 5 * time.Millisecond)
		cmd = newCmd()
		err = cmd.Start()
	}
	if err != nil {
		return proc{}, nil, errdefs.Wrap(errdefs.ErrProviderUnavailable, unwrapPath(err), "proot: starting %s", filepath.Base(path))
	}
	id, err := identify(cmd.Process.Pid)
	if err != nil {
		// It died at once and was not reaped yet, or /proc is missing.
		cmd.Process.Kill()
		cmd.Wait()
		return proc{}, nil, errdefs.Wrap(errdefs.ErrProviderUnavailable, err, "proot: %s exited at once", filepath.Base(path))
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	return id, done, nil
}

// prepareRootfs makes the directories every sandbox has, and gives it the
// host's DNS configuration, since it shares the host's network. os.Root
// keeps links in the image from pointing these writes outside the copy.
func prepareRootfs(rootfs string, own owner) error {
	r, err := os.OpenRoot(rootfs)
	if err != nil {
		return err
	}
	defer r.Close()
	for _, d := range []struct {
		name string
		mode fs.FileMode
	}{
		{"workspace", 0o755},
		{"tmp", 0o777 | fs.ModeSticky},
		{"dev", 0o755},
		{"dev/shm", 0o777 | fs.ModeSticky},
	} {
		if _, err := r.Lstat(d.name); err == nil {
			continue
		}
		if err := r.Mkdir(d.name, 0o700); err != nil {
			return err
		}
		if own.set {
			if err := r.Lchown(d.name, own.uid, own.gid); err != nil {
				return err
			}
		}
		if err := r.Chmod(d.name, d.mode); err != nil {
			return err
		}
	}
	if fi, err := r.Stat("bin/sh"); err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return errdefs.New(errdefs.ErrInvalidArgument, "the image has no /bin/sh, which the PRoot provider runs every command with")
	}
	if b, err := os.ReadFile("/etc/resolv.conf"); err == nil {
		if fi, err := r.Lstat("etc"); err == nil && fi.IsDir() {
			_ = r.Remove("etc/resolv.conf")
			if err := r.WriteFile("etc/resolv.conf", b, 0o644); err == nil && own.set {
				_ = r.Lchown("etc/resolv.conf", own.uid, own.gid)
			}
		}
	}
	return nil
}

// copyExecutable copies the agent binary to dst, mode 0755 (root-owned when
// the server is root: sandbox uids can run it but not change it).
func copyExecutable(src, dst string) error {
	fi, err := os.Stat(src)
	if err != nil {
		return err
	}
	c := &fileCopier{clone: true}
	if err := c.copyFile(src, dst, fi, owner{}); err != nil {
		return err
	}
	return os.Chmod(dst, 0o755)
}

// classifyFS classifies a host file system failure while making a sandbox;
// the message names no host path.
func classifyFS(err error, format string, args ...any) error {
	cause := unwrapPath(err)
	switch {
	case errors.Is(cause, syscall.ENOSPC), errors.Is(cause, syscall.EDQUOT):
		return errdefs.Wrap(errdefs.ErrResourceLimit, cause, format, args...)
	case errdefs.Classify(cause) != nil:
		return fmt.Errorf(format+": %w", append(args, cause)...)
	}
	return errdefs.Wrap(errdefs.ErrProviderUnavailable, cause, format, args...)
}
