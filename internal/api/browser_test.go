package api

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/stacyvm/stacyvm/internal/browsertest"
)

// accessEntry is one line of the server's access log.
type accessEntry struct {
	Msg    string `json:"msg"`
	Method string `json:"method"`
	Path   string `json:"path"`
	Status int    `json:"status"`
}

// requests returns the requests the server logged for method and path.
func (e *testEnv) requests(method, path string) []accessEntry {
	var out []accessEntry
	sc := bufio.NewScanner(strings.NewReader(e.logs.String()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var a accessEntry
		if json.Unmarshal(sc.Bytes(), &a) == nil && a.Msg == "http request" && a.Method == method && a.Path == path {
			out = append(out, a)
		}
	}
	return out
}

// waitRequest waits until the server has answered method path more than
// skip times, and returns the statuses of the answers after the first skip.
func (e *testEnv) waitRequest(method, path string, skip int) []int {
	e.t.Helper()
	var statuses []int
	e.waitFor(fmt.Sprintf("the server to answer %s %s", method, path), func() bool {
		statuses = statuses[:0]
		for _, a := range e.requests(method, path) {
			statuses = append(statuses, a.Status)
		}
		return len(statuses) > skip
	})
	return statuses[skip:]
}

// TestBrowserAttacks drives a real headless Chromium from a page on
// another origin (and from a rebound name) against a real server with no
// API key, the way a malicious web page would, and checks through the
// server that every attempt reached it and was refused, and that nothing
// was created, run or destroyed.
func TestBrowserAttacks(t *testing.T) {
	e := newEnv(t)
	sb := e.spawn(map[string]any{})
	before := e.count()
	api := e.srv.URL
	sbPath := "/api/v1/sandboxes/" + sb.ID

	attacker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprint(w, `<!doctype html><title>innocent page</title><iframe name="sink"></iframe>`)
	}))
	t.Cleanup(attacker.Close)

	ctx := browsertest.New(t, browsertest.Options{Hosts: map[string]string{"evil.example": "127.0.0.1"}})
	if err := chromedp.Do(ctx, chromedp.Navigate(attacker.URL+"/")); err != nil {
		t.Fatal(err)
	}
	run := func(name, js string) {
		t.Helper()
		got, err := browsertest.Eval[string](ctx, js)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		t.Logf("%s: the page saw %s", name, got)
	}
	// settle turns a promise's outcome into a string, so that a refusal
	// (which the page sees as a network error) does not fail Eval.
	settle := func(p string) string {
		return `(` + p + `).then(r => "answer " + (r.type === "opaque" ? "opaque" : r.status), e => "error " + e.message)`
	}
	// expect checks that the server answered method path (beyond what it
	// had answered before the attacks) with want each time.
	seen := map[string]int{"POST /api/v1/sandboxes": 1} // the spawn above
	expect := func(method, path string, want int) {
		t.Helper()
		statuses := e.waitRequest(method, path, seen[method+" "+path])
		seen[method+" "+path] += len(statuses)
		for _, st := range statuses {
			if st != want {
				t.Errorf("%s %s: the server answered %d, want %d", method, path, st, want)
			}
		}
	}

	// Every cross-origin attempt carries the page's Origin, which is
	// checked first (403); the body-type check (415) is the second line,
	// proven on its own below from a listed origin.

	// 1. A "simple" cross-origin POST: text/plain needs no preflight.
	run("fetch text/plain", settle(`fetch("`+api+`/api/v1/sandboxes", {method: "POST", headers: {"Content-Type": "text/plain"}, body: "{}"})`))
	expect("POST", "/api/v1/sandboxes", http.StatusForbidden)

	// 2. no-cors exec with a JSON-looking text body.
	run("no-cors exec", settle(`fetch("`+api+sbPath+`/exec", {method: "POST", mode: "no-cors", body: '{"command":"touch /workspace/pwned"}'})`))
	expect("POST", sbPath+"/exec", http.StatusForbidden)

	// 3. A bodiless no-cors POST: no Content-Type at all, so only the
	// Origin check stands in the way.
	run("no-cors empty extend", settle(`fetch("`+api+sbPath+`/extend", {method: "POST", mode: "no-cors"})`))
	expect("POST", sbPath+"/extend", http.StatusForbidden)
	run("no-cors empty prune trigger", settle(`fetch("`+api+`/api/v1/providers/test", {method: "POST", mode: "no-cors"})`))
	expect("POST", "/api/v1/providers/test", http.StatusForbidden)

	// 4. A cross-origin DELETE needs a preflight, which gets no CORS
	// headers: the browser never sends the DELETE.
	run("cors delete", settle(`fetch("`+api+sbPath+`", {method: "DELETE"})`))
	if st := e.waitRequest("OPTIONS", sbPath, 0); st[0] != http.StatusNoContent {
		t.Errorf("preflight answered %v", st)
	}

	// 5. HTML form posts, which browsers send cross-origin without asking:
	// text/plain crafted to look like JSON, and an empty urlencoded one.
	run("form posts", `new Promise(done => {
		const post = (action, enctype, fields) => {
			const f = document.createElement("form");
			f.method = "POST"; f.action = action; f.enctype = enctype; f.target = "sink";
			for (const [k, v] of fields) { const i = document.createElement("input"); i.name = k; i.value = v; f.appendChild(i); }
			document.body.appendChild(f); f.submit();
		};
		post("`+api+sbPath+`/files", "text/plain", [['{"path":"/workspace/pwned","content":"x","pad":"', '"}']]);
		setTimeout(() => { post("`+api+`/api/v1/templates/x/spawn", "application/x-www-form-urlencoded", []); done("submitted"); }, 200);
	})`)
	expect("POST", sbPath+"/files", http.StatusForbidden)
	expect("POST", "/api/v1/templates/x/spawn", http.StatusForbidden)

	// 6. A cross-site WebSocket: refused before the handshake.
	wsURL := "ws" + strings.TrimPrefix(api, "http") + sbPath + "/exec/ws"
	run("websocket", `new Promise(done => {
		const ws = new WebSocket("`+wsURL+`");
		ws.onopen = () => { ws.send('{"command":"touch /workspace/pwned"}'); done("open"); };
		ws.onclose = ev => done("closed " + ev.code);
	})`)
	expect("GET", sbPath+"/exec/ws", http.StatusForbidden)

	// 6b. The second line: a server that lists the attacker's origin in
	// server.cors_origins still refuses bodies of the wrong type from it,
	// and (the control that proves this page can create when allowed) a
	// JSON request from that origin succeeds.
	listed := newEnv(t, withOptions(func(o *Options) { o.CORSOrigins = []string{attacker.URL} }))
	run("listed: text/plain", settle(`fetch("`+listed.srv.URL+`/api/v1/sandboxes", {method: "POST", mode: "no-cors", body: "{}"})`))
	run("listed: form", `new Promise(done => {
		const f = document.createElement("form");
		f.method = "POST"; f.action = "`+listed.srv.URL+`/api/v1/templates"; f.target = "sink";
		document.body.appendChild(f); f.submit(); done("submitted");
	})`)
	run("listed: json", settle(`fetch("`+listed.srv.URL+`/api/v1/sandboxes", {method: "POST", headers: {"Content-Type": "application/json"}, body: "{}"})`))
	if got := listed.waitRequest("POST", "/api/v1/templates", 0); got[0] != http.StatusUnsupportedMediaType {
		t.Errorf("listed origin, empty form post: %v, want 415", got)
	}
	listed.waitFor("the JSON spawn", func() bool { return len(listed.requests("POST", "/api/v1/sandboxes")) >= 2 })
	var statuses []int
	for _, a := range listed.requests("POST", "/api/v1/sandboxes") {
		statuses = append(statuses, a.Status)
	}
	if len(statuses) != 2 || statuses[0] != http.StatusUnsupportedMediaType || statuses[1] != http.StatusCreated {
		t.Errorf("listed origin: text/plain then JSON answered %v, want [415 201]", statuses)
	}
	if n := listed.count(); n != 1 {
		t.Errorf("listed origin: %d sandboxes, want the JSON one only", n)
	}

	// 7. DNS rebinding: the page is loaded from evil.example, which now
	// resolves to the server. To the browser every call is same-origin
	// (so CORS and Origin allow it); only the Host header tells.
	_, port, _ := strings.Cut(strings.TrimPrefix(api, "http://"), ":")
	evil := "http://evil.example:" + port
	if err := chromedp.Do(ctx, chromedp.Navigate(evil+"/rebound")); err != nil {
		t.Fatal(err)
	}
	expect("GET", "/rebound", http.StatusMisdirectedRequest)
	got, err := browsertest.Eval[string](ctx, `fetch("/api/v1/sandboxes", {method: "POST", headers: {"Content-Type": "application/json"}, body: "{}"}).then(r => r.status + " " + r.headers.get("Content-Type"))`)
	if err != nil {
		t.Fatal(err)
	}
	if got != "421 application/json" {
		t.Errorf("rebound same-origin POST: the page saw %q, want 421 with the JSON error body", got)
	}
	got, err = browsertest.Eval[string](ctx, `fetch("/api/v1/sandboxes").then(r => r.status + "")`)
	if err != nil || got != "421" {
		t.Errorf("rebound GET of the sandbox list: %q, %v; want 421 (nothing to read)", got, err)
	}

	// Nothing happened: no sandbox created, the target still running with
	// its TTL unchanged, no file written.
	if n := e.count(); n != before {
		t.Errorf("%d sandboxes after the attacks, want %d", n, before)
	}
	now, err := e.m.Get(context.Background(), sb.ID)
	if err != nil || now.State != "running" || rfc3339(now.ExpiresAt) != sb.ExpiresAt {
		t.Errorf("target sandbox after the attacks: %+v, %v (was expiring at %v)", now, err, sb.ExpiresAt)
	}
	if len(e.requests("DELETE", sbPath)) != 0 {
		t.Error("a cross-origin DELETE reached the server without a granted preflight")
	}
	if _, err := e.m.StatFile(context.Background(), sb.ID, "/workspace/pwned"); err == nil {
		t.Error("an attack wrote /workspace/pwned")
	}
}
