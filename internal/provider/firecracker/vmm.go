package firecracker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/provider/firecracker/fcapi"
)

// vmmClient speaks Firecracker's HTTP API on its unix socket. The API is a
// handful of small synchronous PUT/PATCH calls, so a hand-written client
// over net/http is all it takes.
type vmmClient struct {
	hc *http.Client
}

func newVMMClient(sockPath string) *vmmClient {
	tr := &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sockPath)
		},
		MaxIdleConns:       2,
		IdleConnTimeout:    30 * time.Second,
		DisableCompression: true,
	}
	return &vmmClient{hc: &http.Client{Transport: tr}}
}

func (c *vmmClient) close() { c.hc.CloseIdleConnections() }

// vmmError is a reply other than success. Firecracker explains itself in
// fault_message.
type vmmError struct {
	Method, Path string
	Status       int
	Fault        string
}

func (e *vmmError) Error() string {
	return fmt.Sprintf("firecracker %s %s: HTTP %d: %s", e.Method, e.Path, e.Status, e.Fault)
}

func (c *vmmClient) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encoding %s %s: %w", method, path, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://firecracker"+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if cerr := context.Cause(ctx); cerr != nil {
			return fmt.Errorf("firecracker %s %s abandoned: %w", method, path, cerr)
		}
		return errdefs.Wrap(errdefs.ErrProviderUnavailable, unwrapURL(err), "firecracker API %s %s", method, path)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return errdefs.Wrap(errdefs.ErrProviderUnavailable, err, "reading firecracker reply to %s %s", method, path)
	}
	if resp.StatusCode/100 != 2 {
		var fe fcapi.Error
		_ = json.Unmarshal(b, &fe)
		if fe.FaultMessage == "" {
			fe.FaultMessage = string(bytes.TrimSpace(b))
		}
		return &vmmError{Method: method, Path: path, Status: resp.StatusCode, Fault: fe.FaultMessage}
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("decoding firecracker reply to %s %s: %w", method, path, err)
		}
	}
	return nil
}

func unwrapURL(err error) error {
	if ue, ok := errors.AsType[*url.Error](err); ok {
		return ue.Err
	}
	return err
}

func (c *vmmClient) describe(ctx context.Context) (fcapi.InstanceInfo, error) {
	var ii fcapi.InstanceInfo
	err := c.do(ctx, http.MethodGet, fcapi.PathRoot, nil, &ii)
	return ii, err
}

// waitAPI polls until the API socket answers: Firecracker creates it a
// few milliseconds after it starts.
func (c *vmmClient) waitAPI(ctx context.Context, exited <-chan struct{}) error {
	delay := time.Millisecond
	for {
		actx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := c.describe(actx)
		cancel()
		if err == nil {
			return nil
		}
		if _, ok := errors.AsType[*vmmError](err); ok {
			return err // it answered, and said no
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return errdefs.Wrap(errdefs.ErrProviderUnavailable, errors.Join(err, context.Cause(ctx)), "firecracker API socket never answered")
		case <-exited:
			t.Stop()
			return errdefs.New(errdefs.ErrProviderUnavailable, "firecracker exited before its API socket answered (see the sandbox console log)")
		case <-t.C:
		}
		delay = min(delay*2, 50*time.Millisecond)
	}
}

func (c *vmmClient) putMachineConfig(ctx context.Context, mc fcapi.MachineConfiguration) error {
	return c.do(ctx, http.MethodPut, fcapi.PathMachineConfig, mc, nil)
}

func (c *vmmClient) putBootSource(ctx context.Context, bs fcapi.BootSource) error {
	return c.do(ctx, http.MethodPut, fcapi.PathBootSource, bs, nil)
}

func (c *vmmClient) putDrive(ctx context.Context, d fcapi.Drive) error {
	return c.do(ctx, http.MethodPut, fcapi.PathDrives+d.DriveID, d, nil)
}

func (c *vmmClient) putVsock(ctx context.Context, v fcapi.Vsock) error {
	return c.do(ctx, http.MethodPut, fcapi.PathVsock, v, nil)
}

func (c *vmmClient) putEntropy(ctx context.Context) error {
	return c.do(ctx, http.MethodPut, fcapi.PathEntropy, fcapi.EntropyDevice{}, nil)
}

func (c *vmmClient) instanceStart(ctx context.Context) error {
	return c.do(ctx, http.MethodPut, fcapi.PathActions, fcapi.InstanceActionInfo{ActionType: fcapi.ActionInstanceStart}, nil)
}

func (c *vmmClient) setVMState(ctx context.Context, state string) error {
	return c.do(ctx, http.MethodPatch, fcapi.PathVM, fcapi.VM{State: state}, nil)
}

func (c *vmmClient) createSnapshot(ctx context.Context, p fcapi.SnapshotCreateParams) error {
	return c.do(ctx, http.MethodPut, fcapi.PathSnapshotCreate, p, nil)
}

func (c *vmmClient) loadSnapshot(ctx context.Context, p fcapi.SnapshotLoadParams) error {
	return c.do(ctx, http.MethodPut, fcapi.PathSnapshotLoad, p, nil)
}
