// Package kubernetes is the Kubernetes provider: each sandbox is a Pod,
// and every command and file operation goes through the StacyVM agent
// running in it as the sandbox container's PID 1.
//
// The agent enters the pod without changing its image: an init container
// runs an image holding the agent (Config.AgentImage), which copies itself
// into an emptyDir volume that the sandbox container mounts read-only. The
// host reaches the agent through the API server's exec stream (conn.go).
//
// The provider keeps no state of its own: pod labels and annotations say
// everything needed to find and adopt a sandbox after a restart.
// docs/kubernetes.md is the operator's guide.
package kubernetes

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
	k8s "k8s.io/client-go/kubernetes"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/stacyvm/stacyvm/internal/agent"
	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/provider"
)

// Provider runs sandboxes as pods. It is safe for concurrent use.
type Provider struct {
	provider.GuestRouter

	cfg  Config
	rest *rest.Config
	cs   *k8s.Clientset

	mu   sync.Mutex
	live map[string]*agent.Client // by sandbox ID; a cache, rebuilt from the API server on a miss
	// gone remembers recently destroyed IDs, so that operations on them
	// fail with ErrSandboxDestroyed rather than ErrSandboxNotFound.
	gone map[string]time.Time
}

var (
	_ provider.Provider  = (*Provider)(nil)
	_ provider.Inventory = (*Provider)(nil)
)

// goneTTL is how long a destroyed ID is remembered.
const goneTTL = time.Hour

// New connects to the cluster and checks that the provider may list pods
// in its namespace. Its error says what failed and is classified
// errdefs.ErrProviderUnavailable (or ErrInvalidArgument for a bad Config),
// so that the registry can record why the provider declined.
func New(ctx context.Context, cfg Config) (*Provider, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	quietKlog(cfg.Logger)
	rc, err := restConfig(cfg)
	if err != nil {
		return nil, errdefs.WithHint(errdefs.Wrap(errdefs.ErrProviderUnavailable, err, "kubernetes: client configuration"), apiHint)
	}
	// Exec streams and status polls of many sandboxes share the client:
	// client-go's default rate (5 per second) would queue them.
	rc.QPS, rc.Burst = 100, 200
	rc.UserAgent = "stacyvm"
	cs, err := k8s.NewForConfig(rc)
	if err != nil {
		return nil, errdefs.Wrap(errdefs.ErrInvalidArgument, err, "kubernetes: client")
	}
	p := &Provider{cfg: cfg, rest: rc, cs: cs, live: map[string]*agent.Client{}, gone: map[string]time.Time{}}
	p.GuestRouter = provider.GuestRouter{Lookup: p.lookup}
	if err := p.Health(ctx); err != nil {
		return nil, err
	}
	return p, nil
}

func restConfig(cfg Config) (*rest.Config, error) {
	if cfg.Kubeconfig == "" && cfg.Context == "" {
		if rc, err := rest.InClusterConfig(); err == nil {
			return rc, nil
		}
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if cfg.Kubeconfig != "" {
		rules.ExplicitPath = cfg.Kubeconfig
	}
	return clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules,
		&clientcmd.ConfigOverrides{CurrentContext: cfg.Context}).ClientConfig()
}

func (p *Provider) pods() typedcorev1.PodInterface { return p.cs.CoreV1().Pods(p.cfg.Namespace) }

// Close releases the provider's connections. Sandboxes keep running.
func (p *Provider) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, g := range p.live {
		g.Close()
	}
	p.live = map[string]*agent.Client{}
	return nil
}

// Name returns the configured provider name ("kubernetes" by default).
func (p *Provider) Name() string { return p.cfg.Name }

// Capabilities: containers (or whatever the RuntimeClass gives), with
// streaming exec, adoption, networking by NetworkPolicy and enforced
// memory and CPU limits.
func (p *Provider) Capabilities() provider.Capabilities {
	iso := provider.IsolationContainer
	switch p.cfg.RuntimeClass {
	case "gvisor", "runsc":
		iso = provider.IsolationUserKernel
	case "kata", "kata-qemu", "kata-fc", "kata-clh":
		iso = provider.IsolationVM
	}
	return provider.Capabilities{
		Isolation:      iso,
		Streaming:      true,
		Adoption:       true,
		Network:        true,
		ResourceLimits: true,
		Symlinks:       true,
		// Stdin, signals and terminals travel in the agent protocol,
		// over an exec stream like everything else.
		Stdin:    true,
		Signals:  true,
		Terminal: true,
	}
}

// Health lists at most one of the provider's pods: the API server answers
// and the provider may read its namespace.
func (p *Provider) Health(ctx context.Context) error {
	_, err := p.pods().List(ctx, metav1.ListOptions{Limit: 1, LabelSelector: LabelProvider + "=" + p.cfg.Name})
	if err != nil {
		if cerr := context.Cause(ctx); cerr != nil {
			return errdefs.Wrap(errdefs.ErrProviderUnavailable, cerr, "kubernetes: the API server did not answer")
		}
		return errdefs.WithHint(errdefs.Wrap(errdefs.ErrProviderUnavailable, err,
			"kubernetes: listing pods in namespace %q", p.cfg.Namespace), apiHint)
	}
	return nil
}

// apiCallTimeout bounds the API calls that run on a context of their own
// because abandoning them would leak (create, cleanup).
const apiCallTimeout = time.Minute

// Spawn creates the sandbox's pod, waits for it to run and for its agent
// to answer. On any failure it deletes the pod.
func (p *Provider) Spawn(ctx context.Context, spec provider.Spec) (provider.Info, error) {
	if err := checkID(spec.ID); err != nil {
		return provider.Info{}, err
	}
	if spec.Image == "" {
		return provider.Info{}, errdefs.New(errdefs.ErrInvalidArgument, "kubernetes: image is required")
	}
	if spec.MemoryMB < 0 || spec.VCPUs < 0 || spec.DiskMB < 0 {
		return provider.Info{}, errdefs.New(errdefs.ErrInvalidArgument, "kubernetes: negative resource in spec")
	}
	if spec.DiskMB > 0 {
		return provider.Info{}, errdefs.WithHint(errdefs.New(errdefs.ErrUnimplemented,
			"kubernetes: disk_mb cannot be enforced: ephemeral-storage limits are checked by eviction, not enforced"),
			"omit disk_mb")
	}
	network := p.cfg.Network
	switch spec.Network {
	case "":
	case "none", "bridge":
		network = spec.Network
	default:
		return provider.Info{}, errdefs.New(errdefs.ErrInvalidArgument, "kubernetes: network %q: want none or bridge", spec.Network)
	}
	for k, v := range spec.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") || strings.ContainsRune(v, 0) {
			return provider.Info{}, errdefs.New(errdefs.ErrInvalidArgument, "kubernetes: invalid environment variable %q", k)
		}
	}
	if network == "none" {
		if err := p.ensureDenyAll(ctx); err != nil {
			return provider.Info{}, err
		}
	}
	created := time.Now().UTC()
	pod, err := p.podSpec(spec, network, created)
	if err != nil {
		return provider.Info{}, errdefs.Wrap(errdefs.ErrInvalidArgument, err, "kubernetes: pod for %s", spec.ID)
	}
	pod, err = p.create(ctx, spec.ID, pod)
	if err != nil {
		return provider.Info{}, err
	}
	guest := agent.NewClient(p.dialer(spec.ID), agent.WithLimits(p.cfg.AgentLimits))
	if err := p.start(ctx, spec.ID, pod, guest); err != nil {
		guest.Close()
		p.cleanup(spec.ID, pod)
		return provider.Info{}, err
	}
	p.mu.Lock()
	p.live[spec.ID] = guest
	delete(p.gone, spec.ID)
	p.mu.Unlock()
	info := infoOf(pod)
	info.State = provider.StateRunning
	return info, nil
}

// ensureDenyAll creates the namespace's deny-all NetworkPolicy if it is
// missing. A sandbox without network must not start without it.
func (p *Provider) ensureDenyAll(ctx context.Context) error {
	np := p.cs.NetworkingV1().NetworkPolicies(p.cfg.Namespace)
	_, err := np.Get(ctx, denyAllPolicy, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = np.Create(ctx, denyAll(p.cfg.Namespace), metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			err = nil
		}
	}
	return classify(err, "kubernetes: NetworkPolicy %s for sandboxes without network", denyAllPolicy)
}

// create creates the pod. The API server completes a create even when its
// client hangs up, so the call does not take the caller's cancellation (the
// caller's context is checked once it answered), and a create that failed
// anyway is followed by a removal of what it may have made.
func (p *Provider) create(ctx context.Context, id string, pod *corev1.Pod) (*corev1.Pod, error) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), apiCallTimeout)
	defer cancel()
	made, err := p.pods().Create(cctx, pod, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return nil, errdefs.New(errdefs.ErrConflict, "kubernetes: sandbox %s already exists", id)
	}
	if err != nil {
		// A pod under this name carrying this spawn's creation stamp is
		// the one this create made before it failed.
		if cur, gerr := p.pods().Get(cctx, pod.Name, metav1.GetOptions{}); gerr == nil &&
			cur.Labels[LabelID] == id && cur.Annotations[AnnotationCreated] == pod.Annotations[AnnotationCreated] {
			p.cleanup(id, cur)
		}
		return nil, classify(err, "kubernetes: create pod for %s", id)
	}
	if ctx.Err() != nil {
		p.cleanup(id, made)
		return nil, fmt.Errorf("kubernetes: spawn %s: %w", id, context.Cause(ctx))
	}
	return made, nil
}

// start waits for the pod's sandbox container to run and its agent to
// answer, within ReadyTimeout. A pod that cannot run (an image that is
// not there, a kubelet that refuses it) fails at once with the reason.
func (p *Provider) start(ctx context.Context, id string, pod *corev1.Pod, guest *agent.Client) error {
	rctx, cancel := context.WithTimeoutCause(ctx, p.cfg.ReadyTimeout,
		fmt.Errorf("the sandbox did not start within %s", p.cfg.ReadyTimeout))
	defer cancel()
	if err := p.waitRunning(rctx, id, pod); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("kubernetes: spawn %s: %w", id, context.Cause(ctx))
		}
		return err
	}
	if err := guest.WaitReady(rctx); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("kubernetes: spawn %s: %w", id, context.Cause(ctx))
		}
		return errdefs.Wrap(errdefs.ErrProviderUnavailable, err, "kubernetes: sandbox %s agent did not start", id)
	}
	return nil
}

// waitRunning watches the pod until its sandbox container runs.
func (p *Provider) waitRunning(ctx context.Context, id string, pod *corev1.Pod) error {
	sel := fields.OneTermEqualSelector("metadata.name", pod.Name).String()
	for {
		if done, err := podStarted(id, pod); done {
			return err
		}
		w, err := p.pods().Watch(ctx, metav1.ListOptions{FieldSelector: sel, ResourceVersion: pod.ResourceVersion})
		if err != nil {
			if ctx.Err() != nil {
				return p.startTimeout(ctx, id, pod)
			}
			return classify(err, "kubernetes: watch pod of %s", id)
		}
		expired := false
		for ev := range w.ResultChan() {
			switch ev.Type {
			case watch.Deleted:
				w.Stop()
				return errdefs.New(errdefs.ErrConflict, "kubernetes: the pod of sandbox %s was deleted while it started", id)
			case watch.Added, watch.Modified:
				if np, ok := ev.Object.(*corev1.Pod); ok {
					pod = np
					if done, err := podStarted(id, pod); done {
						w.Stop()
						return err
					}
				}
			case watch.Error:
				// Typically a resource version too old to watch from.
				expired = true
			}
			if expired {
				break
			}
		}
		w.Stop()
		if ctx.Err() != nil {
			return p.startTimeout(ctx, id, pod)
		}
		// The watch ended (a timeout of the API server, an expired
		// version): read the pod again and watch from there.
		cur, err := p.pods().Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			if ctx.Err() != nil {
				return p.startTimeout(ctx, id, pod)
			}
			if apierrors.IsNotFound(err) {
				return errdefs.New(errdefs.ErrConflict, "kubernetes: the pod of sandbox %s was deleted while it started", id)
			}
			return classify(err, "kubernetes: read pod of %s", id)
		}
		pod = cur
	}
}

func (p *Provider) startTimeout(ctx context.Context, id string, pod *corev1.Pod) error {
	return errdefs.Wrap(errdefs.ErrProviderUnavailable, context.Cause(ctx),
		"kubernetes: sandbox %s: %s", id, describe(pod))
}

// Waiting reasons that do not resolve by waiting longer.
var fatalWaiting = map[string]bool{
	"ErrImagePull": true, "ImagePullBackOff": true, "ErrImageNeverPull": true, "InvalidImageName": true,
	"CreateContainerConfigError": true, "CreateContainerError": true, "RunContainerError": true,
	"CrashLoopBackOff": true,
}

// podStarted reports whether the pod's sandbox container runs (done, nil)
// or never will (done, the reason).
func podStarted(id string, pod *corev1.Pod) (bool, error) {
	if pod.DeletionTimestamp != nil {
		return true, errdefs.New(errdefs.ErrConflict, "kubernetes: the pod of sandbox %s is being deleted", id)
	}
	for _, cs := range pod.Status.InitContainerStatuses {
		if t := cs.State.Terminated; t != nil && t.ExitCode != 0 {
			return true, errdefs.WithHint(errdefs.New(errdefs.ErrProviderUnavailable,
				"kubernetes: sandbox %s: installing the agent failed (%s)", id, terminated(t)),
				"kubernetes.agent_image must hold a static stacyvm-agent at /stacyvm-agent")
		}
		if w := cs.State.Waiting; w != nil && fatalWaiting[w.Reason] {
			return true, errdefs.WithHint(errdefs.New(errdefs.ErrProviderUnavailable,
				"kubernetes: sandbox %s: agent image %s: %s: %s", id, cs.Image, w.Reason, w.Message),
				"make kubernetes.agent_image available to the cluster's nodes")
		}
	}
	if cs := sandboxStatus(pod); cs != nil {
		switch {
		case cs.State.Running != nil:
			return true, nil
		case cs.State.Terminated != nil:
			return true, errdefs.New(errdefs.ErrProviderUnavailable,
				"kubernetes: sandbox %s: the container ended at once (%s)", id, terminated(cs.State.Terminated))
		case cs.State.Waiting != nil && fatalWaiting[cs.State.Waiting.Reason]:
			w := cs.State.Waiting
			class := errdefs.ErrProviderUnavailable
			if strings.Contains(w.Reason, "Image") {
				class = errdefs.ErrNotFound
			}
			return true, errdefs.WithHint(errdefs.New(class, "kubernetes: sandbox %s: image %q: %s: %s", id, cs.Image, w.Reason, w.Message),
				"check the image name, and that the cluster's nodes can pull it (or have it, with pull_policy IfNotPresent)")
		}
	}
	if pod.Status.Phase == corev1.PodFailed || pod.Status.Phase == corev1.PodSucceeded {
		class := errdefs.ErrProviderUnavailable
		if strings.HasPrefix(pod.Status.Reason, "OutOf") {
			// The kubelet refused it: OutOfcpu, OutOfmemory, OutOfpods.
			class = errdefs.ErrResourceLimit
		}
		return true, errdefs.New(class, "kubernetes: sandbox %s: pod %s: %s %s", id, pod.Status.Phase, pod.Status.Reason, pod.Status.Message)
	}
	return false, nil
}

// describe says where a pod that has not started is stuck.
func describe(pod *corev1.Pod) string {
	parts := []string{"pod " + string(pod.Status.Phase)}
	for _, c := range pod.Status.Conditions {
		if c.Status != corev1.ConditionTrue && c.Reason != "" {
			parts = append(parts, fmt.Sprintf("%s: %s %s", c.Type, c.Reason, c.Message))
		}
	}
	for _, cs := range append(pod.Status.InitContainerStatuses, pod.Status.ContainerStatuses...) {
		if w := cs.State.Waiting; w != nil {
			parts = append(parts, fmt.Sprintf("container %s waiting: %s %s", cs.Name, w.Reason, w.Message))
		}
	}
	if pod.Spec.NodeName == "" {
		parts = append(parts, "no node assigned (is a scheduler running, or kubernetes.node_name set?)")
	}
	return strings.Join(parts, "; ")
}

// cleanup deletes a failed spawn's pod at once, even if the caller gave up.
func (p *Provider) cleanup(id string, pod *corev1.Pod) {
	ctx, cancel := context.WithTimeout(context.Background(), apiCallTimeout)
	defer cancel()
	zero := int64(0)
	err := p.pods().Delete(ctx, pod.Name, metav1.DeleteOptions{
		GracePeriodSeconds: &zero,
		Preconditions:      &metav1.Preconditions{UID: &pod.UID},
	})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		p.cfg.Logger.Warn("kubernetes: deleting the pod of a failed spawn", "sandbox", id, "err", err)
	}
}

// owned returns the pod of sandbox id if this provider owns it.
func (p *Provider) owned(ctx context.Context, id string) (*corev1.Pod, error) {
	if checkID(id) != nil {
		return nil, errdefs.New(errdefs.ErrSandboxNotFound, "sandbox %q not found", id)
	}
	pod, err := p.pods().Get(ctx, podName(id), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, p.missing(id)
	}
	if err != nil {
		return nil, classify(err, "kubernetes: read pod of sandbox %s", id)
	}
	if pod.Labels[LabelProvider] != p.cfg.Name || pod.Labels[LabelID] != id {
		// Same name, someone else's pod: not ours to show or touch.
		return nil, errdefs.New(errdefs.ErrSandboxNotFound, "sandbox %s not found", id)
	}
	return pod, nil
}

// missing is the error for an ID with no pod.
func (p *Provider) missing(id string) error {
	p.mu.Lock()
	_, gone := p.gone[id]
	p.mu.Unlock()
	if gone {
		return errdefs.New(errdefs.ErrSandboxDestroyed, "sandbox %s was destroyed", id)
	}
	return errdefs.New(errdefs.ErrSandboxNotFound, "sandbox %s not found", id)
}

// forget drops a cached sandbox whose pod went away behind our back.
func (p *Provider) forget(id string) {
	p.mu.Lock()
	g := p.live[id]
	delete(p.live, id)
	p.mu.Unlock()
	if g != nil {
		g.Close()
	}
}

// lookup finds the agent client of a sandbox: from the cache, or by
// reading its pod, which is how a new Provider re-attaches to sandboxes a
// previous one spawned.
func (p *Provider) lookup(ctx context.Context, id string) (provider.Guest, error) {
	p.mu.Lock()
	g := p.live[id]
	p.mu.Unlock()
	if g != nil {
		return g, nil
	}
	pod, err := p.owned(ctx, id)
	if err != nil {
		return nil, err
	}
	if pod.DeletionTimestamp != nil {
		return nil, errdefs.New(errdefs.ErrSandboxDestroyed, "sandbox %s is being destroyed", id)
	}
	if st := stateOf(pod); st != provider.StateRunning {
		return nil, notRunning(id, string(st))
	}
	g = agent.NewClient(p.dialer(id), agent.WithLimits(p.cfg.AgentLimits))
	p.mu.Lock()
	if cur := p.live[id]; cur != nil {
		g.Close()
		g = cur
	} else {
		p.live[id] = g
	}
	p.mu.Unlock()
	return g, nil
}

// Status reports the API server's view of the sandbox's pod. A pod being
// deleted is a destroyed sandbox.
func (p *Provider) Status(ctx context.Context, id string) (provider.Info, error) {
	pod, err := p.owned(ctx, id)
	if err != nil {
		return provider.Info{}, err
	}
	if pod.DeletionTimestamp != nil {
		return provider.Info{}, errdefs.New(errdefs.ErrSandboxDestroyed, "sandbox %s is being destroyed", id)
	}
	return infoOf(pod), nil
}

// Destroy deletes the pod with a short grace period and waits for the
// kubelet to have stopped it (its commands die with it), up to
// DeleteWait; then it removes the pod object at once. Unknown IDs, and
// IDs whose pod is already gone, are not an error.
func (p *Provider) Destroy(ctx context.Context, id string) error {
	if checkID(id) != nil {
		return nil
	}
	p.mu.Lock()
	g := p.live[id]
	delete(p.live, id)
	p.gone[id] = time.Now()
	for gid, at := range p.gone {
		if time.Since(at) > goneTTL {
			delete(p.gone, gid)
		}
	}
	p.mu.Unlock()
	if g != nil {
		g.Close()
	}
	pod, err := p.owned(ctx, id)
	if errors.Is(err, errdefs.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	grace := int64(p.cfg.DeleteGrace / time.Second)
	if pod.DeletionTimestamp == nil {
		err := p.pods().Delete(ctx, pod.Name, metav1.DeleteOptions{
			GracePeriodSeconds: &grace,
			Preconditions:      &metav1.Preconditions{UID: &pod.UID},
		})
		switch {
		case apierrors.IsNotFound(err), apierrors.IsConflict(err):
			return nil // gone, or replaced by another sandbox's pod of that name
		case err != nil:
			return classify(err, "kubernetes: delete pod of sandbox %s", id)
		}
	}
	wctx, cancel := context.WithTimeout(ctx, p.cfg.DeleteWait)
	defer cancel()
	delay := 20 * time.Millisecond
	for {
		cur, err := p.pods().Get(wctx, pod.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) || (err == nil && cur.UID != pod.UID) {
			return nil
		}
		t := time.NewTimer(delay)
		select {
		case <-wctx.Done():
			t.Stop()
			if ctx.Err() != nil {
				return fmt.Errorf("kubernetes: destroy %s: waiting for the pod to stop: %w", id, context.Cause(ctx))
			}
			// The kubelet did not finish (a node that is down): remove the
			// object, and with it the pod from the API's view.
			p.cfg.Logger.Warn("kubernetes: pod did not stop in time; deleting it at once", "sandbox", id, "wait", p.cfg.DeleteWait)
			p.cleanup(id, pod)
			return nil
		case <-t.C:
		}
		delay = min(delay*2, 250*time.Millisecond)
	}
}

// maxLogBytes bounds how much of a pod's log Logs reads.
const maxLogBytes = 4 << 20

// Logs returns up to the last n lines the sandbox container's PID 1 (the
// agent) wrote; n <= 0 means all of them.
func (p *Provider) Logs(ctx context.Context, id string, n int) ([]string, error) {
	pod, err := p.owned(ctx, id)
	if err != nil {
		return nil, err
	}
	if pod.DeletionTimestamp != nil {
		return nil, errdefs.New(errdefs.ErrSandboxDestroyed, "sandbox %s is being destroyed", id)
	}
	opts := &corev1.PodLogOptions{Container: sandboxContainer}
	if n > 0 {
		tail := int64(n)
		opts.TailLines = &tail
	}
	limit := int64(maxLogBytes)
	opts.LimitBytes = &limit
	rc, err := p.pods().GetLogs(pod.Name, opts).Stream(ctx)
	if err != nil {
		if apierrors.IsBadRequest(err) && stateOf(pod) == provider.StateCreating {
			return []string{}, nil // the container has not started: no log yet
		}
		if apierrors.IsNotFound(err) {
			return nil, p.missing(id)
		}
		return nil, classify(err, "kubernetes: logs of sandbox %s", id)
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, maxLogBytes))
	if err != nil {
		return nil, classify(err, "kubernetes: logs of sandbox %s", id)
	}
	text := string(bytes.TrimRight(b, "\n"))
	if text == "" {
		return []string{}, nil
	}
	lines := strings.Split(text, "\n")
	if n > 0 && len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return lines, nil
}

// List returns every pod this provider created that is not being
// deleted. Pods of a test run (label stacyvm.io/test) are listed only by
// the providers of that run, so that a server sharing a namespace with
// tests never adopts or sweeps their pods, nor a test a server's.
func (p *Provider) List(ctx context.Context) ([]provider.Info, error) {
	sel := LabelProvider + "=" + p.cfg.Name
	if v := p.cfg.Labels[LabelTest]; v != "" {
		sel += "," + LabelTest + "=" + v
	} else {
		sel += ",!" + LabelTest
	}
	var out []provider.Info
	opts := metav1.ListOptions{LabelSelector: sel, Limit: 500}
	for {
		list, err := p.pods().List(ctx, opts)
		if err != nil {
			return nil, classify(err, "kubernetes: list pods")
		}
		for i := range list.Items {
			pod := &list.Items[i]
			if pod.DeletionTimestamp != nil || checkID(pod.Labels[LabelID]) != nil || pod.Name != podName(pod.Labels[LabelID]) {
				continue
			}
			out = append(out, infoOf(pod))
		}
		if list.Continue == "" {
			return out, nil
		}
		opts.Continue = list.Continue
	}
}

// routeKlog sends client-go's own logging (klog), which reports every
// exec stream the provider closes as an error, to the provider's logger
// at debug level, once per process.
var routeKlog sync.Once

func quietKlog(log *slog.Logger) {
	routeKlog.Do(func() {
		klog.SetLogger(logr.FromSlogHandler(debugHandler{log.Handler()}))
	})
}

// debugHandler logs every record at debug level.
type debugHandler struct{ slog.Handler }

func (h debugHandler) Enabled(ctx context.Context, _ slog.Level) bool {
	return h.Handler.Enabled(ctx, slog.LevelDebug)
}

func (h debugHandler) Handle(ctx context.Context, r slog.Record) error {
	r.Level = slog.LevelDebug
	return h.Handler.Handle(ctx, r)
}

func (h debugHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return debugHandler{h.Handler.WithAttrs(as)}
}

func (h debugHandler) WithGroup(name string) slog.Handler {
	return debugHandler{h.Handler.WithGroup(name)}
}
