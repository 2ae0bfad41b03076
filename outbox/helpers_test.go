package outbox_test

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/watermill-sls/watermill-sls/internal/testutil"
	"github.com/watermill-sls/watermill-sls/outbox"
)

func TestMain(m *testing.M) { testutil.Main(m) }

// migrated returns a pool on a fresh database with the default outbox table and a business table.
func migrated(t testing.TB) *pgxpool.Pool {
	t.Helper()
	db := testutil.Postgres(t)
	ctx := context.Background()
	if err := (outbox.Table{}).Migrate(ctx, db); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	if _, err := db.Exec(ctx, `CREATE TABLE orders (id bigserial PRIMARY KEY, key text NOT NULL, seq int NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	return db
}

// received is one message a collector got.
type received struct {
	topic string
	id    int64
	key   string
	uuid  string
	msg   *message.Message
}

// collector is a destination Publisher that records what it is given, optionally failing some messages. It
// stands for "any Watermill Publisher"; tests against SLS and Kafka use the real ones.
type collector struct {
	mu   sync.Mutex
	got  []received
	fail func(topic string, msg *message.Message) error
}

func (c *collector) Publish(topic string, msgs ...*message.Message) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range msgs {
		if c.fail != nil {
			if err := c.fail(topic, m); err != nil {
				return err
			}
		}
	}
	for _, m := range msgs {
		id, err := strconv.ParseInt(m.Metadata.Get(outbox.MetadataOutboxID), 10, 64)
		if err != nil {
			return fmt.Errorf("message %s without a valid %s: %w", m.UUID, outbox.MetadataOutboxID, err)
		}
		c.got = append(c.got, received{topic: topic, id: id, key: m.Metadata.Get(outbox.MetadataOrderingKey), uuid: m.UUID, msg: m})
	}
	return nil
}

func (c *collector) Close() error { return nil }

func (c *collector) setFail(f func(topic string, msg *message.Message) error) {
	c.mu.Lock()
	c.fail = f
	c.mu.Unlock()
}

func (c *collector) snapshot() []received {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]received(nil), c.got...)
}

func (c *collector) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.got)
}

// runRelay starts a relay with cfg and stops it (checking Run's result) when the test ends.
func runRelay(t testing.TB, db *pgxpool.Pool, cfg outbox.RelayConfig) (stop func()) {
	t.Helper()
	r, err := outbox.NewRelay(db, cfg, watermill.NopLogger{})
	if err != nil {
		t.Fatalf("NewRelay: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Relay.Run: %v", err)
				}
			case <-time.After(time.Minute):
				t.Errorf("Relay.Run did not return within a minute of cancellation")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// publishInTx writes one business row and publishes msgs to topic in one transaction, committing or rolling
// back.
func publishInTx(ctx context.Context, db *pgxpool.Pool, cfg outbox.PublisherConfig, topic, key string, seq int,
	commit bool, msgs ...*message.Message) error {
	return withTx(ctx, db, commit, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO orders (key, seq) VALUES ($1, $2)`, key, seq); err != nil {
			return err
		}
		p, err := outbox.NewPublisher(tx, cfg)
		if err != nil {
			return err
		}
		return p.Publish(topic, msgs...)
	})
}

func withTx(ctx context.Context, db *pgxpool.Pool, commit bool, fn func(pgx.Tx) error) error {
	tx, err := db.Begin(ctx)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback(ctx)
		return err
	}
	if !commit {
		return tx.Rollback(ctx)
	}
	return tx.Commit(ctx)
}

func keyed(key, payload string) *message.Message {
	m := message.NewMessage(watermill.NewUUID(), []byte(payload))
	if key != "" {
		m.Metadata.Set(outbox.DefaultOrderingKeyMetadata, key)
	}
	return m
}

func countRows(t testing.TB, db *pgxpool.Pool, where string) int {
	t.Helper()
	var n int
	if err := db.QueryRow(context.Background(), `SELECT count(*) FROM watermill_outbox WHERE `+where).Scan(&n); err != nil {
		t.Fatalf("count rows where %s: %v", where, err)
	}
	return n
}
