package proot

import (
	"context"
	"fmt"
	"maps"
	"os/exec"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/localguest"
	"github.com/stacyvm/stacyvm/internal/provider"
)

// termRunner is the runner for a terminal: it exports the environment,
// enters the working directory and becomes the program. PRoot exits with
// the program's status.
const termRunner = `unset PROOT_LOADER PROOT_LOADER_32
while [ "$1" != -- ]; do export "$1" || exit 125; shift; done; shift
cd -- "$1" || exit 126; shift
exec "$@"`

// loginShell is a terminal's program when the request names none.
var loginShell = []string{"/bin/sh", "-c", `if command -v bash >/dev/null 2>&1; then exec bash -l; fi; exec sh -l`}

// OpenTerminal runs req on a pseudo-terminal under a PRoot of its own,
// as the sandbox's user. Closing the terminal kills every process that
// PRoot traces.
func (p *Provider) OpenTerminal(ctx context.Context, id string, req provider.TerminalRequest) (provider.Terminal, error) {
	argv := req.Argv
	if len(argv) == 0 {
		argv = loginShell
	}
	if err := checkExec(provider.ExecRequest{Argv: argv, Env: req.Env}); err != nil {
		return nil, err
	}
	wd := req.WorkDir
	if wd == "" {
		wd = provider.DefaultWorkDir
	}
	wd, err := localguest.SandboxPath(wd)
	if err != nil {
		return nil, fmt.Errorf("terminal: working directory: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	sb, err := p.running(id)
	if err != nil {
		return nil, err
	}
	env := map[string]string{"TERM": "xterm-256color"}
	maps.Copy(env, sb.st.Env)
	maps.Copy(env, req.Env)
	args := append(prootArgs(sb.rootfs), "/bin/sh", "-c", termRunner, "sh")
	for _, k := range slices.Sorted(maps.Keys(env)) {
		args = append(args, k+"="+env[k])
	}
	args = append(append(args, "--", wd), argv...)

	cmd := exec.Command(p.prootPath, args...)
	cmd.Dir = "/"
	cmd.Env = p.prootEnv()
	var cred *syscall.Credential
	if sb.st.UID >= 0 {
		cred = &syscall.Credential{Uid: uint32(sb.st.UID), Gid: uint32(sb.st.UID), Groups: []uint32{}}
	}
	var (
		mu     sync.Mutex
		tracer proc
	)
	kill := func(pid int) {
		mu.Lock()
		t := tracer
		mu.Unlock()
		if !t.valid() {
			return
		}
		kctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := killProcs(kctx, []proc{t}, -1); err != nil {
			p.log.Warn("cannot kill a terminal's processes", "sandbox", id, "err", err)
		}
	}
	term, err := localguest.StartPTY(cmd, req.Rows, req.Cols, cred, kill, nil)
	if err != nil {
		return nil, errdefs.Wrap(errdefs.ErrProviderUnavailable, unwrapPath(err), "terminal: starting proot")
	}
	t, err := identify(term.Pid())
	if err == nil {
		mu.Lock()
		tracer = t
		mu.Unlock()
		sb.track(t)
	}
	sb.logf("terminal %s: started", argv[0])
	go func() {
		st, _ := term.Wait()
		sb.untrack(t)
		sb.logf("terminal %s: exit %d after %s", argv[0], st.ExitCode, st.Duration.Round(time.Millisecond))
	}()
	return term, nil
}
