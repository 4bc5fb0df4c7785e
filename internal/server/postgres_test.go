package server

import (
	"bytes"
	"net/url"
	"strings"
	"testing"

	"github.com/stacyvm/stacyvm/internal/config"
	"github.com/stacyvm/stacyvm/internal/store/postgres/pgtest"
)

// pgConfig is testConfig on PostgreSQL: a schema of the test's own, named
// by the DSN's search_path parameter as a deployment may name one.
func pgConfig(t *testing.T, dir string) *config.Config {
	t.Helper()
	u, _ := pgtest.SchemaURL(t)
	cfg := testConfig(t, dir)
	cfg.Store.Driver, cfg.Store.DSN, cfg.Store.Path = config.StorePostgres, u.String(), ""
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestRestartOnPostgres: the server keeps its records in PostgreSQL across
// a restart, and its logs name the database without the password.
func TestRestartOnPostgres(t *testing.T) {
	dir := t.TempDir()
	cfg := pgConfig(t, dir)
	u, _ := url.Parse(cfg.Store.DSN)
	pw, _ := u.User.Password()
	var logs bytes.Buffer
	base, stop := start(t, cfg, &logs)
	var sb struct{ ID, State string }
	if code := call(t, "POST", base+"/api/v1/sandboxes", map[string]any{"image": "any"}, &sb); code != 201 {
		t.Fatalf("spawn: %d", code)
	}
	stop()

	base2, stop2 := start(t, cfg, &logs)
	var res struct{ Stdout string }
	if code := call(t, "POST", base2+"/api/v1/sandboxes/"+sb.ID+"/exec", map[string]any{"command": "echo back"}, &res); code != 200 || res.Stdout != "back\n" {
		t.Fatalf("exec after restart: %d %+v", code, res)
	}
	stop2()
	if pw == "" || strings.Contains(logs.String(), pw) {
		t.Errorf("the logs show the DSN's password (or the test DSN has none):\n%s", logs.String())
	}
	if want := "store=postgres://" + u.User.Username() + "@" + u.Host; !strings.Contains(logs.String(), want) {
		t.Errorf("the logs do not say %q:\n%s", want, logs.String())
	}
}
