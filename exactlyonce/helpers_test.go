package exactlyonce_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/watermill-sls/watermill-sls/exactlyonce"
	"github.com/watermill-sls/watermill-sls/internal/testutil"
)

func TestMain(m *testing.M) { testutil.Main(m) }

const testStream = "orders"

// testPosition is a user PositionFunc: partition and offset from metadata "p" and "o".
func testPosition(msg *message.Message) (exactlyonce.Position, error) {
	p, err := strconv.Atoi(msg.Metadata.Get("p"))
	if err != nil {
		return exactlyonce.Position{}, fmt.Errorf("metadata p: %w", err)
	}
	o, err := strconv.ParseInt(msg.Metadata.Get("o"), 10, 64)
	if err != nil {
		return exactlyonce.Position{}, fmt.Errorf("metadata o: %w", err)
	}
	return exactlyonce.Position{Stream: testStream, Partition: int32(p), Offset: o}, nil
}

// testMsg is a message at partition p, offset o, with payload "p/o".
func testMsg(p int, o int64) *message.Message {
	m := message.NewMessage(fmt.Sprintf("m-%d-%d", p, o), []byte(fmt.Sprintf("%d/%d", p, o)))
	m.Metadata.Set("p", strconv.Itoa(p))
	m.Metadata.Set("o", strconv.FormatInt(o, 10))
	return m
}

// newStore returns a migrated Store on a fresh database with a sink table (id text, n int).
func newStore(t testing.TB) (*exactlyonce.Store, *pgxpool.Pool) {
	t.Helper()
	pool := testutil.Postgres(t)
	store, err := exactlyonce.NewStore(pool, exactlyonce.StoreConfig{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := store.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `CREATE TABLE sink (id text NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	return store, pool
}

// insertSink is a HandlerFunc writing the payload as a sink row.
func insertSink(ctx context.Context, tx pgx.Tx, msg *message.Message) error {
	_, err := tx.Exec(ctx, `INSERT INTO sink (id) VALUES ($1)`, string(msg.Payload))
	return err
}

// sinkCounts returns the rows of sink by id.
func sinkCounts(t testing.TB, pool *pgxpool.Pool) map[string]int {
	t.Helper()
	rows, err := pool.Query(context.Background(), `SELECT id, count(*) FROM sink GROUP BY id`)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	var id string
	var n int
	if _, err := pgx.ForEachRow(rows, []any{&id, &n}, func() error { out[id] = n; return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

// stored returns the stored position of partition p of testStream for consumer, or nil.
func stored(t testing.TB, store *exactlyonce.Store, consumer string, p int32) *exactlyonce.Position {
	t.Helper()
	pos, ok, err := store.Load(context.Background(), consumer, testStream, p)
	if err != nil {
		t.Fatal(err)
	}
	if !ok {
		return nil
	}
	return &pos
}

func wantStored(t testing.TB, store *exactlyonce.Store, consumer string, p int32, offset int64) {
	t.Helper()
	got := stored(t, store, consumer, p)
	if offset < 0 {
		if got != nil {
			t.Errorf("partition %d: stored %v, want none", p, *got)
		}
		return
	}
	if got == nil || got.Offset != offset || got.Index != 0 {
		t.Errorf("partition %d: stored %v, want offset %d", p, got, offset)
	}
}

// waitResult returns the result of an asynchronous Handle call, failing the test after 20 s.
func waitResult(t testing.TB, ch <-chan error) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(20 * time.Second):
		t.Fatal("handler call did not return within 20 s")
		return nil
	}
}

// wantFailedCommit checks that each of errs is the unique violation the deferred constraint raises at commit
// (createDeferred), that the sink holds nothing and that consumer "c" has no position stored for partitions 0
// to partitions-1.
func wantFailedCommit(t testing.TB, store *exactlyonce.Store, pool *pgxpool.Pool, partitions int32, errs ...error) {
	t.Helper()
	for i, err := range errs {
		var pgErr interface{ SQLState() string }
		if !errors.As(err, &pgErr) || pgErr.SQLState() != "23505" {
			t.Errorf("message %d: %v, want the commit's unique violation", i, err)
		}
	}
	if rows := sinkCounts(t, pool); len(rows) != 0 {
		t.Errorf("sink holds %v after a failed commit", rows)
	}
	for p := range partitions {
		wantStored(t, store, "c", p, -1)
	}
}
