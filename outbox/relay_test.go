package outbox_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/watermill-sls/watermill-sls/internal/testutil"
	"github.com/watermill-sls/watermill-sls/outbox"
)

// TestOrderPerKeyWithThreeRelays runs 3 relays on one table, first on a backlog of several rows per key, then
// while producers commit (and roll back) more messages for 500 keys; the destination fails 5% of publishes at
// random (so rows are retried): per key, the destination must see the committed messages in commit order,
// nothing rolled back.
//
// With 500 keys a batch holds about one row per key (claims are exclusive across relays); with 20 keys and
// bigger batches, each batch holds chains of several rows per key (a failure must stop its key's chain).
func TestOrderPerKeyWithThreeRelays(t *testing.T) {
	for _, tc := range []struct{ keys, perKey, batch int }{
		{500, testutil.SoakOr(6, 40), 50},
		{20, testutil.SoakOr(100, 1000), 200},
	} {
		t.Run(fmt.Sprintf("keys=%d", tc.keys), func(t *testing.T) { testOrderPerKey(t, tc.keys, tc.perKey, tc.batch) })
	}
}

func testOrderPerKey(t *testing.T, keys, perKey, batch int) {
	db := migrated(t)
	ctx := context.Background()
	producers := min(10, keys)

	dest := &collector{}
	var failures atomic.Int64
	dest.setFail(func(string, *message.Message) error {
		if rand.IntN(20) == 0 {
			failures.Add(1)
			return errors.New("injected destination failure")
		}
		return nil
	})
	// Producer p owns keys k with k % producers == p, so each key's commit order is its sequence order.
	committed := make([][]int, keys) // per key: committed sequence numbers in commit order
	var rolledBack atomic.Int64
	var wg sync.WaitGroup
	produce := func(from, to int) {
		for p := range producers {
			wg.Go(func() {
				for seq := from; seq < to; seq++ {
					for k := p; k < keys; k += producers {
						commit := rand.IntN(10) != 0
						key := "key-" + strconv.Itoa(k)
						if err := publishInTx(ctx, db, outbox.PublisherConfig{}, "orders", key, seq, commit,
							keyed(key, strconv.Itoa(seq))); err != nil {
							t.Errorf("publish %s/%d: %v", key, seq, err)
							return
						}
						if commit {
							committed[k] = append(committed[k], seq)
						} else {
							rolledBack.Add(1)
						}
					}
				}
			})
		}
	}
	// A backlog first (several rows per key), then relays working while more commits arrive.
	produce(0, perKey/2)
	wg.Wait()
	for i := range 3 {
		runRelay(t, db, outbox.RelayConfig{
			Name: fmt.Sprintf("relay-%d", i), Publisher: dest, BatchSize: batch,
			RetryInitialBackoff: time.Millisecond, RetryMaxBackoff: 10 * time.Millisecond, MaxAttempts: 1000,
			PollInterval: 100 * time.Millisecond,
		})
	}

	produce(perKey/2, perKey)
	wg.Wait()
	total := 0
	for _, c := range committed {
		total += len(c)
	}
	testutil.Poll(t, 2*time.Minute, "every committed row delivered", func() (bool, string) {
		n := countRows(t, db, "delivered_at IS NULL")
		return n == 0, fmt.Sprintf("%d rows pending, destination has %d of %d", n, dest.count(), total)
	})

	got := dest.snapshot()
	seen := make([][]int, keys)
	for _, r := range got {
		k, _ := strconv.Atoi(r.key[len("key-"):])
		seq, _ := strconv.Atoi(string(r.msg.Payload))
		seen[k] = append(seen[k], seq)
	}
	bad := 0
	for k := range keys {
		if fmt.Sprint(seen[k]) != fmt.Sprint(committed[k]) {
			if bad++; bad <= 5 {
				t.Errorf("key-%d: destination order %v, commit order %v", k, seen[k], committed[k])
			}
		}
	}
	t.Logf("keys %d, committed %d, rolled back %d, delivered %d, injected failures %d, keys out of order %d",
		keys, total, rolledBack.Load(), len(got), failures.Load(), bad)
	if failures.Load() == 0 {
		t.Errorf("no destination failure was injected; the test did not exercise retries")
	}
}

// TestParkedRowBlocksItsKey parks a row that always fails: later rows of its key wait behind it (order), other
// keys go on; Parked lists it; Requeue lets the key continue in order.
func TestParkedRowBlocksItsKey(t *testing.T) {
	db := migrated(t)
	ctx := context.Background()
	dest := &collector{}
	poison := keyed("k", "poison")
	dest.setFail(func(_ string, m *message.Message) error {
		if m.UUID == poison.UUID {
			return errors.New("destination rejects poison")
		}
		return nil
	})
	var parkedCount atomic.Int64
	metrics := &countingMetrics{parked: &parkedCount}
	runRelay(t, db, outbox.RelayConfig{
		Publisher: dest, MaxAttempts: 3, RetryInitialBackoff: time.Millisecond, RetryMaxBackoff: 5 * time.Millisecond,
		PollInterval: 50 * time.Millisecond, Metrics: metrics,
	})
	for i, m := range []*message.Message{keyed("k", "a"), poison, keyed("k", "b"), keyed("k", "c"), keyed("other", "x")} {
		if err := publishInTx(ctx, db, outbox.PublisherConfig{}, "t", "k", i, true, m); err != nil {
			t.Fatal(err)
		}
	}
	var parked []outbox.ParkedRow
	testutil.Poll(t, 30*time.Second, "the poison row parked", func() (bool, string) {
		var err error
		parked, err = (outbox.Table{}).Parked(ctx, db, 10)
		return err == nil && len(parked) == 1, fmt.Sprintf("parked %v, err %v", parked, err)
	})
	if t.Failed() {
		return
	}
	if p := parked[0]; p.UUID != poison.UUID || p.Attempts != 3 || p.OrderingKey != "k" || p.LastError == "" {
		t.Errorf("parked row %+v, want the poison row after 3 attempts with its error", p)
	}
	testutil.Poll(t, 10*time.Second, "row of the other key delivered", func() (bool, string) {
		return countRows(t, db, "ordering_key = 'other' AND delivered_at IS NOT NULL") == 1, ""
	})
	if got := payloads(dest.snapshot(), "k"); fmt.Sprint(got) != "[a]" {
		t.Errorf("key k delivered %v while its second row is parked, want only [a]", got)
	}
	if parkedCount.Load() != 1 {
		t.Errorf("Metrics.Parked called %d times, want 1", parkedCount.Load())
	}

	dest.setFail(nil)
	n, err := (outbox.Table{}).Requeue(ctx, db, parked[0].ID)
	if err != nil || n != 1 {
		t.Fatalf("Requeue = %d, %v", n, err)
	}
	testutil.Poll(t, 30*time.Second, "key k delivered after requeue", func() (bool, string) {
		got := payloads(dest.snapshot(), "k")
		return len(got) == 4, fmt.Sprint(got)
	})
	if got := payloads(dest.snapshot(), "k"); fmt.Sprint(got) != "[a poison b c]" {
		t.Errorf("key k delivered %v, want [a poison b c]", got)
	}
}

func payloads(rs []received, key string) []string {
	var out []string
	for _, r := range rs {
		if r.key == key {
			out = append(out, string(r.msg.Payload))
		}
	}
	return out
}

type countingMetrics struct {
	outbox.NopMetrics
	parked  *atomic.Int64
	relayed atomic.Int64
	lagMax  atomic.Int64
}

func (m *countingMetrics) Parked(string, int64, error) {
	if m.parked != nil {
		m.parked.Add(1)
	}
}

func (m *countingMetrics) Relayed(_ string, lag time.Duration) {
	m.relayed.Add(1)
	if int64(lag) > m.lagMax.Load() {
		m.lagMax.Store(int64(lag))
	}
}

func TestRetentionDeletesDeliveredRows(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name      string
		retention time.Duration
		wantKept  int
	}{
		{"short retention deletes", time.Millisecond, 0},
		{"negative retention keeps", -1, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db := migrated(t)
			dest := &collector{}
			runRelay(t, db, outbox.RelayConfig{Publisher: dest, Retention: tc.retention,
				RetentionInterval: 20 * time.Millisecond, PollInterval: 20 * time.Millisecond})
			for i := range 3 {
				if err := publishInTx(ctx, db, outbox.PublisherConfig{}, "t", "k", i, true, keyed("k", "x")); err != nil {
					t.Fatal(err)
				}
			}
			testutil.Poll(t, 30*time.Second, "3 delivered", func() (bool, string) { return dest.count() == 3, "" })
			if tc.wantKept == 0 {
				testutil.Poll(t, 30*time.Second, "delivered rows deleted", func() (bool, string) {
					n := countRows(t, db, "true")
					return n == 0, fmt.Sprintf("%d rows left", n)
				})
				return
			}
			// Three more retention rounds must leave the delivered rows alone.
			waitRounds(t, db)
			if n := countRows(t, db, "delivered_at IS NOT NULL AND payload <> 'marker'"); n != tc.wantKept {
				t.Errorf("%d delivered rows kept, want %d", n, tc.wantKept)
			}
		})
	}
}

// waitRounds lets the relay run several loop iterations: it publishes a marker row and waits for it.
func waitRounds(t *testing.T, db *pgxpool.Pool) {
	for i := range 3 {
		if err := publishInTx(context.Background(), db, outbox.PublisherConfig{}, "t", "marker", i, true, keyed("", "marker")); err != nil {
			t.Fatal(err)
		}
		testutil.Poll(t, 30*time.Second, "marker delivered", func() (bool, string) {
			return countRows(t, db, "payload = 'marker' AND delivered_at IS NULL") == 0, ""
		})
	}
}

// TestNotifyWakesRelayWithoutPolling sets the poll interval to an hour: only the commit's notification can
// make the relay deliver in time. Poll-only mode with the same interval must not deliver.
func TestNotifyWakesRelayWithoutPolling(t *testing.T) {
	ctx := context.Background()
	t.Run("listen", func(t *testing.T) {
		db := migrated(t)
		dest := &collector{}
		runRelay(t, db, outbox.RelayConfig{Publisher: dest, PollInterval: time.Hour})
		waitListening(t, db)
		var lat []time.Duration
		for i := range 5 {
			start := time.Now()
			if err := publishInTx(ctx, db, outbox.PublisherConfig{}, "t", "k", i, true, keyed("k", "x")); err != nil {
				t.Fatal(err)
			}
			if !testutil.Poll(t, 30*time.Second, "notified delivery", func() (bool, string) { return dest.count() == i+1, "" }) {
				return
			}
			lat = append(lat, time.Since(start))
		}
		t.Logf("commit-to-destination latency with LISTEN/NOTIFY and a 1 h poll interval: %v", lat)
	})
	t.Run("poll only", func(t *testing.T) {
		db := migrated(t)
		dest := &collector{}
		// The relay's first poll runs at start and delivers this one; after it, only the next poll would.
		if err := publishInTx(ctx, db, outbox.PublisherConfig{}, "t", "k", 0, true, keyed("k", "x")); err != nil {
			t.Fatal(err)
		}
		runRelay(t, db, outbox.RelayConfig{Publisher: dest, PollInterval: time.Hour, DisableListen: true})
		testutil.Poll(t, 10*time.Second, "first poll delivered", func() (bool, string) { return dest.count() == 1, "" })
		if err := publishInTx(ctx, db, outbox.PublisherConfig{}, "t", "k", 1, true, keyed("k", "x")); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(time.Second)
		for time.Now().Before(deadline) {
			if dest.count() != 1 {
				t.Fatalf("poll-only relay with a 1 h interval delivered within 1 s: notifications are not disabled")
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
	t.Run("poll only short interval", func(t *testing.T) {
		db := migrated(t)
		dest := &collector{}
		runRelay(t, db, outbox.RelayConfig{Publisher: dest, PollInterval: 100 * time.Millisecond, DisableListen: true})
		start := time.Now()
		if err := publishInTx(ctx, db, outbox.PublisherConfig{}, "t", "k", 1, true, keyed("k", "x")); err != nil {
			t.Fatal(err)
		}
		testutil.Poll(t, 30*time.Second, "polled delivery", func() (bool, string) { return dest.count() == 1, "" })
		t.Logf("commit-to-destination latency poll-only, 100 ms interval: %v", time.Since(start))
	})
}

func waitListening(t *testing.T, db *pgxpool.Pool) {
	t.Helper()
	testutil.Poll(t, 10*time.Second, "relay listening", func() (bool, string) {
		var n int
		_ = db.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND query LIKE 'LISTEN%'`).Scan(&n)
		return n > 0, ""
	})
}

// TestGracefulShutdown cancels Run while the destination holds a batch: with time to finish, the batch is
// delivered and marked; past ShutdownTimeout it is released, its rows pending again.
func TestGracefulShutdown(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name        string
		timeout     time.Duration
		release     bool
		wantPending int
	}{
		{"finishes the batch", 30 * time.Second, true, 0},
		{"releases the batch after the timeout", 100 * time.Millisecond, false, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db := migrated(t)
			entered := make(chan struct{}, 10)
			release := make(chan struct{})
			dest := &collector{}
			dest.fail = func(_ string, m *message.Message) error {
				entered <- struct{}{}
				select {
				case <-release:
					return nil
				case <-m.Context().Done():
					return m.Context().Err()
				}
			}
			stop := runRelay(t, db, outbox.RelayConfig{Publisher: dest, ShutdownTimeout: tc.timeout, PollInterval: 20 * time.Millisecond})
			if err := publishInTx(ctx, db, outbox.PublisherConfig{}, "t", "k", 1, true, keyed("k", "1"), keyed("k", "2")); err != nil {
				t.Fatal(err)
			}
			<-entered
			stopped := make(chan struct{})
			go func() { stop(); close(stopped) }()
			if tc.release {
				close(release)
			}
			<-stopped
			if n := countRows(t, db, "delivered_at IS NULL"); n != tc.wantPending {
				t.Errorf("%d rows pending after shutdown, want %d", n, tc.wantPending)
			}
			if n := countRows(t, db, "attempts > 0 AND delivered_at IS NULL"); tc.wantPending > 0 && n != 2 {
				t.Logf("abandoned rows counted as failed attempts: %d", n)
			}
		})
	}
}

// TestRunLeavesNoGoroutines checks that no goroutine of the relay (loop, LISTEN, shutdown timers) outlives Run.
func TestRunLeavesNoGoroutines(t *testing.T) {
	db := migrated(t)
	dest := &collector{}
	stop := runRelay(t, db, outbox.RelayConfig{Publisher: dest, PollInterval: 20 * time.Millisecond})
	waitListening(t, db)
	if err := publishInTx(context.Background(), db, outbox.PublisherConfig{}, "t", "k", 1, true, keyed("k", "x")); err != nil {
		t.Fatal(err)
	}
	testutil.Poll(t, 30*time.Second, "delivery", func() (bool, string) { return dest.count() == 1, "" })
	stop()
	var left []string
	for _, s := range testutil.GoroutineStacks() {
		if strings.Contains(s, "watermill-sls/outbox.") {
			left = append(left, s)
		}
	}
	if len(left) > 0 {
		t.Errorf("%d relay goroutines still running after Run returned:\n%s", len(left), strings.Join(left, "\n\n"))
	}
}
