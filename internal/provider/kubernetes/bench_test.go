package kubernetes

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/stacyvm/stacyvm/internal/latency"
	"github.com/stacyvm/stacyvm/internal/provider"
	"github.com/stacyvm/stacyvm/internal/provider/providertest"
)

// BenchmarkSpawn measures a sandbox's spawn on the cluster (pod created,
// agent installed by the init container, running, agent answering over
// the exec stream) against what Kubernetes itself costs for the same
// image in the same run: a bare pod created through the API until its
// container runs. The difference is the provider's overhead. Destroys are
// not timed. Both run on the cluster's default runtime (runc) and on the
// RuntimeClass it offers (gvisor in scripts/ci/k8s-up.sh).
//
//	go test -run '^$' -bench Spawn -benchtime 10x ./internal/provider/kubernetes/
func BenchmarkSpawn(b *testing.B) {
	for _, rc := range runtimeClasses() {
		b.Run(rcName(rc), func(b *testing.B) { benchSpawn(b, rc) })
	}
}

func benchSpawn(b *testing.B, rc string) {
	b.Run("provider", func(b *testing.B) {
		p := newProvider(b, func(c *Config) { c.RuntimeClass = rc })
		s := &latency.Sample{}
		for b.Loop() {
			id := providertest.NewID()
			t0 := time.Now()
			if _, err := p.Spawn(context.Background(), provider.Spec{ID: id, Image: busyboxImage}); err != nil {
				b.Fatal(err)
			}
			s.Add(time.Since(t0))
			b.StopTimer()
			if err := p.Destroy(context.Background(), id); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
		s.Report(b, "spawn")
	})
	b.Run("raw-pod", func(b *testing.B) {
		p := newProvider(b, nil)
		s := &latency.Sample{}
		zero := int64(0)
		var class *string
		if rc != "" {
			class = &rc
		}
		for i := 0; b.Loop(); i++ {
			name := fmt.Sprintf("stacyvm-bench-%s-%d", env.runID, i)
			pod := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{LabelTest: env.runID}},
				Spec: corev1.PodSpec{
					NodeName:         env.Node,
					RestartPolicy:    corev1.RestartPolicyNever,
					RuntimeClassName: class,
					Containers: []corev1.Container{{
						Name: "c", Image: busyboxImage, ImagePullPolicy: corev1.PullNever,
						Command: []string{"sleep", "3600"},
					}},
				},
			}
			t0 := time.Now()
			made, err := p.pods().Create(context.Background(), pod, metav1.CreateOptions{})
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			err = p.waitContainerRunning(ctx, made)
			cancel()
			if err != nil {
				b.Fatal(err)
			}
			s.Add(time.Since(t0))
			b.StopTimer()
			if err := p.pods().Delete(context.Background(), name, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil && !apierrors.IsNotFound(err) {
				b.Fatal(err)
			}
			b.StartTimer()
		}
		s.Report(b, "spawn")
	})
}

// waitContainerRunning polls a bare pod until its first container runs.
func (p *Provider) waitContainerRunning(ctx context.Context, pod *corev1.Pod) error {
	for {
		cur, err := p.pods().Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if len(cur.Status.ContainerStatuses) > 0 && cur.Status.ContainerStatuses[0].State.Running != nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}
