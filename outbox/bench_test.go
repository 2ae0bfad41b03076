package outbox_test

import (
	"context"
	stdsql "database/sql"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wsql "github.com/ThreeDotsLabs/watermill-sql/v3/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/components/forwarder"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/watermill-sls/watermill-sls/internal/testutil"
	"github.com/watermill-sls/watermill-sls/outbox"
	"github.com/watermill-sls/watermill-sls/slspubsub"
)

// The benchmarks compare this package's relay with Watermill's outbox recipe (watermill-sql v3.1.0 publisher
// in the business transaction + components/forwarder), on the same PostgreSQL, relaying to the same kind of
// destination, side by side in one benchmark so that each reports the ratio:
//
//   - BenchmarkRelayThroughput: benchRows messages (64 ordering keys) are committed first (not timed), then
//     the relay starts and the clock runs until the destination accepted them all. Reports rows/s of each
//     and outbox/forwarder ratios.
//   - BenchmarkRelayLatency: a producer commits one message per transaction at a fixed offered rate
//     (latencyRate, 64 keys, from several goroutines) for latencyDuration while the relay runs; the latency of
//     a message is from its Commit's return to the destination accepting it. Reports p50/p99/max of each and
//     forwarder/outbox ratios. The forwarder runs with its default poll interval (1 s) and with 10 ms.
//
// Destinations (identical for both sides): "gochannel", Watermill's in-memory Pub/Sub with a subscriber that
// acks every message, and "sls", the slspubsub Publisher writing over HTTP to the in-process SLS emulator
// (4 shards, the message's ordering key as hash key in 4 buckets, so per-key order holds for both). A message
// counts as delivered when the destination's Publish returned nil for it.

const (
	benchTopic      = "events"
	benchKeys       = 64
	latencyRate     = 1000 // messages per second
	latencyDuration = 10 * time.Second
	latencyWorkers  = 64
)

// benchRows is the backlog BenchmarkRelayThroughput drains: 100 000 rows, or OUTBOX_BENCH_ROWS. The
// forwarder's query sorts every remaining row of its table for each batch of 100, so its throughput falls as
// the backlog grows: compare at several sizes.
var benchRows = func() int {
	if n, err := strconv.Atoi(os.Getenv("OUTBOX_BENCH_ROWS")); err == nil && n > 0 {
		return n
	}
	return 100_000
}()

// destination is the destination under benchmark: a Publisher that records when it accepted each message.
type destination struct {
	inner message.Publisher
	mu    sync.Mutex
	at    map[string]time.Time // UUID -> first acceptance
	n     atomic.Int64
	cond  chan struct{}
}

func (d *destination) Publish(topic string, msgs ...*message.Message) error {
	if err := d.inner.Publish(topic, msgs...); err != nil {
		return err
	}
	now := time.Now()
	d.mu.Lock()
	for _, m := range msgs {
		if _, ok := d.at[m.UUID]; !ok {
			d.at[m.UUID] = now
			d.n.Add(1)
		}
	}
	d.mu.Unlock()
	select {
	case d.cond <- struct{}{}:
	default:
	}
	return nil
}

func (d *destination) Close() error { return nil }

func (d *destination) waitFor(b *testing.B, n int, timeout time.Duration) {
	b.Helper()
	deadline := time.After(timeout)
	for int(d.n.Load()) < n {
		select {
		case <-d.cond:
		case <-time.After(5 * time.Millisecond):
		case <-deadline:
			b.Fatalf("destination has %d of %d messages after %v", d.n.Load(), n, timeout)
		}
	}
}

// destKind makes a fresh destination of one kind.
type destKind struct {
	name string
	make func(b *testing.B) *destination
}

func destKinds() []destKind {
	return []destKind{{"gochannel", gochannelDest}, {"sls", slsDest}}
}

func gochannelDest(b *testing.B) *destination {
	pubsub := gochannel.NewGoChannel(gochannel.Config{OutputChannelBuffer: 4096}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	ch, err := pubsub.Subscribe(ctx, benchTopic)
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for m := range ch {
			m.Ack()
		}
	})
	b.Cleanup(func() { cancel(); _ = pubsub.Close(); wg.Wait() })
	return &destination{inner: pubsub, at: map[string]time.Time{}, cond: make(chan struct{}, 1)}
}

func slsDest(b *testing.B) *destination {
	const project = "bench"
	env := testutil.SLS(b)
	b.Cleanup(env.HTTPClient.CloseIdleConnections)
	env.LogStore(b, project, benchTopic, 4)
	pub, err := slspubsub.NewPublisher(slspubsub.PublisherConfig{
		ClientConfig: slspubsub.ClientConfig{Endpoint: env.Endpoint, Project: project,
			AccessKeyID: env.AccessKeyID, AccessKeySecret: env.AccessKeySecret, HTTPClient: env.HTTPClient},
		// The application's ordering key, which both sides' messages carry (the outbox keeps the stored
		// metadata), so that per-key order holds for both; keys in 4 buckets (one per shard), so that one
		// request can carry many keys.
		HashKey: func(_ string, m *message.Message) (string, error) {
			return m.Metadata.Get(outbox.DefaultOrderingKeyMetadata), nil
		},
		HashBuckets: 4,
	}, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = pub.Close() })
	return &destination{inner: pub, at: map[string]time.Time{}, cond: make(chan struct{}, 1)}
}

// relaySystem is one outbox implementation under benchmark.
type relaySystem struct {
	name string
	// setup prepares a fresh database and returns a function publishing msgs in one transaction and a
	// function starting the relay into dest (it returns a stop function).
	setup func(b *testing.B) (publish func(msgs ...*message.Message) error, start func(dest message.Publisher) (stop func()))
}

var (
	outboxSystem        = relaySystem{"outbox", setupOutbox(false)}
	outboxDeleteSystem  = relaySystem{"outbox-delete", setupOutbox(true)}
	forwarderSystem     = relaySystem{"forwarder", setupRecipe(0)}
	forwarderFastSystem = relaySystem{"forwarder-poll10ms", setupRecipe(10 * time.Millisecond)}
)

// setupOutbox relays with the default RelayConfig (LISTEN/NOTIFY), deleting delivered rows with del.
func setupOutbox(del bool) func(b *testing.B) (func(...*message.Message) error, func(message.Publisher) func()) {
	return func(b *testing.B) (func(...*message.Message) error, func(message.Publisher) func()) {
		db := migrated(b)
		ctx := context.Background()
		publish := func(msgs ...*message.Message) error {
			return withTx(ctx, db, true, func(tx pgx.Tx) error {
				p, err := outbox.NewPublisher(tx, outbox.PublisherConfig{})
				if err != nil {
					return err
				}
				return p.Publish(benchTopic, msgs...)
			})
		}
		start := func(dest message.Publisher) func() {
			return runRelay(b, db, outbox.RelayConfig{Publisher: dest, DeleteOnDelivery: del})
		}
		return publish, start
	}
}

// setupRecipe is watermill-sql's Postgres publisher and subscriber with components/forwarder; poll 0 keeps
// the subscriber's default poll interval (1 s).
func setupRecipe(poll time.Duration) func(b *testing.B) (func(...*message.Message) error, func(message.Publisher) func()) {
	return func(b *testing.B) (func(...*message.Message) error, func(message.Publisher) func()) {
		pool := testutil.Postgres(b)
		db := stdlib.OpenDBFromPool(pool)
		b.Cleanup(func() { _ = db.Close() })
		schema := wsql.DefaultPostgreSQLSchema{GeneratePayloadType: func(string) string { return "BYTEA" }}
		logger := watermill.NopLogger{}
		sub, err := wsql.NewSubscriber(db, wsql.SubscriberConfig{
			SchemaAdapter: schema, OffsetsAdapter: wsql.DefaultPostgreSQLOffsetsAdapter{},
			InitializeSchema: true, PollInterval: poll,
		}, logger)
		if err != nil {
			b.Fatal(err)
		}
		if err := sub.SubscribeInitialize("forwarder_topic"); err != nil { // forwarder.Config default topic
			b.Fatal(err)
		}
		publish := func(msgs ...*message.Message) error {
			tx, err := db.Begin()
			if err != nil {
				return err
			}
			if err := recipePublish(tx, schema, logger, msgs); err != nil {
				_ = tx.Rollback()
				return err
			}
			return tx.Commit()
		}
		start := func(dest message.Publisher) func() {
			fwd, err := forwarder.NewForwarder(sub, dest, logger, forwarder.Config{})
			if err != nil {
				b.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- fwd.Run(context.Background()) }()
			<-fwd.Running()
			var once sync.Once
			stop := func() {
				once.Do(func() {
					if err := fwd.Close(); err != nil {
						b.Errorf("close forwarder: %v", err)
					}
					<-done
				})
			}
			b.Cleanup(stop)
			return stop
		}
		return publish, start
	}
}

func recipePublish(tx *stdsql.Tx, schema wsql.SchemaAdapter, logger watermill.LoggerAdapter, msgs []*message.Message) error {
	pub, err := wsql.NewPublisher(tx, wsql.PublisherConfig{SchemaAdapter: schema}, logger)
	if err != nil {
		return err
	}
	return forwarder.NewPublisher(pub, forwarder.PublisherConfig{}).Publish(benchTopic, msgs...)
}

func benchKey(i int) string { return "key-" + strconv.Itoa(i%benchKeys) }

// drain commits rows messages into sys (not timed), starts its relay into a fresh destination of kind and
// returns the rate at which the destination accepted them all.
func drain(b *testing.B, sys relaySystem, kind destKind, rows int) float64 {
	publish, start := sys.setup(b)
	dest := kind.make(b)
	const perTx = 1000
	for i := 0; i < rows; i += perTx {
		msgs := make([]*message.Message, 0, perTx)
		for j := i; j < min(i+perTx, rows); j++ {
			msgs = append(msgs, keyed(benchKey(j), "payload-"+strconv.Itoa(j)))
		}
		if err := publish(msgs...); err != nil {
			b.Fatal(err)
		}
	}
	began := time.Now()
	stop := start(dest)
	dest.waitFor(b, rows, 10*time.Minute)
	elapsed := time.Since(began)
	stop()
	return float64(rows) / elapsed.Seconds()
}

// BenchmarkRelayThroughput drains a backlog of benchRows rows with each system into each destination; one op
// is one drain of every system. Metrics: rows/s of each, and the outbox's ratio to the forwarder.
func BenchmarkRelayThroughput(b *testing.B) {
	for _, kind := range destKinds() {
		b.Run(kind.name, func(b *testing.B) {
			var ours, oursDel, fwd float64
			for range b.N {
				ours = drain(b, outboxSystem, kind, benchRows)
				oursDel = drain(b, outboxDeleteSystem, kind, benchRows)
				fwd = drain(b, forwarderSystem, kind, benchRows)
				b.Logf("%s, backlog %d: outbox %.0f rows/s, outbox-delete %.0f rows/s, forwarder %.0f rows/s: x%.1f, x%.1f",
					kind.name, benchRows, ours, oursDel, fwd, ours/fwd, oursDel/fwd)
			}
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(ours, "outbox-rows/s")
			b.ReportMetric(oursDel, "outbox-delete-rows/s")
			b.ReportMetric(fwd, "forwarder-rows/s")
			b.ReportMetric(ours/fwd, "outbox/forwarder")
			b.ReportMetric(oursDel/fwd, "outbox-delete/forwarder")
		})
	}
}

// latencies are one latency run's figures.
type latencies struct {
	p50, p99, max time.Duration
	offered       float64 // messages per second the producer achieved
}

func (l latencies) String() string {
	return fmt.Sprintf("p50 %v p99 %v max %v at %.0f msg/s", l.p50.Round(10*time.Microsecond),
		l.p99.Round(10*time.Microsecond), l.max.Round(10*time.Microsecond), l.offered)
}

// measureLatency runs sys into a fresh destination of kind while a producer commits one message per
// transaction at latencyRate for latencyDuration, and returns the commit-to-destination latencies.
func measureLatency(b *testing.B, sys relaySystem, kind destKind) latencies {
	publish, start := sys.setup(b)
	dest := kind.make(b)
	stop := start(dest)
	defer stop()
	// Warm up: connections, the relay's first poll.
	if err := publish(keyed("warm", "x")); err != nil {
		b.Fatal(err)
	}
	dest.waitFor(b, 1, time.Minute)

	total := int(latencyDuration.Seconds() * latencyRate)
	committed := make([]time.Time, total)
	uuids := make([]string, total)
	jobs := make(chan int, total)
	var wg sync.WaitGroup
	var failed atomic.Value
	for range latencyWorkers {
		wg.Go(func() {
			for i := range jobs {
				m := keyed(benchKey(i), "payload-"+strconv.Itoa(i))
				uuids[i] = m.UUID
				if err := publish(m); err != nil {
					failed.Store(err)
					return
				}
				committed[i] = time.Now()
			}
		})
	}
	began := time.Now()
	interval := time.Second / latencyRate
	for i := range total {
		if d := time.Until(began.Add(time.Duration(i) * interval)); d > 0 {
			time.Sleep(d) // the producer's schedule: the offered load, not a wait for a condition
		}
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	produced := time.Since(began)
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}
	dest.waitFor(b, total+1, time.Minute)
	lat := make([]time.Duration, total)
	dest.mu.Lock()
	for i, u := range uuids {
		lat[i] = dest.at[u].Sub(committed[i])
	}
	dest.mu.Unlock()
	slices.Sort(lat)
	return latencies{p50: lat[total/2], p99: lat[total*99/100], max: lat[total-1],
		offered: float64(total) / produced.Seconds()}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// BenchmarkRelayLatency measures commit-to-destination latency at latencyRate offered load for the outbox
// (LISTEN/NOTIFY) and the forwarder (default poll interval, and 10 ms); one op is one run of each. Metrics:
// p50/p99/max in ms of each, and the forwarder's p99 over the outbox's.
func BenchmarkRelayLatency(b *testing.B) {
	for _, kind := range destKinds() {
		b.Run(kind.name, func(b *testing.B) {
			var ours, fwd, fast latencies
			for range b.N {
				ours = measureLatency(b, outboxSystem, kind)
				fwd = measureLatency(b, forwarderSystem, kind)
				fast = measureLatency(b, forwarderFastSystem, kind)
				b.Logf("%s: outbox %v; forwarder %v; forwarder-poll10ms %v", kind.name, ours, fwd, fast)
			}
			b.ReportMetric(0, "ns/op")
			for _, m := range []struct {
				name string
				l    latencies
			}{{"outbox", ours}, {"forwarder", fwd}, {"forwarder-poll10ms", fast}} {
				b.ReportMetric(ms(m.l.p50), m.name+"-p50-ms")
				b.ReportMetric(ms(m.l.p99), m.name+"-p99-ms")
				b.ReportMetric(ms(m.l.max), m.name+"-max-ms")
			}
			b.ReportMetric(ours.offered, "offered-msg/s")
			b.ReportMetric(float64(fwd.p99)/float64(ours.p99), "forwarder/outbox-p99")
			b.ReportMetric(float64(fast.p99)/float64(ours.p99), "forwarder-poll10ms/outbox-p99")
		})
	}
}
