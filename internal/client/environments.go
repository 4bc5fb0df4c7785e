package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
)

// EnvSpec is an environment spec: an owner's image recipe.
type EnvSpec struct {
	ID             string   `json:"id,omitempty"`
	OwnerID        string   `json:"owner_id"`
	Name           string   `json:"name"`
	BaseImage      string   `json:"base_image"`
	PythonPackages []string `json:"python_packages"`
	AptPackages    []string `json:"apt_packages,omitempty"`
	PythonVersion  string   `json:"python_version,omitempty"`
	CreatedAt      string   `json:"created_at,omitempty"`
}

// EnvArtifact is one product of a build.
type EnvArtifact struct {
	Target string `json:"target"`
	Ref    string `json:"ref"`
	Digest string `json:"digest"`
	Size   int64  `json:"size"`
}

// EnvBuild is one build of a spec.
type EnvBuild struct {
	ID         string        `json:"id"`
	SpecID     string        `json:"spec_id"`
	OwnerID    string        `json:"owner_id"`
	Status     string        `json:"status"` // queued, building, ready, failed, canceled
	Targets    []string      `json:"targets"`
	Image      string        `json:"image"`
	Log        string        `json:"log"`
	Reason     string        `json:"reason,omitempty"`
	Attempts   int           `json:"attempts"`
	Artifacts  []EnvArtifact `json:"artifacts"`
	CreatedAt  string        `json:"created_at"`
	UpdatedAt  string        `json:"updated_at"`
	StartedAt  string        `json:"started_at,omitempty"`
	FinishedAt string        `json:"finished_at,omitempty"`
}

// Finished reports whether the build reached a final status.
func (b EnvBuild) Finished() bool {
	return b.Status == "ready" || b.Status == "failed" || b.Status == "canceled"
}

// EnvBuildWithSpec is one entry of ListEnvBuilds.
type EnvBuildWithSpec struct {
	Build EnvBuild `json:"build"`
	Spec  EnvSpec  `json:"spec"`
}

// SpawnConfig is what spawning a build's image needs.
type SpawnConfig struct {
	BuildID  string `json:"build_id"`
	Ready    bool   `json:"ready"`
	Image    string `json:"image"`
	Provider string `json:"provider"`
}

// CreateEnvSpec stores a spec.
func (c *Client) CreateEnvSpec(ctx context.Context, s EnvSpec) (EnvSpec, error) {
	if s.PythonPackages == nil {
		s.PythonPackages = []string{}
	}
	s.ID, s.CreatedAt = "", ""
	var out EnvSpec
	err := c.do(ctx, call{method: http.MethodPost, path: "/environments/specs", body: s}, &out)
	return out, err
}

// ListEnvSpecs returns ownerID's specs (everyone's when empty).
func (c *Client) ListEnvSpecs(ctx context.Context, ownerID string) ([]EnvSpec, error) {
	var q url.Values
	if ownerID != "" {
		q = url.Values{"owner_id": {ownerID}}
	}
	var out []EnvSpec
	err := c.do(ctx, call{method: http.MethodGet, path: "/environments/specs", query: q}, &out)
	return out, err
}

// GetEnvSpec returns one spec.
func (c *Client) GetEnvSpec(ctx context.Context, id string) (EnvSpec, error) {
	if err := checkID("spec ID", id); err != nil {
		return EnvSpec{}, err
	}
	var out EnvSpec
	err := c.do(ctx, call{method: http.MethodGet, path: "/environments/specs/" + seg(id)}, &out)
	return out, err
}

// CreateEnvBuild queues a build of the spec; targets may be nil (local).
func (c *Client) CreateEnvBuild(ctx context.Context, specID string, targets []string) (EnvBuild, error) {
	body := map[string]any{"spec_id": specID}
	if targets != nil {
		body["targets"] = targets
	}
	var out EnvBuild
	err := c.do(ctx, call{method: http.MethodPost, path: "/environments/builds", body: body}, &out)
	return out, err
}

// ListEnvBuilds returns builds with their specs, newest first.
func (c *Client) ListEnvBuilds(ctx context.Context, ownerID string, limit int) ([]EnvBuildWithSpec, error) {
	q := url.Values{}
	if ownerID != "" {
		q.Set("owner_id", ownerID)
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var out []EnvBuildWithSpec
	err := c.do(ctx, call{method: http.MethodGet, path: "/environments/builds", query: q}, &out)
	return out, err
}

func buildPath(id, suffix string) string { return "/environments/builds/" + seg(id) + suffix }

// GetEnvBuild returns a build, its log so far included.
func (c *Client) GetEnvBuild(ctx context.Context, id string) (EnvBuild, error) {
	if err := checkID("build ID", id); err != nil {
		return EnvBuild{}, err
	}
	var out EnvBuild
	err := c.do(ctx, call{method: http.MethodGet, path: buildPath(id, "")}, &out)
	return out, err
}

// CancelEnvBuild cancels a queued or running build.
func (c *Client) CancelEnvBuild(ctx context.Context, id string) (EnvBuild, error) {
	if err := checkID("build ID", id); err != nil {
		return EnvBuild{}, err
	}
	var out EnvBuild
	err := c.do(ctx, call{method: http.MethodPost, path: buildPath(id, "/cancel")}, &out)
	return out, err
}

// EnvSpawnConfig returns the image and provider that spawn the build.
func (c *Client) EnvSpawnConfig(ctx context.Context, id string) (SpawnConfig, error) {
	if err := checkID("build ID", id); err != nil {
		return SpawnConfig{}, err
	}
	var out SpawnConfig
	err := c.do(ctx, call{method: http.MethodGet, path: buildPath(id, "/spawn-config")}, &out)
	return out, err
}

// BuildLogEnd is the last line of a followed build log.
type BuildLogEnd struct {
	Status string `json:"status"`
	Reason string `json:"reason"`
	Image  string `json:"image"`
}

// FollowEnvBuild streams the build's log to w as it grows and returns
// the build's final status.
func (c *Client) FollowEnvBuild(ctx context.Context, id string, w io.Writer) (BuildLogEnd, error) {
	if err := checkID("build ID", id); err != nil {
		return BuildLogEnd{}, err
	}
	resp, err := c.send(ctx, call{method: http.MethodGet, path: buildPath(id, "/logs")})
	if err != nil {
		return BuildLogEnd{}, err
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	for {
		var f struct {
			Type    string `json:"type"`
			Data    string `json:"data"`
			Skipped int64  `json:"skipped"`
			BuildLogEnd
		}
		if err := dec.Decode(&f); err != nil {
			if errors.Is(err, io.EOF) {
				return BuildLogEnd{}, ErrIncompleteStream
			}
			return BuildLogEnd{}, fmt.Errorf("stacyvm: build log: %w", err)
		}
		if f.Skipped > 0 {
			fmt.Fprintf(w, "[%d bytes of output dropped]\n", f.Skipped)
		}
		if f.Data != "" {
			if _, err := io.WriteString(w, f.Data); err != nil {
				return BuildLogEnd{}, err
			}
		}
		if f.Type == "status" {
			return f.BuildLogEnd, nil
		}
	}
}
