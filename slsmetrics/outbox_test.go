package slsmetrics_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/watermill-sls/watermill-sls/internal/testutil"
	"github.com/watermill-sls/watermill-sls/outbox"
	"github.com/watermill-sls/watermill-sls/slsmetrics"
	"github.com/watermill-sls/watermill-sls/slspubsub"
)

// TestOutboxMetrics commits outbox rows for an existing logstore and for a missing one (SLS refuses them:
// LogStoreNotExist), made a minute old, and relays them to SLS with MaxAttempts 2. Before the relay runs the
// table's backlog shows the pending rows and the oldest one's age; after, the relayed rows with their lag
// (at least the minute), the failed attempts, and the parked row, counted by the relay and found in the table.
func TestOutboxMetrics(t *testing.T) {
	const n = 5
	env := slsEnv(t, nil, "orders", 1)
	pool := testutil.Postgres(t)
	ctx := context.Background()
	table := outbox.Table{}
	if err := table.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		pub, err := outbox.NewPublisher(tx, outbox.PublisherConfig{Table: table})
		if err != nil {
			return err
		}
		for i := range n {
			if err := pub.Publish("orders", message.NewMessage(fmt.Sprintf("o-%d", i), []byte("order"))); err != nil {
				return err
			}
		}
		return pub.Publish("missing", message.NewMessage("x", []byte("lost")))
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `UPDATE watermill_outbox SET created_at = now() - interval '60 seconds'`); err != nil {
		t.Fatal(err)
	}

	reg := prometheus.NewRegistry()
	if _, err := slsmetrics.NewOutboxCollector(reg, pool, table); err != nil {
		t.Fatal(err)
	}
	f := gather(t, reg)
	const tbl = "watermill_outbox"
	if v, _ := f.sum("watermill_sls_outbox_pending_rows", "table", tbl, "topic", "orders"); v != n {
		t.Errorf("pending_rows{orders} = %v, want %d (%s)", v, n, f.series("watermill_sls_outbox_pending_rows"))
	}
	if v, _ := f.sum("watermill_sls_outbox_oldest_pending_age_seconds", "table", tbl, "topic", "orders"); v < 60 || v > 600 {
		t.Errorf("oldest_pending_age_seconds{orders} = %v, want about 60", v)
	}

	rm, err := slsmetrics.NewRelayMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	dest, err := slspubsub.NewPublisher(slspubsub.PublisherConfig{ClientConfig: clientConfig(env)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = dest.Close() })
	relay, err := outbox.NewRelay(pool, outbox.RelayConfig{Table: table, Publisher: dest, Metrics: rm, MaxAttempts: 2,
		RetryInitialBackoff: 10 * time.Millisecond, PollInterval: 50 * time.Millisecond}, nil)
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- relay.Run(rctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("relay: %v", err)
		}
	})

	pollGather(t, reg, "rows relayed and parked", func(f families) bool {
		relayed, _ := f.sum("watermill_sls_outbox_relayed_total", "topic", "orders")
		parked, _ := f.sum("watermill_sls_outbox_parked_total", "topic", "missing")
		return relayed == n && parked == 1
	}, "watermill_sls_outbox_relayed_total", "watermill_sls_outbox_parked_total")
	f = gather(t, reg)
	if v, _ := f.sum("watermill_sls_outbox_parked_rows", "table", tbl, "topic", "missing"); v != 1 {
		t.Errorf("parked_rows{missing} = %v, want 1 (%s)", v, f.series("watermill_sls_outbox_parked_rows"))
	}
	if v, _ := f.sum("watermill_sls_outbox_pending_rows", "table", tbl); v != 0 {
		t.Errorf("pending_rows = %v after the relay, want 0 (%s)", v, f.series("watermill_sls_outbox_pending_rows"))
	}
	if v, _ := f.sum("watermill_sls_outbox_oldest_pending_age_seconds", "table", tbl); v != 0 {
		t.Errorf("oldest_pending_age_seconds = %v with nothing pending, want 0", v)
	}
	if v, _ := f.sum("watermill_sls_outbox_publish_failures_total", "topic", "missing"); v != 2 {
		t.Errorf("publish_failures_total{missing} = %v, want 2 (MaxAttempts)", v)
	}
	lag, _ := f.sum("watermill_sls_outbox_relay_lag_seconds", "topic", "orders")
	if c := f.count("watermill_sls_outbox_relay_lag_seconds", "topic", "orders"); c != n || lag < n*60 {
		t.Errorf("relay_lag_seconds{orders}: %d samples summing %v s, want %d of at least 60 s", c, lag, n)
	}
	if v, _ := f.sum("watermill_sls_outbox_scrape_errors_total"); v != 0 {
		t.Errorf("scrape_errors_total = %v", v)
	}
	t.Logf("%d rows relayed (mean lag %.1f s), 1 parked after 2 failed attempts", n, lag/n)
}
