// Package browsertest starts a real headless Chromium for tests, driven by
// chromedp. The browser reaches loopback only: every other host name fails
// to resolve and every non-loopback connection goes to a dead proxy, so a
// test page can never talk to the outside world.
//
// A test calls New; without a Chromium binary the test skips, unless
// STACYVM_TEST_BROWSER=1 (set by scripts/test) makes that a failure.
package browsertest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// EnvRequired, set to "1", turns a missing browser into a test failure.
const EnvRequired = "STACYVM_TEST_BROWSER"

// EnvBinary names a Chromium binary to use instead of searching PATH.
const EnvBinary = "STACYVM_CHROMIUM"

// candidates are the names Chromium is installed under: Debian's
// package first.
var candidates = []string{"chromium", "chromium-browser", "google-chrome-stable", "google-chrome"}

// Find returns the path of a Chromium binary: $STACYVM_CHROMIUM, or the
// first of the usual names on PATH.
func Find() (string, error) {
	if p := os.Getenv(EnvBinary); p != "" {
		if _, err := exec.LookPath(p); err != nil {
			return "", fmt.Errorf("%s=%s: %w", EnvBinary, p, err)
		}
		return p, nil
	}
	for _, name := range candidates {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", errors.New("no Chromium binary on PATH (tried " + strings.Join(candidates, ", ") + ")")
}

// Options tunes the browser New starts.
type Options struct {
	// Hosts maps host names to loopback addresses, like /etc/hosts, for
	// this browser only (Chromium's --host-resolver-rules). Use it to make
	// a page believe it talks to "evil.example" while it talks to a local
	// server: the DNS rebinding setup. Only loopback targets are allowed.
	Hosts map[string]string
	// Timeout bounds the whole browser session (default 2 minutes).
	Timeout time.Duration
}

// Require returns the Chromium binary, skipping t when there is none (or
// failing it when STACYVM_TEST_BROWSER=1).
func Require(t testing.TB) string {
	t.Helper()
	bin, err := Find()
	if err == nil {
		return bin
	}
	if os.Getenv(EnvRequired) == "1" {
		t.Fatalf("%s=1 but %v (run scripts/ci/browser-up.sh)", EnvRequired, err)
	}
	t.Skipf("skipping: %v (run scripts/ci/browser-up.sh, or set %s=1 to fail instead)", err, EnvRequired)
	return ""
}

// New starts a headless Chromium and returns a context for chromedp
// actions on its first tab. The browser is stopped when t ends.
func New(t testing.TB, opts Options) context.Context {
	t.Helper()
	bin := Require(t)
	flags, err := allocatorOptions(bin, opts)
	if err != nil {
		t.Fatal(err)
	}
	// Chromium keeps its singleton socket in a directory of its own under
	// TMPDIR and removes it only when it exits cleanly, which a browser
	// stopped at the end of a test does not: one such directory was left
	// in /tmp by every run. The test's own directory is removed with it.
	flags = append(flags, chromedp.Env("TMPDIR="+t.TempDir()))
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = 2 * time.Minute
	}
	ctx, cancelTimeout := context.WithTimeout(context.Background(), timeout)
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, flags...)
	bctx, cancelBrowser := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	t.Cleanup(func() {
		cancelBrowser() // closes the tab and waits for the browser process to exit
		cancelAlloc()
		cancelTimeout()
	})
	// Start the browser now, so that a broken installation fails here
	// with its own message rather than inside the first action.
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	return bctx
}

// allocatorOptions builds the command line: headless, no sandbox when
// running as root (Chromium refuses to start otherwise), no background
// traffic, and loopback-only networking.
func allocatorOptions(bin string, opts Options) ([]chromedp.ExecAllocatorOption, error) {
	rules, bypass, err := networkRules(opts.Hosts)
	if err != nil {
		return nil, err
	}
	flags := append(chromedp.DefaultExecAllocatorOptions[:0:0], chromedp.DefaultExecAllocatorOptions[:]...)
	flags = append(flags,
		chromedp.ExecPath(bin),
		chromedp.Headless,
		chromedp.DisableGPU,
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-domain-reliability", true),
		chromedp.Flag("no-pings", true),
		chromedp.Flag("host-resolver-rules", rules),
		// Connections that the resolver rules do not stop (IP literals)
		// go to a proxy that does not exist; loopback and the mapped
		// names bypass it.
		chromedp.ProxyServer("http://127.0.0.1:9"),
		chromedp.Flag("proxy-bypass-list", bypass),
	)
	if os.Geteuid() == 0 {
		flags = append(flags, chromedp.NoSandbox)
	}
	return flags, nil
}

// networkRules returns the --host-resolver-rules and --proxy-bypass-list
// values for hosts.
func networkRules(hosts map[string]string) (rules, bypass string, err error) {
	names := make([]string, 0, len(hosts))
	for name := range hosts {
		names = append(names, name)
	}
	sort.Strings(names)
	var r []string
	b := []string{"<-loopback>", "localhost", "127.0.0.1", "[::1]"}
	for _, name := range names {
		addr := hosts[name]
		ip := net.ParseIP(addr)
		if ip == nil || !ip.IsLoopback() {
			return "", "", fmt.Errorf("browsertest: host %q maps to %q, which is not a loopback address", name, addr)
		}
		if strings.ContainsAny(name, ", ") {
			return "", "", fmt.Errorf("browsertest: bad host name %q", name)
		}
		r = append(r, "MAP "+name+" "+addr)
		b = append(b, name)
	}
	// The catch-all applies to IP literals too: loopback stays reachable.
	r = append(r, "MAP * ~NOTFOUND", "EXCLUDE localhost", "EXCLUDE 127.0.0.1", "EXCLUDE [::1]")
	return strings.Join(r, ", "), strings.Join(b, ";"), nil
}

// Eval evaluates a JavaScript expression in the current page, awaiting it
// when it is a promise, and decodes its JSON value as a T.
func Eval[T any](ctx context.Context, expr string) (T, error) {
	return chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
}
