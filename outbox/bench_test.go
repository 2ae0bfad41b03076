package outbox_test

import (
	"context"
	stdsql "database/sql"
	"slices"
	"strconv"
	"sync"
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
)

// The benchmarks compare this package's relay with Watermill's outbox recipe (watermill-sql v3.1.0 publisher
// in the business transaction + components/forwarder), on the same PostgreSQL, both relaying into a gochannel
// Pub/Sub:
//
//   - Throughput: b.N messages are committed first (100 per transaction, not timed), then the relay starts and
//     the clock runs until the destination has them all. Reports rows/s.
//   - Latency: one message per transaction, the next only after the previous arrived; ns/op is the
//     latency from the transaction's start to the destination, with p50/p99 reported.
//
// The recipe runs with its default poll interval (1 s) and with 10 ms.

const benchTopic = "events"

// relaySystem is one outbox implementation under benchmark.
type relaySystem struct {
	name string
	// setup prepares a fresh database and returns a function publishing msgs in one transaction and a
	// function starting the relay into dest (it returns a stop function).
	setup func(b *testing.B) (publish func(msgs ...*message.Message) error, start func(dest message.Publisher) (stop func()))
}

func benchSystems() []relaySystem {
	return []relaySystem{
		{"outbox", setupOutbox},
		{"watermill-sql-forwarder/poll=1s", setupRecipe(time.Second)},
		{"watermill-sql-forwarder/poll=10ms", setupRecipe(10 * time.Millisecond)},
	}
}

func setupOutbox(b *testing.B) (func(...*message.Message) error, func(message.Publisher) func()) {
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
		return runRelay(b, db, outbox.RelayConfig{Publisher: dest, BatchSize: 500, MaxConcurrentPublishes: 64})
	}
	return publish, start
}

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

// sink is the destination: a gochannel Pub/Sub and a subscriber recording arrival times by UUID.
type sink struct {
	pubsub *gochannel.GoChannel
	mu     sync.Mutex
	got    map[string]time.Time
	cond   chan struct{}
}

func newSink(b *testing.B) *sink {
	s := &sink{pubsub: gochannel.NewGoChannel(gochannel.Config{OutputChannelBuffer: 1024}, nil),
		got: map[string]time.Time{}, cond: make(chan struct{}, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	ch, err := s.pubsub.Subscribe(ctx, benchTopic)
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for m := range ch {
			s.mu.Lock()
			s.got[m.UUID] = time.Now()
			s.mu.Unlock()
			m.Ack()
			select {
			case s.cond <- struct{}{}:
			default:
			}
		}
	})
	b.Cleanup(func() { cancel(); _ = s.pubsub.Close(); wg.Wait() })
	return s
}

func (s *sink) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.got)
}

func (s *sink) waitFor(b *testing.B, n int) {
	deadline := time.After(5 * time.Minute)
	for s.count() < n {
		select {
		case <-s.cond:
		case <-time.After(time.Millisecond):
		case <-deadline:
			b.Fatalf("destination has %d of %d messages after 5 minutes", s.count(), n)
		}
	}
}

func BenchmarkRelayThroughput(b *testing.B) {
	for _, sys := range benchSystems() {
		b.Run(sys.name, func(b *testing.B) {
			publish, start := sys.setup(b)
			dest := newSink(b)
			for i := 0; i < b.N; i += 100 {
				msgs := make([]*message.Message, 0, 100)
				for j := i; j < min(i+100, b.N); j++ {
					msgs = append(msgs, keyed("key-"+strconv.Itoa(j%64), "payload"))
				}
				if err := publish(msgs...); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			began := time.Now()
			stop := start(dest.pubsub)
			dest.waitFor(b, b.N)
			elapsed := time.Since(began)
			b.StopTimer()
			stop()
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "rows/s")
		})
	}
}

func BenchmarkRelayLatency(b *testing.B) {
	for _, sys := range benchSystems() {
		b.Run(sys.name, func(b *testing.B) {
			publish, start := sys.setup(b)
			dest := newSink(b)
			start(dest.pubsub)
			// Warm up: the first message pays for connections and the relay's first poll.
			warm := keyed("warm", "x")
			if err := publish(warm); err != nil {
				b.Fatal(err)
			}
			dest.waitFor(b, 1)
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := range b.N {
				m := keyed("key-"+strconv.Itoa(i%64), "payload")
				committed := time.Now()
				if err := publish(m); err != nil {
					b.Fatal(err)
				}
				dest.waitFor(b, i+2)
				dest.mu.Lock()
				lat = append(lat, dest.got[m.UUID].Sub(committed))
				dest.mu.Unlock()
			}
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
		})
	}
}
