package outbox_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/watermill-sls/watermill-sls/internal/testutil"
	"github.com/watermill-sls/watermill-sls/outbox"
	"github.com/watermill-sls/watermill-sls/outbox/outboxkafka"
	"github.com/watermill-sls/watermill-sls/slspubsub"
	"github.com/watermill-sls/watermill-sls/slspubsub/slstest"
)

// Environment of relay child processes.
const (
	envRole    = "OUTBOX_CRASH_ROLE" // sls, kafka or kafka-txn; unset outside child processes
	envDB      = "OUTBOX_CRASH_DB"
	envAddr    = "OUTBOX_CRASH_ADDR" // SLS emulator endpoint or comma-separated Kafka brokers
	envName    = "OUTBOX_CRASH_NAME"
	crashTopic = "events"
	slsProject = "outbox-crash"
)

// TestCrashChild is the relay child process of the crash tests; it does nothing in a normal run.
func TestCrashChild(t *testing.T) {
	role := os.Getenv(envRole)
	if role == "" {
		return
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer cancel()
	// The parent closes our stdin to stop us, and it closes when the parent dies: never outlive it.
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		cancel()
	}()
	db, err := pgxpool.New(ctx, os.Getenv(envDB))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	cfg := outbox.RelayConfig{Name: os.Getenv(envName), BatchSize: 50, PollInterval: 200 * time.Millisecond,
		RetryInitialBackoff: 10 * time.Millisecond, RetryMaxBackoff: 100 * time.Millisecond, MaxAttempts: 1000}
	addr := os.Getenv(envAddr)
	switch role {
	case "sls", "sls-idempotent":
		pc := slspubsub.PublisherConfig{
			ClientConfig: slspubsub.ClientConfig{Endpoint: addr, Project: slsProject,
				AccessKeyID: slstest.DefaultAccessKeyID, AccessKeySecret: slstest.DefaultAccessKeySecret,
				HTTPClient: slstest.HTTPClientFor(addr)},
			HashKey: func(_ string, m *message.Message) (string, error) {
				return m.Metadata.Get(outbox.MetadataOrderingKey), nil
			},
		}
		if role == "sls-idempotent" {
			// Exactly once: the row id is the seqid of the row's request, per ordering key.
			pc.HashKey, pc.IdempotentWrites, pc.SequenceID = outbox.SequenceKey, true, outbox.SequenceID
		}
		p, err := slspubsub.NewPublisher(pc, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		cfg.Publisher = p
	case "kafka":
		p, err := kafka.NewPublisher(kafka.PublisherConfig{Brokers: strings.Split(addr, ","), Marshaler: kafka.DefaultMarshaler{}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		cfg.Publisher = p
	case "kafka-txn":
		p, err := outboxkafka.NewTransactionalPublisher(outboxkafka.Config{Brokers: strings.Split(addr, ","), RelayName: cfg.Name}, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		cfg.TransactionalPublisher = p
	default:
		t.Fatalf("unknown role %q", role)
	}
	r, err := outbox.NewRelay(db, cfg, watermill.NewStdLogger(false, false))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Run(ctx); err != nil {
		t.Fatal(err)
	}
}

// crashFigures are what a crash test counts.
type crashFigures struct {
	kills, committed, rolledBack, delivered, duplicates, missing, leaked, outOfOrder int
}

func TestCrashRelayToSLS(t *testing.T) {
	env := testutil.SLS(t)
	env.LogStore(t, slsProject, crashTopic, 2)
	runCrash(t, "sls", env.Endpoint, func() []string { return readSLS(t, env) })
}

// TestCrashRelayToSLSIdempotent is the exactly-once mode into SLS: the relays publish with idempotent writes
// whose sequence id is the row id per ordering key (outbox.SequenceKey, outbox.SequenceID), so a row a killed
// relay had written is refused as a duplicate when another relay sends it again: zero duplicates in the
// logstore, nothing missing.
func TestCrashRelayToSLSIdempotent(t *testing.T) {
	var refused atomic.Int64
	env := testutil.SLS(t, slstest.WithRequestObserver(func(ri slstest.RequestInfo) {
		if ri.ErrorCode == slspubsub.CodeInvalidSequenceID {
			refused.Add(1)
		}
	}))
	env.LogStore(t, slsProject, crashTopic, 2)
	f := runCrash(t, "sls-idempotent", env.Endpoint, func() []string { return readSLS(t, env) })
	t.Logf("sls-idempotent: %d rows sent again were refused by SLS as duplicates (InvalidSequenceId)", refused.Load())
	if f.duplicates != 0 {
		t.Errorf("%d duplicates in the logstore with idempotent writes, want 0", f.duplicates)
	}
}

// readSLS returns the UUIDs stored in crashTopic, shard by shard in order.
func readSLS(t *testing.T, env *testutil.SLSEnv) []string {
	var uuids []string
	for shard := range 2 {
		groups, err := env.Server.LogGroups(slsProject, crashTopic, shard)
		if err != nil {
			t.Fatalf("read shard %d: %v", shard, err)
		}
		for _, g := range groups {
			for _, l := range g.Group.Logs {
				for _, c := range l.Contents {
					if c.GetKey() == "wm_uuid" {
						uuids = append(uuids, c.GetValue())
					}
				}
			}
		}
	}
	return uuids
}

func TestCrashRelayToKafka(t *testing.T) {
	brokers := testutil.Kafka(t, crashTopic)
	runCrash(t, "kafka", strings.Join(brokers, ","), func() []string {
		return readKafka(t, brokers, sarama.ReadUncommitted)
	})
}

// TestCrashRelayToKafkaTransactional is the exactly-once mode: zero duplicates for read_committed readers.
func TestCrashRelayToKafkaTransactional(t *testing.T) {
	brokers := testutil.Kafka(t, crashTopic, outboxkafka.DefaultProgressTopic)
	f := runCrash(t, "kafka-txn", strings.Join(brokers, ","), func() []string {
		return readKafka(t, brokers, sarama.ReadCommitted)
	})
	if f.duplicates != 0 {
		t.Errorf("%d duplicates for a read_committed reader in transactional mode, want 0", f.duplicates)
	}
}

// runCrash runs a service that commits (and rolls back) outbox messages at a steady rate while two relay child
// processes are SIGKILLed and restarted, waits until every committed row is delivered, and checks what read
// returns from the destination (per key in destination order: the SLS shard or Kafka partition of the key):
// every committed message at least once, nothing rolled back, and per key the first deliveries in commit
// order.
func runCrash(t *testing.T, role, addr string, read func() []string) crashFigures {
	dbURL := testutil.PostgresURL(t)
	ctx := context.Background()
	db, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	if err := (outbox.Table{}).Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(ctx, `CREATE TABLE orders (id bigserial PRIMARY KEY, key text NOT NULL, seq int NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	messages := testutil.SoakOr(3000, 30000)
	kills := testutil.SoakOr(4, 40)

	children := []*child{}
	for i := range 2 {
		c := &child{t: t, name: fmt.Sprintf("relay-%d", i), env: []string{envRole + "=" + role, envDB + "=" + dbURL, envAddr + "=" + addr}}
		c.start()
		children = append(children, c)
	}
	defer func() {
		for _, c := range children {
			c.stop()
		}
	}()

	// The service: one transaction per tick, 1 or 2 messages, 1 in 10 rolled back on purpose.
	var committed, rolledBack []string
	keyOf := map[string]string{} // uuid -> ordering key; committed holds commit order
	var sent atomic.Int64
	serviceDone := make(chan struct{})
	go func() {
		defer close(serviceDone)
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for seq := 0; len(committed) < messages; seq++ {
			<-tick.C
			key := "key-" + strconv.Itoa(rand.IntN(50))
			msgs := []*message.Message{keyed(key, strconv.Itoa(seq))}
			if rand.IntN(3) == 0 {
				msgs = append(msgs, keyed(key, strconv.Itoa(seq)+"b"))
			}
			commit := rand.IntN(10) != 0
			if err := publishInTx(ctx, db, outbox.PublisherConfig{}, crashTopic, key, seq, commit, msgs...); err != nil {
				t.Errorf("service transaction: %v", err)
				return
			}
			for _, m := range msgs {
				if commit {
					committed = append(committed, m.UUID)
					keyOf[m.UUID] = key
				} else {
					rolledBack = append(rolledBack, m.UUID)
				}
			}
			sent.Store(int64(len(committed)))
		}
	}()

	f := crashFigures{}
	for f.kills < kills {
		// Spread the kills over the service's run.
		target := int64(messages * (f.kills + 1) / (kills + 1))
		testutil.Poll(t, time.Minute, "service progress", func() (bool, string) { return sent.Load() >= target, "" })
		c := children[rand.IntN(len(children))]
		c.kill()
		f.kills++
		c.start()
	}
	<-serviceDone
	if t.Failed() {
		return f
	}
	testutil.Poll(t, 2*time.Minute, "every committed row delivered", func() (bool, string) {
		n := countRows(t, db, "delivered_at IS NULL")
		return n == 0, fmt.Sprintf("%d rows pending", n)
	})
	for _, c := range children {
		c.stop()
	}

	got := read()
	seen := map[string]int{}
	commitIdx := make(map[string]int, len(committed))
	for i, u := range committed {
		commitIdx[u] = i
	}
	last := map[string]int{} // per key: commit index of the last first-seen message
	for _, u := range got {
		if seen[u]++; seen[u] > 1 {
			continue // a redelivery; order is checked on first deliveries
		}
		if i, ok := commitIdx[u]; ok {
			if prev, ok := last[keyOf[u]]; ok && i < prev {
				f.outOfOrder++
			}
			last[keyOf[u]] = i
		}
	}
	f.committed, f.rolledBack, f.delivered = len(committed), len(rolledBack), len(got)
	f.duplicates = len(got) - len(seen)
	for _, u := range committed {
		if seen[u] == 0 {
			f.missing++
		}
		delete(seen, u)
	}
	for _, u := range rolledBack {
		if seen[u] > 0 {
			f.leaked++
		}
	}
	t.Logf("%s: kills %d, committed %d, rolled back %d, delivered %d, duplicates %d, missing %d, rolled back but delivered %d, out of key order %d",
		role, f.kills, f.committed, f.rolledBack, f.delivered, f.duplicates, f.missing, f.leaked, f.outOfOrder)
	if f.outOfOrder != 0 {
		t.Errorf("%d messages reached the destination before an earlier-committed message of their key", f.outOfOrder)
	}
	if f.missing != 0 || f.leaked != 0 {
		t.Errorf("%d committed messages missing, %d rolled-back messages delivered; want 0 and 0", f.missing, f.leaked)
	}
	if len(seen) != f.leaked {
		t.Errorf("destination holds %d messages that were never published", len(seen)-f.leaked)
	}
	return f
}

// child is a relay child process.
type child struct {
	t     *testing.T
	name  string
	env   []string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   bytes.Buffer
	done  chan error
}

func (c *child) start() {
	c.t.Helper()
	c.out.Reset()
	c.cmd = exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1", "-test.timeout=10m")
	c.cmd.Env = append(append(os.Environ(), c.env...), envName+"="+c.name)
	c.cmd.Stdout, c.cmd.Stderr = &c.out, &c.out
	var err error
	if c.stdin, err = c.cmd.StdinPipe(); err != nil {
		c.t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		c.t.Fatalf("start relay child %s: %v", c.name, err)
	}
	c.done = make(chan error, 1)
	go func() { c.done <- c.cmd.Wait() }()
}

func (c *child) kill() {
	_ = c.cmd.Process.Signal(syscall.SIGKILL)
	<-c.done
	c.cmd = nil
}

// stop asks the child to finish (closes its stdin) and waits for it; a failure shows its output.
func (c *child) stop() {
	if c.cmd == nil {
		return
	}
	_ = c.stdin.Close()
	select {
	case err := <-c.done:
		var exit *exec.ExitError
		if err != nil && !errors.As(err, &exit) || exit != nil && exit.ExitCode() != 0 {
			c.t.Errorf("relay child %s: %v\n%s", c.name, err, c.out.String())
		}
	case <-time.After(time.Minute):
		_ = c.cmd.Process.Kill()
		<-c.done
		c.t.Errorf("relay child %s did not stop within a minute", c.name)
	}
	c.cmd = nil
}

// readKafka returns the UUIDs of the messages in crashTopic (see readKafkaRecords).
func readKafka(t *testing.T, brokers []string, isolation sarama.IsolationLevel) []string {
	var uuids []string
	for _, m := range readKafkaMessages(t, brokers, isolation) {
		uuids = append(uuids, m.UUID)
	}
	return uuids
}

// readKafkaRecords calls fn with every record of crashTopic (one partition) read with the given isolation. It
// first writes a sentinel record and reads up to it, so that nothing committed before is missed.
func readKafkaRecords(t *testing.T, brokers []string, isolation sarama.IsolationLevel, fn func(*sarama.ConsumerMessage)) {
	t.Helper()
	cfg := sarama.NewConfig()
	cfg.Producer.Return.Successes = true
	cfg.Consumer.IsolationLevel = isolation
	cfg.Consumer.Return.Errors = true
	producer, err := sarama.NewSyncProducer(brokers, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer producer.Close()
	sentinel := &sarama.ProducerMessage{Topic: crashTopic, Value: sarama.StringEncoder("sentinel")}
	if _, _, err := producer.SendMessage(sentinel); err != nil {
		t.Fatal(err)
	}
	consumer, err := sarama.NewConsumer(brokers, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer consumer.Close()
	pc, err := consumer.ConsumePartition(crashTopic, sentinel.Partition, sarama.OffsetOldest)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	n := 0
	timeout := time.After(time.Minute)
	for {
		select {
		case m := <-pc.Messages():
			if m.Offset == sentinel.Offset {
				return
			}
			fn(m)
			n++
		case err := <-pc.Errors():
			t.Fatalf("consume %s: %v", crashTopic, err)
		case <-timeout:
			t.Fatalf("sentinel at offset %d not reached within a minute (%d records read)", sentinel.Offset, n)
		}
	}
}
