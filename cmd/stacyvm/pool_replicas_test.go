package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/stacyvm/stacyvm/internal/store/postgres/pgtest"
)

// TestPoolReplicasWithDocker runs two `stacyvm serve` processes with the
// same warm pool on one PostgreSQL database and one dockerd: the pool is
// filled to its target once (not once per replica) and both replicas
// report the same numbers; concurrent claims through both get distinct,
// fresh members; after the replica holding the refill lease is killed
// with SIGKILL, claims through the other still succeed and it refills the
// pool; and dockerd holds exactly one container per member and per live
// sandbox throughout.
func TestPoolReplicasWithDocker(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real servers and containers; skipped in -short mode")
	}
	const image = "stacyvm/busybox:test"
	const target = 4
	u, schema := pgtest.SchemaURL(t)
	requireDockerImage(t, image)

	dir := t.TempDir()
	bin := buildBinaries(t)
	cfgPath := filepath.Join(dir, "stacyvm.yaml")
	cfg := fmt.Sprintf(`store:
  driver: postgres
  dsn: %q
  lease_ttl: 3s
provider:
  enabled: [docker]
  default: docker
docker:
  runtime: runc
sandbox:
  max_sandboxes: 100
  reconcile_interval: 2s
pool:
  check_interval: 1s
pools:
  - name: warm
    image: %s
    provider: docker
    size: %d
    concurrency: 2
`, u.String(), image, target)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	var instance string
	removeInstanceContainersAtCleanup(t, &instance)

	a := startPoolServer(t, bin, dir, cfgPath)
	instance = a.instance
	b := startPoolServer(t, bin, dir, cfgPath)
	if b.instance != instance {
		t.Fatalf("replicas on one store have instance ids %s and %s", instance, b.instance)
	}
	replicas := []*poolServer{a, b}

	// settled waits until every running replica reports the pool full and
	// dockerd holds exactly the members and the live sandboxes, steadily:
	// a second replica refilling would overshoot meanwhile.
	settled := func(live []*poolServer) {
		t.Helper()
		deadline := time.Now().Add(3 * time.Minute)
		var since time.Time
		for {
			ok := true
			var reports []string
			for _, s := range live {
				p := s.pool(t, "warm")
				reports = append(reports, fmt.Sprintf("%+v", p))
				if p.Ready != target || p.Creating != 0 || p.Target != target {
					ok = false
				}
			}
			pooled := live[0].ids(t, "?state=pooled")
			users := live[0].ids(t, "")
			ctrs := instanceContainers(t, instance)
			if len(pooled) > target {
				t.Fatalf("%d pooled records for a pool of %d on two replicas: %v", len(pooled), target, pooled)
			}
			if len(ctrs) != len(pooled)+len(users) {
				ok = false
			}
			for _, id := range append(slices.Clone(pooled), users...) {
				if ctrs[id] != "running" {
					ok = false
				}
			}
			switch {
			case !ok:
				since = time.Time{}
			case since.IsZero():
				since = time.Now()
			case time.Since(since) > 3*time.Second:
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("never settled: replicas report %v; %d pooled, %d live records, containers %v", reports, len(pooled), len(users), ctrs)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	settled(replicas)
	if n := len(instanceContainers(t, instance)); n != target {
		t.Fatalf("%d containers for a pool of %d on two replicas", n, target)
	}

	// Concurrent claims through both replicas: distinct fresh members.
	claim := func(s *poolServer, owner string) (string, int, bool) {
		var sb struct {
			ID    string `json:"id"`
			Owner string `json:"owner_id"`
		}
		code := s.callJSON(t, "POST", "/sandboxes", map[string]any{"image": image, "provider": "docker", "owner_id": owner}, &sb)
		if code != 201 || sb.Owner != owner {
			return sb.ID, code, false
		}
		var res struct {
			ExitCode int `json:"exit_code"`
		}
		s.callJSON(t, "POST", "/sandboxes/"+sb.ID+"/exec",
			map[string]any{"command": "test ! -e /workspace/claimed && touch /workspace/claimed"}, &res)
		return sb.ID, code, res.ExitCode == 0
	}
	members := a.ids(t, "?state=pooled")
	type result struct {
		id    string
		code  int
		fresh bool
	}
	results := make([]result, 2*target)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range results {
		wg.Go(func() {
			<-start
			id, code, fresh := claim(replicas[i%2], "user-"+strconv.Itoa(i))
			results[i] = result{id, code, fresh}
		})
	}
	close(start)
	wg.Wait()
	seen := map[string]bool{}
	fromPool := 0
	for i, r := range results {
		switch {
		case r.code != 201:
			t.Errorf("claim %d through %s: status %d", i, replicas[i%2].base, r.code)
		case seen[r.id]:
			t.Errorf("claim %d: %s handed out twice", i, r.id)
		case !r.fresh:
			t.Errorf("claim %d: %s was not fresh", i, r.id)
		}
		seen[r.id] = true
		if slices.Contains(members, r.id) {
			fromPool++
		}
	}
	if fromPool != target {
		t.Errorf("%d of the %d members were claimed by %d spawns", fromPool, target, len(results))
	}
	settled(replicas)

	// SIGKILL the replica holding the refill lease; the other claims and
	// refills.
	holder := refillHolder(t, u.String(), schema)
	var dead, survivor *poolServer
	for _, s := range replicas {
		if strconv.Itoa(s.cmd.Process.Pid) == holder {
			dead = s
		} else {
			survivor = s
		}
	}
	if dead == nil {
		t.Fatalf("the refill lease's holder (pid %s) is neither replica", holder)
	}
	dead.kill9()
	killed := time.Now()
	members = survivor.ids(t, "?state=pooled")
	for i := range target - 1 {
		id, code, fresh := claim(survivor, "after-"+strconv.Itoa(i))
		if code != 201 || !fresh {
			t.Fatalf("claim after the kill: %s status %d fresh %v", id, code, fresh)
		}
		if !slices.Contains(members, id) {
			t.Errorf("claim after the kill got %s, not one of the members %v", id, members)
		}
	}
	settled([]*poolServer{survivor})
	t.Logf("refill lease holder killed; the other replica refilled the pool %v later", time.Since(killed).Round(100*time.Millisecond))

	// Destroy every sandbox; members stay (as at any stop) and are
	// removed with the test's containers.
	for _, id := range survivor.ids(t, "") {
		if code := survivor.callJSON(t, "DELETE", "/sandboxes/"+id, nil, nil); code != 200 {
			t.Errorf("destroy %s: %d", id, code)
		}
	}
	pooled := survivor.ids(t, "?state=pooled")
	ctrs := instanceContainers(t, instance)
	if len(ctrs) != len(pooled) || len(pooled) != target {
		t.Errorf("after destroying every sandbox: containers %v, members %v", ctrs, pooled)
	}
	survivor.stop(t)
}

// refillHolder returns the PID of the replica holding the warm pools'
// refill lease (a holder is host/pid/random).
func refillHolder(t *testing.T, dsn, schema string) string {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(t.Context())
	var holder string
	q := `SELECT holder FROM ` + pgx.Identifier{schema, "leases"}.Sanitize() + ` WHERE name = 'pools' AND expires_at > now()`
	if err := conn.QueryRow(t.Context(), q).Scan(&holder); err != nil {
		t.Fatalf("refill lease: %v", err)
	}
	parts := strings.Split(holder, "/")
	if len(parts) < 3 {
		t.Fatalf("lease holder %q", holder)
	}
	return parts[len(parts)-2]
}
