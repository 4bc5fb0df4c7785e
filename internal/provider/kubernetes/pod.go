package kubernetes

import (
	"encoding/json"
	"maps"
	"slices"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/stacyvm/stacyvm/internal/provider"
)

// Labels select a provider's pods; annotations carry what does not fit a
// label value (image names, owners, metadata). Together they are the
// provider's only record of a sandbox: a restarted server finds and adopts
// its pods by them.
const (
	labelPrefix   = "stacyvm.io/"
	LabelID       = "stacyvm.io/sandbox-id"
	LabelProvider = "stacyvm.io/provider"
	// LabelInstance names the server instance that spawned the pod, when
	// the instance id is a valid label value; AnnotationInstance always
	// does.
	LabelInstance = "stacyvm.io/instance"
	// LabelNetwork is "none" or "bridge"; the deny-all NetworkPolicy
	// selects "none".
	LabelNetwork = "stacyvm.io/network"
	// LabelTest marks pods made by tests, so that the tests can find their
	// leftovers and servers never adopt them.
	LabelTest    = "stacyvm.io/test"
	labelManaged = "app.kubernetes.io/managed-by"

	AnnotationImage    = "stacyvm.io/image"
	AnnotationOwner    = "stacyvm.io/owner"
	AnnotationTemplate = "stacyvm.io/template"
	AnnotationCreated  = "stacyvm.io/created"  // RFC 3339, nanoseconds, UTC
	AnnotationMetadata = "stacyvm.io/metadata" // JSON object
	AnnotationInstance = "stacyvm.io/instance"
)

// Names and paths inside every pod.
const (
	podPrefix = "stacyvm-"
	// sandboxContainer runs the image, with the agent as its PID 1.
	sandboxContainer = "sandbox"
	installContainer = "stacyvm-agent-install"
	agentVolume      = "stacyvm-agent"
	runVolume        = "stacyvm-run"
	workspaceVolume  = "stacyvm-workspace"
	// agentDir holds the agent binary, copied there by the init container.
	agentDir    = "/.stacyvm"
	agentTarget = agentDir + "/stacyvm-agent"
	// runDir holds the agent's unix socket.
	runDir     = "/run/stacyvm"
	agentSock  = runDir + "/agent.sock"
	imageAgent = "/stacyvm-agent"
	// denyAllPolicy is the NetworkPolicy that cuts "none" sandboxes off.
	denyAllPolicy = "stacyvm-network-none"
)

// podName is the pod of sandbox id. A fixed name makes a second Spawn of
// one ID fail as a conflict in the API server, and lets every operation
// address the pod without a lookup.
func podName(id string) string { return podPrefix + id }

// bridgeArgv is what the host runs through the exec stream to reach the
// agent: a relay from the stream to the agent's socket.
var bridgeArgv = []string{agentTarget, "--connect", "unix:" + agentSock}

func (p *Provider) podSpec(spec provider.Spec, network string, created time.Time) (*corev1.Pod, error) {
	memMB := spec.MemoryMB
	if memMB == 0 {
		memMB = p.cfg.MemoryMB
	}
	vcpus := spec.VCPUs
	if vcpus == 0 {
		vcpus = p.cfg.VCPUs
	}
	limits := corev1.ResourceList{
		corev1.ResourceMemory: *resource.NewQuantity(int64(memMB)<<20, resource.BinarySI),
		corev1.ResourceCPU:    *resource.NewMilliQuantity(int64(vcpus)*1000, resource.DecimalSI),
	}
	requests := corev1.ResourceList{
		corev1.ResourceMemory: *resource.NewQuantity(int64(min(p.cfg.RequestMemoryMB, memMB))<<20, resource.BinarySI),
		corev1.ResourceCPU:    *resource.NewMilliQuantity(int64(min(p.cfg.RequestMilliCPU, vcpus*1000)), resource.DecimalSI),
	}

	env := make([]corev1.EnvVar, 0, len(spec.Env)+1)
	for _, k := range slices.Sorted(maps.Keys(spec.Env)) {
		env = append(env, corev1.EnvVar{Name: k, Value: spec.Env[k]})
	}
	uid, gid, nonRoot := p.cfg.uidGID()
	if nonRoot && spec.Env["HOME"] == "" {
		// The agent's default HOME is /root, which a non-root user cannot
		// write; its workspace is its own.
		env = append(env, corev1.EnvVar{Name: "HOME", Value: provider.DefaultWorkDir})
	}

	no, yes := false, true
	sc := &corev1.SecurityContext{
		Privileged:               &no,
		AllowPrivilegeEscalation: &no,
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
	podSC := &corev1.PodSecurityContext{}
	if nonRoot {
		sc.RunAsUser, sc.RunAsGroup = &uid, &gid
		sc.RunAsNonRoot = &yes
		if uid == 0 {
			sc.RunAsNonRoot = &no
		}
		// Volumes (the workspace) are group-owned by gid.
		podSC.FSGroup = &gid
	}

	mounts := []corev1.VolumeMount{
		{Name: agentVolume, MountPath: agentDir, ReadOnly: true},
		{Name: runVolume, MountPath: runDir},
	}
	volumes := []corev1.Volume{
		{Name: agentVolume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		{Name: runVolume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{
			Medium: corev1.StorageMediumMemory, SizeLimit: resource.NewQuantity(1<<20, resource.BinarySI)}}},
	}
	if nonRoot {
		// The image's /workspace (or the one the runtime creates) belongs
		// to root.
		mounts = append(mounts, corev1.VolumeMount{Name: workspaceVolume, MountPath: provider.DefaultWorkDir})
		volumes = append(volumes, corev1.Volume{Name: workspaceVolume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}})
	}

	labels, annotations, err := p.labels(spec, network, created)
	if err != nil {
		return nil, err
	}
	grace := int64(p.cfg.DeleteGrace / time.Second)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:        podName(spec.ID),
			Namespace:   p.cfg.Namespace,
			Labels:      labels,
			Annotations: annotations,
		},
		Spec: corev1.PodSpec{
			NodeName:      p.cfg.NodeName,
			RestartPolicy: corev1.RestartPolicyNever,
			Hostname:      spec.ID,
			// Sandboxes talk to nobody's API: no token, and no service
			// variables in their environment.
			AutomountServiceAccountToken:  &no,
			EnableServiceLinks:            &no,
			TerminationGracePeriodSeconds: &grace,
			SecurityContext:               podSC,
			InitContainers: []corev1.Container{{
				Name:            installContainer,
				Image:           p.cfg.AgentImage,
				ImagePullPolicy: corev1.PullIfNotPresent,
				Command:         []string{imageAgent, "--install", agentTarget},
				VolumeMounts:    []corev1.VolumeMount{{Name: agentVolume, MountPath: agentDir}},
				SecurityContext: sc,
				Resources:       corev1.ResourceRequirements{Limits: limits, Requests: requests},
			}},
			Containers: []corev1.Container{{
				Name:            sandboxContainer,
				Image:           spec.Image,
				ImagePullPolicy: corev1.PullPolicy(p.cfg.PullPolicy),
				// The agent replaces the image's entrypoint and command: it
				// is the container's PID 1, reaps orphans, and runs every
				// command.
				Command:         []string{agentTarget, "--listen", "unix:" + agentSock, "--root", "/"},
				WorkingDir:      provider.DefaultWorkDir,
				Env:             env,
				VolumeMounts:    mounts,
				SecurityContext: sc,
				Resources:       corev1.ResourceRequirements{Limits: limits, Requests: requests},
			}},
			Volumes: volumes,
		},
	}
	if p.cfg.RuntimeClass != "" {
		pod.Spec.RuntimeClassName = &p.cfg.RuntimeClass
	}
	return pod, nil
}

func (p *Provider) labels(spec provider.Spec, network string, created time.Time) (map[string]string, map[string]string, error) {
	labels := make(map[string]string, 6+len(p.cfg.Labels))
	maps.Copy(labels, p.cfg.Labels)
	labels[labelManaged] = "stacyvm"
	labels[LabelProvider] = p.cfg.Name
	labels[LabelID] = spec.ID
	labels[LabelNetwork] = network
	if spec.Instance != "" && len(spec.Instance) <= 63 && validLabelValue(spec.Instance) {
		labels[LabelInstance] = spec.Instance
	}
	annotations := map[string]string{
		AnnotationImage:    spec.Image,
		AnnotationOwner:    spec.OwnerID,
		AnnotationTemplate: spec.Template,
		AnnotationCreated:  created.UTC().Format(time.RFC3339Nano),
	}
	if spec.Instance != "" {
		annotations[AnnotationInstance] = spec.Instance
	}
	if len(spec.Metadata) > 0 {
		b, err := json.Marshal(spec.Metadata)
		if err != nil {
			return nil, nil, err
		}
		annotations[AnnotationMetadata] = string(b)
	}
	return labels, annotations, nil
}

// validLabelValue: letters, digits, '-', '_' and '.', starting and ending
// with a letter or digit.
func validLabelValue(v string) bool {
	for i, r := range v {
		alnum := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
		if !alnum && (i == 0 || i == len(v)-1 || (r != '-' && r != '_' && r != '.')) {
			return false
		}
	}
	return v != ""
}

// infoOf rebuilds what Spawn knew from a pod.
func infoOf(pod *corev1.Pod) provider.Info {
	a := pod.Annotations
	info := provider.Info{
		ID:       pod.Labels[LabelID],
		State:    stateOf(pod),
		Image:    a[AnnotationImage],
		Handle:   pod.Namespace + "/" + pod.Name,
		OwnerID:  a[AnnotationOwner],
		Template: a[AnnotationTemplate],
		Created:  pod.CreationTimestamp.UTC(),
		Instance: a[AnnotationInstance],
	}
	if pod.Spec.RuntimeClassName != nil {
		info.Runtime = *pod.Spec.RuntimeClassName
	}
	if t, err := time.Parse(time.RFC3339Nano, a[AnnotationCreated]); err == nil {
		info.Created = t
	}
	if m := a[AnnotationMetadata]; m != "" {
		_ = json.Unmarshal([]byte(m), &info.Metadata)
	}
	return info
}

// stateOf maps a pod to the API's states: creating until the sandbox
// container runs, stopped once it has ended (the pods never restart),
// destroyed while being deleted.
func stateOf(pod *corev1.Pod) provider.State {
	if pod.DeletionTimestamp != nil {
		return provider.StateDestroyed
	}
	switch pod.Status.Phase {
	case corev1.PodSucceeded, corev1.PodFailed:
		return provider.StateStopped
	case corev1.PodPending:
		return provider.StateCreating
	case corev1.PodRunning:
		if cs := sandboxStatus(pod); cs != nil && cs.State.Running != nil {
			return provider.StateRunning
		}
		return provider.StateStopped
	}
	return provider.StateError
}

func sandboxStatus(pod *corev1.Pod) *corev1.ContainerStatus {
	for i := range pod.Status.ContainerStatuses {
		if pod.Status.ContainerStatuses[i].Name == sandboxContainer {
			return &pod.Status.ContainerStatuses[i]
		}
	}
	return nil
}

// denyAll is the NetworkPolicy that selects the namespace's "none"
// sandboxes and allows them nothing, in or out.
func denyAll(namespace string) *networkingv1.NetworkPolicy {
	return &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{
			Name:      denyAllPolicy,
			Namespace: namespace,
			Labels:    map[string]string{labelManaged: "stacyvm"},
		},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{LabelNetwork: "none"}},
			// Both types with no rules: no traffic in, none out.
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress},
		},
	}
}

// terminated describes why a container ended, for errors.
func terminated(t *corev1.ContainerStateTerminated) string {
	s := "exit code " + strconv.Itoa(int(t.ExitCode))
	if t.Reason != "" {
		s += ", " + t.Reason
	}
	if t.Message != "" {
		s += ": " + t.Message
	}
	return s
}
