package watermark

import (
	"errors"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

func TestStrategyValidateNamesFields(t *testing.T) {
	err := Strategy{MaxOutOfOrderness: -1, IdleTimeout: -2}.Validate()
	if err == nil {
		t.Fatal("Validate accepted negative durations")
	}
	for _, field := range []string{"MaxOutOfOrderness", "IdleTimeout"} {
		if !strings.Contains(err.Error(), field) {
			t.Errorf("error %q does not name %s", err, field)
		}
	}
	if _, err := NewTracker(Strategy{IdleTimeout: -1}); err == nil {
		t.Error("NewTracker accepted an invalid strategy")
	}
	if err := (Strategy{}).Validate(); err != nil {
		t.Errorf("zero strategy (defaults) rejected: %v", err)
	}
}

func TestTrackerWatermarkIsMinOfMaxMinusBound(t *testing.T) {
	tr, _ := newManualTracker(t, Strategy{MaxOutOfOrderness: 5 * time.Second, IdleTimeout: time.Minute})
	a, b := mustAdd(t, tr, 0, time.Time{}), mustAdd(t, tr, 1, time.Time{})
	a.Observe(at(100 * time.Second))
	wantWM(t, tr, time.Time{}) // shard 1 pending
	b.Observe(at(40 * time.Second))
	wantWM(t, tr, at(35*time.Second))
	b.Observe(at(30 * time.Second)) // out of order: no effect
	wantWM(t, tr, at(35*time.Second))
	b.Observe(at(200 * time.Second))
	wantWM(t, tr, at(95*time.Second)) // shard 0 now holds
	if w, ok := b.Watermark(); !ok || !w.Equal(at(195*time.Second)) {
		t.Fatalf("shard 1 watermark = %v %v", w.Sub(base), ok)
	}
	if err := tr.Observe(7, at(0)); !errors.Is(err, ErrUnknownShard) {
		t.Fatalf("Observe(unknown) = %v", err)
	}
	if _, err := tr.AddShard(0, time.Time{}); !errors.Is(err, ErrShardExists) {
		t.Fatalf("AddShard(existing) = %v", err)
	}
}

func TestTrackerObserveMessage(t *testing.T) {
	tr, _ := newManualTracker(t, Strategy{EventTime: func(m *message.Message) (time.Time, error) {
		if m.Metadata.Get("t") == "" {
			return time.Time{}, errors.New("no t")
		}
		return time.Parse(time.RFC3339Nano, m.Metadata.Get("t"))
	}})
	mustAdd(t, tr, 3, time.Time{})
	msg := message.NewMessage("1", nil)
	msg.Metadata.Set("t", at(time.Second).Format(time.RFC3339Nano))
	if err := tr.ObserveMessage(3, msg); err != nil {
		t.Fatal(err)
	}
	wantWM(t, tr, at(time.Second))
	if err := tr.ObserveMessage(3, message.NewMessage("2", nil)); err == nil || !strings.Contains(err.Error(), "no t") {
		t.Fatalf("ObserveMessage without event time = %v", err)
	}
	noExtractor, _ := newManualTracker(t, Strategy{})
	mustAdd(t, noExtractor, 0, time.Time{})
	if err := noExtractor.ObserveMessage(0, msg); !errors.Is(err, ErrNoEventTime) {
		t.Fatalf("ObserveMessage without EventTime = %v", err)
	}
}

func TestTrackerIdleShardStopsHolding(t *testing.T) {
	tr, clock := newManualTracker(t, Strategy{IdleTimeout: 10 * time.Second})
	a, b := mustAdd(t, tr, 0, time.Time{}), mustAdd(t, tr, 1, time.Time{})
	a.Observe(at(10 * time.Second))
	b.Observe(at(50 * time.Second))
	wantWM(t, tr, at(10*time.Second))
	clock.advance(9 * time.Second)
	b.Observe(at(60 * time.Second))
	wantWM(t, tr, at(10*time.Second))
	clock.advance(time.Second) // shard 0: 10 s without an event
	wantWM(t, tr, at(60*time.Second))
	if st := a.State(); st != ShardIdle {
		t.Fatalf("shard 0 state %v, want idle", st)
	}
	// Every shard idle: no constraint for the group, and the watermark stays.
	clock.advance(10 * time.Second)
	wantAlign(t, tr, time.Time{})
	wantWM(t, tr, at(60*time.Second))
}

// Paused time (alignment, back-pressure) never counts toward idleness
// (FLINK-35886, FLINK-40093).
func TestTrackerPausedTimeIsNotIdleTime(t *testing.T) {
	tr, clock := newManualTracker(t, Strategy{IdleTimeout: 10 * time.Second})
	a, b := mustAdd(t, tr, 0, time.Time{}), mustAdd(t, tr, 1, time.Time{})
	a.Observe(at(10 * time.Second))
	b.Observe(at(100 * time.Second))
	clock.advance(5 * time.Second)
	b.Pause()
	clock.advance(time.Hour)
	a.Observe(at(20 * time.Second))
	if st := b.State(); st != ShardPaused {
		t.Fatalf("paused shard state %v, want paused", st)
	}
	b.Pause() // nested
	b.Resume()
	if st := b.State(); st != ShardPaused {
		t.Fatalf("shard with one pause left: state %v, want paused", st)
	}
	b.Resume()
	// After the pause the shard has a full IdleTimeout again.
	clock.advance(10*time.Second - time.Nanosecond)
	a.Observe(at(30 * time.Second))
	if st := b.State(); st != ShardActive {
		t.Fatalf("resumed shard state %v, want active", st)
	}
	wantAlign(t, tr, at(30*time.Second))
	clock.advance(time.Nanosecond)
	if st := b.State(); st != ShardIdle {
		t.Fatalf("state %v after IdleTimeout of unpaused time, want idle", st)
	}
}

// A shard that was idle comes back at no lower than the tracker's watermark:
// it must not pull the watermark back nor stall its siblings for events that
// are late anyway.
func TestTrackerIdleShardReactivatesAtTrackerWatermark(t *testing.T) {
	tr, clock := newManualTracker(t, Strategy{IdleTimeout: 10 * time.Second})
	a, b := mustAdd(t, tr, 0, time.Time{}), mustAdd(t, tr, 1, time.Time{})
	a.Observe(at(10 * time.Second))
	b.Observe(at(10 * time.Second))
	clock.advance(11 * time.Second)
	a.Observe(at(500 * time.Second))
	wantWM(t, tr, at(500*time.Second))
	b.Observe(at(20 * time.Second))
	if w, _ := b.Watermark(); !w.Equal(at(500 * time.Second)) {
		t.Fatalf("reactivated shard watermark %v, want the tracker's 500s", w.Sub(base))
	}
	wantAlign(t, tr, at(500*time.Second))
	b.Observe(at(600 * time.Second))
	a.Observe(at(700 * time.Second))
	wantWM(t, tr, at(600*time.Second))
}

// A shard added while the tracker has a watermark holds the tracker there
// until its first event, and at most IdleTimeout.
func TestTrackerNewShardHoldsAtCreationWatermark(t *testing.T) {
	tr, clock := newManualTracker(t, Strategy{IdleTimeout: 10 * time.Second})
	a := mustAdd(t, tr, 0, time.Time{})
	a.Observe(at(100 * time.Second))
	c := mustAdd(t, tr, 1, time.Time{})
	if w, ok := c.Watermark(); !ok || !w.Equal(at(100*time.Second)) {
		t.Fatalf("new shard watermark %v %v, want 100s", w.Sub(base), ok)
	}
	a.Observe(at(300 * time.Second))
	wantWM(t, tr, at(100*time.Second))
	wantAlign(t, tr, at(100*time.Second))
	clock.advance(10 * time.Second) // no event: idle, released
	a.Observe(at(301 * time.Second))
	wantWM(t, tr, at(301*time.Second))

	// When it emits before the timeout, it holds at its own watermark.
	d := mustAdd(t, tr, 2, time.Time{})
	a.Observe(at(400 * time.Second))
	wantWM(t, tr, at(301*time.Second))
	d.Observe(at(350 * time.Second))
	wantWM(t, tr, at(350*time.Second))
}

// A split's children start at their parent's final watermark; a finished
// shard leaves the minimum.
func TestTrackerSplitAndFinish(t *testing.T) {
	tr, _ := newManualTracker(t, Strategy{IdleTimeout: time.Minute})
	parent, other := mustAdd(t, tr, 0, time.Time{}), mustAdd(t, tr, 1, time.Time{})
	parent.Observe(at(50 * time.Second))
	other.Observe(at(200 * time.Second))
	wantWM(t, tr, at(50*time.Second))
	final, ok, err := tr.FinishShard(0)
	if err != nil || !ok || !final.Equal(at(50*time.Second)) {
		t.Fatalf("FinishShard = %v %v %v", final.Sub(base), ok, err)
	}
	wantWM(t, tr, at(200*time.Second))
	// Children of a split start at the parent's final watermark: they hold
	// the alignment minimum there until they emit.
	c1, c2 := mustAdd(t, tr, 2, final), mustAdd(t, tr, 3, final)
	wantAlign(t, tr, at(50*time.Second))
	wantWM(t, tr, at(200*time.Second)) // the tracker's watermark never goes back
	c1.Observe(at(60 * time.Second))
	c2.Observe(at(250 * time.Second))
	wantAlign(t, tr, at(60*time.Second))
	parent.Observe(at(9999 * time.Second)) // ignored: finished
	if st := parent.State(); st != ShardFinished {
		t.Fatalf("finished shard state %v", st)
	}
	for _, id := range []int{1, 2, 3} {
		if _, _, err := tr.FinishShard(id); err != nil {
			t.Fatal(err)
		}
	}
	wantAlign(t, tr, time.Time{}) // all finished: no constraint
	if err := tr.RemoveShard(2); err != nil {
		t.Fatal(err)
	}
	if tr.Shard(2) != nil || len(tr.Shards()) != 3 {
		t.Fatalf("after RemoveShard: %+v", tr.Shards())
	}
	if _, _, err := tr.FinishShard(2); !errors.Is(err, ErrUnknownShard) {
		t.Fatalf("FinishShard(removed) = %v", err)
	}
}

// At start no shard has a watermark. A pending shard keeps the tracker's
// watermark undefined (no event is made late by a slow start) and, for
// alignment, is anchored at the first watermark a sibling reaches.
func TestTrackerPendingShardAtStart(t *testing.T) {
	tr, clock := newManualTracker(t, Strategy{IdleTimeout: 10 * time.Second})
	a, b := mustAdd(t, tr, 0, time.Time{}), mustAdd(t, tr, 1, time.Time{})
	wantAlign(t, tr, time.Time{})
	if st := b.State(); st != ShardPending {
		t.Fatalf("state %v, want pending", st)
	}
	a.Observe(at(100 * time.Second))
	wantWM(t, tr, time.Time{})
	wantAlign(t, tr, at(100*time.Second))
	a.Observe(at(500 * time.Second))
	wantAlign(t, tr, at(100*time.Second)) // anchored: shard 0 cannot run away
	b.Observe(at(20 * time.Second))       // older data than the anchor: it is the minimum now
	wantWM(t, tr, at(20*time.Second))
	wantAlign(t, tr, at(20*time.Second))

	// A pending shard that never emits is released after IdleTimeout.
	tr2, clock2 := newManualTracker(t, Strategy{IdleTimeout: 10 * time.Second})
	x := mustAdd(t, tr2, 0, time.Time{})
	mustAdd(t, tr2, 1, time.Time{})
	x.Observe(at(100 * time.Second))
	clock2.advance(10 * time.Second)
	x.Observe(at(110 * time.Second))
	wantWM(t, tr2, at(110*time.Second))
	wantAlign(t, tr2, at(110*time.Second))
	_ = clock
}

// Observe from many goroutines must leave the cached minimum exact: the
// recompute race (a shard advancing while another shard's recompute read it)
// must not leave a stale minimum behind.
func TestTrackerConcurrentObserveKeepsMinimumExact(t *testing.T) {
	tr, err := NewTracker(Strategy{IdleTimeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	const shards, events = 8, 3000
	for i := range shards {
		mustAdd(t, tr, i, time.Time{})
	}
	var wg sync.WaitGroup
	maxes := make([]time.Time, shards)
	for i := range shards {
		wg.Add(2)
		obs := func(seed uint64) {
			defer wg.Done()
			r := rand.New(rand.NewPCG(seed, uint64(i)))
			for range events {
				et := at(time.Duration(r.IntN(1_000_000)) * time.Millisecond)
				if err := tr.Observe(i, et); err != nil {
					t.Error(err)
					return
				}
			}
		}
		go obs(1)
		go obs(2)
	}
	wg.Wait()
	for i := range shards {
		maxes[i], _ = tr.Shard(i).Watermark()
	}
	lowest := maxes[0]
	for _, m := range maxes {
		if m.Before(lowest) {
			lowest = m
		}
	}
	// No further Observe or recompute: the cached values must already be right.
	if got := tr.partial.Load(); got != lowest.UnixNano() {
		t.Fatalf("cached minimum %v, want %v", time.Unix(0, got).Sub(base), lowest.Sub(base))
	}
	if got := tr.emitted.Load(); got != lowest.UnixNano() {
		t.Fatalf("watermark %v, want %v", time.Unix(0, got).Sub(base), lowest.Sub(base))
	}
}

func TestMessageWatermarkMetadata(t *testing.T) {
	msg := message.NewMessage("1", nil)
	if _, ok := FromMessage(msg); ok {
		t.Fatal("FromMessage on a message without watermark reported one")
	}
	wm := time.Unix(1700000000, 123456789)
	SetOnMessage(msg, wm)
	if got := msg.Metadata.Get(MetadataKey); got != "1700000000123456789" {
		t.Fatalf("metadata %q", got)
	}
	if got, ok := FromMessage(msg); !ok || !got.Equal(wm) {
		t.Fatalf("FromMessage = %v %v", got, ok)
	}
	msg.Metadata.Set(MetadataKey, "yesterday")
	if _, ok := FromMessage(msg); ok {
		t.Fatal("FromMessage accepted a malformed value")
	}
	if _, ok := FromMessage(nil); ok {
		t.Fatal("FromMessage(nil) reported a watermark")
	}

	tr, _ := newManualTracker(t, Strategy{})
	s := mustAdd(t, tr, 0, time.Time{})
	plain := &message.Message{}
	SetOnMessage(plain, time.Unix(1, 0)) // from elsewhere
	tr.Stamp(plain)
	if _, ok := FromMessage(plain); ok {
		t.Fatal("Stamp without a tracker watermark left one on the message")
	}
	s.Observe(wm)
	tr.Stamp(plain)
	if got, ok := FromMessage(plain); !ok || !got.Equal(wm) {
		t.Fatalf("stamped watermark = %v %v", got, ok)
	}
}

func TestTrackerShardsStatus(t *testing.T) {
	tr, clock := newManualTracker(t, Strategy{IdleTimeout: 10 * time.Second})
	for _, id := range []int{4, 1, 3, 2} {
		mustAdd(t, tr, id, time.Time{})
	}
	tr.Shard(1).Observe(at(time.Second))
	tr.Shard(2).Pause()
	if _, _, err := tr.FinishShard(3); err != nil {
		t.Fatal(err)
	}
	clock.advance(5 * time.Second)
	tr.Shard(4).Observe(at(2 * time.Second))
	clock.advance(5 * time.Second)
	got := tr.Shards()
	want := []ShardState{ShardIdle, ShardPaused, ShardFinished, ShardActive}
	for i, st := range got {
		if st.ID != i+1 || st.State != want[i] {
			t.Fatalf("Shards() = %+v, want states %v", got, want)
		}
	}
	if w, ok, err := tr.ShardWatermark(4); err != nil || !ok || !w.Equal(at(2*time.Second)) {
		t.Fatalf("ShardWatermark(4) = %v %v %v", w, ok, err)
	}
}
