package watermark

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/watermill-sls/watermill-sls/internal/testutil"
)

// TestSkewSimulation runs 8 simulated shards, each a goroutine that fetches
// batches of events with increasing event times, 2 of them with 10x the
// events per event-time span (so 10x the fetches to cover the same time).
// Every shard calls Aligner.Wait before each fetch; MaxDrift is 30 s of event
// time. A sampler takes consistent snapshots of all shard watermarks and
// measures the spread between the fastest and the slowest unfinished shard:
// it must never exceed MaxDrift plus one batch's span. Every event must be
// observed and every shard must finish (no deadlock).
func TestSkewSimulation(t *testing.T) {
	for _, members := range []int{1, 2} {
		t.Run(fmt.Sprintf("members=%d", members), func(t *testing.T) {
			coord := NewInProcessCoordinator()
			span := testutil.SoakOr(600*time.Second, 6000*time.Second)
			runSkewSimulation(t, members, func(int) Coordinator { return coord }, 100*time.Millisecond, span)
		})
	}
}

// runSkewSimulation runs the simulation with the shards spread over members,
// member m reporting to coords(m) every interval, over span of event time.
func runSkewSimulation(t *testing.T, members int, coords func(m int) Coordinator, interval, span time.Duration) {
	const (
		shards     = 8
		maxDrift   = 30 * time.Second
		batch      = 50
		normalStep = 100 * time.Millisecond // event-time step of a normal shard
		denseStep  = normalStep / 10        // 10x the data per event-time span
		batchSpan  = batch * normalStep     // the widest batch
	)
	trackers := make([]*Tracker, members)
	aligners := make([]*Aligner, members)
	handles := make([]*Shard, shards)
	for m := range members {
		trackers[m] = newTracker(t, time.Minute)
		// A member adds the shards it starts with before it joins the group,
		// so its first report says pending, not released.
		for i := m; i < shards; i += members {
			handles[i] = mustAdd(t, trackers[m], i, time.Time{})
		}
		a, err := NewAligner(trackers[m], AlignerConfig{
			Group: "skew", Member: fmt.Sprintf("m%d", m), MaxDrift: maxDrift,
			UpdateInterval: interval, Coordinator: coords(m),
		}, nil)
		if err != nil {
			t.Fatal(err)
		}
		aligners[m] = a
		t.Cleanup(func() { _ = a.Close() })
		awaitReady(t, a) // every member has joined before the shards start
	}

	// The group is formed before the shards start: every member's view shows
	// every other member. (A member that joins later is anchored where the
	// group is when it joins: its older data is behind the others by more
	// than the bound, by design.)
	testutil.Poll(t, waitLong, "the group to form", func() (bool, string) {
		var b strings.Builder
		formed := true
		for m, a := range aligners {
			v, ok := a.View()
			formed = formed && ok && v.Members+v.Unanchored == members-1
			fmt.Fprintf(&b, "m%d: %+v %v\n", m, v, ok)
		}
		return formed, b.String()
	})
	var snap sync.RWMutex // shards observe under RLock; the sampler reads under Lock
	var observed [shards]atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, shards)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for i := range shards {
		wg.Add(1)
		step := normalStep
		if i < 2 {
			step = denseStep
		}
		go func() {
			defer wg.Done()
			a, sh := aligners[i%members], handles[i]
			for et := time.Duration(0); et < span; {
				if err := a.WaitShard(ctx, sh); err != nil {
					errs <- fmt.Errorf("shard %d at %v: %w", i, et, err)
					return
				}
				// Every shard starts at the same event time (as when reading
				// from a start time): the first event is at base.
				for k := 0; k < batch && et < span; k++ {
					snap.RLock()
					sh.Observe(at(et))
					snap.RUnlock()
					observed[i].Add(1)
					et += step
				}
			}
			snap.RLock()
			_, _, err := trackers[i%members].FinishShard(i)
			snap.RUnlock()
			if err != nil {
				errs <- err
			}
		}()
	}
	allDone := make(chan struct{})
	go func() { wg.Wait(); close(allDone) }()

	var maxSpread time.Duration
	samples := 0
	tick := time.NewTicker(200 * time.Microsecond)
	defer tick.Stop()
sampling:
	for {
		select {
		case <-allDone:
			break sampling
		case <-tick.C:
		}
		snap.Lock()
		lo, hi := int64(unconstrained), int64(none)
		for _, sh := range handles {
			w := sh.watermark()
			if sh.finished.Load() || w == none {
				continue
			}
			lo, hi = min(lo, w), max(hi, w)
		}
		snap.Unlock()
		if hi != none {
			maxSpread = max(maxSpread, time.Duration(hi-lo))
			samples++
		}
	}
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	var blocks int64
	for _, a := range aligners {
		blocks += a.Stats().Blocks
	}
	total := int64(0)
	for i := range shards {
		step := normalStep
		if i < 2 {
			step = denseStep
		}
		if got, want := observed[i].Load(), int64(span/step); got != want {
			t.Errorf("shard %d observed %d events, want %d", i, got, want)
		}
		total += observed[i].Load()
		if w, _ := handles[i].Watermark(); !w.Equal(at(span - step)) {
			t.Errorf("shard %d final watermark %v, want %v", i, w.Sub(base), span-step)
		}
	}
	t.Logf("members=%d: %d events over %v of event time, max spread %v (bound %v = MaxDrift %v + batch span %v) over %d samples, %d blocked fetches",
		members, total, span, maxSpread, maxDrift+batchSpan, maxDrift, batchSpan, samples, blocks)
	if maxSpread > maxDrift+batchSpan {
		t.Errorf("max spread %v exceeds MaxDrift + one batch span (%v)", maxSpread, maxDrift+batchSpan)
	}
	if samples == 0 || blocks == 0 {
		t.Errorf("the simulation did not exercise alignment: %d samples, %d blocked fetches", samples, blocks)
	}
}
