// Package fcapi is the part of Firecracker's HTTP API that StacyVM uses:
// request and response bodies as Go types, and a validator for the subset
// of Swagger 2.0 that Firecracker's published API description uses, so that
// tests check every body the provider sends and every body the fake VMM
// answers against that description rather than against our reading of it.
//
// firecracker-api.yaml is Firecracker's own description (Swagger 2.0,
// version 1.17.0-dev, Apache License 2.0, from the firecracker-microvm/
// firecracker repository, src/firecracker/swagger/firecracker.yaml),
// embedded unchanged so that the fake VMM binary is self-contained.
package fcapi

// Paths and action names the provider uses.
const (
	PathRoot           = "/"
	PathMachineConfig  = "/machine-config"
	PathBootSource     = "/boot-source"
	PathDrives         = "/drives/"
	PathVsock          = "/vsock"
	PathEntropy        = "/entropy"
	PathActions        = "/actions"
	PathVM             = "/vm"
	PathSnapshotCreate = "/snapshot/create"
	PathSnapshotLoad   = "/snapshot/load"
	PathVersion        = "/version"

	ActionInstanceStart = "InstanceStart"
	VMPaused            = "Paused"
	VMResumed           = "Resumed"

	StateNotStarted = "Not started"
	StateRunning    = "Running"
	StatePaused     = "Paused"

	BackendFile = "File"
)

// MachineConfiguration is PUT /machine-config.
type MachineConfiguration struct {
	VCPUCount  int `json:"vcpu_count"`
	MemSizeMiB int `json:"mem_size_mib"`
	// SMT stays off: Firecracker's default, and required for odd vCPU counts.
	SMT bool `json:"smt"`
	// TrackDirtyPages is off: StacyVM takes full snapshots only.
	TrackDirtyPages bool `json:"track_dirty_pages,omitempty"`
}

// BootSource is PUT /boot-source.
type BootSource struct {
	KernelImagePath string `json:"kernel_image_path"`
	BootArgs        string `json:"boot_args,omitempty"`
	InitrdPath      string `json:"initrd_path,omitempty"`
}

// Drive is PUT /drives/{drive_id}.
type Drive struct {
	DriveID      string `json:"drive_id"`
	PathOnHost   string `json:"path_on_host"`
	IsRootDevice bool   `json:"is_root_device"`
	IsReadOnly   bool   `json:"is_read_only"`
	CacheType    string `json:"cache_type,omitempty"`
	IOEngine     string `json:"io_engine,omitempty"`
}

// Vsock is PUT /vsock.
type Vsock struct {
	GuestCID int    `json:"guest_cid"`
	UDSPath  string `json:"uds_path"`
}

// EntropyDevice is PUT /entropy: a virtio-rng device fed by the host.
type EntropyDevice struct{}

// InstanceActionInfo is PUT /actions.
type InstanceActionInfo struct {
	ActionType string `json:"action_type"`
}

// VM is PATCH /vm.
type VM struct {
	State string `json:"state"`
}

// SnapshotCreateParams is PUT /snapshot/create.
type SnapshotCreateParams struct {
	MemFilePath  string `json:"mem_file_path"`
	SnapshotPath string `json:"snapshot_path"`
	SnapshotType string `json:"snapshot_type,omitempty"`
}

// MemoryBackend says where a snapshot's guest memory comes from.
type MemoryBackend struct {
	BackendType string `json:"backend_type"`
	BackendPath string `json:"backend_path"`
}

// SnapshotLoadParams is PUT /snapshot/load.
type SnapshotLoadParams struct {
	SnapshotPath string         `json:"snapshot_path"`
	MemBackend   *MemoryBackend `json:"mem_backend,omitempty"`
	// MemFilePath is the deprecated alternative to MemBackend.
	MemFilePath string `json:"mem_file_path,omitempty"`
	ResumeVM    bool   `json:"resume_vm"`
}

// InstanceInfo is the reply to GET /.
type InstanceInfo struct {
	AppName    string `json:"app_name"`
	ID         string `json:"id"`
	State      string `json:"state"`
	VMMVersion string `json:"vmm_version"`
}

// FirecrackerVersion is the reply to GET /version.
type FirecrackerVersion struct {
	FirecrackerVersion string `json:"firecracker_version"`
}

// Error is the body of every failed reply.
type Error struct {
	FaultMessage string `json:"fault_message,omitempty"`
}
