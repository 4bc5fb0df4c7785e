package api

import (
	"bufio"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stacyvm/stacyvm/internal/membudget"
	"github.com/stacyvm/stacyvm/internal/orchestrator"
)

// TestMemoryBudget: buffered exec output and JSON file bodies share one
// budget across concurrent requests. Past it a request waits briefly, then
// gets 429 with Retry-After; streamed output is not counted; everything
// reserved is returned.
func TestMemoryBudget(t *testing.T) {
	const size = 8 << 20
	budget := membudget.New(size, 300*time.Millisecond)
	e := newEnv(t,
		withConfig(func(c *orchestrator.Config) { c.MemoryBudget = budget }),
		withOptions(func(o *Options) { o.MemoryBudget = budget; o.MaxFileBytes = 2 << 20 }))
	sb := e.spawn(nil)
	execPath := "/api/v1/sandboxes/" + sb.ID + "/exec"
	filesPath := "/api/v1/sandboxes/" + sb.ID + "/files"

	// Two commands that each print 3 MB (a 4 MiB buffer) and then hold it
	// for a while fill the budget exactly; fourteen more, a JSON file write
	// and a streamed command then arrive while it is full.
	const hog = `head -c 3000000 /dev/zero | tr '\0' a; sleep 5`
	var wg sync.WaitGroup
	var mu sync.Mutex
	statuses := map[int]int{}
	var peak int64
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if n := budget.InUse(); n > peak {
				mu.Lock()
				peak = max(peak, n)
				mu.Unlock()
			}
			time.Sleep(time.Millisecond)
		}
	}()
	runHog := func() {
		resp := e.call("POST", execPath, map[string]any{"command": hog})
		defer resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusOK:
			var res execResultJSON
			e.expectJSON(resp, http.StatusOK, &res)
			if len(res.Stdout) != 3000000 {
				t.Errorf("a command that got its memory returned %d bytes", len(res.Stdout))
			}
		case http.StatusTooManyRequests:
			if ra, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || ra < 1 {
				t.Errorf("429 without a Retry-After: %q", resp.Header.Get("Retry-After"))
			}
			body := e.expectError(resp, http.StatusTooManyRequests, codeResourceLimit)
			if !strings.Contains(body.Message, "memory budget") || body.Hint == "" {
				t.Errorf("429 body = %+v", body)
			}
		default:
			t.Errorf("status %d", resp.StatusCode)
		}
		mu.Lock()
		statuses[resp.StatusCode]++
		mu.Unlock()
	}
	for range 2 {
		wg.Go(runHog)
	}
	e.waitFor("two commands to fill the budget", func() bool { return budget.InUse() == size })
	for range 14 {
		wg.Go(runHog)
	}

	resp := e.call("POST", filesPath, map[string]any{"path": "f.txt", "content": strings.Repeat("x", 1<<20)})
	e.expectError(resp, http.StatusTooManyRequests, codeResourceLimit)
	resp = e.call("POST", execPath, map[string]any{"command": "head -c 5000000 /dev/zero", "stream": true})
	n := 0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		n++
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || n < 2 {
		t.Errorf("streamed exec during the squeeze: status %d, %d lines", resp.StatusCode, n)
	}

	wg.Wait()
	close(stop)
	t.Logf("statuses %v, peak reservation %d of %d", statuses, peak, size)
	if statuses[http.StatusOK] != 2 || statuses[http.StatusTooManyRequests] != 14 {
		t.Errorf("statuses %v: want the two that filled the budget served and the fourteen after them refused", statuses)
	}
	if peak > size {
		t.Errorf("peak reservation %d exceeds the budget %d", peak, size)
	}
	if n := budget.InUse(); n != 0 {
		t.Errorf("%d bytes still reserved after every request ended", n)
	}
	// With room again, the same file write goes through.
	e.expectJSON(e.call("POST", filesPath, map[string]any{"path": "f.txt", "content": strings.Repeat("x", 1<<20)}), http.StatusOK, nil)
	if n := budget.InUse(); n != 0 {
		t.Errorf("%d bytes still reserved after the file write", n)
	}
}

// TestDiskLimitUnsupported: a provider that cannot enforce disk_mb says so
// in GET /providers, and a spawn asking for it is a 501, not a sandbox
// without the limit.
func TestDiskLimitUnsupported(t *testing.T) {
	e := newEnv(t)
	var provs []struct {
		Name         string         `json:"name"`
		Capabilities map[string]any `json:"capabilities"`
	}
	e.expectJSON(e.call("GET", "/api/v1/providers", nil), http.StatusOK, &provs)
	if len(provs) != 1 || provs[0].Capabilities["disk_limit"] != false {
		t.Fatalf("providers = %+v; want the mock declaring disk_limit false", provs)
	}
	body := e.expectError(e.call("POST", "/api/v1/sandboxes", map[string]any{"disk_mb": 100}), http.StatusNotImplemented, codeUnimplemented)
	if !strings.Contains(body.Message, "disk_mb") || body.Hint == "" {
		t.Errorf("501 body = %+v", body)
	}
	var list []sandboxJSON
	e.expectJSON(e.call("GET", "/api/v1/sandboxes", nil), http.StatusOK, &list)
	if len(list) != 0 {
		t.Errorf("the refused spawn left %d sandboxes", len(list))
	}
	e.spawn(map[string]any{"disk_mb": 0})
}
