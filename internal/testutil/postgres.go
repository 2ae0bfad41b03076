package testutil

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// DatabaseURLEnv names the environment variable holding the PostgreSQL server the fixtures use. Its database is
// the maintenance database the fixtures connect to for CREATE and DROP DATABASE; its user must be allowed to
// create databases. The server must be PostgreSQL 13 or newer (DROP DATABASE ... WITH (FORCE)).
const DatabaseURLEnv = "DATABASE_URL"

// dbTimeout bounds each maintenance step (connect, create, drop) so a wedged server fails the test instead of
// hanging it until the binary's -timeout.
const dbTimeout = time.Minute

// Postgres returns a pool connected to a fresh, empty database that only this call uses. The pool is closed and
// the database dropped when the test ends. See [PostgresURL] for where the server comes from.
func Postgres(t testing.TB) *pgxpool.Pool {
	t.Helper()
	dbURL := PostgresURL(t)
	ctx, cancel := context.WithTimeout(context.Background(), dbTimeout)
	defer cancel()
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		t.Fatalf("testutil: connect to test database: %v", err)
	}
	// Registered after PostgresURL's drop, so it runs before it: cleanups run last-in first-out.
	t.Cleanup(pool.Close)
	if err := pool.Ping(ctx); err != nil {
		t.Fatalf("testutil: ping test database: %v", err)
	}
	return pool
}

// PostgresURL creates a fresh, empty database that only this call uses and returns its connection URL (in the
// form DATABASE_URL has), for code that opens its own connections. The database is dropped when the test ends,
// with WITH (FORCE), so connections left open do not keep it alive.
//
// The server is the one at DATABASE_URL. When DATABASE_URL is unset, a cluster is started from the system's
// PostgreSQL binaries on first use and shared by the whole test binary; that requires the package's TestMain to
// call [Main], which stops it. Without DATABASE_URL and without those binaries the test fails (it never skips),
// saying what to install.
func PostgresURL(t testing.TB) string {
	t.Helper()
	server := postgresServerURL(t)
	name := databaseName(t.Name())
	ctx, cancel := context.WithTimeout(context.Background(), dbTimeout)
	defer cancel()
	if err := maintenanceExec(ctx, server, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("testutil: create test database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), dbTimeout)
		defer cancel()
		drop := "DROP DATABASE IF EXISTS " + pgx.Identifier{name}.Sanitize() + " WITH (FORCE)"
		if err := maintenanceExec(ctx, server, drop); err != nil {
			t.Errorf("testutil: drop test database %s: %v", name, err)
		}
	})
	dbURL, err := withDatabase(server, name)
	if err != nil {
		t.Fatalf("testutil: %v", err)
	}
	return dbURL
}

// postgresServerURL returns the maintenance URL of the server the fixtures use.
func postgresServerURL(t testing.TB) string {
	t.Helper()
	if u := os.Getenv(DatabaseURLEnv); u != "" {
		return u
	}
	if !mainActive.Load() {
		t.Fatalf("testutil: DATABASE_URL is unset, so the fixture would start a PostgreSQL cluster, and only " +
			"testutil.Main stops it: add `func TestMain(m *testing.M) { testutil.Main(m) }` to this package's " +
			"tests, or run them through `make test` (which sets DATABASE_URL)")
	}
	u, err := localClusterURL()
	if err != nil {
		t.Fatalf("%v", err)
	}
	return u
}

// maintenanceExec runs one statement on its own connection to the server's maintenance database. CREATE and
// DROP DATABASE cannot run inside a transaction block, which a plain Exec is not.
func maintenanceExec(ctx context.Context, serverURL, sql string) error {
	conn, err := pgx.Connect(ctx, serverURL)
	if err != nil {
		return fmt.Errorf("connect to maintenance database: %w", err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, sql); err != nil {
		return fmt.Errorf("%s: %w", sql, err)
	}
	return nil
}

// withDatabase points a connection string at another database. It accepts both forms pgx does: URLs and
// keyword/value strings (where a later dbname overrides an earlier one).
func withDatabase(connString, database string) (string, error) {
	if !strings.HasPrefix(connString, "postgres://") && !strings.HasPrefix(connString, "postgresql://") {
		return connString + " dbname=" + database, nil
	}
	u, err := url.Parse(connString)
	if err != nil {
		// url.Parse errors quote the input, which may hold a password: keep only the reason.
		if uerr := (*url.Error)(nil); errors.As(err, &uerr) {
			err = uerr.Err
		}
		return "", fmt.Errorf("parse DATABASE_URL: %w", err)
	}
	u.Path = "/" + database
	u.RawPath = ""
	return u.String(), nil
}

// maxTestNameInDB keeps database names within PostgreSQL's 63-byte identifier limit with room for the prefix
// and the random suffix.
const maxTestNameInDB = 44

// databaseName derives a database name from a test name: "t_", the test name lowercased with every run of other
// characters than [a-z0-9] turned into one "_" (cut to fit), "_", and 8 random hex digits so that calls never
// collide, not even across test binaries sharing a server.
func databaseName(testName string) string {
	var b strings.Builder
	b.WriteString("t_")
	underscore := true // after "t_"
	for _, r := range strings.ToLower(testName) {
		if b.Len()-2 >= maxTestNameInDB {
			break
		}
		switch {
		case r >= 'a' && r <= 'z' || r >= '0' && r <= '9':
			b.WriteRune(r)
			underscore = false
		case !underscore:
			b.WriteByte('_')
			underscore = true
		}
	}
	if !underscore {
		b.WriteByte('_')
	}
	var suffix [4]byte
	_, _ = rand.Read(suffix[:]) // crypto/rand.Read never fails (it panics on a broken system)
	b.WriteString(hex.EncodeToString(suffix[:]))
	return b.String()
}
