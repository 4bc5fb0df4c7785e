package api

import (
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestListPages pages through GET /sandboxes with limit and cursor: the
// pages together are the unpaged array, the next cursor comes in
// X-Next-Cursor (and Link), and bad parameters are 400s.
func TestListPages(t *testing.T) {
	t.Parallel()
	c := &clock{}
	e := newEnv(t, withClock(c))
	var want []string
	for range 7 {
		sb := e.spawn(map[string]string{"owner_id": "pager"})
		want = append([]string{sb.ID}, want...) // newest first
		c.advance(time.Millisecond)
	}
	var all []sandboxJSON
	resp := e.call("GET", "/api/v1/sandboxes?owner_id=pager", nil)
	if resp.Header.Get("X-Next-Cursor") != "" {
		t.Error("an unpaged listing names a next page")
	}
	e.expectJSON(resp, http.StatusOK, &all)
	if len(all) != 7 {
		t.Fatalf("unpaged listing has %d sandboxes, want all 7", len(all))
	}

	var got []string
	path := "/api/v1/sandboxes?owner_id=pager&limit=3"
	for pages := 0; ; pages++ {
		if pages > 3 {
			t.Fatal("paging does not end")
		}
		resp := e.call("GET", path, nil)
		next, link := resp.Header.Get("X-Next-Cursor"), resp.Header.Get("Link")
		var page []sandboxJSON
		e.expectJSON(resp, http.StatusOK, &page)
		if len(page) > 3 {
			t.Fatalf("page of %d with limit 3", len(page))
		}
		for _, sb := range page {
			got = append(got, sb.ID)
		}
		if next == "" {
			if link != "" {
				t.Errorf("last page has a Link: %s", link)
			}
			break
		}
		if !strings.Contains(link, `rel="next"`) || !strings.Contains(link, url.QueryEscape(next)) {
			t.Errorf("Link %q does not point at cursor %q", link, next)
		}
		path = "/api/v1/sandboxes?owner_id=pager&limit=3&cursor=" + url.QueryEscape(next)
	}
	if !slices.Equal(got, want) {
		t.Errorf("pages = %v, want %v", got, want)
	}

	for _, q := range []string{"limit=0", "limit=-1", "limit=abc", "limit=1001", "limit=2&cursor=%21%21", "limit=2&cursor=bm9jb2xvbg", "cursor=MTox"} {
		e.expectError(e.call("GET", "/api/v1/sandboxes?"+q, nil), http.StatusBadRequest, codeBadRequest)
	}
}
