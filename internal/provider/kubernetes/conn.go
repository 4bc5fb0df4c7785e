package kubernetes

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/remotecommand"

	"github.com/stacyvm/stacyvm/internal/agent"
	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/provider"
)

// The host reaches a pod's agent through the API server: each connection
// of the agent client is one exec of the relay (bridgeArgv) in the sandbox
// container, whose stdin and stdout carry the agent protocol to the
// agent's unix socket. This needs no pod network (a "none" sandbox is
// reachable), no port open to the cluster (nothing but the API server's
// authorization guards the agent), and works with any RuntimeClass that
// supports exec (runsc included); pods/port-forward needs the agent on the
// pod's loopback, which gVisor's netstack hides from the kubelet. The cost
// is one exec per new connection (about 100-200 ms); the agent client
// pools connections, so most calls reuse one.

// dialer returns the agent.Dialer of sandbox id.
func (p *Provider) dialer(id string) agent.Dialer {
	return func(ctx context.Context) (net.Conn, error) {
		c, err := p.dialExec(ctx, id)
		if err == nil || ctx.Err() != nil {
			return c, err
		}
		// Ask the API server why: a deleted or stopped pod reads as such
		// rather than as an unreachable agent.
		pod, gerr := p.owned(ctx, id)
		switch {
		case gerr != nil && errdefs.Classify(gerr) != errdefs.ErrProviderUnavailable:
			p.forget(id)
			return nil, gerr
		case gerr == nil && stateOf(pod) != provider.StateRunning:
			p.forget(id)
			return nil, notRunning(id, string(stateOf(pod)))
		}
		return nil, err
	}
}

// maxStderr bounds what an exec stream's stderr (the relay's complaints)
// keeps for error messages.
const maxStderr = 4 << 10

func (p *Provider) dialExec(ctx context.Context, id string) (net.Conn, error) {
	req := p.cs.CoreV1().RESTClient().Post().
		Namespace(p.cfg.Namespace).Resource("pods").Name(podName(id)).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{
			Container: sandboxContainer,
			Command:   bridgeArgv,
			Stdin:     true,
			Stdout:    true,
			Stderr:    true,
		}, scheme.ParameterCodec)
	ws, err := remotecommand.NewWebSocketExecutor(p.rest, "GET", req.URL().String())
	if err != nil {
		return nil, errdefs.Wrap(errdefs.ErrProviderUnavailable, err, "kubernetes: exec stream to sandbox %s", id)
	}
	spdy, err := remotecommand.NewSPDYExecutor(p.rest, "POST", req.URL())
	if err != nil {
		return nil, errdefs.Wrap(errdefs.ErrProviderUnavailable, err, "kubernetes: exec stream to sandbox %s", id)
	}
	// WebSocket first, as kubectl does; SPDY for API servers before 1.30.
	ex, err := remotecommand.NewFallbackExecutor(ws, spdy, func(err error) bool {
		return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
	})
	if err != nil {
		return nil, errdefs.Wrap(errdefs.ErrProviderUnavailable, err, "kubernetes: exec stream to sandbox %s", id)
	}

	// The stream outlives the dial: its context is its own, ended by
	// Close.
	sctx, cancel := context.WithCancel(context.Background())
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	c := &execConn{
		Conn:   agent.StdioConn(outR, inW),
		inW:    inW,
		outR:   outR,
		cancel: cancel,
		done:   make(chan struct{}),
	}
	started := make(chan struct{})
	stdin := &startReader{r: inR, started: started}
	go func() {
		err := ex.StreamWithContext(sctx, remotecommand.StreamOptions{Stdin: stdin, Stdout: outW, Stderr: &c.stderr})
		c.err = err
		outW.Close()
		close(c.done)
	}()
	// The executors read stdin only once the stream is up: the first read
	// is the signal that the dial succeeded.
	select {
	case <-started:
		return c, nil
	case <-c.done:
		c.Close()
		err := c.err
		if err == nil {
			err = fmt.Errorf("the relay exited at once: %s", strings.TrimSpace(c.stderr.String()))
		}
		return nil, classify(err, "kubernetes: exec stream to sandbox %s", id)
	case <-ctx.Done():
		c.Close()
		return nil, fmt.Errorf("kubernetes: exec stream to sandbox %s abandoned: %w", id, context.Cause(ctx))
	}
}

// startReader closes started at the first Read.
type startReader struct {
	r       io.Reader
	started chan struct{}
	once    sync.Once
}

func (s *startReader) Read(p []byte) (int, error) {
	s.once.Do(func() { close(s.started) })
	return s.r.Read(p)
}

// execConn is one agent connection over an exec stream.
type execConn struct {
	net.Conn
	inW    *io.PipeWriter
	outR   *io.PipeReader
	cancel context.CancelFunc
	done   chan struct{}
	err    error // the stream's end, once done is closed
	stderr capBuffer
	once   sync.Once
}

// Close ends the relay's input, which the agent reads as its client going
// away, and then the stream itself.
func (c *execConn) Close() error {
	c.once.Do(func() {
		c.Conn.Close()
		c.inW.Close()
		c.outR.Close()
		c.cancel()
	})
	return nil
}

// capBuffer keeps the first maxStderr bytes written to it.
type capBuffer struct {
	mu sync.Mutex
	b  []byte
}

func (c *capBuffer) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if room := maxStderr - len(c.b); room > 0 {
		c.b = append(c.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (c *capBuffer) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return string(c.b)
}
