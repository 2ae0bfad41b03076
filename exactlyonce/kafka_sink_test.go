package exactlyonce

import (
	"context"
	crand "crypto/rand"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/watermill-sls/watermill-sls/internal/testutil"
)

func TestKafkaSinkConfigValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*KafkaSinkConfig)
		fields []string // each must be named in the error; none means valid
	}{
		{"valid", func(*KafkaSinkConfig) {}, nil},
		{"topic func instead of topic", func(c *KafkaSinkConfig) {
			c.OutputTopic = ""
			c.TopicFunc = func(*message.Message) (string, error) { return "x", nil }
		}, nil},
		{"everything missing", func(c *KafkaSinkConfig) { *c = KafkaSinkConfig{} },
			[]string{"Brokers", "Consumer", "TransactionalID", "PositionsTopic", "OutputTopic"}},
		{"empty broker", func(c *KafkaSinkConfig) { c.Brokers = []string{"a:1", ""} }, []string{"Brokers[1]"}},
		{"output is positions", func(c *KafkaSinkConfig) { c.OutputTopic = c.PositionsTopic }, []string{"OutputTopic"}},
		{"negative limits", func(c *KafkaSinkConfig) {
			c.MaxBatchMessages, c.MaxBatchDelay, c.LoadTimeout, c.CommitTimeout = -1, -time.Second, -time.Second, -time.Second
		}, []string{"MaxBatchMessages", "MaxBatchDelay", "LoadTimeout", "CommitTimeout"}},
		{"nil client option", func(c *KafkaSinkConfig) { c.ClientOptions = []kgo.Opt{kgo.ClientID("x"), nil} },
			[]string{"ClientOptions[1]"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := ksConfig([]string{"127.0.0.1:1"}, "id")
			tt.mutate(&cfg)
			err := cfg.Validate()
			if len(tt.fields) == 0 {
				if err != nil {
					t.Fatalf("Validate: %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate: nil, want an error naming %v", tt.fields)
			}
			for _, f := range tt.fields {
				if !strings.Contains(err.Error(), "KafkaSinkConfig."+f+" ") {
					t.Errorf("error %q does not name %s", err, f)
				}
			}
			if _, nerr := NewKafkaSink(cfg, nil); nerr == nil {
				t.Errorf("NewKafkaSink accepted the config")
			}
		})
	}
}

// TestKafkaSinkCommitsOutputsAndPositions: outputs and positions become visible to read_committed readers, a
// restarted sink reads the positions back, and serves them to the SLS Subscriber and to Kafka sources.
func TestKafkaSinkCommitsOutputsAndPositions(t *testing.T) {
	brokers := testutil.KafkaWithPartitions(t, 3, "positions", "out")
	cfg := ksConfig(brokers, "commit-1")
	sink := ksNewSink(t, cfg)
	h := sink.Handler(ksEcho, ksPosition)

	var msgs []*message.Message
	for off := int64(0); off < 5; off++ {
		for p := int32(0); p < 4; p++ { // 4 source partitions in flight at once
			msgs = append(msgs, ksSource("logs", p, 10+off))
		}
		if err := joinErrs(handleAll(h, msgs[len(msgs)-4:])); err != nil {
			t.Fatalf("handler: %v", err)
		}
	}
	if err := h(ksSource("topic-a", 7, 41)); err != nil {
		t.Fatalf("handler: %v", err)
	}

	outs := readOutputs(t, brokers, "out")
	var got, want []string
	for _, m := range outs {
		got = append(got, m.UUID)
	}
	for _, m := range append(msgs, ksSource("topic-a", 7, 41)) {
		want = append(want, "out-"+m.UUID)
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("read_committed outputs:\n got %v\nwant %v", got, want)
	}
	if err := sink.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	restarted := ksNewSink(t, cfg)
	for p := int32(0); p < 4; p++ {
		pos, ok := restarted.CommittedPosition("logs", p)
		if !ok || pos.Offset != 14 {
			t.Errorf("restarted sink: position of logs/%d = %+v, %v; want offset 14", p, pos, ok)
		}
	}
	sp, ok, err := restarted.PositionStore().LoadPosition(context.Background(), "logs", 2)
	if err != nil || !ok || sp.Shard != 2 || sp.Index != 0 {
		t.Fatalf("PositionStore.LoadPosition(logs, 2) = %+v, %v, %v", sp, ok, err)
	}
	if v, err := sp.CursorValue(); err != nil || v != 14 {
		t.Errorf("cursor %q decodes to %d, %v; want 14", sp.Cursor, v, err)
	}
	if _, ok, err := restarted.PositionStore().LoadPosition(context.Background(), "logs", 9); ok || err != nil {
		t.Errorf("LoadPosition of a shard never committed: ok=%v err=%v, want nothing stored", ok, err)
	}
	if got := restarted.KafkaResumeOffsets("topic-a"); len(got) != 1 || got[7] != 42 {
		t.Errorf("KafkaResumeOffsets(topic-a) = %v, want map[7:42]", got)
	}

	// Another consumer's positions in the same topic are its own.
	other := cfg
	other.Consumer, other.TransactionalID = "other-consumer", "commit-2"
	if _, ok := ksNewSink(t, other).CommittedPosition("logs", 0); ok {
		t.Errorf("a sink of another consumer sees this consumer's positions")
	}
}

// TestKafkaSinkSkipsCommittedOnRedelivery: after a restart, messages at or before the committed position are
// acked without running the handler or producing; the first one after it is processed.
func TestKafkaSinkSkipsCommittedOnRedelivery(t *testing.T) {
	brokers := testutil.KafkaWithPartitions(t, 2, "positions", "out")
	cfg := ksConfig(brokers, "skip")
	first := ksNewSink(t, cfg)
	h := first.Handler(ksEcho, ksPosition)
	for off := int64(0); off < 3; off++ {
		if err := h(ksSource("logs", 0, off)); err != nil {
			t.Fatal(err)
		}
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}

	sink := ksNewSink(t, cfg)
	var calls atomic.Int32
	counting := func(msg *message.Message) ([]*message.Message, error) {
		calls.Add(1)
		return ksEcho(msg)
	}
	h = sink.Handler(counting, ksPosition)
	for off := int64(0); off < 3; off++ { // redelivered after the restart
		if err := h(ksSource("logs", 0, off)); err != nil {
			t.Fatalf("redelivery of offset %d: %v", off, err)
		}
	}
	if n := calls.Load(); n != 0 {
		t.Fatalf("handler ran %d times for already committed messages", n)
	}
	if err := h(ksSource("logs", 0, 3)); err != nil {
		t.Fatal(err)
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("handler ran %d times for a new message, want 1", n)
	}
	// Redelivery inside the same sink is skipped too.
	if err := h(ksSource("logs", 0, 3)); err != nil || calls.Load() != 1 {
		t.Fatalf("redelivery of the message just committed: err=%v, handler calls %d", err, calls.Load())
	}
	outs := readOutputs(t, brokers, "out")
	if len(outs) != 4 {
		t.Fatalf("read_committed outputs: %d, want 4 (offsets 0..3 once each)", len(outs))
	}
}

// TestKafkaSinkFencesZombie: a sink started with the same transactional id fences the older one, whose next
// commit fails with ErrKafkaSinkFenced and leaves nothing visible; the new sink commits.
func TestKafkaSinkFencesZombie(t *testing.T) {
	brokers := testutil.Kafka(t, "positions", "out")
	cfg := ksConfig(brokers, "fenced")
	zombie := ksNewSink(t, cfg)
	zh := zombie.Handler(ksEcho, ksPosition)
	if err := zh(ksSource("logs", 0, 1)); err != nil {
		t.Fatalf("zombie before the restart: %v", err)
	}

	fresh := ksNewSink(t, cfg) // the restarted instance
	err := zh(ksSource("logs", 0, 2))
	if !errors.Is(err, ErrKafkaSinkFenced) {
		t.Fatalf("zombie commit after the new producer initialized: %v, want ErrKafkaSinkFenced", err)
	}
	if !errors.Is(zombie.Err(), ErrKafkaSinkFenced) {
		t.Errorf("zombie Err() = %v, want ErrKafkaSinkFenced", zombie.Err())
	}
	if err := zh(ksSource("logs", 1, 1)); !errors.Is(err, ErrKafkaSinkFenced) {
		t.Errorf("zombie keeps accepting messages after being fenced: %v", err)
	}

	fh := fresh.Handler(ksEcho, ksPosition)
	if err := fh(ksSource("logs", 0, 1)); err != nil { // committed by the zombie before: skipped
		t.Fatal(err)
	}
	if err := fh(ksSource("logs", 0, 2)); err != nil {
		t.Fatalf("new sink: %v", err)
	}
	var got []string
	for _, m := range readOutputs(t, brokers, "out") {
		got = append(got, m.UUID)
	}
	want := []string{"out-logs-0-1", "out-logs-0-2"}
	if !slices.Equal(got, want) {
		t.Fatalf("read_committed outputs %v, want %v", got, want)
	}
}

// TestKafkaSinkAbortedBatch: when a transaction fails, every message of its batch fails, nothing of it is visible
// to read_committed readers although its records reached the log, positions do not move, and the redelivery
// commits once.
//
// The failure is the broker's: on the first attempt message A also writes a record larger than the topic "small"
// accepts (max.message.bytes); the broker writes the other records of the transaction, which is then aborted,
// so the log of "out" holds data that read_committed readers must skip.
func TestKafkaSinkAbortedBatch(t *testing.T) {
	brokers := testutil.Kafka(t, "positions", "out")
	ksCreateTopic(t, brokers, "small", map[string]*string{"max.message.bytes": ptr("1024")})
	cfg := ksConfig(brokers, "abort")
	cfg.MaxBatchDelay = 300 * time.Millisecond // A and B in one transaction
	cfg.TopicFunc = func(out *message.Message) (string, error) { return out.Metadata.Get("topic"), nil }
	sink := ksNewSink(t, cfg)
	var attemptsA atomic.Int32
	process := func(msg *message.Message) ([]*message.Message, error) {
		out := message.NewMessage("out-"+msg.UUID, msg.Payload)
		out.Metadata.Set("topic", "out")
		outs := []*message.Message{out}
		if msg.Metadata.Get(ksPartitionKey) == "0" && attemptsA.Add(1) == 1 {
			big := message.NewMessage("big-"+msg.UUID, incompressible(4<<10))
			big.Metadata.Set("topic", "small")
			outs = append(outs, big)
		}
		return outs, nil
	}
	h := sink.Handler(process, ksPosition)
	a, b := ksSource("logs", 0, 5), ksSource("logs", 1, 5)
	for i, err := range handleAll(h, []*message.Message{a, b}) {
		if err == nil {
			t.Errorf("message %d of the failed batch was acked", i)
		}
	}
	if n := len(readTopic(t, brokers, "out", false)); n == 0 {
		t.Fatalf("no record of the failed transaction reached the log: the test did not exercise an abort")
	}
	if outs := readOutputs(t, brokers, "out"); len(outs) != 0 {
		t.Errorf("read_committed reader sees %d outputs of the aborted transaction", len(outs))
	}
	for p := int32(0); p < 2; p++ {
		if pos, ok := sink.CommittedPosition("logs", p); ok {
			t.Errorf("position of logs/%d advanced to %+v by an aborted transaction", p, pos)
		}
	}
	if err := sink.Err(); err != nil {
		t.Fatalf("an abortable failure stopped the sink: %v", err)
	}
	// Redelivery (in the other order) commits both once.
	if err := joinErrs(handleAll(h, []*message.Message{b, a})); err != nil {
		t.Fatalf("redelivery: %v", err)
	}
	var got []string
	for _, m := range readOutputs(t, brokers, "out") {
		got = append(got, m.UUID)
	}
	slices.Sort(got)
	if want := []string{"out-" + a.UUID, "out-" + b.UUID}; !slices.Equal(got, want) {
		t.Fatalf("read_committed outputs after the redelivery: %v, want %v", got, want)
	}
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}
	reloaded := ksNewSink(t, ksConfig(brokers, "abort"))
	for p := int32(0); p < 2; p++ {
		if pos, ok := reloaded.CommittedPosition("logs", p); !ok || pos.Offset != 5 {
			t.Errorf("reloaded position of logs/%d = %+v, %v; want offset 5", p, pos, ok)
		}
	}
}

func ptr[T any](v T) *T { return &v }

// incompressible returns n random bytes: the producer compresses batches, and a record meant to exceed a
// topic's max.message.bytes must stay large.
func incompressible(n int) []byte {
	b := make([]byte, n)
	_, _ = crand.Read(b)
	return b
}

func ksCreateTopic(t testing.TB, brokers []string, topic string, configs map[string]*string) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), ksWait)
	defer cancel()
	resp, err := kadm.NewClient(cl).CreateTopic(ctx, 1, -1, configs, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		t.Fatalf("create topic %s: %v", topic, err)
	}
}

// TestKafkaSinkCloseReleasesHandlers: Close answers a handler waiting in a forming batch, and the Handler of a
// closed sink fails with ErrKafkaSinkClosed.
func TestKafkaSinkCloseReleasesHandlers(t *testing.T) {
	brokers := testutil.Kafka(t, "positions", "out")
	cfg := ksConfig(brokers, "close")
	cfg.MaxBatchDelay = time.Hour
	sink := ksNewSink(t, cfg)
	h := sink.Handler(ksEcho, ksPosition)
	result := make(chan error, 1)
	go func() { result <- h(ksSource("logs", 0, 1)) }()
	testutil.Poll(t, ksWait, "the handler is in flight", func() (bool, string) {
		sink.mu.Lock()
		defer sink.mu.Unlock()
		return len(sink.inFlight) == 1, ""
	})
	if err := sink.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-result:
		// The message was in a forming batch: Close commits what was gathered, so the handler may succeed.
		t.Logf("handler waiting at Close returned %v", err)
	case <-time.After(ksWait):
		t.Fatal("a handler waiting in a batch is stranded after Close")
	}
	if err := h(ksSource("logs", 0, 2)); !errors.Is(err, ErrKafkaSinkClosed) {
		t.Errorf("Handler after Close: %v, want ErrKafkaSinkClosed", err)
	}
}

// TestKafkaSinkRejectsPartitionConcurrency: two messages of one partition in flight at once stop the sink.
func TestKafkaSinkRejectsPartitionConcurrency(t *testing.T) {
	brokers := testutil.Kafka(t, "positions", "out")
	sink := ksNewSink(t, ksConfig(brokers, "concurrency"))
	release := make(chan struct{})
	entered := make(chan struct{})
	blocking := func(msg *message.Message) ([]*message.Message, error) {
		close(entered)
		<-release
		return ksEcho(msg)
	}
	h := sink.Handler(blocking, ksPosition)
	first := make(chan error, 1)
	go func() { first <- h(ksSource("logs", 0, 1)) }()
	<-entered
	err := sink.Handler(ksEcho, ksPosition)(ksSource("logs", 0, 2))
	close(release)
	if !errors.Is(err, ErrPartitionConcurrency) {
		t.Fatalf("second message of a partition in flight: %v, want ErrPartitionConcurrency", err)
	}
	if err := <-first; !errors.Is(err, ErrPartitionConcurrency) {
		t.Fatalf("first message after the sink stopped: %v, want ErrPartitionConcurrency", err)
	}
	if outs := readOutputs(t, brokers, "out"); len(outs) != 0 {
		t.Errorf("%d outputs committed after the sink stopped", len(outs))
	}
}

// TestKafkaSinkCloseLeavesNoGoroutine: no goroutine of the sink, its sarama producer or the positions reader
// outlives Close, including after a failed transaction restarted the producer session.
func TestKafkaSinkCloseLeavesNoGoroutine(t *testing.T) {
	brokers := testutil.Kafka(t, "positions", "out")
	ksCreateTopic(t, brokers, "tiny", map[string]*string{"max.message.bytes": ptr("1024")})
	leaked := func() string {
		var out []string
		for _, s := range testutil.GoroutineStacks() {
			if strings.Contains(s, "[running]") {
				continue
			}
			if strings.Contains(s, "github.com/IBM/sarama.") || strings.Contains(s, "franz-go/pkg/kgo.") ||
				strings.Contains(s, "exactlyonce.(*KafkaSink)") {
				out = append(out, s)
			}
		}
		return strings.Join(out, "\n\n")
	}
	if !testutil.Poll(t, ksWait, "the topic set-up's client goroutines to end", func() (bool, string) {
		l := leaked()
		return l == "", l
	}) {
		return
	}
	cfg := ksConfig(brokers, "leak")
	cfg.TopicFunc = func(out *message.Message) (string, error) { return out.Metadata.Get("topic"), nil }
	sink, err := NewKafkaSink(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	process := func(msg *message.Message) ([]*message.Message, error) {
		out := message.NewMessage("out-"+msg.UUID, incompressible(2048))
		out.Metadata.Set("topic", msg.Metadata.Get("want_topic"))
		return []*message.Message{out}, nil
	}
	h := sink.Handler(process, ksPosition)
	bad := ksSource("logs", 0, 1)
	bad.Metadata.Set("want_topic", "tiny")
	if err := h(bad); err == nil {
		t.Fatal("a record over the topic's max.message.bytes was committed")
	}
	good := ksSource("logs", 0, 1)
	good.Metadata.Set("want_topic", "out")
	if err := h(good); err != nil {
		t.Fatalf("after the producer session restarted: %v", err)
	}
	if err := sink.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	testutil.Poll(t, ksWait, "the sink's goroutines to end", func() (bool, string) {
		l := leaked()
		return l == "", l
	})
}

// TestKafkaSinkCommitOutcomeUnknown: when the connection drops on EndTxn, the sink cannot know whether the
// broker committed. It starts a new producer session (which completes the transaction broker-side), reads the
// positions back, and reports the batch by what they say: here the commit never reached the broker, so the
// message fails, nothing is visible, and its redelivery commits once. The fault needs kfake's request control,
// so this test runs its own kfake cluster.
func TestKafkaSinkCommitOutcomeUnknown(t *testing.T) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "positions", "out"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	var armed atomic.Bool
	var dropped atomic.Int32
	armed.Store(true)
	cluster.ControlKey(int16(kmsg.EndTxn), func(req kmsg.Request) (kmsg.Response, error, bool) {
		cluster.KeepControl()
		if req.(*kmsg.EndTxnRequest).Commit && armed.Load() {
			dropped.Add(1)
			return nil, errors.New("connection lost before the answer"), true
		}
		return nil, nil, false
	})
	brokers := cluster.ListenAddrs()
	cfg := ksConfig(brokers, "unknown")
	// The client retries a request whose connection broke; give up soon so that the outcome stays unknown.
	cfg.ClientOptions = []kgo.Opt{kgo.RequestRetries(1), kgo.RetryTimeout(2 * time.Second)}
	sink := ksNewSink(t, cfg)
	h := sink.Handler(ksEcho, ksPosition)
	msg := ksSource("logs", 0, 7)
	err = h(msg)
	armed.Store(false)
	t.Logf("EndTxn commits dropped: %d", dropped.Load())
	if dropped.Load() == 0 {
		t.Fatal("the EndTxn commit was never sent")
	}
	if err == nil {
		t.Fatal("a message whose commit never reached the broker was acked")
	}
	t.Logf("handler error: %v", err)
	if err := sink.Err(); err != nil {
		t.Fatalf("the sink stopped: %v", err)
	}
	if p, ok := sink.CommittedPosition("logs", 0); ok {
		t.Errorf("position advanced to %+v", p)
	}
	if outs := readOutputs(t, brokers, "out"); len(outs) != 0 {
		t.Errorf("read_committed reader sees %d outputs of the transaction that did not commit", len(outs))
	}
	if err := h(msg); err != nil {
		t.Fatalf("redelivery: %v", err)
	}
	if outs := readOutputs(t, brokers, "out"); len(outs) != 1 {
		t.Errorf("read_committed outputs after the redelivery: %d, want 1", len(outs))
	}
	if st := sink.Stats(); st.Transactions != 1 || st.Aborted != 1 {
		t.Errorf("stats %+v, want 1 committed and 1 failed transaction", st)
	}
}

// TestKafkaSinkNeedsPositionsTopic: a missing positions topic fails NewKafkaSink, naming it, instead of reading
// as "nothing committed" (which would reprocess everything).
func TestKafkaSinkNeedsPositionsTopic(t *testing.T) {
	brokers := testutil.Kafka(t, "out")
	cfg := ksConfig(brokers, "missing")
	cfg.PositionsTopic = "no-such-positions"
	cfg.LoadTimeout = 10 * time.Second
	s, err := NewKafkaSink(cfg, nil)
	if err == nil {
		_ = s.Close()
		t.Fatal("NewKafkaSink started without its positions topic")
	}
	if !strings.Contains(err.Error(), "no-such-positions") {
		t.Errorf("error %q does not name the positions topic", err)
	}
}
