package orchestrator

import (
	"bytes"
	"context"
	"io"
	"io/fs"
	"maps"
	"strings"
	"sync"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/provider"
)

// fakeProvider is an in-memory provider double for orchestrator tests: it
// keeps runtimes in a map, lists them (Inventory) and can be told to fail.
// Exec understands a handful of commands; files are a map.
type fakeProvider struct {
	name string
	iso  provider.Isolation

	mu        sync.Mutex
	runtimes  map[string]provider.Info
	files     map[string][]byte
	health    error
	spawnErr  error
	spawnGate chan struct{} // when set, Spawn waits for it to close
	destroyed []string
	lastExec  provider.ExecRequest
	// destroyHang holds the Destroy of these IDs until the channel closes.
	destroyHang map[string]chan struct{}
}

func newFake(name string) *fakeProvider {
	return &fakeProvider{name: name, iso: provider.IsolationContainer,
		runtimes: map[string]provider.Info{}, files: map[string][]byte{}}
}

func (f *fakeProvider) Name() string { return f.name }
func (f *fakeProvider) Capabilities() provider.Capabilities {
	return provider.Capabilities{Isolation: f.iso, Streaming: true, Adoption: true}
}

func (f *fakeProvider) Health(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.health
}

func (f *fakeProvider) setHealth(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.health = err
}

func (f *fakeProvider) Spawn(_ context.Context, spec provider.Spec) (provider.Info, error) {
	if f.spawnGate != nil {
		<-f.spawnGate
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.health != nil {
		return provider.Info{}, errdefs.Wrap(errdefs.ErrProviderUnavailable, f.health, "fake")
	}
	if f.spawnErr != nil {
		return provider.Info{}, f.spawnErr
	}
	info := provider.Info{ID: spec.ID, State: provider.StateRunning, Image: spec.Image, Handle: "h-" + spec.ID,
		OwnerID: spec.OwnerID, Template: spec.Template, Metadata: maps.Clone(spec.Metadata), Created: time.Now(),
		Instance: spec.Instance}
	f.runtimes[spec.ID] = info
	return info, nil
}

// addRuntime plants a runtime the store knows nothing of (an orphan).
func (f *fakeProvider) addRuntime(info provider.Info) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.runtimes[info.ID] = info
}

func (f *fakeProvider) has(id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.runtimes[id]
	return ok
}

func (f *fakeProvider) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.runtimes)
}

func (f *fakeProvider) Status(_ context.Context, id string) (provider.Info, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	info, ok := f.runtimes[id]
	if !ok {
		return provider.Info{}, errdefs.New(errdefs.ErrSandboxNotFound, "no runtime %s", id)
	}
	return info, nil
}

func (f *fakeProvider) Destroy(_ context.Context, id string) error {
	f.mu.Lock()
	hang := f.destroyHang[id]
	f.mu.Unlock()
	if hang != nil {
		<-hang // a runtime call that ignores its context
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.runtimes, id)
	f.destroyed = append(f.destroyed, id)
	return nil
}

func (f *fakeProvider) List(context.Context) ([]provider.Info, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]provider.Info(nil), mapsValues(f.runtimes)...), nil
}

func mapsValues(m map[string]provider.Info) []provider.Info {
	var out []provider.Info
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

func (f *fakeProvider) Logs(_ context.Context, id string, n int) ([]string, error) {
	return []string{"log of " + id}, nil
}

func (f *fakeProvider) check(id string) error {
	if _, ok := f.runtimes[id]; !ok {
		return errdefs.New(errdefs.ErrSandboxNotFound, "no runtime %s", id)
	}
	return nil
}

// Exec understands: "echo X" (prints X), "fail N" (exits N), "sleep"
// (waits for ctx or the timeout), "env K" (prints env K), "stderr X".
func (f *fakeProvider) Exec(ctx context.Context, id string, req provider.ExecRequest, stdout, stderr io.Writer) (provider.ExitStatus, error) {
	f.mu.Lock()
	err := f.check(id)
	f.lastExec = req
	f.mu.Unlock()
	if err != nil {
		return provider.ExitStatus{}, err
	}
	cmd := strings.Join(req.Argv, " ")
	if len(req.Argv) == 3 && req.Argv[0] == "/bin/sh" {
		cmd = req.Argv[2]
	}
	word, arg, _ := strings.Cut(cmd, " ")
	switch word {
	case "echo":
		io.WriteString(stdout, arg+"\n")
	case "stderr":
		io.WriteString(stderr, arg+"\n")
	case "env":
		io.WriteString(stdout, req.Env[arg])
	case "fail":
		code := 0
		for _, c := range arg {
			code = code*10 + int(c-'0')
		}
		return provider.ExitStatus{ExitCode: code}, nil
	case "flood":
		chunk := bytes.Repeat([]byte("x"), 1024)
		for range 100 {
			stdout.Write(chunk)
		}
	case "sleep":
		t := time.NewTimer(req.Timeout)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return provider.ExitStatus{ExitCode: -1}, ctx.Err()
		case <-t.C:
			io.WriteString(stdout, "partial\n")
			return provider.ExitStatus{ExitCode: -1, TimedOut: true, Duration: req.Timeout},
				errdefs.New(errdefs.ErrExecTimeout, "timed out after %s", req.Timeout)
		}
	}
	return provider.ExitStatus{ExitCode: 0, Duration: time.Millisecond}, nil
}

func (f *fakeProvider) WriteFile(_ context.Context, id, path string, r io.Reader, _ fs.FileMode) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check(id); err != nil {
		return err
	}
	f.files[id+":"+path] = b
	return nil
}

func (f *fakeProvider) ReadFile(_ context.Context, id, path string) (io.ReadCloser, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check(id); err != nil {
		return nil, err
	}
	b, ok := f.files[id+":"+path]
	if !ok {
		return nil, errdefs.New(errdefs.ErrFileNotFound, "%s not found", path)
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

func (f *fakeProvider) ListFiles(context.Context, string, string) ([]provider.FileInfo, error) {
	return nil, errdefs.New(errdefs.ErrUnimplemented, "fake")
}
func (f *fakeProvider) StatFile(context.Context, string, string) (provider.FileInfo, error) {
	return provider.FileInfo{}, errdefs.New(errdefs.ErrUnimplemented, "fake")
}
func (f *fakeProvider) DeleteFile(context.Context, string, string, bool) error {
	return errdefs.New(errdefs.ErrUnimplemented, "fake")
}
func (f *fakeProvider) MoveFile(context.Context, string, string, string) error {
	return errdefs.New(errdefs.ErrUnimplemented, "fake")
}
func (f *fakeProvider) Chmod(context.Context, string, string, fs.FileMode) error {
	return errdefs.New(errdefs.ErrUnimplemented, "fake")
}
func (f *fakeProvider) Glob(context.Context, string, string) ([]string, error) {
	return nil, errdefs.New(errdefs.ErrUnimplemented, "fake")
}

// hangDestroy makes Destroy of id block, ignoring its context, until the
// returned release is called.
func (f *fakeProvider) hangDestroy(id string) (release func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.destroyHang == nil {
		f.destroyHang = map[string]chan struct{}{}
	}
	ch := make(chan struct{})
	f.destroyHang[id] = ch
	return sync.OnceFunc(func() { close(ch) })
}
