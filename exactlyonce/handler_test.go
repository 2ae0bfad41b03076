package exactlyonce_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/watermill-sls/watermill-sls/exactlyonce"
)

// scriptedSink is a HandlerFunc that inserts the payload into sink, counts its calls by message, and fails
// for messages marked "fail" (after inserting: the insert must roll back) or breaks the commit for messages
// marked "commitfail" (a deferred unique constraint violated, reported only by COMMIT).
type scriptedSink struct {
	mu    sync.Mutex
	calls map[string]int
	fail  map[string]bool
}

func newScriptedSink() *scriptedSink {
	return &scriptedSink{calls: map[string]int{}, fail: map[string]bool{}}
}

var errScripted = errors.New("scripted failure")

func (s *scriptedSink) setFail(id string, fail bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail[id] = fail
}

func (s *scriptedSink) count(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[id]
}

func (s *scriptedSink) handle(ctx context.Context, tx pgx.Tx, msg *message.Message) error {
	id := string(msg.Payload)
	s.mu.Lock()
	s.calls[id]++
	fail := s.fail[id]
	s.mu.Unlock()
	if err := insertSink(ctx, tx, msg); err != nil {
		return err
	}
	if msg.Metadata.Get("commitfail") != "" {
		if _, err := tx.Exec(ctx, `INSERT INTO deferred (id) VALUES (1), (1)`); err != nil {
			return err
		}
	}
	if fail {
		return fmt.Errorf("message %s: %w", id, errScripted)
	}
	return nil
}

func createDeferred(t testing.TB, pool *pgxpool.Pool) {
	t.Helper()
	if _, err := pool.Exec(context.Background(),
		`CREATE TABLE deferred (id int, CONSTRAINT deferred_u UNIQUE (id) DEFERRABLE INITIALLY DEFERRED)`); err != nil {
		t.Fatal(err)
	}
}

func newMessageHandler(t testing.TB, store *exactlyonce.Store, fn exactlyonce.HandlerFunc) *exactlyonce.MessageHandler {
	t.Helper()
	h, err := exactlyonce.NewMessageHandler(store, exactlyonce.HandlerConfig{Consumer: "c", Position: testPosition}, fn)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestHandlerConfigValidate(t *testing.T) {
	store, _ := newStore(t)
	_, err := exactlyonce.NewMessageHandler(store, exactlyonce.HandlerConfig{}, insertSink)
	if err == nil {
		t.Fatal("NewMessageHandler accepted an empty config")
	}
	for _, field := range []string{"Consumer", "Position"} {
		if !strings.Contains(err.Error(), field) {
			t.Errorf("error %q does not name %s", err, field)
		}
	}
	_, err = exactlyonce.NewBatchHandler(store, exactlyonce.BatchConfig{MaxBatch: -1, MaxWait: -1, Timeout: -1, Parallel: -1}, insertSink)
	for _, field := range []string{"Consumer", "MaxBatch", "MaxWait", "Timeout", "Parallel"} {
		if err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("NewBatchHandler error %v does not name %s", err, field)
		}
	}
}

// A message at or before the stored position is acked without running the handler function.
func TestMessageHandlerSkipsApplied(t *testing.T) {
	store, pool := newStore(t)
	sink := newScriptedSink()
	h := newMessageHandler(t, store, sink.handle)
	for _, o := range []int64{1, 2, 3} {
		if err := h.Handle(testMsg(0, o)); err != nil {
			t.Fatalf("offset %d: %v", o, err)
		}
	}
	wantStored(t, store, "c", 0, 3)
	// Redelivery of everything, e.g. after a crash between commit and ack.
	for _, o := range []int64{1, 2, 3} {
		if err := h.Handle(testMsg(0, o)); err != nil {
			t.Fatalf("redelivered offset %d: %v", o, err)
		}
	}
	for _, o := range []int64{1, 2, 3} {
		id := fmt.Sprintf("0/%d", o)
		if n := sink.count(id); n != 1 {
			t.Errorf("handler ran %d times for %s, want 1", n, id)
		}
	}
	for id, n := range sinkCounts(t, pool) {
		if n != 1 {
			t.Errorf("sink holds %s %d times", id, n)
		}
	}
	// A new handler (a restarted process) skips them as well: the skip comes from the store.
	h2 := newMessageHandler(t, store, sink.handle)
	if err := h2.Handle(testMsg(0, 2)); err != nil || sink.count("0/2") != 1 {
		t.Errorf("restarted handler: %v, handler ran %d times for 0/2", err, sink.count("0/2"))
	}
}

// A handler error rolls back the message's writes together with its position, and reaches the router.
func TestMessageHandlerErrorRollsBack(t *testing.T) {
	store, pool := newStore(t)
	sink := newScriptedSink()
	sink.setFail("0/1", true)
	h := newMessageHandler(t, store, sink.handle)
	if err := h.Handle(testMsg(0, 1)); !errors.Is(err, errScripted) {
		t.Fatalf("Handle = %v, want the handler's error", err)
	}
	if rows := sinkCounts(t, pool); len(rows) != 0 {
		t.Errorf("sink holds %v after a failed message", rows)
	}
	wantStored(t, store, "c", 0, -1)
	sink.setFail("0/1", false)
	if err := h.Handle(testMsg(0, 1)); err != nil {
		t.Fatal(err)
	}
	if rows := sinkCounts(t, pool); rows["0/1"] != 1 || len(rows) != 1 {
		t.Errorf("sink holds %v, want 0/1 once", rows)
	}
	wantStored(t, store, "c", 0, 1)
}

// A failed commit rolls back the writes and the position, and the error reaches the router.
func TestMessageHandlerCommitFailure(t *testing.T) {
	store, pool := newStore(t)
	createDeferred(t, pool)
	sink := newScriptedSink()
	h := newMessageHandler(t, store, sink.handle)
	m := testMsg(0, 1)
	m.Metadata.Set("commitfail", "1")
	wantFailedCommit(t, store, pool, 1, h.Handle(m))
}

// After a message fails, no later message of its partition commits until the failed one is applied: its
// position would pass an unapplied message. Other partitions go on.
func TestMessageHandlerNeverPassesUnapplied(t *testing.T) {
	store, pool := newStore(t)
	sink := newScriptedSink()
	h := newMessageHandler(t, store, sink.handle)
	if err := h.Handle(testMsg(0, 1)); err != nil {
		t.Fatal(err)
	}
	sink.setFail("0/2", true)
	if err := h.Handle(testMsg(0, 2)); !errors.Is(err, errScripted) {
		t.Fatalf("offset 2: %v, want the handler's error", err)
	}
	// Offset 3 was in flight too (MaxInFlight > 1): it must not commit.
	if err := h.Handle(testMsg(0, 3)); !errors.Is(err, exactlyonce.ErrPartitionBlocked) {
		t.Fatalf("offset 3 after failed 2: %v, want ErrPartitionBlocked", err)
	}
	if n := sink.count("0/3"); n != 0 {
		t.Errorf("handler ran for 0/3 behind a failed message")
	}
	wantStored(t, store, "c", 0, 1)
	if err := h.Handle(testMsg(1, 7)); err != nil {
		t.Fatalf("other partition: %v", err)
	}
	wantStored(t, store, "c", 1, 7)
	// Redelivery of 2 then 3.
	sink.setFail("0/2", false)
	for _, o := range []int64{2, 3} {
		if err := h.Handle(testMsg(0, o)); err != nil {
			t.Fatalf("redelivered offset %d: %v", o, err)
		}
	}
	wantStored(t, store, "c", 0, 3)
	if rows := sinkCounts(t, pool); len(rows) != 4 {
		t.Errorf("sink holds %v, want 0/1..0/3 and 1/7", rows)
	}
}

// Two consumers handling the same message at once (say during a rebalance) apply it once: the row lock or
// the forward-only upsert makes the second one skip or fail with ErrPositionConflict.
func TestMessageHandlerConcurrentDuplicates(t *testing.T) {
	store, pool := newStore(t)
	var calls atomic.Int32
	fn := func(ctx context.Context, tx pgx.Tx, msg *message.Message) error {
		calls.Add(1)
		return insertSink(ctx, tx, msg)
	}
	for round := range 5 {
		var wg sync.WaitGroup
		errs := make([]error, 6)
		for i := range errs {
			h := newMessageHandler(t, store, fn) // one per consumer process
			wg.Go(func() { errs[i] = h.Handle(testMsg(0, int64(round))) })
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil && !errors.Is(err, exactlyonce.ErrPositionConflict) {
				t.Errorf("round %d, handler %d: %v", round, i, err)
			}
		}
	}
	for id, n := range sinkCounts(t, pool) {
		if n != 1 {
			t.Errorf("sink holds %s %d times", id, n)
		}
	}
	wantStored(t, store, "c", 0, 4)
	t.Logf("%d handler calls for 5 messages handled 6 times each", calls.Load())
}
