//go:build linux

// Package fakevmm is a FAKE Firecracker for tests on machines without
// KVM. It serves the part of Firecracker's HTTP API that the firecracker
// provider uses, on the same unix socket, with the same command line, and
// checks every request it receives and every reply it sends against
// Firecracker's published API description (package fcapi). Requests the
// description forbids get the 400 Firecracker would answer.
//
// What it fakes is the machine: there is no kernel and no KVM. On
// InstanceStart, or on a snapshot load, it unpacks the root drive (an ext4
// file, read with debugfs, no mount) into a directory and runs the image's
// own init (the real stacyvm-agent installed by BuildImage) chrooted into
// it, as PID 1 of new PID, mount and network namespaces, with the
// arguments the kernel command line gives init and the environment a
// kernel gives it (no PATH). A guest "vsock:PORT" listener becomes a unix
// socket inside that directory, and the VMM's hybrid-vsock socket does the
// CONNECT/OK handshake in front of it, as Firecracker does. Killing the
// fake kills its guest. A snapshot records the configuration and, in
// place of memory, the guest's file tree (which in the fake holds what a
// VM keeps in its page cache and on its drive alike): a restored guest
// gets that tree back and boots its init again in it. Processes do not
// survive a snapshot; files do.
//
// Every request and its reply is appended, as one JSON line, to the file
// named by $STACYVM_FAKEVMM_JOURNAL when it is set, so tests can check
// what the provider asked for.
package fakevmm

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stacyvm/stacyvm/internal/provider/firecracker/fcapi"
)

// Version is what the fake reports as its Firecracker version.
const Version = "1.17.0-fakevmm"

// JournalEnv names the journal file's environment variable.
const JournalEnv = "STACYVM_FAKEVMM_JOURNAL"

// guestVsockDir is where, inside the guest root, vsock listeners become
// unix sockets.
const guestVsockDir = ".fakevmm-vsock"

// guestDirName is the directory, in the VMM's working directory, that
// holds the unpacked guest.
const guestDirName = "fakevm-guest"

// snapshotMagic starts every state file the fake writes.
const snapshotMagic = "stacyvm-fakevmm-snapshot-v1"

// Main runs the fake with Firecracker's command line (--api-sock, --id,
// --version) and returns the exit code.
func Main(args []string) int {
	fl := flag.NewFlagSet("firecracker", flag.ContinueOnError)
	sock := fl.String("api-sock", "/run/firecracker.socket", "path of the API socket")
	id := fl.String("id", "anonymous-instance", "instance ID")
	version := fl.Bool("version", false, "print the version and exit")
	if err := fl.Parse(args); err != nil {
		return 2
	}
	if *version {
		fmt.Printf("Firecracker v%s (FAKE VMM for tests: no KVM, guests are local processes)\n", Version)
		return 0
	}
	logger := log.New(os.Stdout, "fakevmm: ", log.Lmicroseconds)
	spec, err := fcapi.Load()
	if err != nil {
		logger.Print(err)
		return 1
	}
	v := &VMM{spec: spec, id: *id, log: logger, state: fcapi.StateNotStarted, drives: map[string]fcapi.Drive{}}
	if p := os.Getenv(JournalEnv); p != "" {
		if v.journal, err = os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600); err != nil {
			logger.Print(err)
			return 1
		}
	}
	ln, err := net.Listen("unix", *sock)
	if err != nil {
		logger.Print(err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	srv := &http.Server{Handler: v}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	logger.Printf("API listening on %s", *sock)
	_ = srv.Serve(ln)
	v.shutdown()
	os.Remove(*sock)
	return 0
}

// VMM is one fake microVM.
type VMM struct {
	spec    *fcapi.Spec
	id      string
	log     *log.Logger
	journal *os.File
	jmu     sync.Mutex

	mu         sync.Mutex
	state      string
	configured bool // anything set that makes a snapshot load impossible
	machine    *fcapi.MachineConfiguration
	boot       *fcapi.BootSource
	drives     map[string]fcapi.Drive
	vsock      *fcapi.Vsock
	entropy    bool
	guest      *guest
	mux        *vsockMux
	// tree is the memory file of a loaded snapshot; start unpacks the
	// guest's file tree from it instead of the root drive.
	tree string
}

type journalEntry struct {
	VMM      string          `json:"vmm"`
	Method   string          `json:"method"`
	Path     string          `json:"path"`
	Body     json.RawMessage `json:"body,omitempty"`
	Status   int             `json:"status"`
	Reply    json.RawMessage `json:"reply,omitempty"`
	Invalid  string          `json:"invalid_request,omitempty"`
	BadReply string          `json:"invalid_reply,omitempty"`
}

func (v *VMM) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	je := journalEntry{VMM: v.id, Method: r.Method, Path: r.URL.Path}
	if json.Valid(body) {
		je.Body = body
	}
	status, reply := http.StatusBadRequest, any(nil)
	if verr := v.spec.ValidateRequest(r.Method, r.URL.Path, body); verr != nil {
		je.Invalid = verr.Error()
		reply = fcapi.Error{FaultMessage: "Invalid request: " + verr.Error()}
	} else {
		status, reply = v.handle(r.Method, r.URL.Path, body)
	}
	var out []byte
	if reply != nil {
		out, _ = json.Marshal(reply)
	}
	var verr error
	if _, err := v.spec.OperationID(r.Method, r.URL.Path); err != nil {
		// No such operation: the reply is Firecracker's generic error.
		verr = v.spec.ValidateDefinition("Error", out)
	} else {
		verr = v.spec.ValidateResponse(r.Method, r.URL.Path, status, out)
	}
	if verr != nil {
		// A bug in the fake; say so loudly rather than answer off-spec.
		je.BadReply = verr.Error()
		v.log.Printf("BUG: reply violates the API description: %v", verr)
		status = http.StatusInternalServerError
		out, _ = json.Marshal(fcapi.Error{FaultMessage: "fakevmm reply violates the API description: " + verr.Error()})
	}
	je.Status = status
	je.Reply = out
	v.record(je)
	if out != nil {
		w.Header().Set("Content-Type", "application/json")
	}
	w.WriteHeader(status)
	_, _ = w.Write(out)
}

func (v *VMM) record(je journalEntry) {
	if v.journal == nil {
		return
	}
	b, _ := json.Marshal(je)
	v.jmu.Lock()
	defer v.jmu.Unlock()
	_, _ = v.journal.Write(append(b, '\n'))
}

func fault(format string, args ...any) (int, any) {
	return http.StatusBadRequest, fcapi.Error{FaultMessage: fmt.Sprintf(format, args...)}
}

const preBootOnly = "The requested operation is not supported after starting the microVM."

func (v *VMM) handle(method, path string, body []byte) (int, any) {
	v.mu.Lock()
	defer v.mu.Unlock()
	started := v.state != fcapi.StateNotStarted
	decode := func(dst any) error { return json.Unmarshal(body, dst) }
	switch {
	case method == http.MethodGet && path == fcapi.PathRoot:
		return http.StatusOK, fcapi.InstanceInfo{AppName: "Firecracker", ID: v.id, State: v.state, VMMVersion: Version}
	case method == http.MethodGet && path == fcapi.PathVersion:
		return http.StatusOK, fcapi.FirecrackerVersion{FirecrackerVersion: Version}
	case method == http.MethodGet && path == fcapi.PathMachineConfig:
		mc := fcapi.MachineConfiguration{VCPUCount: 1, MemSizeMiB: 128}
		if v.machine != nil {
			mc = *v.machine
		}
		return http.StatusOK, mc
	case method == http.MethodPut && path == fcapi.PathMachineConfig:
		if started {
			return fault(preBootOnly)
		}
		var mc fcapi.MachineConfiguration
		if err := decode(&mc); err != nil {
			return fault("%v", err)
		}
		if mc.SMT && mc.VCPUCount > 1 && mc.VCPUCount%2 == 1 {
			return fault("The vCPU number is invalid! The vCPU number can only be 1 or an even number when SMT is enabled.")
		}
		v.machine, v.configured = &mc, true
		return http.StatusNoContent, nil
	case method == http.MethodPut && path == fcapi.PathBootSource:
		if started {
			return fault(preBootOnly)
		}
		var bs fcapi.BootSource
		if err := decode(&bs); err != nil {
			return fault("%v", err)
		}
		if _, err := os.Stat(bs.KernelImagePath); err != nil {
			return fault("The kernel file cannot be opened: %v", err)
		}
		v.boot, v.configured = &bs, true
		return http.StatusNoContent, nil
	case method == http.MethodPut && strings.HasPrefix(path, fcapi.PathDrives):
		if started {
			return fault(preBootOnly)
		}
		var d fcapi.Drive
		if err := decode(&d); err != nil {
			return fault("%v", err)
		}
		if d.DriveID != strings.TrimPrefix(path, fcapi.PathDrives) {
			return fault("The id from the path does not match the id from the body!")
		}
		if d.PathOnHost == "" {
			return fault("Unable to create the block device: no path_on_host")
		}
		if _, err := os.Stat(d.PathOnHost); err != nil {
			return fault("Unable to create the block device: %v", err)
		}
		if d.IsRootDevice {
			for id, o := range v.drives {
				if o.IsRootDevice && id != d.DriveID {
					return fault("A root block device already exists!")
				}
			}
		}
		v.drives[d.DriveID], v.configured = d, true
		return http.StatusNoContent, nil
	case method == http.MethodPut && path == fcapi.PathVsock:
		if started {
			return fault(preBootOnly)
		}
		var vs fcapi.Vsock
		if err := decode(&vs); err != nil {
			return fault("%v", err)
		}
		v.vsock, v.configured = &vs, true
		return http.StatusNoContent, nil
	case method == http.MethodPut && path == fcapi.PathEntropy:
		if started {
			return fault(preBootOnly)
		}
		v.entropy, v.configured = true, true
		return http.StatusNoContent, nil
	case method == http.MethodPut && (path == "/logger" || path == "/metrics"):
		return http.StatusNoContent, nil
	case method == http.MethodPut && path == fcapi.PathActions:
		var a fcapi.InstanceActionInfo
		if err := decode(&a); err != nil {
			return fault("%v", err)
		}
		if a.ActionType != fcapi.ActionInstanceStart {
			return fault("fakevmm does not implement action %s", a.ActionType)
		}
		if started {
			return fault("The microVM is already running.")
		}
		if err := v.start(); err != nil {
			return fault("Cannot start microvm: %v", err)
		}
		v.state = fcapi.StateRunning
		return http.StatusNoContent, nil
	case method == http.MethodPatch && path == fcapi.PathVM:
		var vm fcapi.VM
		if err := decode(&vm); err != nil {
			return fault("%v", err)
		}
		if !started {
			return fault("The microVM is not running.")
		}
		if vm.State == fcapi.VMPaused {
			v.guest.signal(syscall.SIGSTOP)
			v.mux.pause()
			v.state = fcapi.StatePaused
		} else {
			v.mux.resume()
			v.guest.signal(syscall.SIGCONT)
			v.state = fcapi.StateRunning
		}
		return http.StatusNoContent, nil
	case method == http.MethodPut && path == fcapi.PathSnapshotCreate:
		var p fcapi.SnapshotCreateParams
		if err := decode(&p); err != nil {
			return fault("%v", err)
		}
		if v.state != fcapi.StatePaused {
			return fault("Cannot create snapshot: the microVM must be paused.")
		}
		if err := v.writeSnapshot(p); err != nil {
			return fault("Cannot create snapshot: %v", err)
		}
		// Firecracker resets every vsock connection when it snapshots.
		v.mux.reset()
		return http.StatusNoContent, nil
	case method == http.MethodPut && path == fcapi.PathSnapshotLoad:
		if started || v.configured {
			return fault("Loading a microVM snapshot not allowed after configuring boot-specific resources.")
		}
		var p fcapi.SnapshotLoadParams
		if err := decode(&p); err != nil {
			return fault("%v", err)
		}
		if err := v.loadSnapshot(p); err != nil {
			return fault("Load snapshot error: %v", err)
		}
		v.configured = true
		if p.ResumeVM {
			if err := v.start(); err != nil {
				return fault("Load snapshot error: resuming: %v", err)
			}
			v.state = fcapi.StateRunning
		} else {
			v.state = fcapi.StatePaused
		}
		return http.StatusNoContent, nil
	}
	return fault("Invalid request method and/or path: %s %s (not implemented by fakevmm).", method, path)
}

// snapshotFile is what the fake writes as a snapshot's state file.
type snapshotFile struct {
	Magic   string                     `json:"magic"`
	Machine fcapi.MachineConfiguration `json:"machine"`
	Boot    fcapi.BootSource           `json:"boot"`
	Drives  map[string]fcapi.Drive     `json:"drives"`
	Vsock   *fcapi.Vsock               `json:"vsock"`
	Entropy bool                       `json:"entropy"`
	MemSize int64                      `json:"mem_size"`
}

func (v *VMM) writeSnapshot(p fcapi.SnapshotCreateParams) error {
	if p.SnapshotType != "" && p.SnapshotType != "Full" {
		return fmt.Errorf("fakevmm takes full snapshots only")
	}
	mc := fcapi.MachineConfiguration{VCPUCount: 1, MemSizeMiB: 128}
	if v.machine != nil {
		mc = *v.machine
	}
	sf := snapshotFile{Magic: snapshotMagic, Machine: mc, Boot: *v.boot, Drives: v.drives, Vsock: v.vsock,
		Entropy: v.entropy, MemSize: int64(mc.MemSizeMiB) << 20}
	b, _ := json.Marshal(sf)
	if err := os.WriteFile(p.SnapshotPath, b, 0o600); err != nil {
		return err
	}
	// Guest memory: a header, the guest's file tree, then sparse up to
	// the guest's memory size.
	f, err := os.OpenFile(p.MemFilePath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.WriteString(snapshotMagic + "\n"); err != nil {
		return err
	}
	if v.guest != nil {
		if err := writeTree(f, v.guest.root); err != nil {
			return fmt.Errorf("saving the guest's files: %w", err)
		}
	}
	end, err := f.Seek(0, io.SeekCurrent)
	if err != nil {
		return err
	}
	if end < sf.MemSize {
		return f.Truncate(sf.MemSize)
	}
	return nil
}

func (v *VMM) loadSnapshot(p fcapi.SnapshotLoadParams) error {
	memPath := p.MemFilePath
	if p.MemBackend != nil {
		if p.MemBackend.BackendType != fcapi.BackendFile {
			return fmt.Errorf("fakevmm supports the File memory backend only")
		}
		memPath = p.MemBackend.BackendPath
	}
	b, err := os.ReadFile(p.SnapshotPath)
	if err != nil {
		return err
	}
	var sf snapshotFile
	if err := json.Unmarshal(b, &sf); err != nil || sf.Magic != snapshotMagic {
		return fmt.Errorf("%s is not a snapshot state file", p.SnapshotPath)
	}
	mf, err := os.Open(memPath)
	if err != nil {
		return err
	}
	defer mf.Close()
	fi, err := mf.Stat()
	if err != nil {
		return err
	}
	head := make([]byte, len(snapshotMagic))
	if _, err := io.ReadFull(mf, head); err != nil || string(head) != snapshotMagic || fi.Size() < sf.MemSize {
		return fmt.Errorf("%s does not hold this snapshot's guest memory", memPath)
	}
	// The state records device paths; like Firecracker, reopen them as
	// recorded (relative paths resolve against the working directory).
	for _, d := range sf.Drives {
		if _, err := os.Stat(d.PathOnHost); err != nil {
			return fmt.Errorf("drive %s: %w", d.DriveID, err)
		}
	}
	v.machine, v.boot, v.drives, v.vsock, v.entropy = &sf.Machine, &sf.Boot, sf.Drives, sf.Vsock, sf.Entropy
	v.tree = memPath
	return nil
}

// start "boots": unpacks the root drive and runs its init.
func (v *VMM) start() error {
	if os.Geteuid() != 0 {
		return errors.New("the fake VMM must run as root (it chroots its guest and makes its device nodes)")
	}
	if v.boot == nil {
		return errors.New("no boot source (kernel) configured")
	}
	if _, err := os.Stat(v.boot.KernelImagePath); err != nil {
		return fmt.Errorf("kernel: %w", err)
	}
	var root *fcapi.Drive
	for _, d := range v.drives {
		if d.IsRootDevice {
			root = &d
		}
	}
	if root == nil {
		return errors.New("no root block device")
	}
	initPath, initArgs, err := parseBootArgs(v.boot.BootArgs)
	if err != nil {
		return err
	}
	v.log.Printf("booting (fake): kernel %s, root drive %s, init %s %q", v.boot.KernelImagePath, root.PathOnHost, initPath, initArgs)
	unpack := func(dst string) error { return rdump(root.PathOnHost, dst) }
	if v.tree != "" {
		unpack = func(dst string) error { return readTree(v.tree, int64(len(snapshotMagic)+1), dst) }
	}
	g, err := bootGuest(unpack, initPath, initArgs, v.log)
	if err != nil {
		return err
	}
	v.guest = g
	if v.vsock != nil {
		m, err := listenVsock(v.vsock.UDSPath, g.vsockPath, v.log)
		if err != nil {
			g.kill()
			return fmt.Errorf("vsock: %w", err)
		}
		v.mux = m
	} else {
		v.mux = &vsockMux{}
	}
	return nil
}

func (v *VMM) shutdown() {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.mux != nil {
		v.mux.close()
	}
	if v.guest != nil {
		v.guest.kill()
	}
}

// parseBootArgs finds init= and the arguments after " -- ", which the
// kernel hands to init.
func parseBootArgs(args string) (string, []string, error) {
	kernelPart, initPart, _ := strings.Cut(" "+args+" ", " -- ")
	initPath := "/sbin/init"
	for _, f := range strings.Fields(kernelPart) {
		if p, ok := strings.CutPrefix(f, "init="); ok {
			initPath = p
		}
	}
	if !strings.HasPrefix(initPath, "/") {
		return "", nil, fmt.Errorf("init=%s is not an absolute path", initPath)
	}
	return initPath, strings.Fields(initPart), nil
}

// guest is the running init of a fake VM.
type guest struct {
	cmd       *exec.Cmd
	root      string // host directory that is the guest's /
	vsockPath func(port uint32) string
	done      chan struct{}
}

// rdump copies the tree out of the file system image without mounting.
func rdump(drive, root string) error {
	debugfs, err := exec.LookPath("debugfs")
	if err != nil {
		return fmt.Errorf("debugfs (e2fsprogs) is needed to read the root drive: %w", err)
	}
	out, err := exec.Command(debugfs, "-R", "rdump / "+root, drive).CombinedOutput()
	if err != nil {
		return fmt.Errorf("debugfs rdump: %w: %s", err, out)
	}
	return nil
}

// bootGuest fills ./fakevm-guest/root with unpack and starts init there.
func bootGuest(unpack func(root string) error, initPath string, initArgs []string, logger *log.Logger) (*guest, error) {
	root, err := filepath.Abs(filepath.Join(guestDirName, "root"))
	if err != nil {
		return nil, err
	}
	_ = os.RemoveAll(filepath.Dir(root))
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, err
	}
	if err := unpack(root); err != nil {
		return nil, err
	}
	if fi, err := os.Stat(filepath.Join(root, initPath)); err != nil || fi.Mode()&0o111 == 0 {
		return nil, fmt.Errorf("init %s is missing or not executable in the root file system (%v)", initPath, err)
	}
	// Hand the init the vsock listener's stand-in: vsock:PORT becomes a
	// unix socket under /.fakevmm-vsock inside the guest.
	args := make([]string, len(initArgs))
	for i, a := range initArgs {
		if p, ok := strings.CutPrefix(a, "vsock:"); ok {
			if _, err := strconv.ParseUint(p, 10, 32); err == nil {
				a = "unix:/" + guestVsockDir + "/" + p + ".sock"
			}
		}
		args[i] = a
	}
	if err := os.MkdirAll(filepath.Join(root, guestVsockDir), 0o755); err != nil {
		return nil, err
	}
	if err := makeDevNodes(filepath.Join(root, "dev")); err != nil {
		return nil, err
	}
	cmd := &exec.Cmd{
		Path:   initPath,
		Args:   append([]string{initPath}, args...),
		Dir:    "/",
		Env:    []string{"HOME=/", "TERM=linux"}, // what the kernel gives init
		Stdout: os.Stdout,
		Stderr: os.Stdout,
	}
	cmd.SysProcAttr = guestSysProcAttr(root)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting init: %w", err)
	}
	g := &guest{
		cmd: cmd, root: root, done: make(chan struct{}),
		// Relative to the working directory: an absolute path under a
		// long state directory would not fit a unix socket address.
		vsockPath: func(port uint32) string {
			return filepath.Join(guestDirName, "root", guestVsockDir, strconv.FormatUint(uint64(port), 10)+".sock")
		},
	}
	go func() {
		err := cmd.Wait()
		logger.Printf("guest init exited: %v", err)
		close(g.done)
	}()
	return g, nil
}

// devNodes are the nodes a guest kernel's devtmpfs provides that programs
// cannot do without (Go's os/exec opens /dev/null for every command).
var devNodes = []struct {
	name         string
	major, minor uint32
}{
	{"null", 1, 3}, {"zero", 1, 5}, {"full", 1, 7}, {"random", 1, 8}, {"urandom", 1, 9}, {"tty", 5, 0},
}

// makeDevNodes stands in for the devtmpfs a guest kernel mounts on /dev.
func makeDevNodes(dev string) error {
	if err := os.MkdirAll(dev, 0o755); err != nil {
		return err
	}
	for _, n := range devNodes {
		p := filepath.Join(dev, n.name)
		_ = os.Remove(p)
		if err := syscall.Mknod(p, syscall.S_IFCHR|0o666, int(unix.Mkdev(n.major, n.minor))); err != nil {
			return fmt.Errorf("creating /dev/%s for the guest (the fake VMM must run as root): %w", n.name, err)
		}
		if err := os.Chmod(p, 0o666); err != nil {
			return err
		}
	}
	return nil
}

// guestSysProcAttr confines init like a VM would: its own PID namespace
// (it is PID 1 and its death ends every guest process), its own network
// namespace (a VM without a network device has only lo, and it starts
// down), its own mount namespace (the init mounts /proc, /sys, /dev/pts
// and /dev/shm as in a VM; they must not land on the host, and they vanish
// with the guest), chrooted into the guest root, killed if the fake dies.
func guestSysProcAttr(root string) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{
		Chroot:     root,
		Cloneflags: syscall.CLONE_NEWPID | syscall.CLONE_NEWNET,
		// Unshareflags rather than Cloneflags: Go then marks every mount
		// in the new namespace private before the chroot, so no mount
		// propagates back to the host.
		Unshareflags: syscall.CLONE_NEWNS,
		Pdeathsig:    syscall.SIGKILL,
		Setsid:       true,
	}
}

// signal sends sig to every process of the guest (its PID namespace).
func (g *guest) signal(sig syscall.Signal) {
	if g == nil || g.cmd.Process == nil {
		return
	}
	ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid_for_children", g.cmd.Process.Pid))
	if err != nil {
		ns, err = os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", g.cmd.Process.Pid))
	}
	if err != nil {
		return
	}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid)); err == nil && l == ns {
			_ = syscall.Kill(pid, sig)
		}
	}
}

func (g *guest) kill() {
	if g == nil || g.cmd.Process == nil {
		return
	}
	_ = g.cmd.Process.Kill() // PID 1 of the namespace: the rest follow
	select {
	case <-g.done:
	case <-time.After(5 * time.Second):
	}
}

// vsockMux is the VMM side of hybrid vsock: a unix socket that accepts
// "CONNECT <port>\n", answers "OK <host port>\n" and splices the
// connection to the guest's listener on that port; with no listener it
// closes the connection, as Firecracker does.
type vsockMux struct {
	ln       net.Listener
	path     string
	guest    func(port uint32) string
	log      *log.Logger
	nextPort atomic.Uint32

	mu      sync.Mutex
	conns   map[net.Conn]struct{}
	paused  bool
	resumed chan struct{} // closed when a pause ends
}

func listenVsock(udsPath string, guest func(uint32) string, logger *log.Logger) (*vsockMux, error) {
	// Firecracker refuses an existing path rather than removing it.
	ln, err := net.Listen("unix", udsPath)
	if err != nil {
		return nil, err
	}
	m := &vsockMux{ln: ln, path: udsPath, guest: guest, log: logger, conns: map[net.Conn]struct{}{}, resumed: make(chan struct{})}
	m.nextPort.Store(1 << 30)
	go m.accept()
	return m, nil
}

func (m *vsockMux) accept() {
	for {
		c, err := m.ln.Accept()
		if err != nil {
			return
		}
		go m.serve(c)
	}
}

func (m *vsockMux) track(c net.Conn, add bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if add {
		m.conns[c] = struct{}{}
	} else {
		delete(m.conns, c)
	}
}

func (m *vsockMux) waitRunning() {
	m.mu.Lock()
	ch := m.resumed
	paused := m.paused
	m.mu.Unlock()
	if paused {
		<-ch
	}
}

func (m *vsockMux) serve(host net.Conn) {
	m.track(host, true)
	defer m.track(host, false)
	defer host.Close()
	br := bufio.NewReaderSize(host, 64)
	line, err := br.ReadSlice('\n')
	if err != nil {
		return
	}
	f := strings.Fields(string(line))
	if len(f) != 2 || f[0] != "CONNECT" {
		return
	}
	port, err := strconv.ParseUint(f[1], 10, 32)
	if err != nil {
		return
	}
	m.waitRunning() // a paused guest answers nothing
	g, err := net.Dial("unix", m.guest(uint32(port)))
	if err != nil {
		return // nothing listens on that port: Firecracker closes
	}
	m.track(g, true)
	defer m.track(g, false)
	defer g.Close()
	if _, err := fmt.Fprintf(host, "OK %d\n", m.nextPort.Add(1)); err != nil {
		return
	}
	done := make(chan struct{}, 2)
	go func() {
		// Bytes the host sent right after the handshake are in br.
		_, _ = io.Copy(g, br)
		if cw, ok := g.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
		done <- struct{}{}
	}()
	go func() {
		_, _ = io.Copy(host, g)
		if cw, ok := host.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
		done <- struct{}{}
	}()
	<-done
	<-done
}

func (m *vsockMux) pause() {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.paused {
		m.paused = true
		m.resumed = make(chan struct{})
	}
}

func (m *vsockMux) resume() {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.paused {
		m.paused = false
		close(m.resumed)
	}
}

// reset drops every connection, as a snapshot does.
func (m *vsockMux) reset() {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for c := range m.conns {
		c.Close()
	}
}

func (m *vsockMux) close() {
	if m == nil || m.ln == nil {
		return
	}
	m.ln.Close()
	m.reset()
	os.Remove(m.path)
}
