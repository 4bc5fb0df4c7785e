package e2b

import (
	"cmp"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/orchestrator"
	"github.com/stacyvm/stacyvm/internal/provider"
	"github.com/stacyvm/stacyvm/internal/store"
)

// defaultTemplate is what the SDK asks for when the caller names none; it
// means the server's default image.
const defaultTemplate = "base"

// maxControlBody bounds control-plane request bodies.
const maxControlBody = 1 << 20

func (s *server) controlRoutes(mux *http.ServeMux) {
	h := func(pattern string, f http.HandlerFunc) { mux.Handle(pattern, s.withAPIKey(f)) }
	h("POST /sandboxes", s.create)
	h("POST /v2/sandboxes", s.create)
	h("GET /sandboxes", s.list)
	h("GET /v2/sandboxes", s.list)
	h("GET /sandboxes/{id}", s.get)
	h("DELETE /sandboxes/{id}", s.kill)
	h("POST /sandboxes/{id}/timeout", s.setTimeout)
	h("POST /sandboxes/{id}/connect", s.connect)
	h("POST /v2/sandboxes/{id}/connect", s.connect)
	// What StacyVM cannot do is answered in E2B's shape, not with a
	// generic 404, so that the SDK raises a readable error.
	for _, p := range []string{
		"POST /sandboxes/{id}/pause", "POST /sandboxes/{id}/resume", "POST /sandboxes/{id}/fork",
		"POST /sandboxes/{id}/snapshots", "GET /snapshots", "PUT /sandboxes/{id}/network",
		"POST /sandboxes/{id}/refreshes", "GET /sandboxes/{id}/metrics", "GET /sandboxes/metrics",
		"GET /sandboxes/{id}/logs", "GET /v2/sandboxes/{id}/logs", "GET /volumes", "POST /volumes",
	} {
		h(p, s.unsupported)
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no route for %s %s on StacyVM's E2B facade", r.Method, r.URL.Path))
	})
}

// withAPIKey guards the control plane with the server's API key when one
// is configured. The SDK sends it as X-API-KEY.
func (s *server) withAPIKey(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.apiKeyValid(r.Header.Get("X-API-Key")) {
			writeError(w, http.StatusUnauthorized, "missing or invalid API key: set E2B_API_KEY to the StacyVM server's API key")
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (s *server) unsupported(w http.ResponseWriter, r *http.Request) {
	writeError(w, http.StatusNotImplemented, fmt.Sprintf("%s %s is not supported by StacyVM's E2B facade (see docs/e2b.md)", r.Method, r.URL.Path))
}

// errorBody is E2B's error shape.
type errorBody struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, errorBody{Code: status, Message: msg})
}

// writeErr writes err in E2B's shape, its message scrubbed of the
// server's host paths.
func (s *server) writeErr(w http.ResponseWriter, err error) {
	msg := s.scrub(err.Error())
	if h := errdefs.Hint(err); h != "" {
		msg += " (" + h + ")"
	}
	writeError(w, statusOf(err), msg)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// decode reads a JSON body. An empty body is an empty object: the SDK
// sends none on some calls.
func decode(r *http.Request, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			return errdefs.New(errdefs.ErrInvalidArgument, "Content-Type must be application/json, not %q", ct)
		}
	}
	dec := json.NewDecoder(io.LimitReader(r.Body, maxControlBody+1))
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		return errdefs.Wrap(errdefs.ErrInvalidArgument, err, "invalid JSON body")
	}
	return nil
}

type newSandbox struct {
	TemplateID          string            `json:"templateID"`
	Timeout             *int64            `json:"timeout"`
	Metadata            map[string]string `json:"metadata"`
	EnvVars             map[string]string `json:"envVars"`
	AllowInternetAccess *bool             `json:"allow_internet_access"`
	AutoPause           *bool             `json:"autoPause"`
	Secure              *bool             `json:"secure"`
	Network             *struct {
		AllowOut []string `json:"allowOut"`
		DenyOut  []string `json:"denyOut"`
	} `json:"network"`
	VolumeMounts []json.RawMessage `json:"volumeMounts"`
	MCP          json.RawMessage   `json:"mcp"`
}

// sandboxJSON is E2B's Sandbox (create, connect) and, with the detail
// fields, its SandboxDetail and ListedSandbox.
type sandboxJSON struct {
	TemplateID      string            `json:"templateID"`
	SandboxID       string            `json:"sandboxID"`
	ClientID        string            `json:"clientID"`
	EnvdVersion     string            `json:"envdVersion"`
	EnvdAccessToken string            `json:"envdAccessToken,omitempty"`
	StartedAt       *time.Time        `json:"startedAt,omitempty"`
	EndAt           *time.Time        `json:"endAt,omitempty"`
	CPUCount        *int              `json:"cpuCount,omitempty"`
	MemoryMB        *int              `json:"memoryMB,omitempty"`
	DiskSizeMB      *int              `json:"diskSizeMB,omitempty"`
	Metadata        map[string]string `json:"metadata,omitempty"`
	State           string            `json:"state,omitempty"`
	VolumeMounts    []struct{}        `json:"volumeMounts,omitempty"`
}

// clientID fills a field E2B marks required but deprecated.
const clientID = "stacyvm"

func templateID(sb store.Sandbox) string {
	return cmp.Or(sb.Template, sb.Image)
}

func (s *server) brief(sb store.Sandbox) sandboxJSON {
	return sandboxJSON{
		TemplateID: templateID(sb), SandboxID: sb.ID, ClientID: clientID,
		EnvdVersion: EnvdVersion, EnvdAccessToken: s.token(sb.ID),
	}
}

func (s *server) detail(sb store.Sandbox, withToken bool) sandboxJSON {
	out := s.brief(sb)
	if !withToken {
		out.EnvdAccessToken = ""
	}
	started, end := sb.CreatedAt.UTC(), sb.ExpiresAt.UTC()
	out.StartedAt, out.EndAt = &started, &end
	out.CPUCount, out.MemoryMB, out.DiskSizeMB = &sb.VCPUs, &sb.MemoryMB, &sb.DiskMB
	out.Metadata = maps.Clone(sb.Metadata)
	if out.Metadata == nil {
		out.Metadata = map[string]string{}
	}
	out.State = "running"
	return out
}

func (s *server) create(w http.ResponseWriter, r *http.Request) {
	var req newSandbox
	if err := decode(r, &req); err != nil {
		s.writeErr(w, err)
		return
	}
	var unsupported []string
	if req.AutoPause != nil && *req.AutoPause {
		unsupported = append(unsupported, "autoPause (StacyVM sandboxes cannot be paused)")
	}
	if len(req.VolumeMounts) > 0 {
		unsupported = append(unsupported, "volumeMounts")
	}
	if len(req.MCP) > 0 && string(req.MCP) != "null" {
		unsupported = append(unsupported, "mcp")
	}
	if req.Network != nil && (len(req.Network.AllowOut) > 0 || len(req.Network.DenyOut) > 0) {
		unsupported = append(unsupported, "network allowOut/denyOut rules (StacyVM has network on or off: use allow_internet_access)")
	}
	if len(unsupported) > 0 {
		writeError(w, http.StatusBadRequest, "not supported by StacyVM: "+strings.Join(unsupported, ", "))
		return
	}
	spawn := orchestrator.SpawnRequest{Metadata: req.Metadata, Env: req.EnvVars}
	ttl := s.opts.DefaultTimeout
	if req.Timeout != nil {
		if *req.Timeout < 0 {
			writeError(w, http.StatusBadRequest, "timeout must not be negative")
			return
		}
		if *req.Timeout > 0 {
			ttl = time.Duration(*req.Timeout) * time.Second
		}
	}
	spawn.TTL = ttl
	if req.AllowInternetAccess != nil {
		spawn.Network = "none"
		if *req.AllowInternetAccess {
			spawn.Network = "bridge"
		}
	}
	// A template names a StacyVM template when one exists, the server's
	// default image when it is E2B's "base", and an image otherwise.
	switch tid := req.TemplateID; {
	case tid == "" || tid == defaultTemplate:
	default:
		if _, err := s.m.GetTemplate(r.Context(), tid); err == nil {
			spawn.Template = tid
		} else if errdefs.Classify(err) == errdefs.ErrNotFound {
			spawn.Image = tid
		} else {
			s.writeErr(w, err)
			return
		}
	}
	sb, err := s.m.Spawn(r.Context(), spawn)
	if err != nil {
		s.writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, s.brief(sb))
}

func (s *server) get(w http.ResponseWriter, r *http.Request) {
	sb, err := s.m.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		s.writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, s.detail(sb, true))
}

func (s *server) kill(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := s.m.Destroy(r.Context(), id); err != nil {
		s.writeErr(w, err)
		return
	}
	s.procs.forget(id)
	s.watchMu.Lock()
	maps.DeleteFunc(s.watchers, func(_ string, w *watcher) bool { return w.sandbox == id })
	s.watchMu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

type timeoutBody struct {
	Timeout *int64 `json:"timeout"`
}

func (s *server) setTimeout(w http.ResponseWriter, r *http.Request) {
	var req timeoutBody
	if err := decode(r, &req); err != nil {
		s.writeErr(w, err)
		return
	}
	if req.Timeout == nil || *req.Timeout <= 0 {
		writeError(w, http.StatusBadRequest, "timeout (seconds) must be positive")
		return
	}
	if _, err := s.m.SetTTL(r.Context(), r.PathValue("id"), time.Duration(*req.Timeout)*time.Second); err != nil {
		s.writeErr(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// connect answers for a running sandbox (StacyVM has no paused ones) and
// only ever extends its TTL, as E2B's does.
func (s *server) connect(w http.ResponseWriter, r *http.Request) {
	var req timeoutBody
	if err := decode(r, &req); err != nil {
		s.writeErr(w, err)
		return
	}
	id := r.PathValue("id")
	var (
		sb  store.Sandbox
		err error
	)
	if req.Timeout != nil && *req.Timeout > 0 {
		sb, err = s.m.Extend(r.Context(), id, time.Duration(*req.Timeout)*time.Second)
	} else {
		sb, err = s.m.Get(r.Context(), id)
	}
	if err != nil {
		s.writeErr(w, err)
		return
	}
	if sb.State != string(provider.StateRunning) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("sandbox %s is %s", id, sb.State))
		return
	}
	writeJSON(w, http.StatusOK, s.brief(sb))
}

// list serves both the deprecated GET /sandboxes and GET /v2/sandboxes:
// running sandboxes only (StacyVM has no paused ones), filtered by
// metadata and template, newest first unless order=asc, in pages of at
// most 100 with the cursor in X-Next-Token.
func (s *server) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var meta url.Values
	if raw := q.Get("metadata"); raw != "" {
		var err error
		if meta, err = url.ParseQuery(raw); err != nil {
			writeError(w, http.StatusBadRequest, "metadata must be a URL-encoded query such as user=abc&app=prod")
			return
		}
	}
	wantRunning := true
	if st := q.Get("state"); st != "" {
		states := strings.Split(st, ",")
		for _, v := range states {
			if v != "running" && v != "paused" {
				writeError(w, http.StatusBadRequest, fmt.Sprintf("unknown state %q: want running or paused", v))
				return
			}
		}
		wantRunning = slices.Contains(states, "running")
	}
	limit := 100
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 100 {
			writeError(w, http.StatusBadRequest, "limit must be between 1 and 100")
			return
		}
		limit = n
	}
	asc := false
	switch q.Get("order") {
	case "", "desc":
	case "asc":
		asc = true
	default:
		writeError(w, http.StatusBadRequest, "order must be asc or desc")
		return
	}
	var after time.Time
	if sa := q.Get("startedAfter"); sa != "" {
		t, err := time.Parse(time.RFC3339Nano, sa)
		if err != nil {
			writeError(w, http.StatusBadRequest, "startedAfter must be an RFC 3339 time")
			return
		}
		after = t
	}
	var cur *cursor
	if tok := q.Get("nextToken"); tok != "" {
		c, err := parseCursor(tok)
		if err != nil {
			writeError(w, http.StatusBadRequest, "invalid nextToken")
			return
		}
		cur = &c
	}

	var all []store.Sandbox
	if wantRunning {
		var err error
		all, err = s.m.List(r.Context(), orchestrator.ListFilter{State: string(provider.StateRunning)})
		if err != nil {
			s.writeErr(w, err)
			return
		}
	}
	tmpl := q.Get("template")
	matched := slices.DeleteFunc(all, func(sb store.Sandbox) bool {
		if tmpl != "" && templateID(sb) != tmpl {
			return true
		}
		if !after.IsZero() && sb.CreatedAt.Before(after) {
			return true
		}
		for k, vs := range meta {
			if v, ok := sb.Metadata[k]; !ok || !slices.Contains(vs, v) {
				return true
			}
		}
		return false
	})
	slices.SortFunc(matched, func(a, b store.Sandbox) int {
		c := cmp.Or(a.CreatedAt.Compare(b.CreatedAt), strings.Compare(a.ID, b.ID))
		if asc {
			return c
		}
		return -c
	})
	w.Header().Set("X-Total-Running", strconv.Itoa(len(matched)))
	page := matched
	if cur != nil {
		i, _ := slices.BinarySearchFunc(page, *cur, func(sb store.Sandbox, c cursor) int {
			k := cmp.Or(sb.CreatedAt.Compare(c.created), strings.Compare(sb.ID, c.id))
			if asc {
				return k
			}
			return -k
		})
		if i < len(page) && page[i].ID == cur.id {
			i++
		}
		page = page[i:]
	}
	if len(page) > limit {
		page = page[:limit]
		last := page[len(page)-1]
		w.Header().Set("X-Next-Token", cursor{created: last.CreatedAt, id: last.ID}.String())
	}
	out := make([]sandboxJSON, 0, len(page))
	for _, sb := range page {
		out = append(out, s.detail(sb, false))
	}
	writeJSON(w, http.StatusOK, out)
}

// cursor is where a page ends: the last sandbox's start time and ID, so
// that sandboxes created or killed between pages shift nothing.
type cursor struct {
	created time.Time
	id      string
}

func (c cursor) String() string {
	return base64.RawURLEncoding.EncodeToString([]byte(c.created.UTC().Format(time.RFC3339Nano) + " " + c.id))
}

func parseCursor(tok string) (cursor, error) {
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		return cursor{}, err
	}
	ts, id, ok := strings.Cut(string(b), " ")
	if !ok || id == "" {
		return cursor{}, errors.New("malformed cursor")
	}
	t, err := time.Parse(time.RFC3339Nano, ts)
	if err != nil {
		return cursor{}, err
	}
	return cursor{created: t, id: id}, nil
}
