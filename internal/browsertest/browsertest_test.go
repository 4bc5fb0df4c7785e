package browsertest

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
)

func TestNetworkRules(t *testing.T) {
	rules, bypass, err := networkRules(map[string]string{"evil.example": "127.0.0.1", "b.example": "::1"})
	if err != nil {
		t.Fatal(err)
	}
	if want := "MAP b.example ::1, MAP evil.example 127.0.0.1, MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1, EXCLUDE [::1]"; rules != want {
		t.Errorf("rules = %q, want %q", rules, want)
	}
	if !strings.Contains(bypass, "evil.example") || !strings.HasPrefix(bypass, "<-loopback>") {
		t.Errorf("bypass = %q", bypass)
	}
	for _, bad := range []map[string]string{
		{"evil.example": "192.0.2.1"},
		{"evil.example": "not-an-ip"},
		{"a.example, MAP *": "127.0.0.1"},
	} {
		if _, _, err := networkRules(bad); err == nil {
			t.Errorf("networkRules(%v) accepted", bad)
		}
	}
}

// TestBrowser proves that the browser starts, runs a page's script, and
// resolves a mapped name to the loopback server behind it, with the Host
// header the page named.
func TestBrowser(t *testing.T) {
	hosts := make(chan string, 4)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Only the navigations: the favicon request that follows each one
		// may arrive after the next navigation has started.
		if r.URL.Path == "/" {
			select {
			case hosts <- r.Host:
			default:
			}
		}
		w.Header().Set("Access-Control-Allow-Origin", "*")
		fmt.Fprint(w, "hello from "+r.Host)
	}))
	t.Cleanup(srv.Close)
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())

	ctx := New(t, Options{Hosts: map[string]string{"evil.example": "127.0.0.1"}})
	if err := chromedp.Do(ctx, chromedp.Navigate("http://evil.example:"+port+"/")); err != nil {
		t.Fatal(err)
	}
	if got := <-hosts; got != "evil.example:"+port {
		t.Errorf("server saw Host %q", got)
	}
	// Loopback by address stays reachable, and the server sees that Host.
	if err := chromedp.Do(ctx, chromedp.Navigate(srv.URL+"/")); err != nil {
		t.Fatal(err)
	}
	if got := <-hosts; got != srv.Listener.Addr().String() {
		t.Errorf("server saw Host %q", got)
	}
	text, err := Eval[string](ctx, `fetch("http://evil.example:`+port+`/again").then(r => r.text())`)
	if err != nil {
		t.Fatal(err)
	}
	if want := "hello from evil.example:" + port; text != want {
		t.Errorf("fetch = %q, want %q", text, want)
	}
}
