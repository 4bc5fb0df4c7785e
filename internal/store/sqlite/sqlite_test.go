package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/store"
	"github.com/stacyvm/stacyvm/internal/store/storetest"
)

func TestContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T, dir string) store.Store {
		s, err := Open(t.Context(), filepath.Join(dir, "stacyvm.db"))
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		return s
	})
}

func openTemp(t *testing.T) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "stacyvm.db")
	s, err := Open(t.Context(), path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s, path
}

type pragmas struct {
	journalMode                                      string
	foreignKeys, busyTimeout, synchronous, queryOnly int
}

func readPragmas(t *testing.T, c *sql.Conn) pragmas {
	t.Helper()
	var p pragmas
	for _, q := range []struct {
		name string
		dst  any
	}{
		{"journal_mode", &p.journalMode},
		{"foreign_keys", &p.foreignKeys},
		{"busy_timeout", &p.busyTimeout},
		{"synchronous", &p.synchronous},
		{"query_only", &p.queryOnly},
	} {
		if err := c.QueryRowContext(t.Context(), "PRAGMA "+q.name).Scan(q.dst); err != nil {
			t.Fatalf("PRAGMA %s: %v", q.name, err)
		}
	}
	return p
}

// TestPragmas checks the settings on every connection of both pools: they
// are per connection, so a pool that configured only its first connection
// would pass a check of one.
func TestPragmas(t *testing.T) {
	s, _ := openTemp(t)
	const normal = 1 // PRAGMA synchronous reports NORMAL as 1
	busy := int(BusyTimeout.Milliseconds())

	if got := s.w.Stats().MaxOpenConnections; got != 1 {
		t.Errorf("writer pool allows %d connections, want 1", got)
	}
	if got := s.r.Stats().MaxOpenConnections; got < 2 {
		t.Errorf("reader pool allows %d connections, want several", got)
	}

	pools := []struct {
		name string
		db   *sql.DB
		n    int
		want pragmas
	}{
		{"writer", s.w, 1, pragmas{"wal", 1, busy, normal, 0}},
		{"reader", s.r, s.r.Stats().MaxOpenConnections, pragmas{"wal", 1, busy, normal, 1}},
	}
	for _, p := range pools {
		t.Run(p.name, func(t *testing.T) {
			// Hold n connections at once so that each is a distinct one.
			var conns []*sql.Conn
			for range p.n {
				c, err := p.db.Conn(t.Context())
				if err != nil {
					t.Fatalf("Conn: %v", err)
				}
				conns = append(conns, c)
			}
			for i, c := range conns {
				if got := readPragmas(t, c); got != p.want {
					t.Errorf("connection %d: pragmas %+v, want %+v", i, got, p.want)
				}
				if err := c.Close(); err != nil {
					t.Errorf("Conn.Close: %v", err)
				}
			}
		})
	}
}

func TestReadersCannotWrite(t *testing.T) {
	s, _ := openTemp(t)
	_, err := s.r.ExecContext(t.Context(), `INSERT INTO templates (name, version, image, created_at, updated_at) VALUES ('x', 1, 'i', 0, 0)`)
	if e, ok := errors.AsType[*sqlite.Error](err); !ok || e.Code() != sqlite3.SQLITE_READONLY {
		t.Fatalf("write through the reader pool: err = %v, want SQLITE_READONLY", err)
	}
}

func TestForeignKeysEnforced(t *testing.T) {
	s, _ := openTemp(t)
	_, err := s.w.ExecContext(t.Context(), `INSERT INTO sandbox_history (sandbox_id, state, at) VALUES ('sb-none', 'running', 0)`)
	if e, ok := errors.AsType[*sqlite.Error](err); !ok || e.Code() != sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY {
		t.Fatalf("history row for a missing sandbox: err = %v, want SQLITE_CONSTRAINT_FOREIGNKEY", err)
	}
}

type migrationRow struct {
	version   int
	name      string
	appliedAt int64
}

func migrationRows(t *testing.T, db *sql.DB) []migrationRow {
	t.Helper()
	rows, err := db.QueryContext(t.Context(), `SELECT version, name, applied_at FROM schema_migrations ORDER BY version`)
	if err != nil {
		t.Fatalf("read schema_migrations: %v", err)
	}
	defer rows.Close()
	var out []migrationRow
	for rows.Next() {
		var r migrationRow
		if err := rows.Scan(&r.version, &r.name, &r.appliedAt); err != nil {
			t.Fatalf("scan schema_migrations: %v", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("read schema_migrations: %v", err)
	}
	return out
}

func tableNames(t *testing.T, db *sql.DB) []string {
	t.Helper()
	rows, err := db.QueryContext(t.Context(), `SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name`)
	if err != nil {
		t.Fatalf("list tables: %v", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatalf("list tables: %v", err)
		}
		out = append(out, n)
	}
	return out
}

func TestMigrationsAppliedOnce(t *testing.T) {
	ms, err := loadMigrations(embedded, "migrations")
	if err != nil {
		t.Fatalf("loadMigrations: %v", err)
	}
	if len(ms) == 0 || ms[0].version != 1 {
		t.Fatalf("embedded migrations = %+v, want 0001 first", ms)
	}

	path := filepath.Join(t.TempDir(), "stacyvm.db")
	s, err := Open(t.Context(), path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	first := migrationRows(t, s.r)
	if len(first) != len(ms) {
		t.Fatalf("schema_migrations has %d rows, want %d", len(first), len(ms))
	}
	for i, m := range ms {
		if first[i].version != m.version || first[i].name != m.name || first[i].appliedAt == 0 {
			t.Errorf("schema_migrations[%d] = %+v, want version %d name %s with a time", i, first[i], m.version, m.name)
		}
	}
	for _, table := range []string{"sandboxes", "sandbox_history", "templates", "schema_migrations"} {
		if !slices.Contains(tableNames(t, s.r), table) {
			t.Errorf("table %s missing", table)
		}
	}
	// Migrating an up-to-date database applies nothing.
	applied, err := migrate(t.Context(), s.w, ms, time.Now)
	if err != nil || len(applied) != 0 {
		t.Errorf("second migrate applied %v (err %v), want nothing", applied, err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s, err = Open(t.Context(), path)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s.Close()
	if again := migrationRows(t, s.r); !slices.Equal(again, first) {
		t.Errorf("reopening changed schema_migrations:\n before %+v\n after  %+v", first, again)
	}
}

// rawDB opens a writer-configured database without migrating it.
func rawDB(t *testing.T) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", dsn(filepath.Join(t.TempDir(), "raw.db"), true))
	if err != nil {
		t.Fatalf("sql.Open: %v", err)
	}
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { db.Close() })
	return db
}

func TestMigrateFailureRollsBack(t *testing.T) {
	db := rawDB(t)
	fsys := fstest.MapFS{
		"m/0001_a.sql": {Data: []byte("CREATE TABLE a (x INTEGER);")},
		// The first statement succeeds; the second fails; neither may stay.
		"m/0002_b.sql": {Data: []byte("CREATE TABLE b (x INTEGER);\nINSERT INTO missing VALUES (1);")},
		"m/0003_c.sql": {Data: []byte("CREATE TABLE c (x INTEGER);")},
	}
	ms, err := loadMigrations(fsys, "m")
	if err != nil {
		t.Fatalf("loadMigrations: %v", err)
	}
	applied, err := migrate(t.Context(), db, ms, time.Now)
	if err == nil || !strings.Contains(err.Error(), "0002_b.sql") {
		t.Fatalf("migrate err = %v, want a failure naming 0002_b.sql", err)
	}
	if !slices.Equal(applied, []int{1}) {
		t.Errorf("applied = %v, want [1]", applied)
	}
	if got, want := tableNames(t, db), []string{"a", "schema_migrations"}; !slices.Equal(got, want) {
		t.Errorf("tables after the failure = %v, want %v", got, want)
	}
	if rows := migrationRows(t, db); len(rows) != 1 || rows[0].version != 1 {
		t.Errorf("schema_migrations = %+v, want only version 1", rows)
	}

	// Fixed, the rest applies and the first is not run again (it would fail:
	// table a exists).
	fsys["m/0002_b.sql"] = &fstest.MapFile{Data: []byte("CREATE TABLE b (x INTEGER);")}
	ms, err = loadMigrations(fsys, "m")
	if err != nil {
		t.Fatalf("loadMigrations: %v", err)
	}
	applied, err = migrate(t.Context(), db, ms, time.Now)
	if err != nil || !slices.Equal(applied, []int{2, 3}) {
		t.Fatalf("migrate after the fix applied %v, err %v; want [2 3]", applied, err)
	}
}

func TestOpenRefusesNewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "stacyvm.db")
	s, err := Open(t.Context(), path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if _, err := s.w.ExecContext(t.Context(), `INSERT INTO schema_migrations (version, name, applied_at) VALUES (9999, '9999_future.sql', 1)`); err != nil {
		t.Fatalf("insert: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if s, err := Open(t.Context(), path); err == nil || !strings.Contains(err.Error(), "9999") {
		if err == nil {
			s.Close()
		}
		t.Fatalf("Open of a database from a newer binary: err = %v, want a refusal naming version 9999", err)
	}
}

func TestLoadMigrations(t *testing.T) {
	file := func(s string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(s)} }
	tests := []struct {
		name    string
		files   fstest.MapFS
		want    []int
		wantErr string
	}{
		{"numeric order", fstest.MapFS{"0010_j.sql": file(""), "2_b.sql": file(""), "0001_a.sql": file("")}, []int{1, 2, 10}, ""},
		{"other files ignored", fstest.MapFS{"0001_a.sql": file(""), "README.md": file(""), "sub/0002_x.sql": file("")}, []int{1}, ""},
		{"no number", fstest.MapFS{"init.sql": file("")}, nil, "init.sql"},
		{"not a number", fstest.MapFS{"x1_init.sql": file("")}, nil, "x1_init.sql"},
		{"zero", fstest.MapFS{"0000_init.sql": file("")}, nil, "0000_init.sql"},
		{"duplicate version", fstest.MapFS{"0001_a.sql": file(""), "1_b.sql": file("")}, nil, "share version 1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ms, err := loadMigrations(tc.files, ".")
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one mentioning %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("loadMigrations: %v", err)
			}
			var got []int
			for _, m := range ms {
				got = append(got, m.version)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("versions = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestOpenCreatesPrivateFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	path := filepath.Join(dir, "stacyvm.db")
	s, err := Open(t.Context(), path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer s.Close()
	if err := s.CreateTemplate(t.Context(), store.Template{Name: "t", Image: "i"}); err != nil {
		t.Fatalf("CreateTemplate: %v", err)
	}
	for _, name := range []string{path, path + "-wal", path + "-shm"} {
		fi, err := os.Stat(name)
		if err != nil {
			t.Fatalf("stat: %v", err)
		}
		if perm := fi.Mode().Perm(); perm&0o077 != 0 {
			t.Errorf("%s has mode %v, want no group or other access", filepath.Base(name), perm)
		}
	}
}

func TestOpenOddPath(t *testing.T) {
	// Characters that mean something in a file: URI must still name a file.
	path := filepath.Join(t.TempDir(), "we?ird #dir %41 ü", "my db.sqlite")
	s, err := Open(t.Context(), path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if err := s.CreateTemplate(t.Context(), store.Template{Name: "t", Image: "i"}); err != nil {
		t.Fatalf("CreateTemplate: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	entries, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		t.Fatalf("ReadDir: %v", err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if !slices.Contains(names, "my db.sqlite") || len(names) != 1 {
		t.Errorf("directory holds %q, want only the database file (WAL checkpointed on close)", names)
	}
	s, err = Open(t.Context(), path)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s.Close()
	if _, err := s.GetTemplate(t.Context(), "t"); err != nil {
		t.Errorf("template lost across reopen: %v", err)
	}
}

func TestOpenInvalidPath(t *testing.T) {
	for _, path := range []string{"", ":memory:", "file:x.db?mode=memory"} {
		if s, err := Open(t.Context(), path); !errors.Is(err, errdefs.ErrInvalidArgument) {
			if err == nil {
				s.Close()
			}
			t.Errorf("Open(%q): err = %v, want invalid argument", path, err)
		}
	}
	// A directory where the file should be is an error, not a panic or a hang.
	dir := t.TempDir()
	if s, err := Open(t.Context(), dir); err == nil {
		s.Close()
		t.Errorf("Open(directory) succeeded")
	}
}

func TestTimesStoredAsUTCNanos(t *testing.T) {
	s, _ := openTemp(t)
	created := time.Date(2025, 1, 2, 3, 4, 5, 987654321, time.FixedZone("EST", -5*60*60))
	sb := store.Sandbox{ID: "sb-t", State: "running", CreatedAt: created}
	if err := s.CreateSandbox(t.Context(), sb); err != nil {
		t.Fatalf("CreateSandbox: %v", err)
	}
	var c, u int64
	var e sql.NullInt64
	if err := s.r.QueryRowContext(t.Context(), `SELECT created_at, updated_at, expires_at FROM sandboxes WHERE id = 'sb-t'`).Scan(&c, &u, &e); err != nil {
		t.Fatalf("select: %v", err)
	}
	if c != created.UnixNano() || u != created.UnixNano() || e.Valid {
		t.Errorf("stored (%d, %d, %v), want (%d, %d, NULL)", c, u, e, created.UnixNano(), created.UnixNano())
	}
	got, err := s.GetSandbox(t.Context(), "sb-t")
	if err != nil {
		t.Fatalf("GetSandbox: %v", err)
	}
	if got.CreatedAt != created.UTC() {
		t.Errorf("CreatedAt = %v, want exactly %v (nanoseconds, UTC)", got.CreatedAt, created.UTC())
	}
}

func TestTimeRange(t *testing.T) {
	s, _ := openTemp(t)
	old := store.Sandbox{ID: "sb-old", State: "running", CreatedAt: time.Date(1500, 1, 1, 0, 0, 0, 0, time.UTC)}
	if err := s.CreateSandbox(t.Context(), old); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("CreatedAt in 1500: err = %v, want invalid argument", err)
	}
	late := store.Sandbox{ID: "sb-late", State: "running", ExpiresAt: time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC)}
	if err := s.CreateSandbox(t.Context(), late); err != nil {
		t.Fatalf("CreateSandbox: %v", err)
	}
	// Filter bounds outside the storable range are clamped, not refused.
	for _, bound := range []time.Time{time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(1, 1, 1, 0, 0, 0, 1, time.UTC)} {
		got, err := s.ListSandboxes(t.Context(), store.SandboxFilter{ExpiredBefore: bound})
		if err != nil {
			t.Fatalf("ListSandboxes(ExpiredBefore %v): %v", bound, err)
		}
		wantN := 0
		if bound.Year() == 3000 {
			wantN = 1
		}
		if len(got) != wantN {
			t.Errorf("ExpiredBefore %v matched %d, want %d", bound, len(got), wantN)
		}
	}
}

func TestCloseIdempotent(t *testing.T) {
	s, err := Open(t.Context(), filepath.Join(t.TempDir(), "stacyvm.db"))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := s.GetSandbox(t.Context(), "sb-x"); err == nil || errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("GetSandbox after Close: err = %v, want a closed-database error", err)
	}
}

// TestConcurrentOpen opens one fresh file from several stores at once, as
// two processes starting together would: each must succeed and every
// migration must be recorded exactly once.
func TestConcurrentOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "stacyvm.db")
	const n = 4
	stores := make([]*Store, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { stores[i], errs[i] = Open(t.Context(), path) })
	}
	wg.Wait()
	for i, s := range stores {
		if s != nil {
			t.Cleanup(func() { s.Close() })
		}
		if errs[i] != nil {
			t.Errorf("Open %d: %v", i, errs[i])
		}
	}
	if t.Failed() {
		return
	}
	ms, err := loadMigrations(embedded, "migrations")
	if err != nil {
		t.Fatal(err)
	}
	if rows := migrationRows(t, stores[0].r); len(rows) != len(ms) {
		t.Errorf("schema_migrations has %d rows, want %d", len(rows), len(ms))
	}
	// The stores share the data; their writers take turns on the file lock.
	var wg2 sync.WaitGroup
	for i, s := range stores {
		wg2.Go(func() {
			for j := range 10 {
				sb := store.Sandbox{ID: "sb-" + string(rune('a'+i)) + string(rune('a'+j)), State: "running"}
				if err := s.CreateSandbox(context.WithoutCancel(t.Context()), sb); err != nil {
					t.Errorf("CreateSandbox through store %d: %v", i, err)
				}
			}
		})
	}
	wg2.Wait()
	all, err := stores[n-1].ListSandboxes(t.Context(), store.SandboxFilter{})
	if err != nil {
		t.Fatalf("ListSandboxes: %v", err)
	}
	if len(all) != n*10 {
		t.Errorf("%d sandboxes visible, want %d", len(all), n*10)
	}
}

func TestIsUniqueViolation(t *testing.T) {
	db := rawDB(t)
	ctx := t.Context()
	if _, err := db.ExecContext(ctx, `CREATE TABLE u (id INTEGER PRIMARY KEY, name TEXT UNIQUE, n INTEGER NOT NULL CHECK (n > 0))`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO u VALUES (1, 'a', 1)`); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		stmt string
		want bool
	}{
		{`INSERT INTO u VALUES (1, 'b', 1)`, true},  // primary key
		{`INSERT INTO u VALUES (2, 'a', 1)`, true},  // unique
		{`INSERT INTO u VALUES (3, 'c', 0)`, false}, // check
		{`INSERT INTO u VALUES (4, 'd', NULL)`, false},
		{`INSERT INTO nope VALUES (1)`, false},
	}
	for _, tc := range tests {
		_, err := db.ExecContext(ctx, tc.stmt)
		if err == nil {
			t.Fatalf("%s succeeded", tc.stmt)
		}
		if got := isUniqueViolation(err); got != tc.want {
			t.Errorf("%s: isUniqueViolation(%v) = %v, want %v", tc.stmt, err, got, tc.want)
		}
	}
	if isUniqueViolation(fs.ErrExist) {
		t.Error("a non-sqlite error counted as a unique violation")
	}
}
