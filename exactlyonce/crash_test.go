package exactlyonce_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	"github.com/ThreeDotsLabs/watermill/message"
	sls "github.com/aliyun/aliyun-log-go-sdk"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/watermill-sls/watermill-sls/exactlyonce"
	"github.com/watermill-sls/watermill-sls/internal/testutil"
	"github.com/watermill-sls/watermill-sls/slspubsub"
	"github.com/watermill-sls/watermill-sls/slspubsub/slstest"
)

// Crash tests: a consumer child process (the test binary re-executed) runs a router with a BatchHandler that
// inserts one row per source record into crash_sink, with no unique constraint, so that a duplicate shows up as
// a second row. The parent owns the source (SLS emulator or kfake) and PostgreSQL, SIGKILLs the child at
// random points of its progress and restarts it; the child resumes from the Store. At the end every source
// record must be in the sink exactly once.

const (
	crashRoleEnv    = "EO_CRASH_ROLE"
	crashDBEnv      = "EO_CRASH_DB"
	crashSourceEnv  = "EO_CRASH_SOURCE" // SLS emulator address, or Kafka brokers (comma-separated)
	crashConsumer   = "crash-sink"
	crashProject    = "eo-crash"
	crashStream     = "src"
	crashPartitions = 8
	// slsCrashInFlight is the SLS child's MaxInFlight: several logs of a shard share a batch.
	slsCrashInFlight = 4
	// bulkCrashInFlight is the MaxInFlight of the SLS child with NewBulkHandler, whose batches are larger.
	bulkCrashInFlight = 64
)

func TestCrashSLSToPostgres(t *testing.T) {
	if os.Getenv(crashRoleEnv) == "sls" {
		crashChild(t, slsChildSubscriber(slsCrashInFlight), exactlyonce.SLSPosition, slsCrashInFlight, false)
		return
	}
	crashSLS(t, "sls")
}

// The same with NewBulkHandler: each batch written with one COPY, two lanes committing at once.
func TestCrashSLSToPostgresBulk(t *testing.T) {
	if os.Getenv(crashRoleEnv) == "sls-bulk" {
		crashChild(t, slsChildSubscriber(bulkCrashInFlight), exactlyonce.SLSPosition, bulkCrashInFlight, true)
		return
	}
	crashSLS(t, "sls-bulk")
}

// crashSLS runs the SLS crash loop with the child role given.
func crashSLS(t *testing.T, role string) {
	n := testutil.SoakOr(20_000, 1_000_000)
	kills := testutil.SoakOr(4, 20)
	env := testutil.SLS(t)
	env.LogStore(t, crashProject, crashStream, crashPartitions)
	last := writeSLSLogs(t, env, n)
	pool, dbURL := crashDB(t)
	res := runCrashLoop(t, pool, n, kills, crashRoleEnv+"="+role, crashDBEnv+"="+dbURL, crashSourceEnv+"="+env.Endpoint)
	res.report(t, n)
	// The stored positions are those of each shard's last log.
	store := crashStore(t, pool)
	for shard, want := range last {
		got, ok, err := store.Load(context.Background(), crashConsumer, crashStream, int32(shard))
		if err != nil || !ok || got != want {
			t.Errorf("shard %d: stored %v (%v, %v), want %v", shard, got, ok, err, want)
		}
	}
}

func TestCrashKafkaToPostgres(t *testing.T) {
	if os.Getenv(crashRoleEnv) == "kafka" {
		crashChild(t, kafkaChildSubscriber, exactlyonce.KafkaPosition, 1, false)
		return
	}
	n := testutil.SoakOr(20_000, 1_000_000)
	kills := testutil.SoakOr(4, 20)
	brokers := testutil.KafkaWithPartitions(t, crashPartitions, crashStream)
	last := produceKafka(t, brokers, n)
	pool, dbURL := crashDB(t)
	res := runCrashLoop(t, pool, n, kills, crashRoleEnv+"=kafka", crashDBEnv+"="+dbURL,
		crashSourceEnv+"="+strings.Join(brokers, ","))
	res.report(t, n)
	store := crashStore(t, pool)
	for p, want := range last {
		got, ok, err := store.Load(context.Background(), crashConsumer, crashStream, p)
		if err != nil || !ok || got.Offset != want {
			t.Errorf("partition %d: stored %v (%v, %v), want offset %d", p, got, ok, err, want)
		}
	}
}

// writeSLSLogs appends n logs {"id": "<i>"} in groups of 100, round robin over the shards, and returns the
// position of each shard's last log.
func writeSLSLogs(t *testing.T, env *testutil.SLSEnv, n int) map[int]exactlyonce.Position {
	t.Helper()
	const perGroup = 100
	last := map[int]exactlyonce.Position{}
	now := uint32(time.Now().Unix())
	for start, g := 0, 0; start < n; start, g = start+perGroup, g+1 {
		group := &sls.LogGroup{}
		for i := start; i < min(start+perGroup, n); i++ {
			key, val := "id", strconv.Itoa(i)
			group.Logs = append(group.Logs, &sls.Log{Time: &now, Contents: []*sls.LogContent{{Key: &key, Value: &val}}})
		}
		shard := g % crashPartitions
		cursor, err := env.Server.AppendLogGroup(crashProject, crashStream, shard, group)
		if err != nil {
			t.Fatalf("AppendLogGroup: %v", err)
		}
		off, err := slspubsub.Position{Shard: shard, Cursor: cursor}.CursorValue()
		if err != nil {
			t.Fatal(err)
		}
		last[shard] = exactlyonce.Position{Stream: crashStream, Partition: int32(shard), Offset: off, Index: int32(len(group.Logs) - 1)}
	}
	return last
}

// produceKafka writes n records with value "<i>" round robin over the partitions and returns the offset of
// each partition's last record.
func produceKafka(t *testing.T, brokers []string, n int) map[int32]int64 {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ProducerLinger(5*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	last := map[int32]int64{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	var firstErr error
	for i := range n {
		wg.Add(1)
		r := &kgo.Record{Topic: crashStream, Partition: int32(i % crashPartitions), Value: []byte(strconv.Itoa(i))}
		cl.Produce(context.Background(), r, func(r *kgo.Record, err error) {
			defer wg.Done()
			mu.Lock()
			defer mu.Unlock()
			if err != nil && firstErr == nil {
				firstErr = err
			}
			last[r.Partition] = max(last[r.Partition], r.Offset)
		})
	}
	wg.Wait()
	if firstErr != nil {
		t.Fatalf("produce: %v", firstErr)
	}
	return last
}

func crashDB(t *testing.T) (*pgxpool.Pool, string) {
	t.Helper()
	dbURL := testutil.PostgresURL(t)
	pool, err := pgxpool.New(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := crashStore(t, pool).Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(context.Background(), `CREATE TABLE crash_sink (id bigint NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	return pool, dbURL
}

func crashStore(t testing.TB, pool *pgxpool.Pool) *exactlyonce.Store {
	store, err := exactlyonce.NewStore(pool, exactlyonce.StoreConfig{})
	if err != nil {
		t.Fatal(err)
	}
	return store
}

type crashResult struct {
	kills, rows, distinct, outOfRange int
}

func (r crashResult) report(t *testing.T, n int) {
	t.Helper()
	dups, losses := r.rows-r.distinct, n-(r.distinct-r.outOfRange)
	t.Logf("records %d, kills %d, sink rows %d, duplicates %d, losses %d", n, r.kills, r.rows, dups, losses)
	if dups != 0 || losses != 0 || r.outOfRange != 0 {
		t.Errorf("exactly-once violated: duplicates %d, losses %d, unknown ids %d", dups, losses, r.outOfRange)
	}
}

// runCrashLoop starts the consumer child kills+1 times; the first kills runs are SIGKILLed once the sink has
// grown past a random target, the last runs until every record is in the sink.
func runCrashLoop(t *testing.T, pool *pgxpool.Pool, n, kills int, env ...string) crashResult {
	t.Helper()
	ctx := context.Background()
	count := func() int {
		var c int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM crash_sink`).Scan(&c); err != nil {
			t.Fatalf("count sink: %v", err)
		}
		return c
	}
	var res crashResult
	for run := 0; run <= kills; run++ {
		out := &testutil.Buffer{}
		cmd := exec.Command(os.Args[0], "-test.run=^"+t.Name()+"$", "-test.count=1", "-test.v")
		cmd.Env = append(os.Environ(), env...)
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		target := n
		if run < kills {
			// Spread the kills over the run, each at a random point of its slice.
			slice := n / (kills + 1)
			target = run*slice + slice/4 + rand.IntN(slice/2+1)
		}
		deadline := time.Now().Add(testutil.SoakOr(2*time.Minute, 30*time.Minute))
		for c := count(); c < target; c = count() {
			select {
			case err := <-exited:
				t.Fatalf("run %d: consumer exited (%v) at %d of %d rows; output:\n%s", run, err, c, n, out.String())
			case <-time.After(20 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				_ = cmd.Process.Kill()
				<-exited
				t.Fatalf("run %d: sink at %d rows, target %d not reached; output:\n%s", run, c, target, out.String())
			}
		}
		if err := cmd.Process.Kill(); err != nil {
			t.Fatalf("kill: %v", err)
		}
		<-exited
		if run < kills {
			res.kills++
		}
	}
	if err := pool.QueryRow(ctx, `SELECT count(*), count(DISTINCT id), count(DISTINCT id) FILTER (WHERE id < 0 OR id >= $1) FROM crash_sink`, n).
		Scan(&res.rows, &res.distinct, &res.outOfRange); err != nil {
		t.Fatal(err)
	}
	return res
}

// crashChild is the consumer process: it runs until it is killed. With bulk it applies batches with
// NewBulkHandler (one COPY per batch, two lanes), else with NewBatchHandler (one INSERT per record).
func crashChild(t *testing.T, newSub func(t *testing.T, store *exactlyonce.Store) message.Subscriber, position exactlyonce.PositionFunc, inFlight int, bulk bool) {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv(crashDBEnv))
	if err != nil {
		t.Fatal(err)
	}
	store := crashStore(t, pool)
	cfg := exactlyonce.BatchConfig{
		HandlerConfig: exactlyonce.HandlerConfig{Consumer: crashConsumer, Position: position},
		// A batch is full with every unacked message of every partition.
		MaxBatch: crashPartitions * inFlight,
	}
	var h *exactlyonce.BatchHandler
	if bulk {
		cfg.MaxBatch /= 2
		cfg.Parallel = 2
		h, err = exactlyonce.NewBulkHandler(store, cfg, crashCopy)
	} else {
		h, err = exactlyonce.NewBatchHandler(store, cfg, crashInsert)
	}
	if err != nil {
		t.Fatal(err)
	}
	router, err := message.NewRouter(message.RouterConfig{}, watermill.NopLogger{})
	if err != nil {
		t.Fatal(err)
	}
	// The wrapper keeps each partition in delivery order when several of its messages are in flight.
	router.AddConsumerHandler("crash-sink", crashStream, h.Subscriber(newSub(t, store)), h.Handle)
	err = router.Run(ctx)
	t.Fatalf("router stopped: %v", err)
}

// crashInsert writes the record's id: the "id" field of an SLS log's JSON payload, or a Kafka record's value.
func crashInsert(ctx context.Context, tx pgx.Tx, msg *message.Message) error {
	n, err := crashID(msg)
	if err != nil {
		return err
	}
	_, err = tx.Exec(ctx, `INSERT INTO crash_sink (id) VALUES ($1)`, n)
	return err
}

// crashCopy writes the ids of msgs with one COPY.
func crashCopy(ctx context.Context, tx pgx.Tx, msgs []*message.Message) error {
	rows := make([][]any, len(msgs))
	for i, msg := range msgs {
		n, err := crashID(msg)
		if err != nil {
			return err
		}
		rows[i] = []any{n}
	}
	_, err := tx.CopyFrom(ctx, pgx.Identifier{"crash_sink"}, []string{"id"}, pgx.CopyFromRows(rows))
	return err
}

// crashID returns the record's id: the "id" field of an SLS log's JSON payload, or a Kafka record's value.
func crashID(msg *message.Message) (int64, error) {
	id := string(msg.Payload)
	if strings.HasPrefix(id, "{") {
		var log struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal(msg.Payload, &log); err != nil {
			return 0, err
		}
		id = log.ID
	}
	n, err := strconv.ParseInt(id, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("record id %q: %w", id, err)
	}
	return n, nil
}

func slsChildSubscriber(inFlight int) func(t *testing.T, store *exactlyonce.Store) message.Subscriber {
	return func(t *testing.T, store *exactlyonce.Store) message.Subscriber {
		return newSLSChildSubscriber(t, store, inFlight)
	}
}

func newSLSChildSubscriber(t *testing.T, store *exactlyonce.Store, inFlight int) message.Subscriber {
	addr := os.Getenv(crashSourceEnv)
	sub, err := slspubsub.NewSubscriber(slspubsub.SubscriberConfig{
		ClientConfig: slspubsub.ClientConfig{
			Endpoint: addr, Project: crashProject,
			AccessKeyID: slstest.DefaultAccessKeyID, AccessKeySecret: slstest.DefaultAccessKeySecret,
			HTTPClient: slstest.HTTPClientFor(addr),
		},
		FetchInterval:    5 * time.Millisecond,
		MaxFetchInterval: 50 * time.Millisecond,
		MaxInFlight:      inFlight,
		PositionStore:    store.SubscriberPositions(crashConsumer),
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return sub
}

func kafkaChildSubscriber(t *testing.T, store *exactlyonce.Store) message.Subscriber {
	cfg := kafka.DefaultSaramaSubscriberConfig()
	cfg.Consumer.Offsets.Initial = sarama.OffsetOldest
	// Static membership: a restarted child takes over its predecessor's partitions at once instead of waiting
	// for the killed member's session to time out.
	cfg.Version = sarama.V2_3_0_0
	cfg.Consumer.Group.InstanceId = "crash-child"
	sub, err := kafka.NewSubscriber(kafka.SubscriberConfig{
		Brokers:               strings.Split(os.Getenv(crashSourceEnv), ","),
		ConsumerGroup:         "crash-sink",
		OverwriteSaramaConfig: cfg,
		Tracer:                store.KafkaResume(crashConsumer, nil),
		ReconnectRetrySleep:   100 * time.Millisecond,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return sub
}
