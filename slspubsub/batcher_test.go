package slspubsub

import (
	"context"
	"errors"
	"math"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/watermill-sls/watermill-sls/internal/testutil"
)

// budgetAcquireAsync starts acquire in a goroutine and returns its result
// channel.
func budgetAcquireAsync(ctx context.Context, b *budget, n int) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- b.acquire(ctx, n) }()
	return ch
}

// budgetWaitWaiters polls until b has n waiters.
func budgetWaitWaiters(t *testing.T, b *budget, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		b.mu.Lock()
		got := len(b.waiters)
		b.mu.Unlock()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("budget has %d waiters, want %d", got, n)
		}
		time.Sleep(time.Millisecond) // polling interval
	}
}

func budgetNotDone(t *testing.T, ch <-chan error) {
	t.Helper()
	select {
	case err := <-ch:
		t.Fatalf("acquire returned %v while it should wait", err)
	default:
	}
}

func TestBudgetFIFO(t *testing.T) {
	b := newBudget(10)
	if !b.tryAcquire(8) {
		t.Fatal("tryAcquire(8) of 10 failed")
	}
	big := budgetAcquireAsync(context.Background(), b, 5)
	budgetWaitWaiters(t, b, 1)
	if b.tryAcquire(1) {
		t.Fatal("tryAcquire jumped the queue")
	}
	small := budgetAcquireAsync(context.Background(), b, 1)
	budgetWaitWaiters(t, b, 2)
	budgetNotDone(t, small) // 1 byte is free, but the waiter ahead comes first

	b.release(8)
	if err := <-big; err != nil {
		t.Fatal(err)
	}
	if err := <-small; err != nil {
		t.Fatal(err)
	}
	if got := b.inUse(); got != 6 {
		t.Fatalf("in use %d, want 6", got)
	}
}

func TestBudgetCancelledWaiterHoldsNothing(t *testing.T) {
	b := newBudget(10)
	b.tryAcquire(10)
	ctx, cancel := context.WithCancel(context.Background())
	head := budgetAcquireAsync(ctx, b, 8)
	budgetWaitWaiters(t, b, 1)
	behind := budgetAcquireAsync(context.Background(), b, 2)
	budgetWaitWaiters(t, b, 2)

	b.release(3) // 3 free: not enough for the head (8), enough for behind (2)
	budgetNotDone(t, behind)
	cancel()
	if err := <-head; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled acquire: %v", err)
	}
	if err := <-behind; err != nil { // the head left: behind fits
		t.Fatal(err)
	}
	if got := b.inUse(); got != 9 {
		t.Fatalf("in use %d, want 9", got)
	}
}

func TestBudgetClose(t *testing.T) {
	b := newBudget(4)
	b.tryAcquire(4)
	waiting := budgetAcquireAsync(context.Background(), b, 1)
	budgetWaitWaiters(t, b, 1)
	b.close(ErrPublisherClosed)
	if err := <-waiting; !errors.Is(err, ErrPublisherClosed) {
		t.Fatalf("waiter after close: %v", err)
	}
	if err := b.acquire(context.Background(), 1); !errors.Is(err, ErrPublisherClosed) {
		t.Fatalf("acquire after close: %v", err)
	}
	if b.tryAcquire(0) {
		t.Fatal("tryAcquire after close succeeded")
	}
	b.release(4)
	if got := b.inUse(); got != 0 {
		t.Fatalf("in use %d after release", got)
	}
}

func TestBudgetOversizedRequestWaitsForEmpty(t *testing.T) {
	b := newBudget(10)
	b.tryAcquire(1)
	n := b.clamp(100)
	huge := budgetAcquireAsync(context.Background(), b, n)
	budgetWaitWaiters(t, b, 1)
	b.release(1)
	if err := <-huge; err != nil {
		t.Fatal(err)
	}
	b.release(n)
	if got := b.inUse(); got != 0 {
		t.Fatalf("in use %d", got)
	}
}

func TestNextSeqIDIncreasing(t *testing.T) {
	start := time.Now().UnixNano()
	const goroutines, per = 8, 2000
	ids := make([][]int64, goroutines)
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range per {
				ids[g] = append(ids[g], nextSeqID())
			}
		}()
	}
	wg.Wait()
	seen := map[int64]bool{}
	for _, list := range ids {
		for i, id := range list {
			if id < start {
				t.Fatalf("seqid %d is below the clock at start, %d", id, start)
			}
			if i > 0 && id <= list[i-1] {
				t.Fatalf("seqids not increasing: %d after %d", id, list[i-1])
			}
			if seen[id] {
				t.Fatalf("seqid %d handed out twice", id)
			}
			seen[id] = true
		}
	}
}

// batchTestPublisher is a Publisher that sends nothing: enough to cut and
// encode batches.
func batchTestPublisher(t *testing.T, modify func(*PublisherConfig)) *Publisher {
	t.Helper()
	cfg := PublisherConfig{ClientConfig: ClientConfig{Endpoint: "localhost:1", Project: "proj", AccessKeyID: "id", AccessKeySecret: "secret"}}
	if modify != nil {
		modify(&cfg)
	}
	p, err := NewPublisher(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func batchTestEntry(topic string, size int) *entry {
	rec := Record{Topic: topic, Log: Log{Time: time.Unix(1e9, 0), Contents: []Content{{"k", strings.Repeat("v", size)}}}}
	return &entry{rec: rec, size: logEntrySize(&rec.Log), hdr: groupHeaderSize(&rec)}
}

func TestCutBatch(t *testing.T) {
	p := batchTestPublisher(t, func(c *PublisherConfig) { c.MaxBatchCount = 3 })
	l := &lane{}
	for _, topic := range []string{"a", "a", "b", "a", "a", "a", "a"} {
		l.queue = append(l.queue, batchTestEntry(topic, 10))
	}
	l.takeQueue()
	var sizes []int
	var topics []string
	for l.pending() > 0 {
		b := p.cutBatch(l)
		b.encode()
		if len(b.raw) != b.bytes {
			t.Fatalf("batch encodes to %d bytes, cut as %d", len(b.raw), b.bytes)
		}
		sizes = append(sizes, len(b.entries))
		topics = append(topics, b.group.Topic)
		p.releaseBatch(b)
	}
	// Runs of one group, at most MaxBatchCount each, in queue order.
	if got, want := strings.Join(topics, ","), "a,b,a,a"; got != want {
		t.Fatalf("batch topics %s, want %s", got, want)
	}
	if got := sizes; len(got) != 4 || got[0] != 2 || got[1] != 1 || got[2] != 3 || got[3] != 1 {
		t.Fatalf("batch sizes %v, want [2 1 3 1]", got)
	}
}

func TestCutBatchBytes(t *testing.T) {
	one := batchTestEntry("t", 100)
	limit := one.hdr + 3*one.size
	p := batchTestPublisher(t, func(c *PublisherConfig) { c.MaxBatchBytes = limit })
	l := &lane{}
	for range 7 {
		l.queue = append(l.queue, batchTestEntry("t", 100))
	}
	l.takeQueue()
	var sizes []int
	for l.pending() > 0 {
		b := p.cutBatch(l)
		b.encode()
		if len(b.raw) > limit {
			t.Fatalf("batch of %d bytes, limit %d", len(b.raw), limit)
		}
		sizes = append(sizes, len(b.entries))
		p.releaseBatch(b)
	}
	if len(sizes) != 3 || sizes[0] != 3 || sizes[1] != 3 || sizes[2] != 1 {
		t.Fatalf("batch sizes %v, want [3 3 1]", sizes)
	}
}

// fixedMarshaler returns one prepared record, so that allocation counts
// measure the Publisher alone.
type fixedMarshaler struct{ rec Record }

func (m fixedMarshaler) Marshal(string, *message.Message) (Record, error) { return m.rec, nil }

// TestBatchPathAllocations: preparing messages and cutting and encoding
// batches allocate nothing in steady state (marshaling and HTTP aside).
func TestBatchPathAllocations(t *testing.T) {
	if batchTestRaceEnabled() {
		t.Skip("the race detector makes sync.Pool drop items at random")
	}
	rec := Record{Topic: "t", Log: Log{Time: time.Unix(1e9, 5), Contents: []Content{{"payload", strings.Repeat("x", 200)}}}}
	p := batchTestPublisher(t, func(c *PublisherConfig) {
		c.Marshaler = fixedMarshaler{rec}
		c.HashKey = func(string, *message.Message) (string, error) { return "some-partition-key", nil }
		c.HashBuckets = 64
	})
	msgs := make([]*message.Message, 64)
	for i := range msgs {
		msgs[i] = message.NewMessage(watermill.NewUUID(), nil)
	}
	l := &lane{}
	run := func() {
		c := getCall(len(msgs))
		if _, err := p.prepare("ls", msgs, c); err != nil {
			t.Fatal(err)
		}
		for i := range c.entries {
			l.queue = append(l.queue, &c.entries[i])
		}
		l.takeQueue()
		for l.pending() > 0 {
			b := p.cutBatch(l)
			b.encode()
			p.releaseBatch(b)
		}
		putCall(c)
	}
	run()
	// cutBatch creates the batch's RetryTimeout context: 3 allocations per
	// batch, one batch per 64 messages here.
	if avg := testing.AllocsPerRun(100, run); avg > 4 {
		t.Fatalf("%.1f allocations per 64 messages, want at most 4", avg)
	}
}

func batchTestRaceEnabled() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}

// TestIdempotentFirstAttemptInvalidSequenceID: when SLS already holds a
// higher seqid for the key than the Publisher issues (another writer, or a
// clock that went back), the batch is not written and the error says so.
func TestIdempotentFirstAttemptInvalidSequenceID(t *testing.T) {
	env := testutil.SLS(t)
	t.Cleanup(env.HTTPClient.CloseIdleConnections)
	env.LogStore(t, "idem-project", "idem-logstore", 1)
	cc := ClientConfig{Endpoint: env.Endpoint, Project: "idem-project", AccessKeyID: env.AccessKeyID,
		AccessKeySecret: env.AccessKeySecret, HTTPClient: env.HTTPClient}
	api, err := newAPIClient(cc)
	if err != nil {
		t.Fatal(err)
	}
	key := hashKeyFor("k", 0).String()
	g := LogGroup{Logs: []Log{{Time: time.Now(), Contents: []Content{{"by", "another writer"}}}}}
	if err := api.putLogs(context.Background(), "idem-logstore", key, math.MaxInt64-1, appendLogGroup(nil, &g), CompressionLZ4); err != nil {
		t.Fatalf("seeding a high seqid: %v", err)
	}

	p, err := NewPublisher(PublisherConfig{ClientConfig: cc, IdempotentWrites: true,
		HashKey: func(string, *message.Message) (string, error) { return "k", nil }}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	err = p.Publish("idem-logstore", message.NewMessage(watermill.NewUUID(), []byte("x")))
	var se *Error
	if !errors.As(err, &se) || se.Code != CodeInvalidSequenceID {
		t.Fatalf("Publish: %v, want InvalidSequenceId", err)
	}
	if !strings.Contains(err.Error(), "NOT written") {
		t.Fatalf("error does not explain the refusal: %v", err)
	}
	groups, err := env.Server.LogGroups("idem-project", "idem-logstore", 0)
	if err != nil || len(groups) != 1 {
		t.Fatalf("stored %d groups (%v), want only the seeded one", len(groups), err)
	}
}
