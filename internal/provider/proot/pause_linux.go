package proot

import (
	"context"
	"fmt"
	"syscall"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/provider"
)

var _ provider.Pauser = (*Provider)(nil)

// Pause stops every process of the sandbox: its PRoot tracers first, so
// that nothing they trace can start anew, then every traced process (and
// every process of the sandbox's private uid). The file agent keeps
// serving. Status reports the sandbox paused, after a restart too.
func (p *Provider) Pause(ctx context.Context, id string) error {
	return p.freeze(ctx, id, true)
}

// Resume continues what Pause stopped.
func (p *Provider) Resume(ctx context.Context, id string) error {
	return p.freeze(ctx, id, false)
}

func (p *Provider) freeze(ctx context.Context, id string, stop bool) error {
	sb, err := p.running(id)
	if err != nil {
		return err
	}
	sb.pauseMu.Lock()
	defer sb.pauseMu.Unlock()
	if sb.paused() == stop {
		return nil
	}
	tracers := sb.tracers()
	if stop {
		err = stopProcs(ctx, tracers, sb.st.UID)
	} else {
		continueProcs(tracers, sb.st.UID)
	}
	if err != nil {
		continueProcs(tracers, sb.st.UID)
		return errdefs.Wrap(errdefs.ErrProviderUnavailable, err, "proot: pause sandbox %s", id)
	}
	st := sb.state()
	st.Paused = stop
	if err := writeState(sb.dir, st); err != nil {
		if stop {
			continueProcs(tracers, sb.st.UID)
		}
		return errdefs.Wrap(errdefs.ErrProviderUnavailable, unwrapPath(err), "proot: record pause of sandbox %s", id)
	}
	sb.setPaused(stop)
	if stop {
		sb.logf("sandbox paused")
	} else {
		sb.logf("sandbox resumed")
	}
	return nil
}

// stopProcs stops the tracers, then every process they trace (or that
// runs as uid, when uid >= 0), sweeping until two sweeps in a row find
// nobody new: a child forked just before its tracer stopped has had time
// to appear.
func stopProcs(ctx context.Context, tracers []proc, uid int) error {
	for _, t := range tracers {
		t.signal(syscall.SIGSTOP)
	}
	stopped := map[int]bool{}
	for quiet := 0; quiet < 2; {
		quiet++
		for _, pid := range members(tracers, uid) {
			if !stopped[pid] {
				_ = syscall.Kill(pid, syscall.SIGSTOP)
				stopped[pid] = true
				quiet = 0
			}
		}
		if err := sleepCtx(ctx, time.Millisecond); err != nil {
			return fmt.Errorf("stopping the sandbox's processes: %w", err)
		}
	}
	return nil
}

// continueProcs continues the traced processes, then their tracers.
func continueProcs(tracers []proc, uid int) {
	for _, pid := range members(tracers, uid) {
		_ = syscall.Kill(pid, syscall.SIGCONT)
	}
	for _, t := range tracers {
		t.signal(syscall.SIGCONT)
	}
}
