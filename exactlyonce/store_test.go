package exactlyonce_test

import (
	"context"
	"encoding/base64"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/watermill-sls/watermill-sls/exactlyonce"
	"github.com/watermill-sls/watermill-sls/internal/testutil"
	"github.com/watermill-sls/watermill-sls/slspubsub"
)

func TestStoreConfigValidate(t *testing.T) {
	pool := testutil.Postgres(t)
	_, err := exactlyonce.NewStore(pool, exactlyonce.StoreConfig{Schema: "Bad-Schema", Table: "x;drop"})
	if err == nil {
		t.Fatal("NewStore accepted invalid names")
	}
	for _, field := range []string{"Schema", "Table"} {
		if !strings.Contains(err.Error(), field) {
			t.Errorf("error %q does not name %s", err, field)
		}
	}
	if _, err := exactlyonce.NewStore(nil, exactlyonce.StoreConfig{}); err == nil {
		t.Error("NewStore accepted a nil pool")
	}
}

// Migrate creates the schema and table named in the config, is idempotent and safe to run concurrently.
func TestStoreMigrateSchemaAndTable(t *testing.T) {
	pool := testutil.Postgres(t)
	ctx := context.Background()
	store, err := exactlyonce.NewStore(pool, exactlyonce.StoreConfig{Schema: "eo", Table: "positions"})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() { errs[i] = store.Migrate(ctx) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("concurrent Migrate %d: %v", i, err)
		}
	}
	if err := store.Migrate(ctx); err != nil {
		t.Fatalf("Migrate again: %v", err)
	}
	var n int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM eo.positions_migrations`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Errorf("%d migration rows, want 1", n)
	}
	if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		_, err := store.Advance(ctx, tx, "c", exactlyonce.Position{Stream: "s", Partition: 1, Offset: 7, Index: 2})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	var off int64
	var idx int32
	if err := pool.QueryRow(ctx, `SELECT "offset", "index" FROM eo.positions WHERE consumer='c' AND stream='s' AND partition=1`).Scan(&off, &idx); err != nil {
		t.Fatalf("position not in eo.positions: %v", err)
	}
	if off != 7 || idx != 2 {
		t.Errorf("eo.positions holds %d.%d, want 7.2", off, idx)
	}
}

// A position only moves forward, ordered by (offset, index), whatever Advance is given.
func TestStoreAdvanceForwardOnly(t *testing.T) {
	store, pool := newStore(t)
	ctx := context.Background()
	pos := func(o int64, i int32) exactlyonce.Position {
		return exactlyonce.Position{Stream: testStream, Partition: 3, Offset: o, Index: i}
	}
	steps := []struct {
		pos   exactlyonce.Position
		moved bool
		want  exactlyonce.Position
	}{
		{pos(10, 5), true, pos(10, 5)},  // first
		{pos(10, 4), false, pos(10, 5)}, // lower index
		{pos(9, 99), false, pos(10, 5)}, // lower offset, higher index
		{pos(10, 5), false, pos(10, 5)}, // equal
		{pos(10, 6), true, pos(10, 6)},  // higher index
		{pos(11, 0), true, pos(11, 0)},  // higher offset, lower index
	}
	for i, s := range steps {
		var moved bool
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) (err error) {
			moved, err = store.Advance(ctx, tx, "c", s.pos)
			return err
		})
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		got, ok, err := store.Load(ctx, "c", testStream, 3)
		if err != nil || !ok {
			t.Fatalf("step %d: Load: %v, %v", i, ok, err)
		}
		if moved != s.moved || got != s.want {
			t.Errorf("step %d: Advance(%v) moved=%v, stored %v; want moved=%v, stored %v", i, s.pos, moved, got, s.moved, s.want)
		}
	}
	// Other consumers, streams and partitions are separate rows.
	if _, ok, _ := store.Load(ctx, "other", testStream, 3); ok {
		t.Error("consumer other has a position")
	}
	if _, ok, _ := store.Load(ctx, "c", testStream, 4); ok {
		t.Error("partition 4 has a position")
	}
	ps, err := store.Positions(ctx, "c", testStream)
	if err != nil || len(ps) != 1 || ps[3] != pos(11, 0) {
		t.Errorf("Positions = %v, %v; want {3: 11.0}", ps, err)
	}
}

// An Advance rolled back with its transaction leaves the position where it was.
func TestStoreAdvanceRollsBackWithTransaction(t *testing.T) {
	store, pool := newStore(t)
	ctx := context.Background()
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Advance(ctx, tx, "c", exactlyonce.Position{Stream: testStream, Offset: 5}); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	wantStored(t, store, "c", 0, -1)
}

// SubscriberPositions serves slspubsub's resume interface: the cursor it returns decodes, with
// slspubsub.Position.CursorValue, to the stored offset, and spells it as SLS does.
func TestSubscriberPositionsCursorRoundTrip(t *testing.T) {
	store, pool := newStore(t)
	ctx := context.Background()
	ps := store.SubscriberPositions("c")
	if _, ok, err := ps.LoadPosition(ctx, testStream, 2); ok || err != nil {
		t.Fatalf("LoadPosition with nothing stored = %v, %v", ok, err)
	}
	for _, off := range []int64{0, 9, 10, 1700000000123456, 1<<63 - 1} {
		want := exactlyonce.Position{Stream: testStream, Partition: 2, Offset: off, Index: 17}
		if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			_, err := store.Advance(ctx, tx, "c", want)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		got, ok, err := ps.LoadPosition(ctx, testStream, 2)
		if err != nil || !ok {
			t.Fatalf("LoadPosition: %v, %v", ok, err)
		}
		v, err := got.CursorValue()
		if err != nil {
			t.Fatalf("cursor %q: %v", got.Cursor, err)
		}
		if v != off || got.Shard != 2 || got.Index != 17 {
			t.Errorf("LoadPosition = %+v (cursor value %d), want shard 2, offset %d, index 17", got, v, off)
		}
		if sdk := base64.StdEncoding.EncodeToString([]byte(strconv.FormatInt(off, 10))); got.Cursor != sdk {
			t.Errorf("cursor %q, want %q", got.Cursor, sdk)
		}
		// And back: an slspubsub position parses to the same cursor.
		if p, err := slspubsub.ParsePosition(got.String()); err != nil || p != got {
			t.Errorf("ParsePosition(%q) = %+v, %v", got.String(), p, err)
		}
	}
}

// A database migrated by a newer version of the library is refused rather than used with an unknown schema.
func TestStoreMigrateRefusesNewerSchema(t *testing.T) {
	store, pool := newStore(t)
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `INSERT INTO watermill_sls_positions_migrations (version) VALUES (99)`); err != nil {
		t.Fatal(err)
	}
	if err := store.Migrate(ctx); err == nil || !strings.Contains(err.Error(), "99") {
		t.Errorf("Migrate over schema version 99 = %v, want an error naming it", err)
	}
}
