package store

import "time"

// The states of an environment build (EnvBuild.Status). A build is queued
// until a worker claims it, building while dockerd builds it, and then
// ends ready, failed or canceled; the three final states never change.
const (
	BuildQueued   = "queued"
	BuildBuilding = "building"
	BuildReady    = "ready"
	BuildFailed   = "failed"
	BuildCanceled = "canceled"
)

// BuildFinished reports whether status is a final state.
func BuildFinished(status string) bool {
	return status == BuildReady || status == BuildFailed || status == BuildCanceled
}

// EnvSpec is an owner's environment recipe: a base image plus apt and pip
// packages. Specs are immutable once stored; (OwnerID, Name) is unique.
type EnvSpec struct {
	ID             string
	OwnerID        string
	Name           string
	BaseImage      string
	PythonPackages []string
	AptPackages    []string
	PythonVersion  string
	CreatedAt      time.Time
}

// EnvBuild is one build of a spec.
type EnvBuild struct {
	ID      string
	SpecID  string
	OwnerID string // the spec's, copied so that builds list by owner
	Status  string
	Targets []string
	// Image is the content-addressed tag the recipe builds to.
	Image string
	// Log is the build's output so far, bounded by the builder.
	Log string
	// Reason says why a build failed or was canceled.
	Reason string
	// Attempts counts the times a worker claimed the build (a restart
	// mid-build re-queues it once).
	Attempts   int
	Artifacts  []EnvArtifact
	CreatedAt  time.Time
	UpdatedAt  time.Time
	StartedAt  time.Time
	FinishedAt time.Time
}

// EnvArtifact is one product of a build: the local image, a root file
// system for PRoot or Firecracker, or an image pushed to a registry.
type EnvArtifact struct {
	Target string
	Ref    string
	Digest string
	Size   int64
}

// EnvBuildFilter selects builds; zero fields match everything.
type EnvBuildFilter struct {
	OwnerID  string
	SpecID   string
	Statuses []string // any of these
	// Limit, when positive, returns at most that many builds.
	Limit int
}
