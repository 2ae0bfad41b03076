package outbox_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"

	"github.com/watermill-sls/watermill-sls/internal/testutil"
	"github.com/watermill-sls/watermill-sls/outbox"
)

func TestPublishedMessagesCommitWithTheTransaction(t *testing.T) {
	db := migrated(t)
	ctx := context.Background()
	dest := &collector{}
	metrics := &countingMetrics{}
	runRelay(t, db, outbox.RelayConfig{Publisher: dest, PollInterval: 50 * time.Millisecond, Metrics: metrics})

	committed := keyed("k", "committed")
	committed.Metadata.Set("trace", "abc")
	if err := publishInTx(ctx, db, outbox.PublisherConfig{}, "orders", "k", 1, true, committed); err != nil {
		t.Fatalf("commit: %v", err)
	}
	if err := publishInTx(ctx, db, outbox.PublisherConfig{}, "orders", "k", 2, false, keyed("k", "rolled back")); err != nil {
		t.Fatalf("rollback: %v", err)
	}
	if err := publishInTx(ctx, db, outbox.PublisherConfig{}, "orders", "k", 3, true, keyed("", "unkeyed")); err != nil {
		t.Fatalf("commit unkeyed: %v", err)
	}
	testutil.Poll(t, 30*time.Second, "2 relayed messages", func() (bool, string) {
		return dest.count() >= 2 && countRows(t, db, "delivered_at IS NULL") == 0, ""
	})
	got := dest.snapshot()
	if len(got) != 2 {
		t.Fatalf("destination got %d messages, want 2 (the rolled-back one must never be relayed)", len(got))
	}
	// The two rows have different keys (one none), so the relay may publish them in either order.
	if got[0].key == "" {
		got[0], got[1] = got[1], got[0]
	}
	m := got[0].msg
	if m.UUID != committed.UUID || string(m.Payload) != "committed" || m.Metadata.Get("trace") != "abc" ||
		got[0].key != "k" || got[0].topic != "orders" {
		t.Errorf("relayed message = %s %q %v on %q, want the committed one with its metadata", m.UUID, m.Payload, m.Metadata, got[0].topic)
	}
	if got[1].id <= got[0].id || string(got[1].msg.Payload) != "unkeyed" || got[1].key != "" {
		t.Errorf("unkeyed message: id %d (keyed one %d), payload %q, key %q", got[1].id, got[0].id, got[1].msg.Payload, got[1].key)
	}
	if n := countRows(t, db, "true"); n != 2 {
		t.Errorf("outbox holds %d rows, want 2 (rolled-back rows are never written)", n)
	}
	if n, lag := metrics.relayed.Load(), time.Duration(metrics.lagMax.Load()); n != 2 || lag <= 0 || lag > time.Minute {
		t.Errorf("Metrics.Relayed called %d times with max lag %v; want 2 calls with a positive lag", n, lag)
	}
}

func TestPublisherMisuseErrors(t *testing.T) {
	db := migrated(t)
	ctx := context.Background()

	t.Run("after commit", func(t *testing.T) {
		tx, err := db.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		p, err := outbox.NewPublisher(tx, outbox.PublisherConfig{})
		if err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		err = p.Publish("orders", keyed("k", "late"))
		if !errors.Is(err, outbox.ErrTxDone) || !strings.Contains(err.Error(), "before Commit") {
			t.Errorf("Publish after Commit = %v, want ErrTxDone saying to publish before Commit", err)
		}
	})
	t.Run("after rollback", func(t *testing.T) {
		tx, err := db.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		p, _ := outbox.NewPublisher(tx, outbox.PublisherConfig{})
		_ = tx.Rollback(ctx)
		if err := p.Publish("orders", keyed("k", "late")); !errors.Is(err, outbox.ErrTxDone) {
			t.Errorf("Publish after Rollback = %v, want ErrTxDone", err)
		}
	})
	t.Run("aborted transaction", func(t *testing.T) {
		err := withTx(ctx, db, false, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `SELECT 1/0`); err == nil {
				t.Fatal("division by zero succeeded")
			}
			p, _ := outbox.NewPublisher(tx, outbox.PublisherConfig{})
			return p.Publish("orders", keyed("k", "x"))
		})
		if !errors.Is(err, outbox.ErrTxAborted) {
			t.Errorf("Publish in an aborted transaction = %v, want ErrTxAborted", err)
		}
	})
	t.Run("missing table", func(t *testing.T) {
		cfg := outbox.PublisherConfig{Table: outbox.Table{Name: "never_migrated"}}
		err := withTx(ctx, db, false, func(tx pgx.Tx) error {
			p, _ := outbox.NewPublisher(tx, cfg)
			return p.Publish("orders", keyed("k", "x"))
		})
		var missing *outbox.MissingTableError
		if !errors.As(err, &missing) || !strings.Contains(err.Error(), "never_migrated") || !strings.Contains(err.Error(), "Migrate") {
			t.Errorf("Publish into a missing table = %v, want a MissingTableError naming the table and Migrate", err)
		}
	})
	t.Run("payload too large", func(t *testing.T) {
		cfg := outbox.PublisherConfig{MaxPayloadBytes: 10}
		big := keyed("k", "01234567890")
		err := publishInTx(ctx, db, cfg, "orders", "k", 1, true, keyed("k", "small"), big)
		var tooLarge *outbox.PayloadTooLargeError
		if !errors.As(err, &tooLarge) || tooLarge.Size != 11 || tooLarge.Limit != 10 || tooLarge.UUID != big.UUID {
			t.Errorf("Publish of an 11-byte payload with limit 10 = %v, want PayloadTooLargeError{Size 11, Limit 10}", err)
		}
		if n := countRows(t, db, "true"); n != 0 {
			t.Errorf("%d rows written by a failed Publish", n)
		}
	})
	t.Run("no transaction in context", func(t *testing.T) {
		if _, err := outbox.PublisherFromContext(ctx, outbox.PublisherConfig{}); !errors.Is(err, outbox.ErrNoTx) {
			t.Errorf("PublisherFromContext without a tx = %v, want ErrNoTx", err)
		}
	})
	t.Run("closed", func(t *testing.T) {
		_ = withTx(ctx, db, false, func(tx pgx.Tx) error {
			p, _ := outbox.NewPublisher(tx, outbox.PublisherConfig{})
			_ = p.Close()
			if err := p.Publish("orders", keyed("k", "x")); !errors.Is(err, outbox.ErrPublisherClosed) {
				t.Errorf("Publish after Close = %v, want ErrPublisherClosed", err)
			}
			return nil
		})
	})
	t.Run("relay without table", func(t *testing.T) {
		r, err := outbox.NewRelay(db, outbox.RelayConfig{Table: outbox.Table{Name: "never_migrated"}, Publisher: &collector{}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		var missing *outbox.MissingTableError
		if err := r.Run(ctx); !errors.As(err, &missing) {
			t.Errorf("Relay.Run on a missing table = %v, want MissingTableError", err)
		}
	})
}

func TestPublisherFromContextInHandler(t *testing.T) {
	db := migrated(t)
	ctx := context.Background()
	handler := func(msg *message.Message) error {
		p, err := outbox.PublisherFromContext(msg.Context(), outbox.PublisherConfig{})
		if err != nil {
			return err
		}
		return p.Publish("out", keyed("k", "from handler"))
	}
	err := withTx(ctx, db, true, func(tx pgx.Tx) error {
		in := message.NewMessage(watermill.NewUUID(), nil)
		in.SetContext(outbox.ContextWithTx(ctx, tx))
		return handler(in)
	})
	if err != nil {
		t.Fatalf("handler: %v", err)
	}
	if n := countRows(t, db, "topic = 'out'"); n != 1 {
		t.Errorf("%d rows after the handler's transaction committed, want 1", n)
	}
}

// TestSameKeyTransactionsSerialize shows that ids of one key follow commit order: a second transaction
// publishing the same key waits for the first to end before it gets its id.
func TestSameKeyTransactionsSerialize(t *testing.T) {
	db := migrated(t)
	ctx := context.Background()
	first, err := db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Rollback(ctx)
	p1, _ := outbox.NewPublisher(first, outbox.PublisherConfig{})
	if err := p1.Publish("t", keyed("k", "first")); err != nil {
		t.Fatal(err)
	}
	secondDone := make(chan error, 1)
	go func() {
		secondDone <- publishInTx(ctx, db, outbox.PublisherConfig{}, "t", "k", 2, true, keyed("k", "second"))
	}()
	// The second transaction must be waiting on the key's advisory lock, not done.
	testutil.Poll(t, 10*time.Second, "second transaction waiting on the advisory lock", func() (bool, string) {
		var waiting int
		_ = db.QueryRow(ctx, `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted`).Scan(&waiting)
		return waiting == 1, ""
	})
	select {
	case err := <-secondDone:
		t.Fatalf("second transaction finished while the first held the key: %v", err)
	default:
	}
	if err := p1.Publish("t", keyed("other", "unrelated keys do not wait")); err != nil {
		t.Fatal(err)
	}
	if err := first.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-secondDone; err != nil {
		t.Fatal(err)
	}
	var firstID, secondID int64
	_ = db.QueryRow(ctx, `SELECT id FROM watermill_outbox WHERE payload = 'first'`).Scan(&firstID)
	_ = db.QueryRow(ctx, `SELECT id FROM watermill_outbox WHERE payload = 'second'`).Scan(&secondID)
	if !(firstID > 0 && secondID > firstID) {
		t.Errorf("ids: first %d, second %d; want the later commit to have the larger id", firstID, secondID)
	}
}

func TestMigrateIsIdempotentAndNamesTable(t *testing.T) {
	db := testutil.Postgres(t)
	ctx := context.Background()
	if _, err := db.Exec(ctx, `CREATE SCHEMA app`); err != nil {
		t.Fatal(err)
	}
	tbl := outbox.Table{Schema: "app", Name: "events_outbox"}
	for i := range 2 {
		if err := tbl.Migrate(ctx, db); err != nil {
			t.Fatalf("Migrate #%d: %v", i+1, err)
		}
	}
	var n int
	if err := db.QueryRow(ctx, `SELECT count(*) FROM pg_indexes WHERE schemaname = 'app' AND tablename = 'events_outbox'`).Scan(&n); err != nil || n != 4 {
		t.Errorf("app.events_outbox has %d indexes (err %v), want 4 (primary key, pending, key, delivered)", n, err)
	}
	if err := (outbox.Table{Name: "bad-name"}).Migrate(ctx, db); err == nil || !strings.Contains(err.Error(), "Table.Name") {
		t.Errorf("Migrate with a bad name = %v, want an error naming Table.Name", err)
	}
}

func TestRelayConfigValidation(t *testing.T) {
	db := testutil.Postgres(t)
	cases := []struct {
		name   string
		cfg    outbox.RelayConfig
		fields []string
	}{
		{"no destination", outbox.RelayConfig{}, []string{"Publisher"}},
		{"both destinations", outbox.RelayConfig{Publisher: &collector{}, TransactionalPublisher: txnStub{}, Name: "r"}, []string{"TransactionalPublisher"}},
		{"transactional without name", outbox.RelayConfig{TransactionalPublisher: txnStub{}}, []string{"Name"}},
		{"negatives", outbox.RelayConfig{Publisher: &collector{}, BatchSize: -1, MaxAttempts: -2, PollInterval: -time.Second},
			[]string{"BatchSize", "MaxAttempts", "PollInterval"}},
		{"publish batch", outbox.RelayConfig{Publisher: &collector{}, MaxMessagesPerPublish: -1, BatchSize: 200_000, Workers: -1},
			[]string{"MaxMessagesPerPublish", "BatchSize", "Workers"}},
		{"transactional workers", outbox.RelayConfig{TransactionalPublisher: txnStub{}, Name: "r", Workers: 2}, []string{"Workers"}},
		{"backoff order", outbox.RelayConfig{Publisher: &collector{}, RetryInitialBackoff: time.Minute, RetryMaxBackoff: time.Second},
			[]string{"RetryMaxBackoff"}},
		{"table", outbox.RelayConfig{Publisher: &collector{}, Table: outbox.Table{Schema: "a b"}}, []string{"Table.Schema"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := outbox.NewRelay(db, tc.cfg, nil)
			if err == nil {
				t.Fatalf("NewRelay accepted %+v", tc.cfg)
			}
			for _, f := range tc.fields {
				if !strings.Contains(err.Error(), f+":") {
					t.Errorf("error %q does not name %s", err, f)
				}
			}
		})
	}
	if _, err := outbox.NewRelay(db, outbox.RelayConfig{Publisher: &collector{}}, nil); err != nil {
		t.Errorf("NewRelay with defaults: %v", err)
	}
}

// txnStub only satisfies the interface for config validation; it is never run.
type txnStub struct{}

func (txnStub) Recover(context.Context) ([]int64, error) { return nil, errors.New("not run") }
func (txnStub) PublishBatch(context.Context, []outbox.BatchMessage) error {
	return errors.New("not run")
}
