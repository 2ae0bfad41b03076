package exactlyonce_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/watermill-sls/watermill-sls/exactlyonce"
)

// bulkSink is a BulkFunc that copies the payloads of its set into sink with COPY, counts how often each
// message was passed, records each call's set, and fails a set that holds a message marked to fail (after the
// copy: its rows must roll back) or breaks the commit for a message with metadata "commitfail".
type bulkSink struct {
	mu    sync.Mutex
	calls map[string]int
	sets  [][]string
	fail  map[string]bool
}

func newBulkSink() *bulkSink {
	return &bulkSink{calls: map[string]int{}, fail: map[string]bool{}}
}

func (s *bulkSink) setFail(id string, fail bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail[id] = fail
}

func (s *bulkSink) count(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[id]
}

func (s *bulkSink) handle(ctx context.Context, tx pgx.Tx, msgs []*message.Message) error {
	ids := make([]string, len(msgs))
	rows := make([][]any, len(msgs))
	var failed []string
	s.mu.Lock()
	for i, m := range msgs {
		ids[i] = string(m.Payload)
		rows[i] = []any{ids[i]}
		s.calls[ids[i]]++
		if s.fail[ids[i]] {
			failed = append(failed, ids[i])
		}
	}
	s.sets = append(s.sets, ids)
	s.mu.Unlock()
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"sink"}, []string{"id"}, pgx.CopyFromRows(rows)); err != nil {
		return err
	}
	for _, m := range msgs {
		if m.Metadata.Get("commitfail") != "" {
			if _, err := tx.Exec(ctx, `INSERT INTO deferred (id) VALUES (1), (1)`); err != nil {
				return err
			}
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("messages %v: %w", failed, errScripted)
	}
	return nil
}

func newBulkHandler(t testing.TB, store *exactlyonce.Store, size int, fn exactlyonce.BulkFunc) *exactlyonce.BatchHandler {
	t.Helper()
	h, err := exactlyonce.NewBulkHandler(store, exactlyonce.BatchConfig{
		HandlerConfig: exactlyonce.HandlerConfig{Consumer: "c", Position: testPosition},
		MaxBatch:      size,
		MaxWait:       time.Minute, // a batch is applied when it holds exactly size messages
	}, fn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	return h
}

// The set function sees only messages not applied before, each partition's in position order, once; messages
// redelivered after their commit are acked without reaching it.
func TestBulkHandlerAppliesOnceAcrossRedelivery(t *testing.T) {
	store, pool := newStore(t)
	sink := newBulkSink()
	h := newBulkHandler(t, store, 6, sink.handle)
	// Out of order and with a duplicate in the batch.
	for i, err := range handleBatch(t, h, testMsg(1, 2), testMsg(0, 2), testMsg(0, 1), testMsg(1, 1), testMsg(0, 3), testMsg(0, 2)) {
		if err != nil {
			t.Errorf("message %d: %v", i, err)
		}
	}
	if len(sink.sets) != 1 {
		t.Fatalf("bulk function called %d times for one batch without failures, want 1", len(sink.sets))
	}
	if got, want := sink.sets[0], []string{"0/1", "0/2", "0/3", "1/1", "1/2"}; !slices.Equal(got, want) {
		t.Errorf("set %v, want %v (each partition in position order, duplicate once)", got, want)
	}
	// Redelivery of everything plus new messages: only the new ones reach the function.
	res := handleBatch(t, h, testMsg(0, 1), testMsg(0, 2), testMsg(0, 3), testMsg(1, 2), testMsg(1, 3), testMsg(2, 1))
	for i, err := range res {
		if err != nil {
			t.Errorf("redelivered batch, message %d: %v", i, err)
		}
	}
	if got, want := sink.sets[1], []string{"1/3", "2/1"}; !slices.Equal(got, want) {
		t.Errorf("set after redelivery %v, want %v", got, want)
	}
	// A batch of applied messages only does not call the function.
	for _, err := range handleBatch(t, h, batchOf(0, 1, 2, 3, 1, 2, 3)...) {
		if err != nil {
			t.Error(err)
		}
	}
	if len(sink.sets) != 2 {
		t.Errorf("bulk function called for a batch of applied messages: %v", sink.sets[2:])
	}
	for id, n := range sinkCounts(t, pool) {
		if n != 1 {
			t.Errorf("sink holds %s %d times", id, n)
		}
	}
	wantStored(t, store, "c", 0, 3)
	wantStored(t, store, "c", 1, 3)
	wantStored(t, store, "c", 2, 1)
}

// Invariant 1 for the set function: when it fails on message k of a partition, nothing after k in that
// partition commits, everything before k and every other partition does, and k and its followers are refused
// until k is applied. Random poison messages over random batches, checked against the rule.
func TestBulkHandlerFailureBlocksOnlyItsPartition(t *testing.T) {
	for seed := range uint64(6) {
		t.Run(strconv.FormatUint(seed, 10), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 7))
			store, pool := newStore(t)
			sink := newBulkSink()
			const parts, perPart = 4, 8
			// Some partitions get a poison message at a random offset (1..perPart), some none.
			poison := map[int]int64{}
			for p := range parts {
				if rng.IntN(3) > 0 {
					poison[p] = 1 + rng.Int64N(perPart)
					sink.setFail(fmt.Sprintf("%d/%d", p, poison[p]), true)
				}
			}
			var msgs []*message.Message
			for p := range parts {
				for o := int64(1); o <= perPart; o++ {
					msgs = append(msgs, testMsg(p, o))
				}
			}
			rng.Shuffle(len(msgs), func(i, j int) { msgs[i], msgs[j] = msgs[j], msgs[i] })
			fill := filler(99)
			h := newBulkHandler(t, store, 64, sink.handle)
			res := handleBatch(t, h, fill(msgs, 64)...)
			for i, m := range msgs {
				p, _ := strconv.Atoi(m.Metadata.Get("p"))
				o, _ := strconv.ParseInt(m.Metadata.Get("o"), 10, 64)
				k, hasPoison := poison[p]
				switch {
				case !hasPoison || o < k:
					if res[i] != nil {
						t.Errorf("%d/%d before any failure of its partition: %v", p, o, res[i])
					}
				case o == k:
					if !errors.Is(res[i], errScripted) {
						t.Errorf("poison %d/%d: %v, want the function's error", p, o, res[i])
					}
				default:
					if !errors.Is(res[i], exactlyonce.ErrPartitionBlocked) {
						t.Errorf("%d/%d after poison %d/%d: %v, want ErrPartitionBlocked", p, o, p, k, res[i])
					}
				}
			}
			rows := sinkCounts(t, pool)
			for p := range parts {
				k, hasPoison := poison[p]
				for o := int64(1); o <= perPart; o++ {
					id := fmt.Sprintf("%d/%d", p, o)
					want := 1
					if hasPoison && o >= k {
						want = 0
					}
					if rows[id] != want {
						t.Errorf("sink holds %s %d times, want %d (poison of partition %d: %v)", id, rows[id], want, p, poison[p])
					}
				}
				switch last := int64(perPart); {
				case !hasPoison:
					wantStored(t, store, "c", int32(p), last)
				case k == 1:
					wantStored(t, store, "c", int32(p), -1)
				default:
					wantStored(t, store, "c", int32(p), k-1)
				}
			}
			// The failure is found by bisection: a bounded number of calls, not one per message.
			if n := len(sink.sets); n > 1+2*len(poison)*6+2 {
				t.Errorf("%d calls of the function for %d poison messages in %d", n, len(poison), len(msgs))
			}

			// A later batch without the poison messages stays blocked behind them; other partitions go on.
			var later []*message.Message
			for p := range parts {
				later = append(later, testMsg(p, perPart+1))
			}
			res = handleBatch(t, h, fill(later, 64)...)
			for p := range parts {
				if _, hasPoison := poison[p]; hasPoison != errors.Is(res[p], exactlyonce.ErrPartitionBlocked) {
					t.Errorf("%d/%d in a later batch (poison %v): %v", p, perPart+1, hasPoison, res[p])
				}
			}
			// Redelivered and fixed, the poison messages and their followers apply once; the rest is skipped.
			for id := range sink.fail {
				sink.setFail(id, false)
			}
			var again []*message.Message
			for p := range parts {
				for o := int64(1); o <= perPart+1; o++ {
					again = append(again, testMsg(p, o))
				}
			}
			for i, err := range handleBatch(t, h, fill(again, 64)...) {
				if err != nil {
					t.Errorf("redelivery, message %d: %v", i, err)
				}
			}
			rows = sinkCounts(t, pool)
			for p := range parts {
				for o := int64(1); o <= perPart+1; o++ {
					if id := fmt.Sprintf("%d/%d", p, o); rows[id] != 1 {
						t.Errorf("after redelivery the sink holds %s %d times, want 1", id, rows[id])
					}
				}
			}
			for id, n := range rows {
				if n != 1 {
					t.Errorf("sink holds %s %d times", id, n)
				}
			}
		})
	}
}

// filler returns a function that pads a batch to size with messages of partition p at ever higher offsets.
func filler(p int) func([]*message.Message, int) []*message.Message {
	var next int64
	return func(msgs []*message.Message, size int) []*message.Message {
		out := slices.Clone(msgs)
		for len(out) < size {
			next++
			out = append(out, testMsg(p, next))
		}
		return out
	}
}

// A failed commit fails every message of the batch and stores nothing, and the partitions of the batch stay
// blocked at their first message until it is applied.
func TestBulkHandlerCommitFailureFailsAll(t *testing.T) {
	store, pool := newStore(t)
	createDeferred(t, pool)
	sink := newBulkSink()
	h := newBulkHandler(t, store, 4, sink.handle)
	bad := testMsg(1, 1)
	bad.Metadata.Set("commitfail", "1")
	wantFailedCommit(t, store, pool, 3, handleBatch(t, h, testMsg(0, 1), testMsg(0, 2), bad, testMsg(2, 1))...)
	for i, err := range handleBatch(t, h, testMsg(0, 3), testMsg(1, 2), testMsg(2, 2), testMsg(3, 1)) {
		if blocked := errors.Is(err, exactlyonce.ErrPartitionBlocked); blocked != (i < 3) {
			t.Errorf("message %d after the failed commit: %v (want blocked: %v)", i, err, i < 3)
		}
	}
	for i, err := range handleBatch(t, h, testMsg(0, 1), testMsg(0, 2), testMsg(0, 3), testMsg(1, 1)) {
		if err != nil {
			t.Errorf("redelivery, message %d: %v", i, err)
		}
	}
	wantStored(t, store, "c", 0, 3)
	wantStored(t, store, "c", 1, 1)
	wantStored(t, store, "c", 3, 1)
}

// A handler remembers the stored positions its batches left and plans the next batch without reading them;
// when another consumer applied the partition meanwhile (a rebalance), the remembered position is stale and
// the batch must fail instead of applying those messages a second time. Redelivered, they are skipped.
func TestBatchHandlersStaleStoredPosition(t *testing.T) {
	for _, bulk := range []bool{false, true} {
		t.Run(map[bool]string{false: "each", true: "bulk"}[bulk], func(t *testing.T) {
			store, pool := newStore(t)
			newHandler := func(size int) *exactlyonce.BatchHandler {
				if bulk {
					return newBulkHandler(t, store, size, newBulkSink().handle)
				}
				return newBatchHandler(t, store, size, insertSink)
			}
			a, b := newHandler(3), newHandler(2)
			for _, err := range handleBatch(t, a, batchOf(0, 1, 2, 3)...) {
				if err != nil {
					t.Fatal(err)
				}
			}
			// Another consumer takes over and applies 4 and 5.
			for _, err := range handleBatch(t, b, batchOf(0, 4, 5)...) {
				if err != nil {
					t.Fatal(err)
				}
			}
			// The first one, still remembering 3, gets 4..6.
			for i, err := range handleBatch(t, a, batchOf(0, 4, 5, 6)...) {
				if !errors.Is(err, exactlyonce.ErrPositionConflict) {
					t.Errorf("message %d with a stale position: %v, want ErrPositionConflict", i, err)
				}
			}
			for i, err := range handleBatch(t, a, batchOf(0, 4, 5, 6)...) {
				if err != nil {
					t.Errorf("redelivered message %d: %v", i, err)
				}
			}
			wantStored(t, store, "c", 0, 6)
			rows := sinkCounts(t, pool)
			for o := 1; o <= 6; o++ {
				if id := fmt.Sprintf("0/%d", o); rows[id] != 1 {
					t.Errorf("sink holds %s %d times, want 1", id, rows[id])
				}
			}
		})
	}
}
