package testutil_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/watermill-sls/watermill-sls/internal/testutil"
)

func TestPostgresGivesEachCallItsOwnDatabase(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var names []string
	t.Run("two calls", func(t *testing.T) {
		a, b := testutil.Postgres(t), testutil.Postgres(t)
		nameA, nameB := currentDatabase(ctx, t, a), currentDatabase(ctx, t, b)
		if nameA == nameB {
			t.Fatalf("both calls got database %q", nameA)
		}
		for _, name := range []string{nameA, nameB} {
			if !strings.HasPrefix(name, "t_testpostgresgiveseachcallitsowndatabase_") {
				t.Errorf("database name %q does not derive from the test name", name)
			}
		}
		names = append(names, nameA, nameB)

		if _, err := a.Exec(ctx, "CREATE TABLE only_in_a (id int); INSERT INTO only_in_a VALUES (1)"); err != nil {
			t.Fatalf("create table in first database: %v", err)
		}
		var inA, inB bool
		const exists = "SELECT to_regclass('only_in_a') IS NOT NULL"
		if err := a.QueryRow(ctx, exists).Scan(&inA); err != nil {
			t.Fatal(err)
		}
		if err := b.QueryRow(ctx, exists).Scan(&inB); err != nil {
			t.Fatal(err)
		}
		if !inA || inB {
			t.Errorf("table only_in_a visible in first database: %v, in second: %v; want true, false", inA, inB)
		}
	})
	if t.Failed() {
		return
	}

	// The subtest has ended, so its cleanups have run. pg_database is a shared catalog: any database of the
	// cluster shows which databases exist.
	observer := testutil.Postgres(t)
	var left int
	err := observer.QueryRow(ctx, "SELECT count(*) FROM pg_database WHERE datname = ANY($1)", names).Scan(&left)
	if err != nil {
		t.Fatal(err)
	}
	if left != 0 {
		t.Errorf("%d of the databases %v still exist after their test ended", left, names)
	}
}

func TestPostgresURLDropsDatabaseWithOpenConnections(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var name string
	t.Run("leaves a connection open", func(t *testing.T) {
		conn, err := pgx.Connect(ctx, testutil.PostgresURL(t))
		if err != nil {
			t.Fatal(err)
		}
		// Deliberately never closed: the drop must not wait for or fail on it.
		name = conn.Config().Database
	})
	if t.Failed() {
		return
	}
	var exists bool
	observer := testutil.Postgres(t)
	if err := observer.QueryRow(ctx, "SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		t.Fatal(err)
	}
	if exists {
		t.Errorf("database %q still exists after its test ended", name)
	}
}

func currentDatabase(ctx context.Context, t *testing.T, pool *pgxpool.Pool) string {
	t.Helper()
	var name string
	if err := pool.QueryRow(ctx, "SELECT current_database()").Scan(&name); err != nil {
		t.Fatal(err)
	}
	return name
}
