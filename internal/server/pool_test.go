package server

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stacyvm/stacyvm/internal/config"
)

type poolJSON struct {
	Name     string  `json:"name"`
	Template *string `json:"template"`
	Image    string  `json:"image"`
	Provider string  `json:"provider"`
	Policy   string  `json:"policy"`
	Target   int     `json:"target"`
	Ready    int     `json:"ready"`
	Creating int     `json:"creating"`
	Claimed  int64   `json:"claimed"`
	Misses   int64   `json:"misses"`
	Failures int64   `json:"failures"`
	Problem  *string `json:"problem"`
}

type poolStatusJSON struct {
	Enabled    bool       `json:"enabled"`
	VMs        int        `json:"vms"`
	MaxVMs     int        `json:"max_vms"`
	TotalUsers int        `json:"total_users"`
	Pools      []poolJSON `json:"pools"`
}

func poolStatus(t *testing.T, base string) poolStatusJSON {
	t.Helper()
	var st poolStatusJSON
	if code := call(t, "GET", base+"/api/v1/pool/status", nil, &st); code != 200 {
		t.Fatalf("pool status: %d", code)
	}
	return st
}

func poolNamed(st poolStatusJSON, name string) poolJSON {
	for _, p := range st.Pools {
		if p.Name == name {
			return p
		}
	}
	return poolJSON{}
}

func waitPoolReady(t *testing.T, base, name string, n int) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		p := poolNamed(poolStatus(t, base), name)
		if p.Ready == n && p.Creating == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pool %s: %+v, want %d ready", name, p, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type sandboxJSON struct {
	ID        string            `json:"id"`
	State     string            `json:"state"`
	OwnerID   *string           `json:"owner_id"`
	Template  *string           `json:"template"`
	Metadata  map[string]string `json:"metadata"`
	ExpiresAt string            `json:"expires_at"` // "" for a member: it never expires
}

func listIDs(t *testing.T, base, query string) []string {
	t.Helper()
	var list []sandboxJSON
	if code := call(t, "GET", base+"/api/v1/sandboxes"+query, nil, &list); code != 200 {
		t.Fatalf("list %s: %d", query, code)
	}
	var ids []string
	for _, sb := range list {
		ids = append(ids, sb.ID)
	}
	slices.Sort(ids)
	return ids
}

// TestPoolsThroughTheServer drives warm pools through the whole server
// (configuration, middleware, API, orchestrator, pools, store, mock):
// configured and template pools fill, spawns claim through both spawn
// routes, members stay unlisted, status and Prometheus report them, and
// an empty pool with policy reject answers 429 with Retry-After.
func TestPoolsThroughTheServer(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	cfg.Sandbox.DefaultImage = "img:base"
	cfg.Pools = []config.PoolSpec{{Name: "small", Size: 2}}
	cfg.Pool.CheckInterval = 100 * time.Millisecond
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	base, _ := start(t, cfg, io.Discard)

	waitPoolReady(t, base, "small", 2)
	st := poolStatus(t, base)
	small := poolNamed(st, "small")
	if !st.Enabled || st.MaxVMs != 2 || st.VMs != 2 || small.Image != "img:base" || small.Provider != "mock" ||
		small.Policy != "cold" || small.Target != 2 || small.Template != nil {
		t.Fatalf("pool status = %+v", st)
	}
	members := listIDs(t, base, "?state=pooled")
	if len(members) != 2 {
		t.Fatalf("state=pooled lists %v, want the 2 members", members)
	}
	if got := listIDs(t, base, ""); len(got) != 0 {
		t.Fatalf("GET /sandboxes lists %v; members must not be listed", got)
	}

	var sb sandboxJSON
	code := call(t, "POST", base+"/api/v1/sandboxes", map[string]any{
		"owner_id": "alice", "metadata": map[string]string{"job": "1"}, "ttl": "10m",
	}, &sb)
	if code != 201 || !slices.Contains(members, sb.ID) {
		t.Fatalf("spawn = %d %+v, want 201 with one of %v", code, sb, members)
	}
	if sb.State != "running" || sb.OwnerID == nil || *sb.OwnerID != "alice" || sb.Metadata["job"] != "1" || len(sb.Metadata) != 1 {
		t.Errorf("claimed sandbox = %+v", sb)
	}
	exp, _ := time.Parse(time.RFC3339, sb.ExpiresAt)
	if left := time.Until(exp); left < 9*time.Minute || left > 10*time.Minute+time.Second {
		t.Errorf("claimed sandbox expires in %s, want about 10m from the claim", left)
	}
	if got := listIDs(t, base, ""); !slices.Equal(got, []string{sb.ID}) {
		t.Errorf("GET /sandboxes = %v, want only the claimed %s", got, sb.ID)
	}

	// A template with a pool: its spawn route claims a member set up by
	// the template.
	if code := call(t, "POST", base+"/api/v1/templates", map[string]any{
		"name": "warm", "image": "img:base", "pool_size": 1, "setup": []string{"echo ready > marker"},
	}, nil); code != 201 {
		t.Fatalf("create template: %d", code)
	}
	waitPoolReady(t, base, "template:warm", 1)
	tmember := listIDs(t, base, "?state=pooled")
	var tsb sandboxJSON
	if code := call(t, "POST", base+"/api/v1/templates/warm/spawn", map[string]any{"owner_id": "bob"}, &tsb); code != 201 {
		t.Fatalf("template spawn: %d", code)
	}
	if !slices.Contains(tmember, tsb.ID) || tsb.Template == nil || *tsb.Template != "warm" {
		t.Fatalf("template spawn got %+v, want one of %v", tsb, tmember)
	}
	var res struct {
		Stdout string `json:"stdout"`
	}
	if code := call(t, "POST", base+"/api/v1/sandboxes/"+tsb.ID+"/exec", map[string]any{"command": "cat marker"}, &res); code != 200 || res.Stdout != "ready\n" {
		t.Errorf("claimed template member: %d %q, want its setup done", code, res.Stdout)
	}

	waitPoolReady(t, base, "small", 2)
	waitPoolReady(t, base, "template:warm", 1)
	st = poolStatus(t, base)
	if p := poolNamed(st, "small"); p.Claimed != 1 || p.Misses != 0 {
		t.Errorf("small after one claim = %+v", p)
	}
	if st.TotalUsers != 2 {
		t.Errorf("total_users = %d, want the 2 claims", st.TotalUsers)
	}
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	text, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`stacyvm_pool_target{pool="small"} 2`, `stacyvm_pool_ready{pool="small"} 2`,
		`stacyvm_pool_claims_total{pool="small"} 1`, `stacyvm_pool_claims_total{pool="template:warm"} 1`,
		`stacyvm_pool_misses_total{pool="small"} 0`,
	} {
		if !strings.Contains(string(text), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	// Deleting the template drains its pool.
	if code := call(t, "DELETE", base+"/api/v1/templates/warm", nil, nil); code != 200 && code != 204 {
		t.Fatalf("delete template: %d", code)
	}
	deadline := time.Now().Add(30 * time.Second)
	for poolNamed(poolStatus(t, base), "template:warm").Name != "" || len(listIDs(t, base, "?state=pooled")) != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("template pool not drained: %+v, members %v", poolStatus(t, base), listIDs(t, base, "?state=pooled"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestPoolRejectAnswers429: a pool whose refills fail (its template's
// setup exits 3) stays empty; with policy reject its spawns answer 429
// RESOURCE_LIMIT with Retry-After, and the status names the problem.
func TestPoolRejectAnswers429(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	cfg.Pool.Policy = config.PoolReject
	cfg.Pool.BackoffMax = 5 * time.Second
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	base, _ := start(t, cfg, io.Discard)
	if code := call(t, "POST", base+"/api/v1/templates", map[string]any{
		"name": "broken", "image": "img:base", "pool_size": 1, "setup": []string{"exit 3"},
	}, nil); code != 201 {
		t.Fatalf("create template: %d", code)
	}
	deadline := time.Now().Add(30 * time.Second)
	for poolNamed(poolStatus(t, base), "template:broken").Failures == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no failed refill: %+v", poolStatus(t, base))
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, path := range []string{"/api/v1/templates/broken/spawn", "/api/v1/sandboxes"} {
		body := map[string]any{}
		if path == "/api/v1/sandboxes" {
			body["template"] = "broken"
		}
		req, _ := http.NewRequest("POST", base+path, strings.NewReader(fmt.Sprint(mustJSON(body))))
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 429 || !strings.Contains(string(b), `"RESOURCE_LIMIT"`) {
			t.Errorf("%s = %d %s, want 429 RESOURCE_LIMIT", path, resp.StatusCode, b)
		}
		if ra, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || ra < 1 {
			t.Errorf("%s: Retry-After %q, want whole seconds ≥ 1", path, resp.Header.Get("Retry-After"))
		}
	}
	p := poolNamed(poolStatus(t, base), "template:broken")
	if p.Misses != 2 || p.Ready != 0 || p.Problem == nil || !strings.Contains(*p.Problem, "exited 3") {
		t.Errorf("status = %+v, want 2 misses and the setup failure as problem", p)
	}
	// A spawn no pool matches is not affected.
	if code := call(t, "POST", base+"/api/v1/sandboxes", map[string]any{"image": "other"}, nil); code != 201 {
		t.Errorf("unpooled spawn: %d", code)
	}
}

// TestPoolMembersAgeOut: members past max_age are replaced by new ones,
// the old ones destroyed.
func TestPoolMembersAgeOut(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	cfg.Sandbox.DefaultImage = "img:base"
	cfg.Pools = []config.PoolSpec{{Name: "aging", Size: 2, MaxAge: 2 * time.Second}}
	cfg.Pool.CheckInterval = 100 * time.Millisecond
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	base, _ := start(t, cfg, io.Discard)
	waitPoolReady(t, base, "aging", 2)
	first := listIDs(t, base, "?state=pooled")
	deadline := time.Now().Add(60 * time.Second)
	for {
		now := listIDs(t, base, "?state=pooled")
		if len(now) == 2 && !slices.ContainsFunc(now, func(id string) bool { return slices.Contains(first, id) }) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("members %v not replaced after max_age (now %v)", first, now)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if gone := listIDs(t, base, "?state=destroyed"); !slices.Contains(gone, first[0]) || !slices.Contains(gone, first[1]) {
		t.Errorf("aged-out members %v not destroyed (destroyed: %v)", first, gone)
	}
}

// TestPoolMembersSurviveRestart: a stop and start keeps the members (same
// IDs), adopted without spawning and claimable at once.
func TestPoolMembersSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	cfg.Sandbox.DefaultImage = "img:base"
	cfg.Pools = []config.PoolSpec{{Name: "kept", Size: 2}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	base, stop := start(t, cfg, io.Discard)
	waitPoolReady(t, base, "kept", 2)
	before := listIDs(t, base, "?state=pooled")
	stop()

	base2, _ := start(t, cfg, io.Discard)
	st := poolNamed(poolStatus(t, base2), "kept")
	if after := listIDs(t, base2, "?state=pooled"); !slices.Equal(after, before) || st.Ready != 2 || st.Creating != 0 {
		t.Fatalf("after restart: status %+v, members %v; want the kept members %v ready at once", st, after, before)
	}
	var sb sandboxJSON
	if code := call(t, "POST", base2+"/api/v1/sandboxes", map[string]any{}, &sb); code != 201 || !slices.Contains(before, sb.ID) {
		t.Errorf("spawn after restart = %d %s, want an adopted member of %v", code, sb.ID, before)
	}
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}
