// Package api serves StacyVM's REST API v1 (docs/api.md, docs/openapi.yaml)
// over an orchestrator.Manager. Handlers translate HTTP to Manager calls
// and back; they never touch a provider. Every failure leaves through one
// mapper (errorStatus) as the contract's error body.
package api

import (
	"log/slog"
	"net/http"
	"time"

	"github.com/stacyvm/stacyvm/docs"
	"github.com/stacyvm/stacyvm/internal/envs"
	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/membudget"
	"github.com/stacyvm/stacyvm/internal/metrics"
	"github.com/stacyvm/stacyvm/internal/orchestrator"
)

// Options configures the API.
type Options struct {
	// APIKey, when set, is required in X-API-Key on every route except
	// GET /api/v1/health (Prometheus may send it as a bearer token).
	APIKey string
	// CORSOrigins lists the browser origins allowed to call the API
	// ("*" for any). None by default; the server's own origin is always
	// allowed.
	CORSOrigins []string
	// AllowedHosts lists the Host names (or host:port) the server answers
	// to besides loopback and the address a request arrives on ("*" for
	// any): the DNS-rebinding defence. None by default.
	AllowedHosts []string
	// MaxBodyBytes bounds JSON request bodies (default 1 MiB).
	MaxBodyBytes int64
	// MaxFileBytes bounds JSON file writes, content included (default 64 MiB).
	MaxFileBytes int64
	// MaxUploadBytes bounds raw uploads to PUT …/files/raw; 0 means no limit.
	MaxUploadBytes int64
	// HostPaths are the server's own directories and files (data, state,
	// images, sockets, binaries): no message a client sees shows them.
	HostPaths []string
	// Logger receives the access log and failures (default slog.Default()).
	Logger *slog.Logger
	// Version is reported by GET /api/v1/health.
	Version string
	// PreviewDomain, when set, gives each sandbox the preview domain
	// "<id>.<PreviewDomain>".
	PreviewDomain string
	// ProviderConfigs is each provider's configuration, secrets already
	// redacted, shown by GET /api/v1/providers/{name}.
	ProviderConfigs map[string]map[string]any
	// Metrics, when set, receives HTTP measurements and serves /metrics.
	Metrics *metrics.Metrics
	// EventsKeepAlive is how often an idle event stream gets a comment
	// line, so that proxies keep it open (default 15s).
	EventsKeepAlive time.Duration
	// ShuttingDown, when closed, ends event streams: they never finish on
	// their own, and a graceful shutdown must not wait for them (requests
	// such as exec drain normally).
	ShuttingDown <-chan struct{}
	// StreamWriteTimeout bounds each frame written to a stream (NDJSON
	// exec, exec WebSocket, server-sent events): a client that stops
	// reading is dropped, and its command killed, once one frame waits
	// this long (default 30s).
	StreamWriteTimeout time.Duration
	// MemoryBudget, when set, bounds the memory JSON file bodies hold
	// across concurrent requests (the Manager's budget bounds buffered
	// exec output; the server shares one between them). Past it a request
	// waits briefly, then gets 429 with Retry-After.
	MemoryBudget *membudget.Budget
	// Environments, when set, serves the environments routes; without it
	// they answer 503.
	Environments *envs.Service
	// MCP, when set, serves the Model Context Protocol (streamable HTTP)
	// at POST /mcp, behind the same middleware as every other route.
	MCP http.Handler
}

const (
	defaultMaxBodyBytes    = 1 << 20
	defaultMaxFileBytes    = 64 << 20
	defaultEventsKeepAlive = 15 * time.Second
	defaultStreamWrite     = 30 * time.Second
)

type server struct {
	m        *orchestrator.Manager
	opts     Options
	log      *slog.Logger
	mux      *http.ServeMux
	scrubber *scrubber
}

// routeSpec is one row of the route table. The OpenAPI document and this
// table are checked against each other by the tests.
type routeSpec struct {
	method, path string
	body         bodyKind
	h            http.HandlerFunc
}

// New returns the API's handler: the middleware stack around every route
// of the contract.
func New(m *orchestrator.Manager, opts Options) http.Handler {
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = defaultMaxBodyBytes
	}
	if opts.MaxFileBytes <= 0 {
		opts.MaxFileBytes = defaultMaxFileBytes
	}
	if opts.MaxUploadBytes < 0 {
		opts.MaxUploadBytes = 0
	}
	if opts.EventsKeepAlive <= 0 {
		opts.EventsKeepAlive = defaultEventsKeepAlive
	}
	if opts.StreamWriteTimeout <= 0 {
		opts.StreamWriteTimeout = defaultStreamWrite
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &server{m: m, opts: opts, log: opts.Logger, scrubber: newScrubber(opts.HostPaths)}
	s.mux = s.newMux()
	// The order is fixed: the request ID first so that everything after it
	// can log and report it; recovery around everything that can panic;
	// the Host and Origin checks for every path, before anything else
	// answers (preflights included); CORS preflights before auth, because
	// browsers send them without credentials.
	var h http.Handler = http.HandlerFunc(s.dispatch)
	h = s.withAuth(h)
	h = s.withCORS(h)
	h = s.withEdge(h)
	h = s.withAccessLog(h)
	h = s.withRecovery(h)
	h = s.withRequestID(h)
	return h
}

func (s *server) newMux() *http.ServeMux {
	mux := http.NewServeMux()
	for _, rt := range s.routes() {
		mux.Handle(rt.method+" "+rt.path, s.route(rt.body, rt.h))
	}
	return mux
}

const v1 = "/api/v1"

func (s *server) routes() []routeSpec {
	sb := v1 + "/sandboxes/{id}"
	return []routeSpec{
		{"POST", v1 + "/sandboxes", bodyJSON, s.createSandbox},
		{"GET", v1 + "/sandboxes", bodyJSON, s.listSandboxes},
		{"DELETE", v1 + "/sandboxes", bodyJSON, s.pruneSandboxes},
		{"GET", sb, bodyJSON, s.getSandbox},
		{"DELETE", sb, bodyJSON, s.destroySandbox},
		{"POST", sb + "/extend", bodyJSON, s.extendSandbox},
		{"POST", sb + "/pause", bodyJSON, s.pauseSandbox},
		{"POST", sb + "/resume", bodyJSON, s.resumeSandbox},
		{"POST", sb + "/exec", bodyJSON, s.exec},
		{"GET", sb + "/exec/ws", bodyJSON, s.execWebSocket},
		{"GET", sb + "/logs", bodyJSON, s.sandboxLogs},
		{"GET", sb + "/terminal", bodyJSON, s.terminal},

		{"POST", sb + "/files", bodyFile, s.writeFile},
		{"GET", sb + "/files", bodyJSON, s.readFile},
		{"DELETE", sb + "/files", bodyJSON, s.deleteFile},
		{"PUT", sb + "/files/raw", bodyUpload, s.uploadFile},
		{"GET", sb + "/files/list", bodyJSON, s.listFiles},
		{"POST", sb + "/files/move", bodyJSON, s.moveFile},
		{"POST", sb + "/files/chmod", bodyJSON, s.chmodFile},
		{"GET", sb + "/files/stat", bodyJSON, s.statFile},
		{"GET", sb + "/files/glob", bodyJSON, s.globFiles},

		{"POST", v1 + "/templates", bodyJSON, s.createTemplate},
		{"GET", v1 + "/templates", bodyJSON, s.listTemplates},
		{"GET", v1 + "/templates/{name}", bodyJSON, s.getTemplate},
		{"PUT", v1 + "/templates/{name}", bodyJSON, s.updateTemplate},
		{"DELETE", v1 + "/templates/{name}", bodyJSON, s.deleteTemplate},
		{"POST", v1 + "/templates/{name}/spawn", bodyJSON, s.spawnTemplate},

		{"POST", v1 + "/environments/specs", bodyJSON, s.createSpec},
		{"GET", v1 + "/environments/specs", bodyJSON, s.listSpecs},
		{"GET", v1 + "/environments/specs/{id}", bodyJSON, s.getSpec},
		{"POST", v1 + "/environments/builds", bodyJSON, s.createBuild},
		{"GET", v1 + "/environments/builds", bodyJSON, s.listBuilds},
		{"GET", v1 + "/environments/builds/{id}", bodyJSON, s.getBuild},
		{"POST", v1 + "/environments/builds/{id}/cancel", bodyJSON, s.cancelBuild},
		{"GET", v1 + "/environments/builds/{id}/spawn-config", bodyJSON, s.spawnConfig},
		{"GET", v1 + "/environments/builds/{id}/logs", bodyJSON, s.buildLogs},

		{"GET", v1 + "/providers", bodyJSON, s.listProviders},
		{"GET", v1 + "/providers/{name}", bodyJSON, s.getProvider},
		{"POST", v1 + "/providers/test", bodyJSON, s.testProviders},
		{"GET", v1 + "/snapshots", bodyJSON, s.listSnapshots},
		{"GET", v1 + "/pool/status", bodyJSON, s.poolStatus},
		{"GET", v1 + "/health", bodyJSON, s.health},
		{"GET", v1 + "/metrics", bodyJSON, s.metricsSummary},
		{"GET", v1 + "/events", bodyJSON, s.events},
		{"GET", v1 + "/openapi.yaml", bodyJSON, s.openAPI},

		{"GET", "/metrics", bodyJSON, s.prometheus},

		// MCP tool calls carry file contents, so they get the file limit.
		{"POST", "/mcp", bodyFile, s.mcp},
	}
}

// openAPI serves the embedded OpenAPI document.
func (s *server) openAPI(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/yaml")
	_, _ = w.Write(docs.OpenAPI)
}

// mcp hands the request to the MCP handler, when the server has one.
func (s *server) mcp(w http.ResponseWriter, r *http.Request) {
	if s.opts.MCP == nil {
		s.writeError(w, r, errdefs.New(errdefs.ErrNotFound, "this server does not serve MCP"))
		return
	}
	s.opts.MCP.ServeHTTP(w, r)
}
