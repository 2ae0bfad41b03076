package slsmetrics_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/watermill-sls/watermill-sls/exactlyonce"
	"github.com/watermill-sls/watermill-sls/internal/testutil"
	"github.com/watermill-sls/watermill-sls/slsmetrics"
	"github.com/watermill-sls/watermill-sls/slspubsub"
)

// TestHandlerMetrics consumes a logstore through a router into PostgreSQL with each exactly-once handler, the
// HandlerFunc failing once on one message (redelivered, then applied), then reads the logstore again from
// the beginning with a second subscriber: every message of the second pass is skipped as a duplicate. The
// metrics must count each message applied once, the failure, and the skipped duplicates.
func TestHandlerMetrics(t *testing.T) {
	const n = 20
	for _, batch := range []bool{false, true} {
		t.Run(fmt.Sprintf("batch=%v", batch), func(t *testing.T) {
			const logstore, consumer = "orders", "c"
			env := slsEnv(t, nil, logstore, 1)
			publish(t, env, logstore, n)
			pool := testutil.Postgres(t)
			ctx := context.Background()
			store, err := exactlyonce.NewStore(pool, exactlyonce.StoreConfig{})
			if err != nil {
				t.Fatal(err)
			}
			if err := store.Migrate(ctx); err != nil {
				t.Fatal(err)
			}
			if _, err := pool.Exec(ctx, `CREATE TABLE sink (id text NOT NULL)`); err != nil {
				t.Fatal(err)
			}
			reg := prometheus.NewRegistry()
			hm, err := slsmetrics.NewHandlerMetrics(reg)
			if err != nil {
				t.Fatal(err)
			}
			// m-3 fails once as the router sees it: the BatchHandler calls the HandlerFunc of a batch with a
			// failure twice (a second run with savepoints), the MessageHandler once.
			failures := 1
			if batch {
				failures = 2
			}
			var calls atomic.Int32
			fn := func(ctx context.Context, tx pgx.Tx, msg *message.Message) error {
				if msg.UUID == "m-3" && calls.Add(1) <= int32(failures) {
					return errors.New("injected handler failure")
				}
				_, err := tx.Exec(ctx, `INSERT INTO sink (id) VALUES ($1)`, msg.UUID)
				return err
			}
			cfg := exactlyonce.HandlerConfig{Consumer: consumer, Position: exactlyonce.SLSPosition, Metrics: hm}
			var handle message.NoPublishHandlerFunc
			if batch {
				h, err := exactlyonce.NewBatchHandler(store, exactlyonce.BatchConfig{HandlerConfig: cfg, MaxWait: time.Millisecond}, fn)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = h.Close() })
				handle = h.Handle
			} else {
				h, err := exactlyonce.NewMessageHandler(store, cfg, fn)
				if err != nil {
					t.Fatal(err)
				}
				handle = h.Handle
			}
			messages := func(result string) float64 {
				v, _ := gather(t, reg).sum("watermill_sls_exactlyonce_messages_total", "consumer", consumer, "result", result)
				return v
			}

			testutil.RunRouter(t, logstore, subscriber(t, env), handle)
			deadlinePoll(t, "every message applied", func() (bool, string) {
				return messages("applied") == n, gather(t, reg).series("watermill_sls_exactlyonce_messages_total")
			})
			var rows int
			if err := pool.QueryRow(ctx, `SELECT count(*) FROM sink`).Scan(&rows); err != nil || rows != n {
				t.Fatalf("sink holds %d rows (%v), want %d", rows, err, n)
			}
			if v := messages("failed"); v != 1 {
				t.Errorf("failed = %v, want 1", v)
			}

			// A second subscriber without the store's positions reads everything again.
			testutil.RunRouter(t, logstore, subscriber(t, env), handle)
			deadlinePoll(t, "every redelivered message skipped", func() (bool, string) {
				return messages("skipped") == n, gather(t, reg).series("watermill_sls_exactlyonce_messages_total")
			})
			if v := messages("applied"); v != n {
				t.Errorf("applied = %v after the redelivery, want %d", v, n)
			}
			f := gather(t, reg)
			committed, _ := f.sum("watermill_sls_exactlyonce_transactions_total", "consumer", consumer, "outcome", "committed")
			rolledBack, _ := f.sum("watermill_sls_exactlyonce_transactions_total", "consumer", consumer, "outcome", "rolled_back")
			handled, _ := f.sum("watermill_sls_exactlyonce_transaction_messages", "consumer", consumer)
			txs := f.count("watermill_sls_exactlyonce_transaction_messages", "consumer", consumer)
			if handled != 2*n+1 || uint64(committed+rolledBack) != txs || f.count("watermill_sls_exactlyonce_transaction_duration_seconds") != txs {
				t.Errorf("%v messages in %d transactions (%v committed, %v rolled back), want %d messages", handled, txs, committed, rolledBack, 2*n+1)
			}
			// The MessageHandler rolls back the failed message's transaction; the BatchHandler commits the
			// rest of its batch and answers the failed message with its error.
			if wantRolledBack := map[bool]float64{false: 1, true: 0}[batch]; rolledBack != wantRolledBack {
				t.Errorf("rolled back transactions = %v, want %v", rolledBack, wantRolledBack)
			}
			t.Logf("%v messages applied, %v skipped as duplicates, %v failed, in %d transactions", messages("applied"), messages("skipped"), messages("failed"), txs)
		})
	}
}

// publish writes n messages "m-0".."m-<n-1>" to logstore in one Publish call.
func publish(t *testing.T, env *testutil.SLSEnv, logstore string, n int) {
	t.Helper()
	pub, err := slspubsub.NewPublisher(slspubsub.PublisherConfig{ClientConfig: clientConfig(env)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	msgs := make([]*message.Message, n)
	for i := range msgs {
		msgs[i] = message.NewMessage(fmt.Sprintf("m-%d", i), []byte("order"))
	}
	if err := pub.Publish(logstore, msgs...); err != nil {
		t.Fatal(err)
	}
}

// subscriber reads from the beginning, with fast pacing.
func subscriber(t *testing.T, env *testutil.SLSEnv) *slspubsub.Subscriber {
	t.Helper()
	sub, err := slspubsub.NewSubscriber(slspubsub.SubscriberConfig{ClientConfig: clientConfig(env),
		FetchInterval: 5 * time.Millisecond, MaxFetchInterval: 20 * time.Millisecond}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Close() })
	return sub
}
