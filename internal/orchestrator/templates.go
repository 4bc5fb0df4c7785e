package orchestrator

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/events"
	"github.com/stacyvm/stacyvm/internal/store"
)

var templateName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._-]{0,127}$`)

func (m *Manager) validateTemplate(ctx context.Context, t store.Template) error {
	switch {
	case t.Name == "":
		return errdefs.New(errdefs.ErrInvalidArgument, "name is required")
	case !templateName.MatchString(t.Name):
		return errdefs.New(errdefs.ErrInvalidArgument,
			"name %q must start with a letter or digit and hold only letters, digits, '.', '_' and '-' (at most 128)", t.Name)
	case t.Image == "" && t.Environment == "":
		return errdefs.WithHint(errdefs.New(errdefs.ErrInvalidArgument, "image is required"),
			"name an image, or an environment (spec or build ID) whose image the template spawns")
	case t.Image != "" && t.Environment != "":
		return errdefs.New(errdefs.ErrInvalidArgument, "name an image or an environment, not both")
	case t.MemoryMB < 0 || t.MemoryMB > MaxMemoryMB:
		return errdefs.New(errdefs.ErrInvalidArgument, "memory_mb must be from 0 (the default) to %d, not %d", MaxMemoryMB, t.MemoryMB)
	case t.CPUCores < 0 || t.CPUCores > MaxVCPUs:
		return errdefs.New(errdefs.ErrInvalidArgument, "cpu_cores must be from 0 (the default) to %d, not %d", MaxVCPUs, t.CPUCores)
	case t.TTLSeconds < 0:
		return errdefs.New(errdefs.ErrInvalidArgument, "ttl_seconds must not be negative")
	case int64(t.TTLSeconds) > int64(m.cfg.MaxTTL/time.Second):
		// Checked here, not at spawn: seconds past the maximum would
		// overflow a Duration into a wrong (even negative) TTL.
		return errdefs.New(errdefs.ErrInvalidArgument, "ttl_seconds %d exceeds the maximum of %d (%s)", t.TTLSeconds, int64(m.cfg.MaxTTL/time.Second), m.cfg.MaxTTL)
	case t.PoolSize < 0:
		return errdefs.New(errdefs.ErrInvalidArgument, "pool_size must not be negative")
	case t.IdleTimeoutSeconds < 0:
		return errdefs.New(errdefs.ErrInvalidArgument, "idle_timeout must not be negative")
	case int64(t.IdleTimeoutSeconds) > int64(m.cfg.MaxTTL/time.Second):
		return errdefs.New(errdefs.ErrInvalidArgument, "idle_timeout %d exceeds the maximum TTL of %d seconds (%s)",
			t.IdleTimeoutSeconds, int64(m.cfg.MaxTTL/time.Second), m.cfg.MaxTTL)
	}
	if err := m.validateIdle(0, t.OnIdle); err != nil {
		return err
	}
	for i, c := range t.Setup {
		if strings.TrimSpace(c) == "" {
			return errdefs.New(errdefs.ErrInvalidArgument, "setup command %d is empty", i+1)
		}
	}
	for k := range t.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			return errdefs.New(errdefs.ErrInvalidArgument, "env name %q is invalid", k)
		}
	}
	if t.Environment != "" {
		if m.cfg.Environments == nil {
			return errdefs.New(errdefs.ErrInvalidArgument, "environment %q: this server builds no environments", t.Environment)
		}
		// A spec without a ready build yet is fine: its build may be
		// running. An environment that does not exist is not.
		if _, err := m.cfg.Environments.ResolveImage(ctx, t.Environment); errdefs.Classify(err) == errdefs.ErrNotFound {
			return errdefs.New(errdefs.ErrInvalidArgument, "environment %q is neither an environment spec nor a build", t.Environment)
		}
	}
	if t.Provider != "" && t.Provider != "auto" {
		if _, err := m.reg.Get(t.Provider); err != nil && errdefs.Classify(err) == errdefs.ErrProviderNotFound {
			return errdefs.New(errdefs.ErrInvalidArgument, "provider %q is not registered", t.Provider)
		}
	}
	return nil
}

// CreateTemplate stores a new template; a duplicate name is
// errdefs.ErrConflict.
func (m *Manager) CreateTemplate(ctx context.Context, t store.Template) (store.Template, error) {
	if err := m.validateTemplate(ctx, t); err != nil {
		return store.Template{}, err
	}
	now := m.now()
	t.Version, t.CreatedAt, t.UpdatedAt = 1, now, now
	if err := m.store.CreateTemplate(ctx, t); err != nil {
		if errdefs.Classify(err) == errdefs.ErrConflict {
			return store.Template{}, errdefs.WithHint(errdefs.New(errdefs.ErrConflict, "template %q already exists", t.Name),
				"update it with PUT, or choose another name")
		}
		return store.Template{}, err
	}
	m.publish(events.TemplateCreated, "", map[string]string{"name": t.Name})
	return t, nil
}

// GetTemplate returns one template.
func (m *Manager) GetTemplate(ctx context.Context, name string) (store.Template, error) {
	t, err := m.store.GetTemplate(ctx, name)
	if errdefs.Classify(err) == errdefs.ErrNotFound {
		return store.Template{}, errdefs.New(errdefs.ErrNotFound, "template %q not found", name)
	}
	return t, err
}

// ListTemplates returns every template.
func (m *Manager) ListTemplates(ctx context.Context) ([]store.Template, error) {
	return m.store.ListTemplates(ctx)
}

// UpdateTemplate replaces the template called name; t.Name must be empty
// or equal to name.
func (m *Manager) UpdateTemplate(ctx context.Context, name string, t store.Template) (store.Template, error) {
	if t.Name == "" {
		t.Name = name
	}
	if t.Name != name {
		return store.Template{}, errdefs.New(errdefs.ErrInvalidArgument, "name %q in the body does not match %q in the path", t.Name, name)
	}
	if err := m.validateTemplate(ctx, t); err != nil {
		return store.Template{}, err
	}
	t.UpdatedAt = m.now()
	out, err := m.store.UpdateTemplate(ctx, t)
	if errdefs.Classify(err) == errdefs.ErrNotFound {
		return store.Template{}, errdefs.New(errdefs.ErrNotFound, "template %q not found", name)
	}
	if err != nil {
		return store.Template{}, err
	}
	m.publish(events.TemplateUpdated, "", map[string]string{"name": name})
	return out, nil
}

// DeleteTemplate removes a template; sandboxes spawned from it live on.
func (m *Manager) DeleteTemplate(ctx context.Context, name string) error {
	err := m.store.DeleteTemplate(ctx, name)
	if errdefs.Classify(err) == errdefs.ErrNotFound {
		return errdefs.New(errdefs.ErrNotFound, "template %q not found", name)
	}
	if err != nil {
		return err
	}
	m.publish(events.TemplateDeleted, "", map[string]string{"name": name})
	return nil
}

// EnvironmentResolver turns an environment (spec or build ID) into the
// image a sandbox spawns: the build's, or the spec's newest ready build's.
type EnvironmentResolver interface {
	ResolveImage(ctx context.Context, ref string) (string, error)
}

func (m *Manager) environmentImage(ctx context.Context, t store.Template) (string, error) {
	if m.cfg.Environments == nil {
		return "", errdefs.New(errdefs.ErrProviderUnavailable, "template %q names environment %q, but this server builds no environments",
			t.Name, t.Environment)
	}
	img, err := m.cfg.Environments.ResolveImage(ctx, t.Environment)
	if err != nil {
		return "", fmt.Errorf("template %q: %w", t.Name, err)
	}
	return img, nil
}
