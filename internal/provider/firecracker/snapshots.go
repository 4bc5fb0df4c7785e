package firecracker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/stacyvm/stacyvm/internal/provider/firecracker/fcapi"
)

// Files of a base snapshot.
const (
	snapStateName = "vm.snap"
	snapMemName   = "mem"
	snapMetaName  = "meta.json"
)

// shape is what a VM is booted with besides its image. A snapshot serves
// only spawns of the same shape.
type shape struct {
	VCPUs    int `json:"vcpus"`
	MemoryMB int `json:"memory_mb"`
	DiskMB   int `json:"disk_mb,omitempty"`
}

// snapshotMeta describes one base snapshot.
type snapshotMeta struct {
	Key         string    `json:"key"`
	Image       string    `json:"image"`
	ImageDigest string    `json:"image_digest"`
	Shape       shape     `json:"shape"`
	Created     time.Time `json:"created"`
}

// snapshotStore keeps base snapshots under dir, one directory per key.
// A snapshot directory appears by rename, complete, or not at all.
type snapshotStore struct {
	dir string
	// machine identifies everything besides image and shape that a
	// snapshot depends on: kernel, VMM build, boot arguments, devices.
	machine string

	mu      sync.Mutex
	pending map[string]bool // keys being created now
}

func newSnapshotStore(dir, machine string) (*snapshotStore, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	// Half-written snapshots of a crashed server.
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "tmp-") {
			_ = os.RemoveAll(filepath.Join(dir, e.Name()))
		}
	}
	return &snapshotStore{dir: dir, machine: machine, pending: map[string]bool{}}, nil
}

func (s *snapshotStore) key(imageDigest string, sh shape) string {
	h := sha256.New()
	fmt.Fprintf(h, "stacyvm-firecracker-snapshot-v1\x00%s\x00%s\x00%d\x00%d\x00%d",
		s.machine, imageDigest, sh.VCPUs, sh.MemoryMB, sh.DiskMB)
	return hex.EncodeToString(h.Sum(nil))[:32]
}

func (s *snapshotStore) path(key string) string { return filepath.Join(s.dir, key) }

// lookup returns the snapshot for key if it is complete.
func (s *snapshotStore) lookup(key string) (snapshotMeta, bool) {
	dir := s.path(key)
	b, err := os.ReadFile(filepath.Join(dir, snapMetaName))
	if err != nil {
		return snapshotMeta{}, false
	}
	var m snapshotMeta
	if json.Unmarshal(b, &m) != nil || m.Key != key {
		return snapshotMeta{}, false
	}
	for _, f := range []string{snapStateName, snapMemName, driveName} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			return snapshotMeta{}, false
		}
	}
	return m, true
}

// claim marks key as being created; false when it exists or another spawn
// is creating it.
func (s *snapshotStore) claim(key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pending[key] {
		return false
	}
	if _, ok := s.lookup(key); ok {
		return false
	}
	s.pending[key] = true
	return true
}

func (s *snapshotStore) release(key string) {
	s.mu.Lock()
	delete(s.pending, key)
	s.mu.Unlock()
}

// create pauses the running VM, has the VMM write its state and memory,
// copies its drive as the snapshot's drive (while paused, so that disk and
// memory agree), and resumes it.
func (s *snapshotStore) create(ctx context.Context, api *vmmClient, vmDir string, meta snapshotMeta) (err error) {
	tmp, err := os.MkdirTemp(s.dir, "tmp-")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(tmp)
		}
	}()
	if err := api.setVMState(ctx, fcapi.VMPaused); err != nil {
		return fmt.Errorf("pausing: %w", err)
	}
	resumed := false
	defer func() {
		if !resumed {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			if rerr := api.setVMState(rctx, fcapi.VMResumed); rerr != nil {
				err = errors.Join(err, fmt.Errorf("resuming: %w", rerr))
			}
		}
	}()
	if err := fullSnapshot(ctx, api, tmp); err != nil {
		return err
	}
	if err := cloneFile(filepath.Join(vmDir, driveName), filepath.Join(tmp, driveName)); err != nil {
		return fmt.Errorf("copying the drive: %w", err)
	}
	resumed = true
	if err := api.setVMState(ctx, fcapi.VMResumed); err != nil {
		return fmt.Errorf("resuming: %w", err)
	}
	b, _ := json.MarshalIndent(meta, "", "  ")
	if err := os.WriteFile(filepath.Join(tmp, snapMetaName), b, 0o600); err != nil {
		return err
	}
	if err := os.Rename(tmp, s.path(meta.Key)); err != nil {
		return err
	}
	return nil
}

// fullSnapshot has the VMM of a paused VM write its state (snapStateName)
// and memory (snapMemName) into dir: a base snapshot's, or a sandbox's own
// when it is paused to disk.
func fullSnapshot(ctx context.Context, api *vmmClient, dir string) error {
	if err := api.createSnapshot(ctx, fcapi.SnapshotCreateParams{
		SnapshotPath: filepath.Join(dir, snapStateName),
		MemFilePath:  filepath.Join(dir, snapMemName),
		SnapshotType: "Full",
	}); err != nil {
		return fmt.Errorf("creating snapshot: %w", err)
	}
	return nil
}

// list returns every complete snapshot, newest first.
func (s *snapshotStore) list() []snapshotMeta {
	ents, _ := os.ReadDir(s.dir)
	var out []snapshotMeta
	for _, e := range ents {
		if !e.IsDir() || strings.HasPrefix(e.Name(), "tmp-") {
			continue
		}
		if m, ok := s.lookup(e.Name()); ok {
			out = append(out, m)
		}
	}
	slices.SortFunc(out, func(a, b snapshotMeta) int { return b.Created.Compare(a.Created) })
	return out
}

// remove deletes a snapshot. VMs restored from it keep running: their
// memory mapping of the file outlives its name.
func (s *snapshotStore) remove(key string) {
	_ = os.RemoveAll(s.path(key))
}

// invalidateImage removes the snapshots of image digest d.
func (s *snapshotStore) invalidateImage(d string) int {
	n := 0
	for _, m := range s.list() {
		if m.ImageDigest == d {
			s.remove(m.Key)
			n++
		}
	}
	return n
}
