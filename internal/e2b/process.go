package e2b

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/stacyvm/stacyvm/internal/e2b/gen/process"
	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/orchestrator"
	"github.com/stacyvm/stacyvm/internal/provider"
)

// A proc is one command started through Process.Start. It outlives the
// request that started it (E2B's background commands and disconnects), so
// it runs under its own context, cancelled by SendSignal, kill or its
// timeout. Its output goes to whoever is attached at the time (Start's
// stream, Connect's): like envd, nothing is replayed to a late Connect.
type proc struct {
	srv     *server
	pid     uint32
	sandbox string
	tag     string
	config  *process.ProcessConfig
	cancel  context.CancelFunc

	mu     sync.Mutex
	subs   map[*sub]struct{}
	done   chan struct{}
	status provider.ExitStatus
	err    error
	killed bool
}

type sub struct {
	ch   chan *process.ProcessEvent
	gone chan struct{}
}

func (p *proc) attach() *sub {
	s := &sub{ch: make(chan *process.ProcessEvent, 64), gone: make(chan struct{})}
	p.mu.Lock()
	p.subs[s] = struct{}{}
	p.mu.Unlock()
	return s
}

func (p *proc) detach(s *sub) {
	p.mu.Lock()
	delete(p.subs, s)
	p.mu.Unlock()
	close(s.gone)
}

// broadcast hands ev to every attached stream, waiting for slow ones
// (backpressure on the command) but never for one that has left.
func (p *proc) broadcast(ev *process.ProcessEvent) {
	p.mu.Lock()
	subs := make([]*sub, 0, len(p.subs))
	for s := range p.subs {
		subs = append(subs, s)
	}
	p.mu.Unlock()
	for _, s := range subs {
		select {
		case s.ch <- ev:
		case <-s.gone:
		}
	}
}

// outWriter turns one output stream into data events.
type outWriter struct {
	p      *proc
	stderr bool
}

func (w outWriter) Write(b []byte) (int, error) {
	data := &process.ProcessEvent_DataEvent{}
	c := append([]byte(nil), b...)
	if w.stderr {
		data.Output = &process.ProcessEvent_DataEvent_Stderr{Stderr: c}
	} else {
		data.Output = &process.ProcessEvent_DataEvent_Stdout{Stdout: c}
	}
	w.p.broadcast(&process.ProcessEvent{Event: &process.ProcessEvent_Data{Data: data}})
	return len(b), nil
}

// processes is every running proc, by sandbox and pid. PIDs are the
// facade's own, counted per sandbox: the orchestrator does not expose the
// guest's process IDs, and E2B's clients only use them as handles.
type processes struct {
	mu    sync.Mutex
	next  map[string]uint32
	procs map[string]map[uint32]*proc
}

func newProcesses() *processes {
	return &processes{next: map[string]uint32{}, procs: map[string]map[uint32]*proc{}}
}

func (ps *processes) add(p *proc) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	ps.next[p.sandbox]++
	p.pid = 1000 + ps.next[p.sandbox]
	if ps.procs[p.sandbox] == nil {
		ps.procs[p.sandbox] = map[uint32]*proc{}
	}
	ps.procs[p.sandbox][p.pid] = p
}

func (ps *processes) remove(p *proc) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	delete(ps.procs[p.sandbox], p.pid)
	if len(ps.procs[p.sandbox]) == 0 {
		delete(ps.procs, p.sandbox)
	}
}

func (ps *processes) find(sandbox string, sel *process.ProcessSelector) (*proc, error) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	switch s := sel.GetSelector().(type) {
	case *process.ProcessSelector_Pid:
		if p, ok := ps.procs[sandbox][s.Pid]; ok {
			return p, nil
		}
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("process with pid %d not found", s.Pid))
	case *process.ProcessSelector_Tag:
		for _, p := range ps.procs[sandbox] {
			if p.tag != "" && p.tag == s.Tag {
				return p, nil
			}
		}
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("process with tag %q not found", s.Tag))
	}
	return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("process selector (pid or tag) is required"))
}

func (ps *processes) list(sandbox string) []*proc {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	out := make([]*proc, 0, len(ps.procs[sandbox]))
	for _, p := range ps.procs[sandbox] {
		out = append(out, p)
	}
	return out
}

// forget kills every command of a sandbox that is gone.
func (ps *processes) forget(sandbox string) {
	for _, p := range ps.list(sandbox) {
		p.cancel()
	}
}

type processService struct{ s *server }

func (ps processService) Start(ctx context.Context, req *connect.Request[process.StartRequest], stream *connect.ServerStream[process.StartResponse]) error {
	s := ps.s
	id := sandboxFrom(ctx)
	cfg := req.Msg.GetProcess()
	if cfg.GetCmd() == "" {
		return connect.NewError(connect.CodeInvalidArgument, errors.New("process.cmd is required"))
	}
	if req.Msg.Pty != nil {
		return connect.NewError(connect.CodeUnimplemented, errors.New("PTY sessions are not supported by StacyVM's E2B facade"))
	}
	if req.Msg.GetStdin() {
		return connect.NewError(connect.CodeUnimplemented, errors.New("stdin is not supported by StacyVM's E2B facade: start commands with stdin: false"))
	}
	ereq := orchestrator.ExecRequest{Command: cfg.GetCmd(), Args: cfg.GetArgs(), Env: cfg.GetEnvs(), WorkDir: cfg.GetCwd()}
	if len(ereq.Args) == 0 {
		// Without arguments the orchestrator reads Command as a shell
		// string; quoted, it is just the program.
		ereq.Command = shellQuote(ereq.Command)
	}
	// The call's deadline (Connect-Timeout-Ms: the SDK's timeoutMs) is the
	// command's timeout: when it passes the command is killed.
	ereq.Timeout = s.m.Config().MaxExecTimeout
	if dl, ok := ctx.Deadline(); ok {
		ereq.Timeout = min(max(time.Until(dl), time.Millisecond), ereq.Timeout)
	}
	if err := s.m.CheckExec(ctx, id, ereq); err != nil {
		return s.rpcError(err)
	}

	execCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	p := &proc{
		srv: s, sandbox: id, tag: req.Msg.GetTag(), config: cfg, cancel: cancel,
		subs: map[*sub]struct{}{}, done: make(chan struct{}),
	}
	s.procs.add(p)
	first := p.attach()
	go func() {
		defer cancel()
		st, err := s.m.ExecStream(execCtx, id, ereq, outWriter{p: p}, outWriter{p: p, stderr: true})
		s.procs.remove(p)
		p.mu.Lock()
		p.status, p.err = st, err
		close(p.done)
		p.mu.Unlock()
	}()
	return follow(ctx, p, first, keepAliveEvery(req.Header()), func(ev *process.ProcessEvent) error {
		return stream.Send(&process.StartResponse{Event: ev})
	})
}

func (ps processService) Connect(ctx context.Context, req *connect.Request[process.ConnectRequest], stream *connect.ServerStream[process.ConnectResponse]) error {
	p, err := ps.s.procs.find(sandboxFrom(ctx), req.Msg.GetProcess())
	if err != nil {
		return err
	}
	return follow(ctx, p, p.attach(), keepAliveEvery(req.Header()), func(ev *process.ProcessEvent) error {
		return stream.Send(&process.ConnectResponse{Event: ev})
	})
}

// follow streams one attached client: start{pid}, then output and
// keepalives, then end{exitCode}. A client that leaves detaches; the
// command goes on.
func follow(ctx context.Context, p *proc, sb *sub, keepAlive time.Duration, send func(*process.ProcessEvent) error) error {
	defer p.detach(sb)
	if err := send(&process.ProcessEvent{Event: &process.ProcessEvent_Start{Start: &process.ProcessEvent_StartEvent{Pid: p.pid}}}); err != nil {
		return err
	}
	tick := time.NewTicker(keepAlive)
	defer tick.Stop()
	for {
		select {
		case ev := <-sb.ch:
			if err := send(ev); err != nil {
				return err
			}
		case <-tick.C:
			if err := send(&process.ProcessEvent{Event: &process.ProcessEvent_Keepalive{Keepalive: &process.ProcessEvent_KeepAlive{}}}); err != nil {
				return err
			}
		case <-p.done:
			// Every write finished before done closed, so what is still
			// buffered is the rest of the output.
			for drained := false; !drained; {
				select {
				case ev := <-sb.ch:
					if err := send(ev); err != nil {
						return err
					}
				default:
					drained = true
				}
			}
			end, err := p.end()
			if err != nil {
				return err
			}
			return send(&process.ProcessEvent{Event: &process.ProcessEvent_End{End: end}})
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// end describes how a finished command ended. A command killed by its
// timeout is the call's deadline passing; one killed by SendSignal ends
// like a SIGKILLed process does under envd.
func (p *proc) end() (*process.ProcessEvent_EndEvent, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.killed:
		msg := "signal: killed"
		return &process.ProcessEvent_EndEvent{ExitCode: -1, Exited: false, Status: msg, Error: &msg}, nil
	case errdefs.Classify(p.err) == errdefs.ErrExecTimeout || p.status.TimedOut:
		return nil, connect.NewError(connect.CodeDeadlineExceeded, errors.New("the command ran past its timeout and was killed"))
	case p.err != nil:
		return nil, p.srv.rpcError(p.err)
	}
	return &process.ProcessEvent_EndEvent{
		ExitCode: int32(p.status.ExitCode), Exited: true,
		Status: "exit status " + strconv.Itoa(p.status.ExitCode),
	}, nil
}

func keepAliveEvery(h interface{ Get(string) string }) time.Duration {
	if n, err := strconv.Atoi(h.Get("Keepalive-Ping-Interval")); err == nil && n > 0 {
		return time.Duration(min(n, 300)) * time.Second
	}
	return 30 * time.Second
}

func (ps processService) List(ctx context.Context, req *connect.Request[process.ListRequest]) (*connect.Response[process.ListResponse], error) {
	out := &process.ListResponse{}
	for _, p := range ps.s.procs.list(sandboxFrom(ctx)) {
		info := &process.ProcessInfo{Config: p.config, Pid: p.pid}
		if p.tag != "" {
			info.Tag = &p.tag
		}
		out.Processes = append(out.Processes, info)
	}
	return connect.NewResponse(out), nil
}

// SendSignal kills the command's whole process tree; SIGTERM does the
// same as SIGKILL, because the orchestrator ends commands only one way.
func (ps processService) SendSignal(ctx context.Context, req *connect.Request[process.SendSignalRequest]) (*connect.Response[process.SendSignalResponse], error) {
	switch req.Msg.GetSignal() {
	case process.Signal_SIGNAL_SIGKILL, process.Signal_SIGNAL_SIGTERM:
	default:
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("signal %v is not supported: send SIGKILL or SIGTERM", req.Msg.GetSignal()))
	}
	p, err := ps.s.procs.find(sandboxFrom(ctx), req.Msg.GetProcess())
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	select {
	case <-p.done:
		// It ended between the lookup and now: like envd, nothing to kill.
		p.mu.Unlock()
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("process with pid %d has exited", p.pid))
	default:
	}
	p.killed = true
	p.mu.Unlock()
	p.cancel()
	return connect.NewResponse(&process.SendSignalResponse{}), nil
}

var errNoStdin = errors.New("stdin is not supported by StacyVM's E2B facade: its commands run without standard input")

func (ps processService) SendInput(ctx context.Context, req *connect.Request[process.SendInputRequest]) (*connect.Response[process.SendInputResponse], error) {
	if _, err := ps.s.procs.find(sandboxFrom(ctx), req.Msg.GetProcess()); err != nil {
		return nil, err
	}
	return nil, connect.NewError(connect.CodeUnimplemented, errNoStdin)
}

func (ps processService) StreamInput(ctx context.Context, stream *connect.ClientStream[process.StreamInputRequest]) (*connect.Response[process.StreamInputResponse], error) {
	return nil, connect.NewError(connect.CodeUnimplemented, errNoStdin)
}

func (ps processService) CloseStdin(ctx context.Context, req *connect.Request[process.CloseStdinRequest]) (*connect.Response[process.CloseStdinResponse], error) {
	if _, err := ps.s.procs.find(sandboxFrom(ctx), req.Msg.GetProcess()); err != nil {
		return nil, err
	}
	return nil, connect.NewError(connect.CodeUnimplemented, errNoStdin)
}

func (ps processService) Update(ctx context.Context, req *connect.Request[process.UpdateRequest]) (*connect.Response[process.UpdateResponse], error) {
	if _, err := ps.s.procs.find(sandboxFrom(ctx), req.Msg.GetProcess()); err != nil {
		return nil, err
	}
	return nil, connect.NewError(connect.CodeUnimplemented, errors.New("PTY sessions are not supported by StacyVM's E2B facade, so there is nothing to resize"))
}

// rpcError maps an orchestrator error to a Connect code. A sandbox that
// is gone is Unavailable, which the SDK reports as a sandbox that is no
// longer running (NotFound would read as a missing file or process).
func (s *server) rpcError(err error) error {
	var ce *connect.Error
	if errors.As(err, &ce) {
		return err
	}
	code := connect.CodeInternal
	switch errdefs.Classify(err) {
	case errdefs.ErrSandboxNotFound, errdefs.ErrSandboxDestroyed, errdefs.ErrProviderUnavailable:
		code = connect.CodeUnavailable
	case errdefs.ErrNotFound, errdefs.ErrFileNotFound, errdefs.ErrProviderNotFound:
		code = connect.CodeNotFound
	case errdefs.ErrInvalidArgument:
		code = connect.CodeInvalidArgument
	case errdefs.ErrUnauthorized:
		code = connect.CodeUnauthenticated
	case errdefs.ErrConflict:
		code = connect.CodeFailedPrecondition
	case errdefs.ErrResourceLimit:
		code = connect.CodeResourceExhausted
	case errdefs.ErrUnimplemented:
		code = connect.CodeUnimplemented
	case errdefs.ErrExecTimeout:
		code = connect.CodeDeadlineExceeded
	}
	if errors.Is(err, context.Canceled) {
		code = connect.CodeCanceled
	}
	return connect.NewError(code, errors.New(s.scrub(err.Error())))
}

// shellQuote quotes s for /bin/sh.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
