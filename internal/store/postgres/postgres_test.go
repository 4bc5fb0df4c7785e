package postgres

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/store"
	"github.com/stacyvm/stacyvm/internal/store/postgres/pgtest"
	"github.com/stacyvm/stacyvm/internal/store/storetest"
)

func TestContract(t *testing.T) {
	dsn := pgtest.DSN(t)
	storetest.Run(t, func(t *testing.T, dir string) store.Store {
		s, err := Open(t.Context(), Config{DSN: dsn, Schema: pgtest.Schema(t, dsn, dir)})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		return s
	})
}

func openTemp(t *testing.T) *Store {
	t.Helper()
	dsn := pgtest.DSN(t)
	s, err := Open(t.Context(), Config{DSN: dsn, Schema: pgtest.Schema(t, dsn, t.Name())})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestConcurrentOpen opens one fresh schema from several stores at once,
// as replicas starting together do: each succeeds and every migration is
// recorded once.
func TestConcurrentOpen(t *testing.T) {
	dsn := pgtest.DSN(t)
	schema := pgtest.Schema(t, dsn, t.Name())
	const n = 4
	stores := make([]*Store, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { stores[i], errs[i] = Open(t.Context(), Config{DSN: dsn, Schema: schema}) })
	}
	wg.Wait()
	for i, s := range stores {
		if s != nil {
			t.Cleanup(func() { s.Close() })
		}
		if errs[i] != nil {
			t.Fatalf("Open %d: %v", i, errs[i])
		}
	}
	ms, err := loadMigrations(embedded, "migrations")
	if err != nil {
		t.Fatal(err)
	}
	var rows int
	if err := stores[0].pool.QueryRow(t.Context(), `SELECT count(*) FROM schema_migrations`).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if rows != len(ms) {
		t.Errorf("schema_migrations has %d rows, want %d", rows, len(ms))
	}
	// One deployment, one identity: every replica reads the same instance id.
	var ids []string
	for _, s := range stores {
		id, err := s.InstanceID(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	for _, id := range ids[1:] {
		if id != ids[0] {
			t.Errorf("replicas of one database see instance ids %v, want one", ids)
		}
	}
}

func TestOpenRefusesNewerSchema(t *testing.T) {
	s := openTemp(t)
	if _, err := s.pool.Exec(t.Context(), `INSERT INTO schema_migrations (version, name, applied_at) VALUES (9999, '9999_future.sql', now())`); err != nil {
		t.Fatal(err)
	}
	dsn := pgtest.DSN(t)
	again, err := Open(t.Context(), Config{DSN: dsn, Schema: s.cfg.ConnConfig.RuntimeParams["search_path"]})
	if err == nil || !strings.Contains(err.Error(), "9999") {
		if err == nil {
			again.Close()
		}
		t.Fatalf("Open of a database from a newer binary: err = %v, want a refusal naming version 9999", err)
	}
}

func TestMigrateFailureRollsBack(t *testing.T) {
	s := openTemp(t)
	conn, err := pgx.ConnectConfig(t.Context(), s.ConnConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	mig := pgtest.Schema(t, pgtest.DSN(t), t.Name()+"/mig")
	if _, err := conn.Exec(t.Context(), `CREATE SCHEMA `+mig+`; SET search_path = `+mig); err != nil {
		t.Fatal(err)
	}
	fsys := fstest.MapFS{
		"m/0001_a.sql": {Data: []byte("CREATE TABLE a (x int);")},
		// The first statement succeeds, the second fails; neither may stay.
		"m/0002_b.sql": {Data: []byte("CREATE TABLE b (x int);\nINSERT INTO missing VALUES (1);")},
	}
	ms, err := loadMigrations(fsys, "m")
	if err != nil {
		t.Fatal(err)
	}
	applied, err := applyMigrations(t.Context(), conn, ms, time.Now)
	if err == nil || !strings.Contains(err.Error(), "0002_b.sql") || len(applied) != 1 {
		t.Fatalf("applyMigrations = %v, %v; want [1] and a failure naming 0002_b.sql", applied, err)
	}
	var hasB bool
	if err := conn.QueryRow(t.Context(), `SELECT to_regclass($1) IS NOT NULL`, mig+".b").Scan(&hasB); err != nil || hasB {
		t.Errorf("table b after the failed migration: %v (err %v)", hasB, err)
	}
	fsys["m/0002_b.sql"] = &fstest.MapFile{Data: []byte("CREATE TABLE b (x int);")}
	ms, _ = loadMigrations(fsys, "m")
	if applied, err := applyMigrations(t.Context(), conn, ms, time.Now); err != nil || len(applied) != 1 || applied[0] != 2 {
		t.Fatalf("after the fix applied %v, err %v; want [2]", applied, err)
	}
}

// TestSecretsNeverShown: neither a bad DSN nor a failed connection puts
// the password in an error, and Describe leaves it out.
func TestSecretsNeverShown(t *testing.T) {
	const pw = "s3cr3t-Pa55word"
	for _, dsn := range []string{
		"postgres://u:" + pw + "@127.0.0.1:1/db?sslmode=disable&connect_timeout=2",
		"host=127.0.0.1 port=1 user=u password=" + pw + " dbname=db sslmode=disable connect_timeout=2",
		"postgres://u:" + pw + "@127.0.0.1:notaport/db",
		"host=127.0.0.1 port=1 password='" + pw + " dbname=db",
	} {
		_, err := Open(t.Context(), Config{DSN: dsn})
		if err == nil {
			t.Fatalf("Open(%q) succeeded", dsn)
		}
		if strings.Contains(err.Error(), pw) {
			t.Errorf("Open error shows the password: %v", err)
		}
		if d := Describe(dsn); strings.Contains(d, pw) {
			t.Errorf("Describe shows the password: %s", d)
		}
	}
	if _, err := Open(t.Context(), Config{}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("Open without a DSN: err = %v, want invalid argument", err)
	}
	if _, err := Open(t.Context(), Config{DSN: "postgres://x@h/db", Schema: "Bad-Name"}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("Open with an invalid schema: err = %v, want invalid argument", err)
	}
	if got, want := Describe("postgres://me:"+pw+"@db.example:6543/prod"), "postgres://me@db.example:6543/prod"; got != want {
		t.Errorf("Describe = %q, want %q", got, want)
	}
}

func TestScrub(t *testing.T) {
	s := &Store{secret: "hunter2"}
	base := errdefs.New(errdefs.ErrProviderUnavailable, "dial: password hunter2 rejected")
	err := s.scrub(base)
	if strings.Contains(err.Error(), "hunter2") || !errors.Is(err, errdefs.ErrProviderUnavailable) {
		t.Errorf("scrub = %v; want the class kept and the password gone", err)
	}
}
