package e2b

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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
	stdin   *inputQueue       // started with stdin: true; else nil
	signals chan string       // where the provider can signal commands; else nil
	term    provider.Terminal // a PTY session; else nil

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
	pty    bool
}

func (w outWriter) Write(b []byte) (int, error) {
	data := &process.ProcessEvent_DataEvent{}
	c := append([]byte(nil), b...)
	switch {
	case w.pty:
		data.Output = &process.ProcessEvent_DataEvent_Pty{Pty: c}
	case w.stderr:
		data.Output = &process.ProcessEvent_DataEvent_Stderr{Stderr: c}
	default:
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
		return ps.startPTY(ctx, req, stream)
	}
	ereq := orchestrator.ExecRequest{Command: cfg.GetCmd(), Args: cfg.GetArgs(), Env: cfg.GetEnvs(), WorkDir: cfg.GetCwd()}
	var stdin *inputQueue
	if req.Msg.GetStdin() {
		// SendInput feeds it; providers without the stdin capability
		// refuse the command (CheckExec below) rather than run it deaf.
		stdin = newInputQueue()
		ereq.Stdin = stdin
	}
	// Where the provider can signal a running command, SIGTERM is a real
	// SIGTERM; elsewhere it kills as SIGKILL does.
	var signals chan string
	if s.canSignal(ctx, id) {
		signals = make(chan string)
		ereq.Signals = signals
	}
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
		srv: s, sandbox: id, tag: req.Msg.GetTag(), config: cfg, cancel: cancel, stdin: stdin, signals: signals,
		subs: map[*sub]struct{}{}, done: make(chan struct{}),
	}
	s.procs.add(p)
	first := p.attach()
	go func() {
		defer cancel()
		st, err := s.m.ExecStream(execCtx, id, ereq, outWriter{p: p}, outWriter{p: p, stderr: true})
		if stdin != nil {
			stdin.abort() // a Read still waiting for input returns
		}
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

// SendSignal: SIGKILL kills the command's whole process tree. SIGTERM is
// a real SIGTERM for a PTY's foreground job, and for a command's process
// group where the provider can signal commands (capabilities.signals);
// elsewhere it kills as SIGKILL does.
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
	if req.Msg.GetSignal() == process.Signal_SIGNAL_SIGTERM {
		switch {
		case p.term != nil:
			if err := p.term.Signal("TERM"); err != nil {
				return nil, ps.s.rpcError(err)
			}
			return connect.NewResponse(&process.SendSignalResponse{}), nil
		case p.signals != nil:
			select {
			case p.signals <- "TERM":
				return connect.NewResponse(&process.SendSignalResponse{}), nil
			case <-p.done:
				return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("process with pid %d has exited", p.pid))
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
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

// SendInput writes to a command's stdin (started with stdin: true) or
// types into a PTY. It never waits for the command to read: input is
// queued, up to a bound.
func (ps processService) SendInput(ctx context.Context, req *connect.Request[process.SendInputRequest]) (*connect.Response[process.SendInputResponse], error) {
	p, err := ps.s.procs.find(sandboxFrom(ctx), req.Msg.GetProcess())
	if err != nil {
		return nil, err
	}
	if err := p.input(req.Msg.GetInput()); err != nil {
		return nil, err
	}
	return connect.NewResponse(&process.SendInputResponse{}), nil
}

// StreamInput is SendInput as a client stream: a start event names the
// process, data events carry its input.
func (ps processService) StreamInput(ctx context.Context, stream *connect.ClientStream[process.StreamInputRequest]) (*connect.Response[process.StreamInputResponse], error) {
	var p *proc
	for stream.Receive() {
		switch ev := stream.Msg().GetEvent().(type) {
		case *process.StreamInputRequest_Start:
			found, err := ps.s.procs.find(sandboxFrom(ctx), ev.Start.GetProcess())
			if err != nil {
				return nil, err
			}
			p = found
		case *process.StreamInputRequest_Data:
			if p == nil {
				return nil, connect.NewError(connect.CodeFailedPrecondition, errors.New("stream input: send the start event (which process) first"))
			}
			if err := p.input(ev.Data.GetInput()); err != nil {
				return nil, err
			}
		}
	}
	if err := stream.Err(); err != nil {
		return nil, err
	}
	return connect.NewResponse(&process.StreamInputResponse{}), nil
}

func (p *proc) input(in *process.ProcessInput) error {
	var data []byte
	switch v := in.GetInput().(type) {
	case *process.ProcessInput_Stdin:
		data = v.Stdin
	case *process.ProcessInput_Pty:
		data = v.Pty
	default:
		return connect.NewError(connect.CodeInvalidArgument, errors.New("input (stdin or pty) is required"))
	}
	switch {
	case p.term != nil:
		if _, err := p.term.Write(data); err != nil {
			return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("process with pid %d: writing to its terminal: %s", p.pid, p.srv.scrub(err.Error())))
		}
	case p.stdin != nil:
		switch err := p.stdin.Write(data); {
		case errors.Is(err, errInputFull):
			return connect.NewError(connect.CodeResourceExhausted, fmt.Errorf("process with pid %d: %w", p.pid, err))
		case err != nil:
			return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("process with pid %d: %w", p.pid, err))
		}
	default:
		return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("process with pid %d was started without stdin (start it with stdin: true)", p.pid))
	}
	return nil
}

// CloseStdin ends a command's input: it reads EOF after what was sent.
func (ps processService) CloseStdin(ctx context.Context, req *connect.Request[process.CloseStdinRequest]) (*connect.Response[process.CloseStdinResponse], error) {
	p, err := ps.s.procs.find(sandboxFrom(ctx), req.Msg.GetProcess())
	if err != nil {
		return nil, err
	}
	if p.stdin == nil {
		return nil, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("process with pid %d has no stdin to close (start it with stdin: true; a PTY ends with exit or Ctrl-D)", p.pid))
	}
	p.stdin.Close()
	return connect.NewResponse(&process.CloseStdinResponse{}), nil
}

// Update resizes a PTY.
func (ps processService) Update(ctx context.Context, req *connect.Request[process.UpdateRequest]) (*connect.Response[process.UpdateResponse], error) {
	p, err := ps.s.procs.find(sandboxFrom(ctx), req.Msg.GetProcess())
	if err != nil {
		return nil, err
	}
	if p.term == nil {
		return nil, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("process with pid %d is not a PTY: there is nothing to resize", p.pid))
	}
	if req.Msg.GetPty() == nil {
		return connect.NewResponse(&process.UpdateResponse{}), nil
	}
	rows, cols, err := ptySize(req.Msg.GetPty())
	if err != nil {
		return nil, err
	}
	if err := p.term.Resize(rows, cols); err != nil {
		return nil, ps.s.rpcError(err)
	}
	return connect.NewResponse(&process.UpdateResponse{}), nil
}

// ptySize checks a PTY size as the API's terminals do (1 to 1000).
func ptySize(pty *process.PTY) (rows, cols uint16, err error) {
	r, c := pty.GetSize().GetRows(), pty.GetSize().GetCols()
	if r < 1 || c < 1 || r > 1000 || c > 1000 {
		return 0, 0, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("pty size %dx%d: rows and cols must be 1 to 1000", r, c))
	}
	return uint16(r), uint16(c), nil
}

// startPTY runs the command on a pseudo-terminal, an orchestrator terminal
// session: its output is pty data, SendInput types into it, Update resizes
// it. The call's deadline bounds it like a command's timeout.
func (ps processService) startPTY(ctx context.Context, req *connect.Request[process.StartRequest], stream *connect.ServerStream[process.StartResponse]) error {
	s := ps.s
	id := sandboxFrom(ctx)
	cfg := req.Msg.GetProcess()
	rows, cols, err := ptySize(req.Msg.GetPty())
	if err != nil {
		return err
	}
	words := []string{"exec", shellQuote(cfg.GetCmd())}
	for _, a := range cfg.GetArgs() {
		words = append(words, shellQuote(a))
	}
	timeout := s.m.Config().MaxExecTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = min(max(time.Until(dl), time.Millisecond), timeout)
	}
	term, err := s.m.OpenTerminal(ctx, id, orchestrator.TerminalRequest{
		Command: strings.Join(words, " "), Env: cfg.GetEnvs(), WorkDir: cfg.GetCwd(), Rows: rows, Cols: cols,
	})
	if err != nil {
		return s.rpcError(err)
	}
	p := &proc{
		srv: s, sandbox: id, tag: req.Msg.GetTag(), config: cfg, term: term,
		cancel: func() { term.Close() },
		subs:   map[*sub]struct{}{}, done: make(chan struct{}),
	}
	s.procs.add(p)
	first := p.attach()
	var timedOut atomic.Bool
	timer := time.AfterFunc(timeout, func() {
		timedOut.Store(true)
		term.Close()
	})
	go func() {
		out := outWriter{p: p, pty: true}
		buf := make([]byte, 32<<10)
		for {
			n, rerr := term.Read(buf)
			if n > 0 {
				out.Write(buf[:n])
			}
			if rerr != nil {
				break
			}
		}
		st, err := term.Wait()
		timer.Stop()
		term.Close()
		s.procs.remove(p)
		p.mu.Lock()
		p.status, p.err = st, err
		if timedOut.Load() {
			p.status.TimedOut = true
		}
		close(p.done)
		p.mu.Unlock()
	}()
	return follow(ctx, p, first, keepAliveEvery(req.Header()), func(ev *process.ProcessEvent) error {
		return stream.Send(&process.StartResponse{Event: ev})
	})
}

// canSignal reports whether the sandbox's provider can signal running
// commands.
func (s *server) canSignal(ctx context.Context, id string) bool {
	sb, err := s.m.Get(ctx, id)
	if err != nil {
		return false
	}
	p, err := s.m.Registry().Get(sb.Provider)
	return err == nil && p.Capabilities().Signals
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
