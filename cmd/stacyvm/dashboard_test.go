//go:build linux

package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/input"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/stacyvm/stacyvm/internal/browsertest"
	"github.com/stacyvm/stacyvm/internal/client"
	"github.com/stacyvm/stacyvm/internal/errdefs"
)

// EnvUpdateScreenshots, set to 1, makes TestDashboard write its
// screenshots to docs/screenshots (the ones the docs and README show)
// instead of a temporary directory.
const EnvUpdateScreenshots = "STACYVM_UPDATE_SCREENSHOTS"

// dashboardSession is the browser on the dashboard of a real server.
type dashboardSession struct {
	t      *testing.T
	ctx    context.Context
	base   string
	shots  string
	logs   *syncBuffer // the server's log
	errsMu sync.Mutex
	errs   []string // uncaught exceptions and console errors of the pages
}

// TestDashboard drives the dashboard in a real headless Chromium against a
// real `stacyvm serve` on Docker: sign in with the API key, spawn a
// sandbox, use its terminal (echo, top, vi), upload a file and see it in
// the file browser, edit and save a file (checked through the API),
// destroy the sandbox. It screenshots every page at 1280×800 and at phone
// width, and measures the overview's first contentful paint.
func TestDashboard(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the real server, Docker and Chromium; skipped in -short mode")
	}
	browsertest.Require(t)
	requireDockerImage(t, "stacyvm/busybox:test")
	const key = "dashboard-test-key"
	srv := startRealServer(t, buildBinaries(t), "provider:\n  enabled: [docker]\ndocker:\n  runtime: runc\n", key)

	shots := t.TempDir()
	if os.Getenv(EnvUpdateScreenshots) == "1" {
		shots = filepath.Join("..", "..", "docs", "screenshots")
		if err := os.MkdirAll(shots, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	d := &dashboardSession{t: t, base: srv.base, shots: shots, logs: srv.logs,
		ctx: browsertest.New(t, browsertest.Options{Timeout: 8 * time.Minute})}
	d.listen()
	d.do(chromedp.EmulateViewport(1280, 800))

	// Signing in: the page asks for the key; a wrong one shows the
	// server's message; the right one opens the overview.
	d.do(chromedp.Navigate(srv.base + "/"))
	d.waitJS("the sign-in form", `!!document.querySelector("#api-key")`)
	d.shot("signin")
	d.do(chromedp.SendKeys(chromedp.CSS("#api-key"), "wrong-key\r"))
	d.waitJS("the refusal", `document.querySelector(".error")?.textContent.includes("missing or invalid API key")`)
	d.eval(`document.querySelector("#api-key").value = ""`)
	d.do(chromedp.SendKeys(chromedp.CSS("#api-key"), key+"\r"))
	d.waitJS("the overview", `document.querySelector("main h1")?.textContent === "Overview" && !!document.querySelector("main table")`)
	d.waitJS("the live event stream", `document.querySelector("main h2 .ok")?.textContent.includes("live")`)

	// First paint of the overview, from a fresh load with the key kept
	// in session storage.
	paints := d.firstPaints(5)
	slices.Sort(paints)
	t.Logf("first contentful paint of the overview over %d loads: min %.0f ms, median %.0f ms, max %.0f ms", len(paints), paints[0], paints[len(paints)/2], paints[len(paints)-1])
	fmt.Printf("DASHBOARD_FIRST_PAINT_MS median=%.0f min=%.0f max=%.0f loads=%d\n", paints[len(paints)/2], paints[0], paints[len(paints)-1], len(paints))
	// A sanity bound only: the target (< 200 ms) is reported, not asserted,
	// since a loaded CI machine must not fail the suite on a slow paint.
	if paints[len(paints)/2] > 5000 {
		t.Errorf("median first paint %.0f ms: something blocks the page", paints[len(paints)/2])
	}

	// The keyboard: on a fresh load, the first Tab stop skips to the
	// content.
	d.keys("\t")
	d.waitJS("the skip link focused", `document.activeElement?.classList.contains("skip")`)

	// The empty sandbox list says what to do; spawning opens the sandbox.
	d.nav("#/sandboxes")
	d.waitJS("the empty list", `document.querySelector("main .empty")?.textContent.includes("No sandboxes yet")`)
	// A refused spawn shows the server's own message.
	d.do(chromedp.SendKeys(chromedp.CSS(`input[name="ttl"]`), "forever"),
		chromedp.Click(chromedp.CSS(`form[aria-label="Spawn a sandbox"] button[type="submit"]`)))
	d.waitJS("the server's refusal", `document.querySelector("main .error")?.textContent.match(/Spawn: .*ttl.*BAD_REQUEST · HTTP 400 · request [0-9a-f]+/)`)
	d.eval(`document.querySelector('input[name="ttl"]').value = ""`)
	d.do(chromedp.SendKeys(chromedp.CSS(`input[name="image"]`), "stacyvm/busybox:test"),
		chromedp.SendKeys(chromedp.CSS(`input[name="ttl"]`), "15m"),
		chromedp.Click(chromedp.CSS(`form[aria-label="Spawn a sandbox"] button[type="submit"]`)))
	d.waitJS("the new sandbox's page", `location.hash.startsWith("#/sandboxes/sb-")`)
	id, err := browsertest.Eval[string](d.ctx, `decodeURIComponent(location.hash.split("/")[2])`)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := srv.client.Get(ctx, id); err == nil {
			_ = srv.client.Destroy(ctx, id)
		}
	})
	if sb, err := srv.client.Get(t.Context(), id); err != nil || sb.State != "running" || sb.Image != "stacyvm/busybox:test" {
		t.Fatalf("the API has %+v (%v) for the spawned sandbox", sb, err)
	}

	// The terminal: a real PTY over the WebSocket.
	d.waitJS("the terminal to connect", `document.querySelector("[data-terminal]")?.dataset.status === "open"`)
	d.termType("echo hi\r")
	d.waitRow("hi")
	// The terminal was sized to its box, not left at 80×24.
	status := d.waitJS("the terminal's size", `document.querySelector(".term-status")?.textContent.match(/(\d+)×(\d+)/)?.slice(1).reverse().join(" ")`)
	d.termType("stty size\r")
	d.waitRow(status) // stty prints rows, then columns
	t.Logf("terminal size (rows cols): %s", status)
	d.shot("terminal")
	// F6 leaves the terminal (every other key belongs to the shell).
	d.termType(kb.F6)
	d.waitJS("focus out of the terminal", `document.activeElement?.hasAttribute("data-after-terminal")`)

	d.termType("top\r")
	d.waitJS("top's screen", `d_rows().some(r => /^\s*PID\s+PPID/.test(r))`)
	d.shot("terminal-top")
	// top may draw before it puts the terminal in raw mode, which drops
	// what was typed before; its first screen plus a moment is enough.
	time.Sleep(500 * time.Millisecond)
	d.termType("q")
	d.termType("echo top-done-$((20+22))\r")
	d.waitRow("top-done-42")

	d.termType("vi /tmp/vi-test\r")
	d.waitJS("vi's screen", `d_rows().filter(r => r.trimEnd() === "~").length >= 5`)
	time.Sleep(500 * time.Millisecond) // as for top
	d.termType("ihello from vi")
	// Esc on its own: vi reads an Esc followed at once by more bytes as
	// the start of an escape sequence (an arrow key), as terminals send.
	d.termType(kb.Escape)
	time.Sleep(500 * time.Millisecond)
	d.termType(":wq\r")
	d.termType("cat /tmp/vi-test; echo vi-done-$((40+2))\r")
	d.waitRow("vi-done-42")
	d.waitRow("hello from vi")

	// Ctrl-C reaches the foreground job, not the session.
	d.termType("sleep 300\r")
	time.Sleep(300 * time.Millisecond)
	d.eval(`document.querySelector(".xterm-helper-textarea").focus()`)
	d.do(chromedp.KeyEvent("c", chromedp.KeyModifiers(chromedp.ModifierCtrl)))
	d.termType("echo after-ctrl-c-$((6*7))\r")
	d.waitRow("after-ctrl-c-42")

	// Files: upload, see it listed, edit and save, check through the API.
	local := filepath.Join(t.TempDir(), "upload.txt")
	if err := os.WriteFile(local, []byte("uploaded from the browser\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	d.nav("#/sandboxes/" + id + "/files?path=/tmp")
	d.waitJS("the listing of /tmp", `!!document.querySelector('tr[data-path="/tmp/vi-test"]')`)
	d.do(chromedp.SetUploadFiles(chromedp.CSS("#upload-input"), []string{local}),
		chromedp.Click(chromedp.CSS(`form[aria-label="Upload files"] button[type="submit"]`)))
	d.waitJS("the uploaded file in the listing", `!!document.querySelector('tr[data-path="/tmp/upload.txt"]')`)
	if got := d.readFile(srv.client, id, "/tmp/upload.txt"); got != "uploaded from the browser\n" {
		t.Fatalf("uploaded file holds %q", got)
	}
	d.shot("files")
	d.do(chromedp.Click(chromedp.CSS(`tr[data-path="/tmp/upload.txt"] button[aria-label="Edit upload.txt"]`)))
	d.waitJS("the editor", `document.querySelector("#editor-text")?.value === "uploaded from the browser\n"`)
	d.eval(`document.querySelector("#editor-text").value = ""`)
	d.do(chromedp.SendKeys(chromedp.CSS("#editor-text"), "edited in the dashboard\n"))
	d.shot("editor")
	d.do(chromedp.Click(chromedp.CSS(`form.editor button[type="submit"]`)))
	d.waitJS("the editor to close", `!document.querySelector("#editor-text")`)
	if got := d.readFile(srv.client, id, "/tmp/upload.txt"); got != "edited in the dashboard\n" {
		t.Fatalf("after saving, the file holds %q", got)
	}
	// Download saves what the sandbox holds.
	downloads := t.TempDir()
	if _, err := chromedp.CallBrowser(d.ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
		Behavior: browser.SetDownloadBehaviorBehaviorAllow, DownloadPath: downloads}); err != nil {
		t.Fatal(err)
	}
	d.waitJS("the listing after saving", `!!document.querySelector('tr[data-path="/tmp/upload.txt"] button[aria-label="Download upload.txt"]')`)
	d.do(chromedp.Click(chromedp.CSS(`tr[data-path="/tmp/upload.txt"] button[aria-label="Download upload.txt"]`)))
	waitFile(t, filepath.Join(downloads, "upload.txt"), "edited in the dashboard\n")

	// The other views of a sandbox, and the other pages.
	if _, err := srv.client.Exec(t.Context(), id, client.ExecRequest{Command: "exit 3"}); err != nil {
		t.Fatal(err)
	}
	d.nav("#/sandboxes/" + id + "/activity")
	d.waitJS("the exec in the activity", `[...document.querySelectorAll(".events li")].some(li => li.textContent.includes("exec.finished") && li.textContent.includes("exit_code=3"))`)
	d.shot("activity")
	d.nav("#/sandboxes/" + id + "/log")
	d.waitJS("the log", `!!document.querySelector("pre.log")?.textContent`)
	d.shot("log")
	// Templates: create, edit, spawn, through the forms; checked through
	// the API.
	d.nav("#/templates")
	d.waitJS("the empty template list", `document.querySelector("main .empty")?.textContent.includes("No templates yet")`)
	d.do(chromedp.Click(chromedp.CSS(`main button.primary`)))
	d.waitJS("the template form", `!!document.querySelector('form[aria-label="New template"]')`)
	d.do(chromedp.SendKeys(chromedp.CSS(`form input[name="name"]`), "tools"),
		chromedp.SendKeys(chromedp.CSS(`form input[name="image"]`), "stacyvm/busybox:test"),
		chromedp.SendKeys(chromedp.CSS(`form input[name="description"]`), "busybox with an out directory"),
		chromedp.SendKeys(chromedp.CSS(`form textarea[name="setup"]`), "mkdir -p /workspace/out\ntouch /workspace/out/ready"),
		chromedp.SendKeys(chromedp.CSS(`form textarea[name="env"]`), "GREETING=hello"),
		chromedp.SendKeys(chromedp.CSS(`form input[name="memory_mb"]`), "256"),
		chromedp.SendKeys(chromedp.CSS(`form input[name="pool_size"]`), "1"),
		chromedp.Click(chromedp.CSS(`form[aria-label="New template"] button[type="submit"]`)))
	d.waitJS("the new template in the list", `!!document.querySelector('tr[data-name="tools"]')`)
	tpl, err := srv.client.GetTemplate(t.Context(), "tools")
	if err != nil || tpl.Image != "stacyvm/busybox:test" || len(tpl.Setup) != 2 || tpl.Env["GREETING"] != "hello" || tpl.MemoryMB != 256 || tpl.PoolSize != 1 {
		t.Fatalf("the API has %+v (%v) for the template made in the form", tpl, err)
	}
	d.do(chromedp.Click(chromedp.CSS(`tr[data-name="tools"] button[aria-label="Edit tools"]`)))
	d.waitJS("the edit form", `!!document.querySelector('form[aria-label="Edit template tools"]')`)
	d.eval(`document.querySelector('form input[name="description"]').value = ""`)
	d.do(chromedp.SendKeys(chromedp.CSS(`form input[name="description"]`), "edited in the dashboard"),
		chromedp.Click(chromedp.CSS(`form[aria-label="Edit template tools"] button[type="submit"]`)))
	d.waitJS("the edited template", `document.querySelector('tr[data-name="tools"]')?.textContent.includes("edited in the dashboard")`)
	if tpl, err := srv.client.GetTemplate(t.Context(), "tools"); err != nil || tpl.Description != "edited in the dashboard" || tpl.Version != 2 || len(tpl.Setup) != 2 {
		t.Fatalf("after editing, the API has %+v (%v)", tpl, err)
	}
	d.shot("templates")
	// The template's warm pool fills; the spawn below claims its member.
	d.nav("#/pools")
	d.waitJSFor("the template's pool, filled", `document.querySelector('tr[data-pool="template:tools"]')?.textContent.includes("1 / 1")`, 3*time.Minute)
	d.shot("pools")
	d.nav("#/templates")
	d.waitJS("the template", `!!document.querySelector('tr[data-name="tools"] button.primary')`)
	d.do(chromedp.Click(chromedp.CSS(`tr[data-name="tools"] button.primary`)))
	d.waitJS("the sandbox spawned from the template", `location.hash.startsWith("#/sandboxes/sb-") && !location.hash.includes(`+jsString(id)+`)`)
	fromTpl, err := browsertest.Eval[string](d.ctx, `decodeURIComponent(location.hash.split("/")[2])`)
	if err != nil {
		t.Fatal(err)
	}
	if sb, err := srv.client.Get(t.Context(), fromTpl); err != nil || sb.Template != "tools" {
		t.Fatalf("the sandbox spawned from the template: %+v (%v)", sb, err)
	}
	if got := d.readFile(srv.client, fromTpl, "/workspace/out/ready"); got != "" {
		t.Fatalf("the template's setup left %q in /workspace/out/ready", got)
	}
	// Environments: a spec from the form, a build followed live until
	// ready, a sandbox from it.
	d.nav("#/environments")
	d.waitJS("the environments page", `document.querySelector("main h1")?.textContent === "Environments" && !!document.querySelector('form[aria-label="New environment spec"]')`)
	d.do(chromedp.SendKeys(chromedp.CSS(`form input[name="name"]`), "plain"),
		chromedp.SendKeys(chromedp.CSS(`form input[name="base_image"]`), "stacyvm/debian:test"),
		chromedp.SendKeys(chromedp.CSS(`form input[name="owner_id"]`), "dashboard"),
		chromedp.Click(chromedp.CSS(`form[aria-label="New environment spec"] button[type="submit"]`)))
	d.waitJS("the spec in the list", `[...document.querySelectorAll("tr[data-spec]")].some(r => r.textContent.includes("plain"))`)
	d.shot("environments")
	d.do(chromedp.Click(chromedp.CSS(`tr[data-spec] button.primary`)))
	d.waitJS("the build page", `location.hash.startsWith("#/environments/builds/")`)
	d.waitJS("the build's log", `document.querySelector("pre.log")?.textContent.includes("builds image stacyvm/env:")`)
	// The log's last line is the final status frame of the NDJSON follow.
	d.waitJSFor("the end of the build's log", `document.querySelector("pre.log")?.textContent.match(/\[build (ready|failed|canceled)/)`, 3*time.Minute)
	d.waitJS("the build to finish", `document.querySelector("main .kv .state-ready, main .kv .state-failed")?.textContent`)
	if st := d.waitJS("the build's status", `document.querySelector("main .kv .badge")?.textContent`); st != "ready" {
		d.fail("the build", fmt.Errorf("ended %s", st))
	}
	d.shot("environment-build")
	d.do(chromedp.Click(chromedp.CSS(`main .row button.primary`)))
	d.waitJS("the sandbox from the build", `location.hash.startsWith("#/sandboxes/sb-")`)
	fromEnv, err := browsertest.Eval[string](d.ctx, `decodeURIComponent(location.hash.split("/")[2])`)
	if err != nil {
		t.Fatal(err)
	}
	if sb, err := srv.client.Get(t.Context(), fromEnv); err != nil || !strings.HasPrefix(sb.Image, "stacyvm/env:") {
		t.Fatalf("the sandbox spawned from the build: %+v (%v)", sb, err)
	}
	// Its page opens a terminal: let it connect, and leave, before the
	// sandbox goes.
	d.waitJS("the terminal to connect", `document.querySelector("[data-terminal]")?.dataset.status === "open"`)
	d.nav("#/pools")
	if err := srv.client.Destroy(t.Context(), fromEnv); err != nil {
		t.Fatal(err)
	}

	d.nav("#/sandboxes")
	d.waitJS("the sandboxes in the list", `!!document.querySelector('tr[data-id="`+id+`"]')`)
	// One spawned elsewhere shows up on Refresh.
	third, err := srv.client.Spawn(t.Context(), client.SpawnRequest{Image: "stacyvm/busybox:test", TTL: 10 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	d.eval(`[...document.querySelectorAll("main button")].find(b => b.textContent === "Refresh").click()`)
	d.waitJS("the refreshed list", `!!document.querySelector('tr[data-id="`+third.ID+`"]')`)
	d.shot("sandboxes")

	// Extend moves the expiry (the sandbox was spawned for 15 minutes).
	before, err := srv.client.Get(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	d.do(chromedp.Click(chromedp.CSS(`tr[data-id="` + id + `"] td.actions button:not(.danger)`)))
	var extended time.Time
	waitFor(t, "the extended expiry", func() bool {
		sb, err := srv.client.Get(t.Context(), id)
		extended = sb.ExpiresAt
		return err == nil && sb.ExpiresAt.After(before.ExpiresAt.Add(10*time.Minute))
	})
	// The list reloads after an extension; its rows are replaced, so wait
	// for the new ones before clicking in them.
	d.waitJS("the list after extending", `document.querySelector('tr[data-id="`+id+`"]')?.dataset.expires === `+jsString(extended.UTC().Format(time.RFC3339)))

	// Bulk destroy: two selected, both gone, the first one untouched.
	d.do(chromedp.Click(chromedp.CSS(`tr[data-id="`+fromTpl+`"] input[type=checkbox]`)),
		chromedp.Click(chromedp.CSS(`tr[data-id="`+third.ID+`"] input[type=checkbox]`)))
	d.waitJS("the bulk button", `[...document.querySelectorAll("main button.danger")].some(b => b.textContent === "Destroy selected (2)" && !b.disabled)`)
	d.eval(`[...document.querySelectorAll("main button.danger")].find(b => b.textContent === "Destroy selected (2)").click()`)
	d.waitJS("the confirmation", `document.querySelector("dialog[open]")?.textContent.includes("Destroy 2 sandboxes")`)
	d.do(chromedp.Click(chromedp.CSS(`dialog[open] button.danger`)))
	d.waitJS("the list without them", `!document.querySelector('tr[data-id="`+third.ID+`"]') && !document.querySelector('tr[data-id="`+fromTpl+`"]') && !!document.querySelector('tr[data-id="`+id+`"]')`)
	for _, gone := range []string{fromTpl, third.ID} {
		if _, err := srv.client.Get(t.Context(), gone); errdefs.Classify(err) != errdefs.ErrSandboxDestroyed {
			t.Errorf("%s after the bulk destroy: %v, want SANDBOX_DESTROYED", gone, err)
		}
	}
	if sb, err := srv.client.Get(t.Context(), id); err != nil || sb.State != "running" {
		t.Fatalf("the unselected sandbox: %+v (%v)", sb, err)
	}
	// The state filter finds the destroyed ones.
	d.nav("#/sandboxes?state=destroyed")
	d.waitJS("the destroyed sandboxes", `!!document.querySelector('tr[data-id="`+third.ID+`"] .state-destroyed') && !document.querySelector('tr[data-id="`+id+`"]')`)

	// Deleting the template, through its confirmation.
	d.nav("#/templates")
	d.waitJS("the template", `!!document.querySelector('tr[data-name="tools"]')`)
	d.do(chromedp.Click(chromedp.CSS(`tr[data-name="tools"] button[aria-label="Delete tools"]`)))
	d.waitJS("the confirmation", `!!document.querySelector("dialog[open]")`)
	d.do(chromedp.Click(chromedp.CSS(`dialog[open] button.danger`)))
	d.waitJS("the empty template list", `document.querySelector("main .empty")?.textContent.includes("No templates yet")`)
	if _, err := srv.client.GetTemplate(t.Context(), "tools"); errdefs.Classify(err) != errdefs.ErrNotFound {
		t.Fatalf("the deleted template: %v, want NOT_FOUND", err)
	}
	// Its pool goes with it, and the page says how to declare one.
	d.nav("#/pools")
	d.waitJS("no pools", `!document.querySelector('tr[data-pool="template:tools"]') && document.querySelector("main .empty")?.textContent.includes("No warm pools")`)

	// The overview again, now with the kept history of events.
	d.nav("#/")
	d.waitJS("the events", `document.querySelectorAll(".events li").length >= 10 && document.querySelector("main h2 .ok")?.textContent.includes("live")`)
	d.shot("overview")

	// Phone width: the same pages, readable.
	d.do(chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2)))
	narrow := func(page string) {
		t.Helper()
		if w, err := browsertest.Eval[int](d.ctx, `document.documentElement.scrollWidth`); err != nil || w > 390 {
			t.Errorf("at phone width %s is %d px wide (%v): it scrolls sideways", page, w, err)
		}
	}
	d.nav("#/")
	d.waitJS("the overview", `!!document.querySelector("main table")`)
	narrow("the overview")
	d.shot("phone-overview")
	d.nav("#/sandboxes")
	d.waitJS("the list", `!!document.querySelector('tr[data-id="`+id+`"]')`)
	narrow("the sandbox list")
	d.nav("#/sandboxes/" + id + "/files?path=/tmp")
	d.waitJS("the files", `!!document.querySelector('tr[data-path="/tmp/upload.txt"]')`)
	narrow("the file browser")
	d.nav("#/sandboxes/" + id + "/terminal")
	d.waitJS("the terminal to connect", `document.querySelector("[data-terminal]")?.dataset.status === "open"`)
	d.termType("echo narrow\r")
	d.waitRow("narrow")
	// The narrow terminal told the shell its size.
	status = d.waitJS("the terminal's size", `document.querySelector(".term-status")?.textContent.match(/(\d+)×(\d+)/)?.slice(1).reverse().join(" ")`)
	d.termType("stty size\r")
	d.waitRow(status)
	t.Logf("terminal size at phone width (rows cols): %s", status)
	narrow("the terminal")
	d.shot("phone-terminal")
	d.do(chromedp.EmulateViewport(1280, 800))

	// Pause and resume (Docker pauses the container's processes); the
	// terminal works again after the resume.
	d.nav("#/sandboxes/" + id + "/terminal")
	d.waitJS("the terminal to connect", `document.querySelector("[data-terminal]")?.dataset.status === "open"`)
	d.eval(`[...document.querySelectorAll("main .row button")].find(b => b.textContent === "Pause").click()`)
	d.waitJS("the paused sandbox", `document.querySelector("main h1 .badge")?.textContent === "paused" && !!document.querySelector("main .empty")`)
	if sb, err := srv.client.Get(t.Context(), id); err != nil || sb.State != "paused" {
		t.Fatalf("after Pause the API has %+v (%v)", sb, err)
	}
	d.shot("paused")
	d.eval(`[...document.querySelectorAll("main .row button")].find(b => b.textContent === "Resume").click()`)
	d.waitJS("the resumed sandbox's terminal", `document.querySelector("main h1 .badge")?.textContent === "running" && document.querySelector("[data-terminal]")?.dataset.status === "open"`)
	if sb, err := srv.client.Get(t.Context(), id); err != nil || sb.State != "running" {
		t.Fatalf("after Resume the API has %+v (%v)", sb, err)
	}
	d.termType("echo resumed-$((7*6))\r")
	d.waitRow("resumed-42")

	// Destroy from the sandbox page, through the confirmation dialog.
	d.nav("#/sandboxes/" + id)
	d.waitJS("the sandbox page", `!!document.querySelector("main h1 .badge")`)
	// The page opens its terminal; destroying while the handshake is on
	// its way would (rightly) refuse it.
	d.waitJS("the terminal to connect", `document.querySelector("[data-terminal]")?.dataset.status === "open"`)
	d.do(chromedp.Click(chromedp.CSS(`main .row button.danger`)))
	d.waitJS("the confirmation", `!!document.querySelector("dialog[open]")`)
	d.do(chromedp.Click(chromedp.CSS(`dialog[open] button.danger`)))
	d.waitJS("the list after destroying", `location.hash === "#/sandboxes"`)
	if sb, err := srv.client.Get(t.Context(), id); errdefs.Classify(err) != errdefs.ErrSandboxDestroyed {
		t.Fatalf("after destroying in the dashboard the API answers %+v, %v; want SANDBOX_DESTROYED", sb, err)
	}

	d.errsMu.Lock()
	defer d.errsMu.Unlock()
	for _, e := range d.errs {
		t.Errorf("page error: %s", e)
	}
	if len(d.errs) > 0 {
		for line := range strings.Lines(srv.logs.String()) {
			if strings.Contains(line, "status=4") || strings.Contains(line, "status=5") || strings.Contains(line, "level=ERROR") || strings.Contains(line, "level=WARN") {
				t.Logf("server: %s", strings.TrimSpace(line))
			}
		}
	}
	t.Logf("screenshots in %s", shots)
}

// listen collects the pages' uncaught exceptions and console errors.
func (d *dashboardSession) listen() {
	err := chromedp.Listen(d.ctx, func(ev any) {
		var msg string
		switch ev := ev.(type) {
		case *runtime.EventExceptionThrown:
			msg = "exception: " + ev.ExceptionDetails.Text
			if ev.ExceptionDetails.Exception != nil {
				msg += " " + ev.ExceptionDetails.Exception.Description
			}
		case *runtime.EventConsoleAPICalled:
			if ev.Type != runtime.ConsoleAPICalledTypeError {
				return
			}
			var parts []string
			for _, a := range ev.Args {
				parts = append(parts, string(a.Value)+a.Description)
			}
			msg = "console.error: " + strings.Join(parts, " ")
		case *cdplog.EventEntryAdded:
			// The browser's own reports: Content-Security-Policy
			// violations, failed loads of the page's files.
			if ev.Entry.Level != cdplog.EntryLevelError {
				return
			}
			if ev.Entry.Source == cdplog.EntrySourceNetwork && strings.Contains(ev.Entry.URL, "/api/v1/") &&
				strings.Contains(ev.Entry.Text, "the server responded with a status of") {
				return // refusals the test provokes (401, 400): the pages show them
			}
			msg = "browser log: " + ev.Entry.Text + " " + ev.Entry.URL
		default:
			return
		}
		d.errsMu.Lock()
		d.errs = append(d.errs, msg)
		d.errsMu.Unlock()
	})
	if err != nil {
		d.t.Fatal(err)
	}
	if _, err := chromedp.Call(d.ctx, cdplog.Enable, cdp.Empty{}); err != nil {
		d.t.Fatal(err)
	}
}

func (d *dashboardSession) do(actions ...chromedp.Action[chromedp.Void]) {
	d.t.Helper()
	if err := chromedp.Do(d.ctx, actions...); err != nil {
		d.fail("browser action", err)
	}
}

// fail ends the test with what the page showed, and a screenshot.
func (d *dashboardSession) fail(what string, err error) {
	d.t.Helper()
	ctx, cancel := context.WithTimeout(d.ctx, 10*time.Second)
	defer cancel()
	text, _ := browsertest.Eval[string](ctx, `location.hash + "\n" + (document.querySelector("main")?.innerText || "") + "\n--- terminal:\n" + (typeof d_rows === "function" ? d_rows().join("\n") : "")`)
	if png, serr := chromedp.Run(ctx, chromedp.CaptureScreenshot()); serr == nil {
		_ = os.WriteFile(filepath.Join(d.t.TempDir(), "failure.png"), png, 0o644)
	}
	d.errsMu.Lock()
	errs := strings.Join(d.errs, "\n")
	d.errsMu.Unlock()
	// CI shows a failure's last lines: the reason comes last, after the
	// page (without the terminal's blank rows) and the server's recent log.
	text = strings.TrimRight(text, " \n")
	d.t.Fatalf("page:\n%s\npage errors:\n%s\nserver log (end):\n%s\n%s: %v", text, errs, lastLines(d.logs.String(), 30), what, err)
}

// lastLines returns the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// helpers are installed in every page the test looks at.
const helpers = `window.d_rows = () => [...document.querySelectorAll(".xterm-rows > div")].map(r => r.textContent);`

// waitJS waits until the expression is truthy and returns its value as a
// string.
func (d *dashboardSession) waitJS(what, expr string) string {
	d.t.Helper()
	return d.waitJSFor(what, expr, time.Minute)
}

// waitJSFor is waitJS with its own deadline, for what the server does in
// the background (pool refills, image builds), which a loaded machine
// slows down most.
func (d *dashboardSession) waitJSFor(what, expr string, wait time.Duration) string {
	d.t.Helper()
	deadline := time.Now().Add(wait)
	var last error
	for time.Now().Before(deadline) {
		v, err := browsertest.Eval[any](d.ctx, helpers+`(() => { const v = (`+expr+`); return v ? String(v) : ""; })()`)
		if err == nil {
			if s, _ := v.(string); s != "" {
				return s
			}
		}
		last = err
		time.Sleep(100 * time.Millisecond)
	}
	d.fail("waiting for "+what, fmt.Errorf("not there after %s (last error: %v)", wait, last))
	return ""
}

func (d *dashboardSession) eval(expr string) {
	d.t.Helper()
	if _, err := browsertest.Eval[any](d.ctx, "("+expr+", null)"); err != nil {
		d.fail("evaluate "+expr, err)
	}
}

func (d *dashboardSession) nav(hash string) {
	d.t.Helper()
	d.eval(`location.hash = ` + jsString(hash))
}

// termType types into the terminal with real key events, the way a
// keyboard does: one keyDown that carries the character's text, then
// keyUp. (chromedp.KeyEvent sends the text as a separate char event,
// which a page that handles keydown itself, as xterm.js does, sees twice.)
func (d *dashboardSession) termType(keys string) {
	d.t.Helper()
	d.eval(`document.querySelector(".xterm-helper-textarea").focus()`)
	d.keys(keys)
}

// keys types to whatever has the focus, as termType does.
func (d *dashboardSession) keys(keys string) {
	d.t.Helper()
	for _, r := range keys {
		var down, up input.DispatchKeyEventParams
		for _, k := range kb.Encode(r) {
			switch k.Type {
			case input.DispatchKeyEventTypeKeyDown:
				down = *k
			case input.DispatchKeyEventTypeChar:
				down.Text, down.UnmodifiedText = k.Text, k.UnmodifiedText
			case input.DispatchKeyEventTypeKeyUp:
				up = *k
			}
		}
		for _, k := range []input.DispatchKeyEventParams{down, up} {
			if _, err := chromedp.Call(d.ctx, input.DispatchKeyEvent, k); err != nil {
				d.fail(fmt.Sprintf("type %q", r), err)
			}
		}
	}
}

// waitRow waits for a terminal row that is exactly text (a command's
// output, not the line that typed it).
func (d *dashboardSession) waitRow(text string) {
	d.t.Helper()
	d.waitJS("the terminal row "+text, `d_rows().some(r => r.trim() === `+jsString(text)+`)`)
}

func (d *dashboardSession) shot(name string) {
	d.t.Helper()
	// Notices fade on their own; the pictures in the docs go without them.
	d.eval(`document.getElementById("notice").replaceChildren()`)
	time.Sleep(150 * time.Millisecond) // let the last frame render
	png, err := chromedp.Run(d.ctx, chromedp.CaptureScreenshot())
	if err != nil {
		d.fail("screenshot "+name, err)
	}
	if err := os.WriteFile(filepath.Join(d.shots, name+".png"), png, 0o644); err != nil {
		d.t.Fatal(err)
	}
}

// firstPaints reloads the overview n times and returns each load's first
// contentful paint in milliseconds.
func (d *dashboardSession) firstPaints(n int) []float64 {
	d.t.Helper()
	var out []float64
	for range n {
		// From another document: a navigation to the same URL with a
		// fragment would stay in the page and measure nothing new.
		d.do(chromedp.Navigate("about:blank"), chromedp.Navigate(d.base+"/#/"))
		v := d.waitJS("the first contentful paint", `performance.getEntriesByType("paint").find(e => e.name === "first-contentful-paint")?.startTime`)
		var ms float64
		if _, err := fmt.Sscan(v, &ms); err != nil {
			d.t.Fatalf("paint time %q: %v", v, err)
		}
		out = append(out, ms)
	}
	d.waitJS("the overview", `!!document.querySelector("main table")`)
	return out
}

func (d *dashboardSession) readFile(c *client.Client, id, path string) string {
	d.t.Helper()
	rc, err := c.ReadFile(d.t.Context(), id, path)
	if err != nil {
		d.t.Fatalf("read %s through the API: %v", path, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		d.t.Fatal(err)
	}
	return string(b)
}

func jsString(s string) string {
	return "`" + strings.NewReplacer("\\", "\\\\", "`", "\\`", "$", "\\$").Replace(s) + "`"
}

// waitFor polls cond until it holds, for up to a minute.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: not after a minute", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitFile waits until path holds want (a download finishing).
func waitFile(t *testing.T, path, want string) {
	t.Helper()
	var got []byte
	waitFor(t, "the download of "+filepath.Base(path), func() bool {
		got, _ = os.ReadFile(path)
		return string(got) == want
	})
}
