package exactlyonce_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wsql "github.com/ThreeDotsLabs/watermill-sql/v3/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/watermill-sls/watermill-sls/exactlyonce"
	"github.com/watermill-sls/watermill-sls/internal/testutil"
	"github.com/watermill-sls/watermill-sls/slspubsub"
	"github.com/watermill-sls/watermill-sls/slspubsub/slstest"
)

const (
	pipeProject  = "pipe-project"
	pipeLogstore = "pipeline"
	pipeShards   = 8
	pipeInFlight = 16  // per shard, so that batches fill
	pipeBatch    = 128 // messages per transaction at most
	// The set-at-a-time modes: a transaction copies up to bulkBatch rows; each shard has bulkInFlight
	// messages in flight, so that the next batch fills while one commits.
	bulkBatch    = 2048
	bulkInFlight = 512
	// bulkParallel batches commit at once (BatchConfig.Parallel), the shards spread over them; the
	// at-least-once peer gets as many lanes.
	bulkParallel = 4
)

// pipeVariants are the modes of BenchmarkSLSToPostgres, in the order they run, with the number of logs each
// consumes: the fast modes consume more, so that start-up does not dominate.
var pipeVariants = []struct {
	name string
	big  bool
}{
	{"subscriber-only", true},
	{"subscriber-only-ordered", true},
	{"exactly-once-bulk", true},
	{"at-least-once-bulk", true},
	{"exactly-once-bulk-serial", true},
	{"at-least-once-bulk-serial", true},
	{"exactly-once-batch", false},
	{"at-least-once-batch", false},
	{"exactly-once-message", false},
	{"watermill-sql", false},
}

// BenchmarkSLSToPostgres runs the same SLS -> PostgreSQL pipeline (8 shards,
// a router, one sink row per log) side by side on one emulator and one
// PostgreSQL:
//   - subscriber-only: the router acks each log without any database work:
//     the most the subscriber and router deliver (MaxInFlight as for bulk);
//   - subscriber-only-ordered: the same through the ordering wrapper of the
//     exactly-once handlers (BatchHandler.Subscriber), which the handler
//     does not reach: the wrapper's own cost;
//   - exactly-once-bulk: NewBulkHandler, batches of up to 2048 logs written
//     with one COPY and the positions with one statement, 4 batches
//     committing at once (Parallel 4), the subscriber wrapped for
//     MaxInFlight > 1 (512 per shard);
//   - at-least-once-bulk: its peer for the overhead: the same group commit
//     of the same COPY in as many lanes, without positions or the ordering
//     wrapper;
//   - exactly-once-bulk-serial, at-least-once-bulk-serial: the same with one
//     batch at a time (Parallel 1, one lane);
//   - exactly-once-batch: BatchHandler (group commit, one INSERT per log
//     and the positions), MaxInFlight 16, batches of up to 128;
//   - at-least-once-batch: its peer: the same group commit of the same
//     inserts, without positions;
//   - exactly-once-message: MessageHandler, a transaction per log;
//   - watermill-sql: the same number of messages read from watermill-sql's
//     PostgreSQL queue by its subscriber, the sink row written in its
//     transaction (TxFromContext): Watermill's own exactly-once recipe.
//
// Each of the b.N iterations runs every mode once; odd iterations run each
// exactly-once mode after its at-least-once peer instead of before, so that
// neither side of a pair always goes first. It prints the median logs/s of
// each mode, and the medians over the iterations of the exactly-once
// overhead over at-least-once (target: under 15 %) and of the ratio of
// exactly-once bulk to watermill-sql (target: at least 20x), each taken
// within one iteration (the machine's conditions shared), with their
// ranges. The bulk and subscriber-only modes consume 200 000 logs, the
// others 20 000 (1 000 000 and 200 000 under WSLS_SOAK). PIPE_ONLY=<mode>,<mode>
// runs only those modes.
func BenchmarkSLSToPostgres(b *testing.B) {
	small, big := testutil.SoakOr(20_000, 200_000), testutil.SoakOr(200_000, 1_000_000)
	env := testutil.SLS(b)
	env.LogStore(b, pipeProject, pipeLogstore, pipeShards)
	pipePreload(b, env, big)
	rates := map[string][]float64{}
	// figures: per iteration, the overheads and ratios named as reported.
	figures := map[string][]float64{}
	for i := range b.N {
		order := slices.Clone(pipeVariants)
		if i%2 == 1 {
			for k := 0; k+1 < len(order); k++ {
				if strings.HasPrefix(order[k].name, "exactly-once-") &&
					order[k+1].name == "at-least-once-"+strings.TrimPrefix(order[k].name, "exactly-once-") {
					order[k], order[k+1] = order[k+1], order[k]
					k++
				}
			}
		}
		run := map[string]float64{}
		for _, v := range order {
			if only := os.Getenv("PIPE_ONLY"); only != "" && !slices.Contains(strings.Split(only, ","), v.name) {
				continue
			}
			n := small
			if v.big {
				n = big
			}
			r, batches := pipeRun(b, env, v.name, n)
			run[v.name] = r
			rates[v.name] = append(rates[v.name], r)
			fmt.Printf("SLSToPostgres iteration %d: %s: %d logs, %.0f logs/s%s\n", i+1, v.name, n, r, batches)
		}
		for _, m := range []string{"bulk", "bulk-serial", "batch"} {
			if eo, alo := run["exactly-once-"+m], run["at-least-once-"+m]; eo > 0 && alo > 0 {
				figures["%-overhead-"+m] = append(figures["%-overhead-"+m], 100*(1-eo/alo))
			}
			if eo, w := run["exactly-once-"+m], run["watermill-sql"]; eo > 0 && w > 0 {
				figures["x-"+m+"/watermill-sql"] = append(figures["x-"+m+"/watermill-sql"], eo/w)
			}
		}
	}
	med := func(v []float64) float64 {
		if len(v) == 0 {
			return 0
		}
		s := slices.Clone(v)
		slices.Sort(s)
		if n := len(s); n%2 == 0 {
			return (s[n/2-1] + s[n/2]) / 2
		}
		return s[len(s)/2]
	}
	span := func(name, format string) string {
		v := figures[name]
		if len(v) == 0 {
			return "not run"
		}
		return fmt.Sprintf(format+" (runs "+format+" to "+format+")", med(v), slices.Min(v), slices.Max(v))
	}
	for v, r := range rates {
		b.ReportMetric(med(r), "logs/s-"+v)
	}
	for name, v := range figures {
		b.ReportMetric(med(v), name)
	}
	r := func(v string) float64 { return med(rates[v]) }
	fmt.Printf("SLSToPostgres: %d shards, medians of %d iterations; subscriber only %.0f logs/s (through the ordering wrapper %.0f); "+
		"exactly-once bulk %.0f logs/s, at-least-once bulk %.0f (overhead %s, target < 15 %%; ratio to watermill-sql %s, target >= 20x); "+
		"serial (Parallel 1): exactly-once bulk %.0f, at-least-once bulk %.0f (overhead %s, ratio to watermill-sql %s); "+
		"exactly-once batched %.0f, at-least-once batched %.0f (overhead %s, ratio to watermill-sql %s); exactly-once per message %.0f; watermill-sql queue with TxFromContext %.0f\n",
		pipeShards, b.N, r("subscriber-only"), r("subscriber-only-ordered"),
		r("exactly-once-bulk"), r("at-least-once-bulk"), span("%-overhead-bulk", "%.1f %%"), span("x-bulk/watermill-sql", "%.1fx"),
		r("exactly-once-bulk-serial"), r("at-least-once-bulk-serial"), span("%-overhead-bulk-serial", "%.1f %%"), span("x-bulk-serial/watermill-sql", "%.1fx"),
		r("exactly-once-batch"), r("at-least-once-batch"), span("%-overhead-batch", "%.1f %%"), span("x-batch/watermill-sql", "%.1fx"),
		r("exactly-once-message"), r("watermill-sql"))
}

func pipeConfig(env *testutil.SLSEnv) slspubsub.ClientConfig {
	return slspubsub.ClientConfig{
		Endpoint: env.Endpoint, Project: pipeProject,
		AccessKeyID: slstest.DefaultAccessKeyID, AccessKeySecret: slstest.DefaultAccessKeySecret,
		HTTPClient: env.HTTPClient,
	}
}

// pipePreload writes n messages "m-<i>" to the logstore.
func pipePreload(b *testing.B, env *testutil.SLSEnv, n int) {
	pub, err := slspubsub.NewPublisher(slspubsub.PublisherConfig{ClientConfig: pipeConfig(env)}, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer pub.Close()
	for start := 0; start < n; start += 1000 {
		var msgs []*message.Message
		for i := start; i < min(start+1000, n); i++ {
			msgs = append(msgs, message.NewMessage(fmt.Sprintf("m-%07d", i), []byte(fmt.Sprintf(`{"n":%d}`, i))))
		}
		if err := pub.Publish(pipeLogstore, msgs...); err != nil {
			b.Fatal(err)
		}
	}
}

// pipeRun consumes n logs with variant into a fresh database and returns
// logs/s, timed from the start of the router until n handler calls
// returned nil (for watermill-sql: until the sink holds n rows), and for a
// group-commit mode its batches (", <n> transactions of <m> messages on
// average"; else "").
func pipeRun(b *testing.B, env *testutil.SLSEnv, variant string, n int) (float64, string) {
	store, pool := newStore(b)
	ctx := context.Background()
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 10 * time.Second}, nil)
	if err != nil {
		b.Fatal(err)
	}
	var handled, failures atomic.Int64
	batches := &batchStats{}
	counted := func(h message.NoPublishHandlerFunc) message.NoPublishHandlerFunc {
		return func(msg *message.Message) error {
			err := h(msg)
			if err == nil {
				handled.Add(1)
			} else if failures.Add(1) <= 5 {
				b.Logf("%s: %v", variant, err)
			}
			return err
		}
	}
	if variant == "watermill-sql" {
		pipeWatermillSQL(b, pool, router, n)
	} else {
		inFlight := pipeInFlight
		if strings.Contains(variant, "-bulk") || strings.HasPrefix(variant, "subscriber-only") {
			inFlight = bulkInFlight
		}
		sub, err := slspubsub.NewSubscriber(slspubsub.SubscriberConfig{
			ClientConfig: pipeConfig(env), MaxInFlight: inFlight,
			FetchInterval: 5 * time.Millisecond, MaxFetchInterval: 20 * time.Millisecond,
		}, nil)
		if err != nil {
			b.Fatal(err)
		}
		hc := exactlyonce.HandlerConfig{Consumer: "bench", Position: exactlyonce.SLSPositionOf(pipeLogstore), Metrics: batches}
		switch variant {
		case "subscriber-only":
			router.AddConsumerHandler("sink", pipeLogstore, sub, counted(func(*message.Message) error { return nil }))
		case "subscriber-only-ordered":
			h, err := exactlyonce.NewBulkHandler(store, exactlyonce.BatchConfig{HandlerConfig: hc}, copySink)
			if err != nil {
				b.Fatal(err)
			}
			defer h.Close()
			router.AddConsumerHandler("sink", pipeLogstore, h.Subscriber(sub), counted(func(*message.Message) error { return nil }))
		case "exactly-once-bulk", "exactly-once-bulk-serial":
			parallel := bulkParallel
			if strings.HasSuffix(variant, "-serial") {
				parallel = 1
			}
			h, err := exactlyonce.NewBulkHandler(store, exactlyonce.BatchConfig{
				HandlerConfig: hc, MaxBatch: bulkBatch, MaxWait: time.Millisecond, Parallel: parallel,
			}, copySink)
			if err != nil {
				b.Fatal(err)
			}
			defer h.Close()
			router.AddConsumerHandler("sink", pipeLogstore, h.Subscriber(sub), counted(h.Handle))
		case "at-least-once-bulk", "at-least-once-bulk-serial":
			lanes := make([]*groupCommit, bulkParallel)
			if strings.HasSuffix(variant, "-serial") {
				lanes = lanes[:1]
			}
			for i := range lanes {
				lanes[i] = newGroupCommit(pool, bulkBatch, time.Millisecond, copySink)
				lanes[i].stats = batches
				defer lanes[i].close()
			}
			router.AddConsumerHandler("sink", pipeLogstore, sub, counted(func(msg *message.Message) error {
				p, err := slspubsub.PositionFromMessage(msg)
				if err != nil {
					return err
				}
				return lanes[p.Shard%len(lanes)].handle(msg)
			}))
		case "exactly-once-batch":
			h, err := exactlyonce.NewBatchHandler(store, exactlyonce.BatchConfig{HandlerConfig: hc, MaxBatch: pipeBatch, MaxWait: time.Millisecond}, insertSink)
			if err != nil {
				b.Fatal(err)
			}
			defer h.Close()
			router.AddConsumerHandler("sink", pipeLogstore, h.Subscriber(sub), counted(h.Handle))
		case "exactly-once-message":
			h, err := exactlyonce.NewMessageHandler(store, hc, insertSink)
			if err != nil {
				b.Fatal(err)
			}
			router.AddConsumerHandler("sink", pipeLogstore, h.Subscriber(sub), counted(h.Handle))
		case "at-least-once-batch":
			g := newGroupCommit(pool, pipeBatch, time.Millisecond, insertEach)
			g.stats = batches
			defer g.close()
			router.AddConsumerHandler("sink", pipeLogstore, sub, counted(g.handle))
		default:
			b.Fatalf("unknown variant %s", variant)
		}
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- router.Run(runCtx) }()
	for {
		got := int(handled.Load())
		if variant == "watermill-sql" {
			if err := pool.QueryRow(ctx, `SELECT count(*) FROM sink`).Scan(&got); err != nil {
				b.Fatal(err)
			}
		}
		if got >= n {
			break
		}
		if time.Since(start) > 5*time.Minute {
			b.Fatalf("%s: %d of %d logs after 5 minutes", variant, got, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	elapsed := time.Since(start)
	cancel()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	if !strings.HasPrefix(variant, "subscriber-only") {
		var rows int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM sink`).Scan(&rows); err != nil {
			b.Fatal(err)
		}
		if rows < n {
			b.Fatalf("%s: %d handler calls succeeded but the sink holds %d rows", variant, n, rows)
		}
	}
	if batches.txs.Load() == 0 {
		return float64(n) / elapsed.Seconds(), ""
	}
	return float64(n) / elapsed.Seconds(), ", " + batches.String()
}

// copySink is a BulkFunc writing the payloads as sink rows with one COPY.
func copySink(ctx context.Context, tx pgx.Tx, msgs []*message.Message) error {
	rows := make([][]any, len(msgs))
	for i, m := range msgs {
		rows[i] = []any{string(m.Payload)}
	}
	_, err := tx.CopyFrom(ctx, pgx.Identifier{"sink"}, []string{"id"}, pgx.CopyFromRows(rows))
	return err
}

// insertEach is a BulkFunc inserting the sink rows one statement (one round trip) each, as insertSink does.
func insertEach(ctx context.Context, tx pgx.Tx, msgs []*message.Message) error {
	for _, m := range msgs {
		if err := insertSink(ctx, tx, m); err != nil {
			return err
		}
	}
	return nil
}

// groupCommit is the at-least-once peer: messages of many router
// goroutines share a transaction of plain writes (no positions), up to
// max messages or wait after the first; each handler returns once its
// transaction committed.
type groupCommit struct {
	pool  *pgxpool.Pool
	in    chan gcItem
	wg    sync.WaitGroup
	stats *batchStats // set before the first handle, or nil
}

// batchStats counts the transactions of a mode and the messages in them, to print the mean batch size; as
// exactlyonce.Metrics for the exactly-once handlers.
type batchStats struct{ txs, msgs atomic.Int64 }

func (s *batchStats) Transaction(st exactlyonce.TransactionStats) { s.add(st.Messages) }

func (s *batchStats) add(n int) {
	s.txs.Add(1)
	s.msgs.Add(int64(n))
}

func (s *batchStats) String() string {
	n := s.txs.Load()
	return fmt.Sprintf("%d transactions of %.0f messages on average", n, float64(s.msgs.Load())/float64(max(n, 1)))
}

type gcItem struct {
	msg  *message.Message
	done chan error
}

func newGroupCommit(pool *pgxpool.Pool, max int, wait time.Duration, write exactlyonce.BulkFunc) *groupCommit {
	g := &groupCommit{pool: pool, in: make(chan gcItem)}
	// As in BatchHandler: one goroutine collects, another applies, and a batch keeps filling (up to max)
	// while the one before it commits.
	batches := make(chan []gcItem)
	g.wg.Add(2)
	go func() {
		defer g.wg.Done()
		for batch := range batches {
			msgs := make([]*message.Message, len(batch))
			for i, it := range batch {
				msgs[i] = it.msg
			}
			err := pgx.BeginFunc(context.Background(), pool, func(tx pgx.Tx) error {
				return write(context.Background(), tx, msgs)
			})
			if g.stats != nil {
				g.stats.add(len(batch))
			}
			for _, it := range batch {
				it.done <- err
			}
		}
	}()
	go func() {
		defer g.wg.Done()
		defer close(batches)
		for first := range g.in {
			batch := []gcItem{first}
			timer := time.NewTimer(wait)
		collect:
			for len(batch) < max {
				select {
				case it, ok := <-g.in:
					if !ok {
						break collect
					}
					batch = append(batch, it)
				case <-timer.C:
					break collect
				}
			}
			timer.Stop()
		handOver:
			for {
				in := g.in
				if len(batch) >= max {
					in = nil
				}
				select {
				case batches <- batch:
					break handOver
				case it, ok := <-in:
					if !ok {
						batches <- batch
						return
					}
					batch = append(batch, it)
				}
			}
		}
	}()
	return g
}

func (g *groupCommit) handle(msg *message.Message) error {
	done := make(chan error, 1)
	g.in <- gcItem{msg: msg, done: done}
	return <-done
}

func (g *groupCommit) close() {
	close(g.in)
	g.wg.Wait()
}

// pipeWatermillSQL loads n messages into watermill-sql's queue on the same
// database and adds a handler reading them with its subscriber, writing
// each sink row in the subscriber's transaction.
func pipeWatermillSQL(b *testing.B, pool *pgxpool.Pool, router *message.Router, n int) {
	db := stdlib.OpenDBFromPool(pool)
	b.Cleanup(func() { _ = db.Close() })
	schema := wsql.DefaultPostgreSQLSchema{GeneratePayloadType: func(string) string { return "BYTEA" }}
	logger := watermill.NopLogger{}
	pub, err := wsql.NewPublisher(db, wsql.PublisherConfig{SchemaAdapter: schema, AutoInitializeSchema: true}, logger)
	if err != nil {
		b.Fatal(err)
	}
	for start := 0; start < n; start += 1000 {
		var msgs []*message.Message
		for i := start; i < min(start+1000, n); i++ {
			msgs = append(msgs, message.NewMessage(fmt.Sprintf("m-%07d", i), []byte(fmt.Sprintf(`{"n":%d}`, i))))
		}
		if err := pub.Publish(pipeLogstore, msgs...); err != nil {
			b.Fatal(err)
		}
	}
	sub, err := wsql.NewSubscriber(db, wsql.SubscriberConfig{
		ConsumerGroup: "bench", SchemaAdapter: schema, OffsetsAdapter: wsql.DefaultPostgreSQLOffsetsAdapter{},
		InitializeSchema: true, PollInterval: 10 * time.Millisecond,
	}, logger)
	if err != nil {
		b.Fatal(err)
	}
	router.AddConsumerHandler("sink", pipeLogstore, sub, func(msg *message.Message) error {
		tx, ok := wsql.TxFromContext(msg.Context())
		if !ok {
			return fmt.Errorf("no transaction in the message's context")
		}
		_, err := tx.ExecContext(msg.Context(), `INSERT INTO sink (id) VALUES ($1)`, string(msg.Payload))
		return err
	})
}
