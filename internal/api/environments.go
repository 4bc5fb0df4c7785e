package api

import (
	"net/http"
	"strconv"
	"time"

	"github.com/stacyvm/stacyvm/internal/envs"
	"github.com/stacyvm/stacyvm/internal/envs/envspec"
	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/store"
)

// maxBuildsPage bounds GET /environments/builds?limit=.
const maxBuildsPage = 1000

type specBody struct {
	OwnerID        string   `json:"owner_id"`
	Name           string   `json:"name"`
	BaseImage      string   `json:"base_image"`
	PythonPackages []string `json:"python_packages"`
	AptPackages    []string `json:"apt_packages"`
	PythonVersion  string   `json:"python_version"`
}

type specJSON struct {
	ID             string   `json:"id"`
	OwnerID        string   `json:"owner_id"`
	Name           string   `json:"name"`
	BaseImage      string   `json:"base_image"`
	PythonPackages []string `json:"python_packages"`
	AptPackages    []string `json:"apt_packages"`
	PythonVersion  string   `json:"python_version,omitempty"`
	CreatedAt      string   `json:"created_at"`
}

func specOut(s store.EnvSpec) specJSON {
	return specJSON{
		ID: s.ID, OwnerID: s.OwnerID, Name: s.Name, BaseImage: s.BaseImage,
		PythonPackages: nonNil(s.PythonPackages), AptPackages: nonNil(s.AptPackages),
		PythonVersion: s.PythonVersion, CreatedAt: s.CreatedAt.UTC().Format(time.RFC3339Nano),
	}
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

type artifactJSON struct {
	Target string `json:"target"`
	Ref    string `json:"ref"`
	Digest string `json:"digest"`
	Size   int64  `json:"size"`
}

type buildJSON struct {
	ID         string         `json:"id"`
	SpecID     string         `json:"spec_id"`
	OwnerID    string         `json:"owner_id"`
	Status     string         `json:"status"`
	Targets    []string       `json:"targets"`
	Image      string         `json:"image"`
	Log        string         `json:"log"`
	Reason     string         `json:"reason,omitempty"`
	Attempts   int            `json:"attempts"`
	Artifacts  []artifactJSON `json:"artifacts"`
	CreatedAt  string         `json:"created_at"`
	UpdatedAt  string         `json:"updated_at"`
	StartedAt  string         `json:"started_at,omitempty"`
	FinishedAt string         `json:"finished_at,omitempty"`
}

func optionalTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

func buildOut(b store.EnvBuild) buildJSON {
	out := buildJSON{
		ID: b.ID, SpecID: b.SpecID, OwnerID: b.OwnerID, Status: b.Status, Targets: nonNil(b.Targets),
		Image: b.Image, Log: b.Log, Reason: b.Reason, Attempts: b.Attempts, Artifacts: []artifactJSON{},
		CreatedAt: optionalTime(b.CreatedAt), UpdatedAt: optionalTime(b.UpdatedAt),
		StartedAt: optionalTime(b.StartedAt), FinishedAt: optionalTime(b.FinishedAt),
	}
	for _, a := range b.Artifacts {
		out.Artifacts = append(out.Artifacts, artifactJSON(a))
	}
	return out
}

// environments returns the service, or the error every environments
// route answers when the server has none (no dockerd, or disabled).
func (s *server) environments() (*envs.Service, error) {
	if s.opts.Environments == nil {
		return nil, errdefs.WithHint(errdefs.New(errdefs.ErrProviderUnavailable, "environment builds are not available on this server"),
			"they need dockerd (docker.host) and environments.enabled: true; see `stacyvm doctor`")
	}
	return s.opts.Environments, nil
}

func (s *server) createSpec(w http.ResponseWriter, r *http.Request) {
	svc, err := s.environments()
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	var b specBody
	if err := decodeJSON(r.Body, &b, false); err != nil {
		s.writeError(w, r, err)
		return
	}
	spec, err := svc.CreateSpec(r.Context(), envspec.Spec{
		OwnerID: ownerOf(r, b.OwnerID), Name: b.Name, BaseImage: b.BaseImage,
		PythonPackages: b.PythonPackages, AptPackages: b.AptPackages, PythonVersion: b.PythonVersion,
	})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, specOut(spec))
}

func (s *server) listSpecs(w http.ResponseWriter, r *http.Request) {
	svc, err := s.environments()
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	list, err := svc.ListSpecs(r.Context(), r.URL.Query().Get("owner_id"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := make([]specJSON, 0, len(list))
	for _, sp := range list {
		out = append(out, specOut(sp))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *server) getSpec(w http.ResponseWriter, r *http.Request) {
	svc, err := s.environments()
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	spec, err := svc.GetSpec(r.Context(), r.PathValue("id"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, specOut(spec))
}

type buildBody struct {
	SpecID  string   `json:"spec_id"`
	Targets []string `json:"targets"`
}

func (s *server) createBuild(w http.ResponseWriter, r *http.Request) {
	svc, err := s.environments()
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	var b buildBody
	if err := decodeJSON(r.Body, &b, false); err != nil {
		s.writeError(w, r, err)
		return
	}
	build, err := svc.CreateBuild(r.Context(), b.SpecID, b.Targets)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, buildOut(build))
}

type buildWithSpecJSON struct {
	Build buildJSON `json:"build"`
	Spec  specJSON  `json:"spec"`
}

func (s *server) listBuilds(w http.ResponseWriter, r *http.Request) {
	svc, err := s.environments()
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	q := r.URL.Query()
	limit := 0
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > maxBuildsPage {
			s.writeError(w, r, errdefs.New(errdefs.ErrInvalidArgument, "limit must be an integer from 1 to %d", maxBuildsPage))
			return
		}
		limit = n
	}
	list, err := svc.ListBuilds(r.Context(), q.Get("owner_id"), limit)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := make([]buildWithSpecJSON, 0, len(list))
	for _, bs := range list {
		out = append(out, buildWithSpecJSON{Build: buildOut(bs.Build), Spec: specOut(bs.Spec)})
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *server) getBuild(w http.ResponseWriter, r *http.Request) {
	svc, err := s.environments()
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	b, err := svc.GetBuild(r.Context(), r.PathValue("id"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, buildOut(b))
}

func (s *server) cancelBuild(w http.ResponseWriter, r *http.Request) {
	svc, err := s.environments()
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	b, err := svc.CancelBuild(r.Context(), r.PathValue("id"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, buildOut(b))
}

type spawnConfigJSON struct {
	BuildID  string `json:"build_id"`
	Ready    bool   `json:"ready"`
	Image    string `json:"image"`
	Provider string `json:"provider"`
}

func (s *server) spawnConfig(w http.ResponseWriter, r *http.Request) {
	svc, err := s.environments()
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	c, err := svc.SpawnConfig(r.Context(), r.PathValue("id"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, spawnConfigJSON(c))
}

// buildLogFrame is one line of the build log stream: output, a note of
// output lost to the log's bound, or the final status.
type buildLogFrame struct {
	Type    string `json:"type,omitempty"`
	Data    string `json:"data,omitempty"`
	Skipped int64  `json:"skipped,omitempty"`
	Status  string `json:"status,omitempty"`
	Reason  string `json:"reason,omitempty"`
	Image   string `json:"image,omitempty"`
}

// buildLogs streams a build's log as NDJSON while it runs (an extension
// of the contract): {"data": "..."} lines as output arrives, and a last
// {"type": "status", "status": ...} line when the build finishes.
func (s *server) buildLogs(w http.ResponseWriter, r *http.Request) {
	svc, err := s.environments()
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	id := r.PathValue("id")
	if _, err := svc.GetBuild(r.Context(), id); err != nil {
		s.writeError(w, r, err)
		return
	}
	clearDeadlines(w, false, true)
	h := w.Header()
	h.Set("Content-Type", "application/x-ndjson")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	if err := rc.Flush(); err != nil {
		return
	}
	sink := &ndjsonSink{w: w, rc: rc, timeout: s.opts.StreamWriteTimeout}
	final, err := svc.Follow(r.Context(), id, func(data string, skipped int64) error {
		if skipped > 0 {
			if err := sink.send(buildLogFrame{Skipped: skipped}); err != nil {
				return err
			}
		}
		if data == "" {
			return nil
		}
		return sink.send(buildLogFrame{Data: data})
	})
	if err != nil {
		s.log.Debug("build log stream ended", "request_id", requestID(r.Context()), "build", id, "err", err)
		return
	}
	_ = sink.send(buildLogFrame{Type: "status", Status: final.Status, Reason: final.Reason, Image: final.Image})
}
