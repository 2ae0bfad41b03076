package exactlyonce_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/watermill-sls/watermill-sls/exactlyonce"
	"github.com/watermill-sls/watermill-sls/internal/testutil"
)

// newBatchHandler returns a BatchHandler that applies a batch when it holds exactly size messages (MaxWait is
// far beyond any test), so tests decide which messages share a transaction.
func newBatchHandler(t testing.TB, store *exactlyonce.Store, size int, fn exactlyonce.HandlerFunc) *exactlyonce.BatchHandler {
	t.Helper()
	h, err := exactlyonce.NewBatchHandler(store, exactlyonce.BatchConfig{
		HandlerConfig: exactlyonce.HandlerConfig{Consumer: "c", Position: testPosition},
		MaxBatch:      size,
		MaxWait:       time.Minute,
	}, fn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	return h
}

// handleBatch hands msgs to h concurrently (as router goroutines do) and returns each one's result.
func handleBatch(t testing.TB, h *exactlyonce.BatchHandler, msgs ...*message.Message) []error {
	t.Helper()
	chans := make([]chan error, len(msgs))
	for i, m := range msgs {
		chans[i] = make(chan error, 1)
		go func() { chans[i] <- h.Handle(m) }()
	}
	out := make([]error, len(msgs))
	for i := range chans {
		out[i] = waitResult(t, chans[i])
	}
	return out
}

// In a batch, a failing message k of a partition fails alone; every later message of that partition in the
// batch fails with ErrPartitionBlocked without running; other partitions commit. Across batches the partition
// stays blocked until k is applied.
func TestBatchHandlerFailureBlocksLaterMessagesOfPartition(t *testing.T) {
	store, pool := newStore(t)
	sink := newScriptedSink()
	sink.setFail("0/2", true)
	h := newBatchHandler(t, store, 7, sink.handle)
	// Out of order on purpose: the handler orders each partition by position.
	res := handleBatch(t, h, testMsg(0, 4), testMsg(1, 2), testMsg(0, 1), testMsg(0, 3), testMsg(1, 1), testMsg(0, 2), testMsg(1, 3))
	want := []error{exactlyonce.ErrPartitionBlocked, nil, nil, exactlyonce.ErrPartitionBlocked, nil, errScripted, nil}
	for i, w := range want {
		if w == nil && res[i] != nil || w != nil && !errors.Is(res[i], w) {
			t.Errorf("message %d: %v, want %v", i, res[i], w)
		}
	}
	for _, id := range []string{"0/3", "0/4"} {
		if n := sink.count(id); n != 0 {
			t.Errorf("handler ran %d times for %s, behind a failed message", n, id)
		}
	}
	wantStored(t, store, "c", 0, 1)
	wantStored(t, store, "c", 1, 3)
	rows := sinkCounts(t, pool)
	if len(rows) != 4 || rows["0/1"] != 1 || rows["1/1"] != 1 || rows["1/2"] != 1 || rows["1/3"] != 1 {
		t.Errorf("sink holds %v, want 0/1 and 1/1..1/3 once each (nothing of the failed 0/2)", rows)
	}

	// A later batch without the failed message must not pass it either.
	res = handleBatch(t, h, append(batchOf(0, 3, 4), batchOf(1, 4, 5, 6, 7, 8)...)...)
	for i, err := range res[:2] {
		if !errors.Is(err, exactlyonce.ErrPartitionBlocked) {
			t.Errorf("0/%d in a later batch: %v, want ErrPartitionBlocked", i+3, err)
		}
	}
	for i, err := range res[2:] {
		if err != nil {
			t.Errorf("1/%d: %v", i+4, err)
		}
	}
	wantStored(t, store, "c", 0, 1)

	// The failed message redelivered and applied lifts the block.
	sink.setFail("0/2", false)
	res = handleBatch(t, h, append(batchOf(0, 2, 3, 4), batchOf(1, 9, 10, 11, 12)...)...)
	for i, err := range res {
		if err != nil {
			t.Errorf("message %d after redelivery: %v", i, err)
		}
	}
	wantStored(t, store, "c", 0, 4)
	wantStored(t, store, "c", 1, 12)
	for id, n := range sinkCounts(t, pool) {
		if n != 1 {
			t.Errorf("sink holds %s %d times", id, n)
		}
	}
}

func batchOf(p int, offsets ...int64) []*message.Message {
	var out []*message.Message
	for _, o := range offsets {
		out = append(out, testMsg(p, o))
	}
	return out
}

// Messages at or before the stored position, and duplicates within a batch, are acked without running.
func TestBatchHandlerSkipsApplied(t *testing.T) {
	store, pool := newStore(t)
	sink := newScriptedSink()
	h := newBatchHandler(t, store, 3, sink.handle)
	for _, err := range handleBatch(t, h, batchOf(0, 1, 2, 3)...) {
		if err != nil {
			t.Fatal(err)
		}
	}
	// 2 and 3 are applied; 4 is new and arrives twice.
	for i, err := range handleBatch(t, h, testMsg(0, 2), testMsg(0, 4), testMsg(0, 3)) {
		if err != nil {
			t.Errorf("message %d: %v", i, err)
		}
	}
	h2 := newBatchHandler(t, store, 2, sink.handle)
	for i, err := range handleBatch(t, h2, testMsg(0, 5), testMsg(0, 5)) {
		if err != nil {
			t.Errorf("duplicate %d: %v", i, err)
		}
	}
	for _, id := range []string{"0/1", "0/2", "0/3", "0/4", "0/5"} {
		if n := sink.count(id); n != 1 {
			t.Errorf("handler ran %d times for %s, want 1", n, id)
		}
	}
	for id, n := range sinkCounts(t, pool) {
		if n != 1 {
			t.Errorf("sink holds %s %d times", id, n)
		}
	}
	wantStored(t, store, "c", 0, 5)
}

// A failed commit fails every message of the batch, and nothing of it is stored; the next batch of those
// messages applies them.
func TestBatchHandlerCommitFailureFailsAll(t *testing.T) {
	store, pool := newStore(t)
	createDeferred(t, pool)
	sink := newScriptedSink()
	h := newBatchHandler(t, store, 4, sink.handle)
	bad := testMsg(1, 1)
	bad.Metadata.Set("commitfail", "1")
	wantFailedCommit(t, store, pool, 3, handleBatch(t, h, testMsg(0, 1), testMsg(0, 2), bad, testMsg(2, 1))...)
	// Each partition is blocked at its first message of the failed batch: a later message alone must wait.
	h.Close()
	h = newBatchHandler(t, store, 1, sink.handle)
	for _, err := range handleBatch(t, h, testMsg(0, 1)) {
		if err != nil {
			t.Errorf("retry: %v", err)
		}
	}
	wantStored(t, store, "c", 0, 1)
}

// The same clause without a restart: the handler that saw the commit fail refuses a later message of a
// partition of the failed batch until its first message there is applied.
func TestBatchHandlerCommitFailureBlocksPartitions(t *testing.T) {
	store, pool := newStore(t)
	createDeferred(t, pool)
	sink := newScriptedSink()
	h := newBatchHandler(t, store, 2, sink.handle)
	bad := testMsg(1, 1)
	bad.Metadata.Set("commitfail", "1")
	for _, err := range handleBatch(t, h, testMsg(0, 1), bad) {
		if err == nil {
			t.Fatal("batch with a failing commit succeeded")
		}
	}
	res := handleBatch(t, h, testMsg(0, 2), testMsg(1, 2))
	for i, err := range res {
		if !errors.Is(err, exactlyonce.ErrPartitionBlocked) {
			t.Errorf("message %d after a failed commit: %v, want ErrPartitionBlocked", i, err)
		}
	}
	if rows := sinkCounts(t, pool); len(rows) != 0 {
		t.Errorf("sink holds %v", rows)
	}
}

// Close answers every waiting Handle call, later calls get ErrClosed, and no goroutine is left behind.
func TestBatchHandlerCloseAnswersWaiting(t *testing.T) {
	store, pool := newStore(t)
	sink := newScriptedSink()
	h, err := exactlyonce.NewBatchHandler(store, exactlyonce.BatchConfig{
		HandlerConfig: exactlyonce.HandlerConfig{Consumer: "c", Position: testPosition},
		MaxBatch:      100,
		MaxWait:       time.Hour, // the batch never fills: only Close ends the wait
	}, sink.handle)
	if err != nil {
		t.Fatal(err)
	}
	chans := make([]chan error, 3)
	for i := range chans {
		chans[i] = make(chan error, 1)
		go func() { chans[i] <- h.Handle(testMsg(i, 1)) }()
	}
	// The handler function runs only when the batch is applied; until then the callers wait in Handle.
	testutil.Poll(t, 10*time.Second, "3 messages waiting in the batch", func() (bool, string) {
		n := len(packageGoroutines("exactlyonce.(*BatchHandler).Handle"))
		return n == 3, fmt.Sprintf("%d Handle calls waiting", n)
	})
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	results := make([]error, len(chans))
	for i := range chans {
		results[i] = waitResult(t, chans[i])
		if err := results[i]; err != nil && !errors.Is(err, exactlyonce.ErrClosed) {
			t.Errorf("message %d: %v", i, err)
		}
	}
	if err := h.Handle(testMsg(5, 1)); !errors.Is(err, exactlyonce.ErrClosed) {
		t.Errorf("Handle after Close = %v, want ErrClosed", err)
	}
	if err := h.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	// What was acked (nil) is in the sink; what was not is not.
	rows := sinkCounts(t, pool)
	for i, err := range results {
		id := fmt.Sprintf("%d/1", i)
		if applied := rows[id] == 1; applied != (err == nil) {
			t.Errorf("message %s: Handle returned %v, sink holds it %d times", id, err, rows[id])
		}
	}
	testutil.Poll(t, 10*time.Second, "the handler's goroutines to end", func() (bool, string) {
		left := packageGoroutines("watermill-sls/exactlyonce.(")
		return len(left) == 0, strings.Join(left, "\n\n")
	})
}

// Two processes applying the same partitions at once (a rebalance) apply each message once: the position rows
// are locked, and the forward-only upsert makes a batch that lost the race fail with ErrPositionConflict.
func TestBatchHandlerConcurrentConsumers(t *testing.T) {
	store, pool := newStore(t)
	// In round 0 no position row exists yet, so nothing is locked: both transactions insert their sink rows
	// before either stores its positions (each waits, up to 2 s, for the other to get there).
	arrived := make(chan struct{}, 2)
	fn := func(ctx context.Context, tx pgx.Tx, msg *message.Message) error {
		if err := insertSink(ctx, tx, msg); err != nil {
			return err
		}
		if msg.Metadata.Get("o") == "0" && msg.Metadata.Get("p") == "3" {
			select {
			case arrived <- struct{}{}:
			default: // a redelivery: the barrier is over
			}
			deadline := time.After(2 * time.Second)
			for len(arrived) < 2 {
				select {
				case <-deadline:
					return nil
				case <-time.After(time.Millisecond):
				}
			}
		}
		return nil
	}
	a := newBatchHandler(t, store, 4, fn)
	b := newBatchHandler(t, store, 4, fn)
	for round := range int64(5) {
		msgs := []*message.Message{testMsg(0, round), testMsg(1, round), testMsg(2, round), testMsg(3, round)}
		var resA, resB []error
		done := make(chan struct{})
		go func() { resA = handleBatch(t, a, msgs...); close(done) }()
		resB = handleBatch(t, b, msgs...)
		<-done
		for i, err := range append(resA, resB...) {
			if err != nil && !errors.Is(err, exactlyonce.ErrPositionConflict) {
				t.Errorf("round %d, message %d: %v", round, i, err)
			}
		}
		// Whatever failed is redelivered: then it is skipped or applied, once.
		for _, h := range []*exactlyonce.BatchHandler{a, b} {
			for i, err := range handleBatch(t, h, msgs...) {
				if err != nil {
					t.Errorf("round %d, redelivered message %d: %v", round, i, err)
				}
			}
		}
	}
	rows := sinkCounts(t, pool)
	if len(rows) != 20 {
		t.Errorf("sink holds %d distinct messages, want 20", len(rows))
	}
	for id, n := range rows {
		if n != 1 {
			t.Errorf("sink holds %s %d times", id, n)
		}
	}
}

// packageGoroutines returns the stacks of the goroutines running a function whose name contains fn.
func packageGoroutines(fn string) []string {
	var out []string
	for _, g := range testutil.GoroutineStacks() {
		if strings.Contains(g, fn) {
			out = append(out, g)
		}
	}
	return out
}
