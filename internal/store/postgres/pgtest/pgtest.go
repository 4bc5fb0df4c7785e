// Package pgtest gives tests a PostgreSQL database: the one named by
// STACYVM_TEST_POSTGRES_DSN (scripts/ci/postgres-up.sh starts a private
// cluster and scripts/test exports its DSN), each test in a schema of its
// own that is dropped when the test ends. Without the variable the test
// skips and says how to run it.
package pgtest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// EnvDSN names the variable holding the test database's connection URL.
const EnvDSN = "STACYVM_TEST_POSTGRES_DSN"

// DSN returns the test database's DSN, or skips t without one.
func DSN(t testing.TB) string {
	t.Helper()
	dsn := os.Getenv(EnvDSN)
	if dsn == "" {
		t.Skip("no PostgreSQL: set " + EnvDSN + " (scripts/ci/postgres-up.sh starts a private cluster and writes it to /tmp/stacyvm-ci/postgres.dsn)")
	}
	return dsn
}

// Schema returns a schema name derived from key (a test's directory, say),
// the same for the same key, and drops that schema when t ends.
func Schema(t testing.TB, dsn, key string) string {
	t.Helper()
	sum := sha256.Sum256([]byte(key))
	name := "t_" + hex.EncodeToString(sum[:12])
	t.Cleanup(func() { Drop(t, dsn, name) })
	return name
}

// SchemaURL returns the test database's URL with its search_path naming
// a schema of t's own (dropped when t ends), as a deployment may name its
// schema, and that schema's name.
func SchemaURL(t testing.TB) (u *url.URL, schema string) {
	t.Helper()
	dsn := DSN(t)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatalf("%s is not a URL: %v", EnvDSN, err)
	}
	schema = Schema(t, dsn, t.Name())
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u, schema
}

// Drop removes schema name and everything in it.
func Drop(t testing.TB, dsn, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Errorf("drop schema %s: %v", name, err)
		return
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `DROP SCHEMA IF EXISTS `+pgx.Identifier{name}.Sanitize()+` CASCADE`); err != nil {
		t.Errorf("drop schema %s: %v", name, err)
	}
}
