package docker

import (
	"maps"
	"strings"
	"time"

	"github.com/moby/moby/api/types/container"

	"github.com/stacyvm/stacyvm/internal/provider"
)

// Labels on every container the provider creates. They are the provider's
// only record of a sandbox: a restarted server finds and adopts its
// containers by them.
const (
	labelPrefix   = "stacyvm."
	LabelID       = "stacyvm.sandbox-id"
	LabelProvider = "stacyvm.provider"
	LabelImage    = "stacyvm.image"
	LabelOwner    = "stacyvm.owner"
	LabelTemplate = "stacyvm.template"
	LabelCreated  = "stacyvm.created" // RFC 3339, nanoseconds, UTC
	LabelMeta     = "stacyvm.meta."   // + metadata key
	// LabelRuntime records the OCI runtime, so that List can report it
	// without an inspect per container.
	LabelRuntime = "stacyvm.runtime"
	// LabelTest marks containers made by tests, so that the tests and
	// scripts/ci/docker-down.sh can find leftovers.
	LabelTest = "stacyvm.test"
	// LabelInstance names the server instance that spawned the container.
	LabelInstance = "stacyvm.instance"
)

// containerName is the container of sandbox id. A fixed name makes a second
// Spawn of one ID fail as a conflict in dockerd, and lets every operation
// address the container without a lookup table.
func containerName(id string) string { return "stacyvm-" + id }

func (p *Provider) labels(spec provider.Spec, created time.Time) map[string]string {
	l := make(map[string]string, 8+len(spec.Metadata)+len(p.cfg.Labels))
	maps.Copy(l, p.cfg.Labels)
	l[LabelID] = spec.ID
	l[LabelProvider] = p.cfg.Name
	l[LabelImage] = spec.Image
	l[LabelOwner] = spec.OwnerID
	l[LabelTemplate] = spec.Template
	l[LabelCreated] = created.UTC().Format(time.RFC3339Nano)
	l[LabelRuntime] = p.runtime
	if spec.Instance != "" {
		l[LabelInstance] = spec.Instance
	}
	for k, v := range spec.Metadata {
		l[LabelMeta+k] = v
	}
	return l
}

// infoFromLabels rebuilds what Spawn knew from a container's labels.
func infoFromLabels(labels map[string]string, containerID string, fallbackCreated time.Time) provider.Info {
	info := provider.Info{
		ID:       labels[LabelID],
		Image:    labels[LabelImage],
		Handle:   containerID,
		OwnerID:  labels[LabelOwner],
		Template: labels[LabelTemplate],
		Created:  fallbackCreated.UTC(),
		Instance: labels[LabelInstance],
	}
	if t, err := time.Parse(time.RFC3339Nano, labels[LabelCreated]); err == nil {
		info.Created = t
	}
	for k, v := range labels {
		if mk, ok := strings.CutPrefix(k, LabelMeta); ok {
			if info.Metadata == nil {
				info.Metadata = map[string]string{}
			}
			info.Metadata[mk] = v
		}
	}
	return info
}

// stateOf maps dockerd's container state to the API's.
func stateOf(s container.ContainerState) provider.State {
	switch s {
	case container.StateCreated:
		return provider.StateCreating
	case container.StateRunning, container.StateRestarting:
		return provider.StateRunning
	case container.StatePaused:
		return provider.StatePaused
	case container.StateRemoving:
		return provider.StateDestroyed
	case container.StateExited, container.StateDead:
		return provider.StateStopped
	}
	return provider.StateError
}
