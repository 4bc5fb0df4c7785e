package e2b_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/stacyvm/stacyvm/internal/e2b/gen/process"
	"github.com/stacyvm/stacyvm/internal/e2b/gen/process/processconnect"
)

// headerTransport adds a sandbox's daemon headers to every request, as the
// SDK does.
type headerTransport map[string]string

func (h headerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	for k, v := range h {
		r.Header.Set(k, v)
	}
	return http.DefaultTransport.RoundTrip(r)
}

func processClient(base string, c created) processconnect.ProcessClient {
	return processconnect.NewProcessClient(&http.Client{Transport: headerTransport(envd(c))}, base+"/e2b/envd", connect.WithProtoJSON())
}

// collect reads a Start stream until its end event: the pid (sent on
// start), all output (stdout and pty) and the end.
type collected struct {
	pid uint32
	out strings.Builder
	end *process.ProcessEvent_EndEvent
}

// until reads events until cond holds on the output so far (or the end).
func (cl *collected) until(t *testing.T, s *connect.ServerStreamForClient[process.StartResponse], cond func(string) bool) {
	t.Helper()
	for !cond(cl.out.String()) && cl.end == nil {
		if !s.Receive() {
			t.Fatalf("stream ended before the condition (output %q): %v", cl.out.String(), s.Err())
		}
		ev := s.Msg().GetEvent()
		switch {
		case ev.GetStart() != nil:
			cl.pid = ev.GetStart().GetPid()
		case ev.GetData() != nil:
			d := ev.GetData()
			cl.out.Write(d.GetStdout())
			cl.out.Write(d.GetPty())
		case ev.GetEnd() != nil:
			cl.end = ev.GetEnd()
		}
	}
}

// TestStdinThroughStreamInput feeds a command's stdin with the
// client-streaming StreamInput and closes it with CloseStdin.
func TestStdinThroughStreamInput(t *testing.T) {
	base := start(t)
	c := create(t, base, `{"templateID":"base"}`)
	pc := processClient(base, c)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	st, err := pc.Start(ctx, connect.NewRequest(&process.StartRequest{
		Process: &process.ProcessConfig{Cmd: "cat"}, Stdin: new(true),
	}))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var cl collected
	cl.until(t, st, func(string) bool { return cl.pid != 0 })

	in := pc.StreamInput(ctx)
	sel := &process.ProcessSelector{Selector: &process.ProcessSelector_Pid{Pid: cl.pid}}
	if err := in.Send(&process.StreamInputRequest{Event: &process.StreamInputRequest_Start{Start: &process.StreamInputRequest_StartEvent{Process: sel}}}); err != nil {
		t.Fatal(err)
	}
	for _, chunk := range []string{"abc\n", "def\n"} {
		data := &process.StreamInputRequest_DataEvent{Input: &process.ProcessInput{Input: &process.ProcessInput_Stdin{Stdin: []byte(chunk)}}}
		if err := in.Send(&process.StreamInputRequest{Event: &process.StreamInputRequest_Data{Data: data}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := in.CloseAndReceive(); err != nil {
		t.Fatalf("StreamInput: %v", err)
	}
	cl.until(t, st, func(out string) bool { return out == "abc\ndef\n" })
	if cl.end != nil {
		t.Fatalf("cat ended before its stdin was closed: %v", cl.end)
	}
	if _, err := pc.CloseStdin(ctx, connect.NewRequest(&process.CloseStdinRequest{Process: sel})); err != nil {
		t.Fatalf("CloseStdin: %v", err)
	}
	cl.until(t, st, func(string) bool { return false })
	if cl.end.GetExitCode() != 0 || !cl.end.GetExited() {
		t.Errorf("end %v, want exit 0 after stdin closed", cl.end)
	}
}

// TestPTYSignalTerm delivers SIGTERM to a PTY's foreground job as a real
// signal: the program's trap runs and sets its exit code.
func TestPTYSignalTerm(t *testing.T) {
	base := start(t)
	c := create(t, base, `{"templateID":"base"}`)
	pc := processClient(base, c)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	st, err := pc.Start(ctx, connect.NewRequest(&process.StartRequest{
		Process: &process.ProcessConfig{Cmd: "/bin/sh", Args: []string{"-c", `trap 'echo got-term; exit 5' TERM; echo ready; while :; do sleep 0.1; done`}},
		Pty:     &process.PTY{Size: &process.PTY_Size{Cols: 80, Rows: 24}},
	}))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var cl collected
	cl.until(t, st, func(out string) bool { return strings.Contains(out, "ready") })
	sel := &process.ProcessSelector{Selector: &process.ProcessSelector_Pid{Pid: cl.pid}}
	if _, err := pc.Update(ctx, connect.NewRequest(&process.UpdateRequest{Process: sel, Pty: &process.PTY{Size: &process.PTY_Size{Cols: 0, Rows: 5}}})); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Errorf("Update to 0 columns: %v, want invalid_argument", err)
	}
	if _, err := pc.SendSignal(ctx, connect.NewRequest(&process.SendSignalRequest{Process: sel, Signal: process.Signal_SIGNAL_SIGTERM})); err != nil {
		t.Fatalf("SendSignal(SIGTERM): %v", err)
	}
	cl.until(t, st, func(string) bool { return false })
	if !strings.Contains(cl.out.String(), "got-term") || cl.end.GetExitCode() != 5 {
		t.Errorf("after SIGTERM: output %q, end %v; want the trap's got-term and exit 5", cl.out.String(), cl.end)
	}
}

// TestCommandSignalTerm: where the provider can signal commands (the mock
// can), SIGTERM reaches the command as SIGTERM: its trap runs.
func TestCommandSignalTerm(t *testing.T) {
	base := start(t)
	c := create(t, base, `{"templateID":"base"}`)
	pc := processClient(base, c)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	st, err := pc.Start(ctx, connect.NewRequest(&process.StartRequest{
		Process: &process.ProcessConfig{Cmd: "/bin/sh", Args: []string{"-c", `trap 'echo got-term; exit 7' TERM; echo ready; while :; do sleep 0.1; done`}},
	}))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var cl collected
	cl.until(t, st, func(out string) bool { return strings.Contains(out, "ready") })
	sel := &process.ProcessSelector{Selector: &process.ProcessSelector_Pid{Pid: cl.pid}}
	if _, err := pc.SendSignal(ctx, connect.NewRequest(&process.SendSignalRequest{Process: sel, Signal: process.Signal_SIGNAL_SIGTERM})); err != nil {
		t.Fatalf("SendSignal(SIGTERM): %v", err)
	}
	cl.until(t, st, func(string) bool { return false })
	if !strings.Contains(cl.out.String(), "got-term") || cl.end.GetExitCode() != 7 || !cl.end.GetExited() {
		t.Errorf("after SIGTERM: output %q, end %v; want the trap's got-term and exit 7", cl.out.String(), cl.end)
	}
}
