package watermark

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/watermill-sls/watermill-sls/internal/testutil"
)

const (
	drift    = 10 * time.Second
	noTick   = time.Hour // an UpdateInterval that never elapses in a test: only signals can wake
	waitLong = 10 * time.Second
)

func newTracker(t *testing.T, idle time.Duration, ids ...int) *Tracker {
	t.Helper()
	tr, err := NewTracker(Strategy{IdleTimeout: idle})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		mustAdd(t, tr, id, time.Time{})
	}
	return tr
}

func newAligner(t *testing.T, tr *Tracker, coord Coordinator, member string, interval time.Duration) *Aligner {
	t.Helper()
	a, err := NewAligner(tr, AlignerConfig{
		Group: "g", Member: member, MaxDrift: drift, UpdateInterval: interval, Coordinator: coord,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := a.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	awaitReady(t, a)
	return a
}

// awaitReady waits for the Aligner's first report.
func awaitReady(t *testing.T, a *Aligner) {
	t.Helper()
	select {
	case <-a.ready:
	case <-time.After(waitLong):
		t.Fatal("no first report")
	}
}

// awaitBlockedByGroup polls until the other members' reports, as a sees them,
// put the group minimum at base (where every test's slow member is) and so
// block shard id.
func awaitBlockedByGroup(t *testing.T, a *Aligner, id int) {
	t.Helper()
	testutil.Poll(t, waitLong, "the group's report to block the shard", func() (bool, string) {
		m, ok := a.GroupMin()
		return ok && m.Equal(base) && !allowed(t, a, id), fmt.Sprintf("group minimum %v %v", m.Sub(base), ok)
	})
}

func allowed(t *testing.T, a *Aligner, id int) bool {
	t.Helper()
	ok, err := a.Allowed(id)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

// waitAsync runs Wait in a goroutine; the channel gets its result.
func waitAsync(ctx context.Context, a *Aligner, id int) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- a.Wait(ctx, id) }()
	return ch
}

func expectBlocked(t *testing.T, a *Aligner, want int) {
	t.Helper()
	testutil.Poll(t, waitLong, "blocked shards", func() (bool, string) {
		st := a.Stats()
		return st.Blocked == want, fmt.Sprintf("blocked=%d", st.Blocked)
	})
}

func expectReturn(t *testing.T, ch <-chan error, want error) {
	t.Helper()
	select {
	case err := <-ch:
		if !errors.Is(err, want) && !(want == nil && err == nil) {
			t.Fatalf("Wait returned %v, want %v", err, want)
		}
	case <-time.After(waitLong):
		t.Fatalf("Wait did not return within %v", waitLong)
	}
}

func TestAlignerConfigValidateNamesFields(t *testing.T) {
	err := AlignerConfig{MaxDrift: -1, UpdateInterval: -1}.Validate()
	for _, field := range []string{"Group", "MaxDrift", "UpdateInterval", "Coordinator"} {
		if err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("Validate error %v does not name %s", err, field)
		}
	}
	tr := newTracker(t, time.Minute)
	a := newAligner(t, tr, NewInProcessCoordinator(), "", noTick)
	if !strings.HasPrefix(a.Member(), "member-") {
		t.Errorf("default member name %q", a.Member())
	}
	if _, err := NewAligner(tr, AlignerConfig{Group: "g", MaxDrift: drift, Coordinator: NewInProcessCoordinator()}, nil); err == nil {
		t.Error("a second Aligner on one Tracker was accepted")
	}
}

// Within one member, a shard ahead blocks and resumes as soon as its sibling
// catches up: the change is signalled, no tick is awaited.
func TestAlignerBlocksShardAheadAndResumesOnSignal(t *testing.T) {
	tr := newTracker(t, time.Minute, 0, 1)
	a := newAligner(t, tr, NewInProcessCoordinator(), "m", noTick)
	fast, slow := tr.Shard(0), tr.Shard(1)
	slow.Observe(at(0))
	fast.Observe(at(drift))
	if !allowed(t, a, 0) {
		t.Fatal("shard exactly MaxDrift ahead was blocked")
	}
	fast.Observe(at(drift + time.Nanosecond))
	if allowed(t, a, 0) || !allowed(t, a, 1) {
		t.Fatal("shard more than MaxDrift ahead was allowed, or the slowest was blocked")
	}
	if l, ok := a.Limit(); !ok || !l.Equal(at(drift)) {
		t.Fatalf("Limit = %v %v", l.Sub(base), ok)
	}
	done := waitAsync(context.Background(), a, 0)
	expectBlocked(t, a, 1)
	if st := fast.State(); st != ShardPaused {
		t.Fatalf("blocked shard state %v, want paused", st)
	}
	slow.Observe(at(time.Nanosecond))
	expectReturn(t, done, nil)
	if st := fast.State(); st != ShardActive {
		t.Fatalf("resumed shard state %v", st)
	}
}

// Catch-up is not throttled to MaxDrift per update interval (FLINK-37399): when
// another member's minimum jumps far ahead in one report, the blocked shard
// resumes at once, with no tick in between.
func TestAlignerCatchUpIsNotThrottled(t *testing.T) {
	coord := NewInProcessCoordinator()
	trA, trB := newTracker(t, time.Minute, 0), newTracker(t, time.Minute, 0)
	a := newAligner(t, trA, coord, "a", noTick)
	newAligner(t, trB, coord, "b", noTick)
	trB.Shard(0).Observe(at(0))
	trA.Shard(0).Observe(at(100 * drift))
	awaitBlockedByGroup(t, a, 0)
	done := waitAsync(context.Background(), a, 0)
	expectBlocked(t, a, 1)
	trB.Shard(0).Observe(at(100 * drift)) // one jump of 100 x MaxDrift
	expectReturn(t, done, nil)
	if l, ok := a.Limit(); !ok || !l.Equal(at(101*drift)) {
		t.Fatalf("limit after the jump %v, want 101 x MaxDrift", l.Sub(base))
	}
	if r := a.Stats().Reports; r > 10 {
		t.Fatalf("%d reports: the resume came from polling, not a signal", r)
	}
}

func TestAlignerWaitEndsWithContextAndClose(t *testing.T) {
	tr := newTracker(t, time.Minute, 0, 1)
	a, err := NewAligner(tr, AlignerConfig{Group: "g", MaxDrift: drift, UpdateInterval: noTick, Coordinator: NewInProcessCoordinator()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	tr.Shard(1).Observe(at(0))
	tr.Shard(0).Observe(at(2 * drift))
	ctx, cancel := context.WithCancel(context.Background())
	done := waitAsync(ctx, a, 0)
	expectBlocked(t, a, 1)
	cancel()
	expectReturn(t, done, context.Canceled)
	if st := tr.Shard(0).State(); st == ShardPaused {
		t.Fatal("shard still paused after Wait returned")
	}
	done = waitAsync(context.Background(), a, 0)
	expectBlocked(t, a, 1)
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	expectReturn(t, done, ErrClosed)
	if err := a.Wait(context.Background(), 9); !errors.Is(err, ErrUnknownShard) {
		t.Fatalf("Wait(unknown) = %v", err)
	}
	// The tracker can get a new Aligner once the old one is closed.
	b, err := NewAligner(tr, AlignerConfig{Group: "g", MaxDrift: drift, Coordinator: NewInProcessCoordinator()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
}

// The no-deadlock cases from Flink's bug list: none of them may leave a shard
// blocked forever.
func TestAlignerNoDeadlock(t *testing.T) {
	t.Run("empty group", func(t *testing.T) {
		tr := newTracker(t, time.Minute)
		a := newAligner(t, tr, NewInProcessCoordinator(), "m", noTick)
		if _, ok := a.Limit(); ok {
			t.Fatal("a group with no watermark has a limit")
		}
		mustAdd(t, tr, 0, time.Time{})
		if err := a.Wait(context.Background(), 0); err != nil { // pending: never blocked
			t.Fatal(err)
		}
	})
	t.Run("group of one shard", func(t *testing.T) {
		tr := newTracker(t, time.Minute, 0)
		a := newAligner(t, tr, NewInProcessCoordinator(), "m", noTick)
		tr.Shard(0).Observe(at(1000 * drift))
		if err := a.Wait(context.Background(), 0); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("slowest shard goes idle", func(t *testing.T) { // FLINK-32496
		tr := newTracker(t, 200*time.Millisecond, 0, 1)
		a := newAligner(t, tr, NewInProcessCoordinator(), "m", noTick)
		tr.Shard(1).Observe(at(0))
		tr.Shard(0).Observe(at(3 * drift))
		expectReturn(t, waitAsync(context.Background(), a, 0), nil) // shard 1 idle after 200 ms
		if st := tr.Shard(1).State(); st != ShardIdle {
			t.Fatalf("slow shard state %v, want idle", st)
		}
	})
	t.Run("all other members idle", func(t *testing.T) {
		coord := NewInProcessCoordinator()
		trA, trB := newTracker(t, time.Minute, 0), newTracker(t, 200*time.Millisecond, 0, 1)
		a := newAligner(t, trA, coord, "a", noTick)
		newAligner(t, trB, coord, "b", noTick)
		trB.Shard(0).Observe(at(0))
		trB.Shard(1).Observe(at(0))
		trA.Shard(0).Observe(at(5 * drift))
		expectReturn(t, waitAsync(context.Background(), a, 0), nil)
	})
	t.Run("other member finished", func(t *testing.T) { // FLINK-37670
		coord := NewInProcessCoordinator()
		trA, trB := newTracker(t, time.Minute, 0), newTracker(t, time.Minute, 0)
		a := newAligner(t, trA, coord, "a", noTick)
		newAligner(t, trB, coord, "b", noTick)
		trB.Shard(0).Observe(at(0))
		trA.Shard(0).Observe(at(5 * drift))
		awaitBlockedByGroup(t, a, 0)
		done := waitAsync(context.Background(), a, 0)
		expectBlocked(t, a, 1)
		if _, _, err := trB.FinishShard(0); err != nil {
			t.Fatal(err)
		}
		expectReturn(t, done, nil)
	})
	t.Run("member left", func(t *testing.T) {
		coord := NewInProcessCoordinator()
		trA, trB := newTracker(t, time.Minute, 0), newTracker(t, time.Minute, 0)
		a := newAligner(t, trA, coord, "a", noTick)
		b, err := NewAligner(trB, AlignerConfig{Group: "g", Member: "b", MaxDrift: drift, UpdateInterval: noTick, Coordinator: coord}, nil)
		if err != nil {
			t.Fatal(err)
		}
		awaitReady(t, b)
		trB.Shard(0).Observe(at(0))
		trA.Shard(0).Observe(at(5 * drift))
		awaitBlockedByGroup(t, a, 0)
		done := waitAsync(context.Background(), a, 0)
		expectBlocked(t, a, 1)
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
		expectReturn(t, done, nil)
	})
	t.Run("blocked longer than the idle timeout", func(t *testing.T) { // FLINK-35886, FLINK-40093
		tr := newTracker(t, 100*time.Millisecond, 0, 1)
		a := newAligner(t, tr, NewInProcessCoordinator(), "m", noTick)
		fast, slow := tr.Shard(0), tr.Shard(1)
		slow.Observe(at(0))
		fast.Observe(at(3 * drift))
		done := waitAsync(context.Background(), a, 0)
		expectBlocked(t, a, 1)
		// Keep the slow shard busy well past the idle timeout: the blocked
		// shard must stay paused (holding, not idle) and the slow one active.
		deadline := time.Now().Add(500 * time.Millisecond)
		pace := time.NewTicker(5 * time.Millisecond) // the slow shard's event rate
		defer pace.Stop()
		for i := 1; time.Now().Before(deadline); i++ {
			slow.Observe(at(time.Duration(i) * time.Microsecond))
			if st := fast.State(); st != ShardPaused {
				t.Fatalf("blocked shard state %v, want paused", st)
			}
			<-pace.C
		}
		slow.Observe(at(2*drift + time.Second))
		expectReturn(t, done, nil)
	})
	t.Run("restarted member without watermark", func(t *testing.T) {
		coord := NewInProcessCoordinator()
		trA := newTracker(t, time.Minute, 0)
		a := newAligner(t, trA, coord, "a", noTick)
		trOld := newTracker(t, time.Minute, 0)
		old, err := NewAligner(trOld, AlignerConfig{Group: "g", Member: "b", MaxDrift: drift, UpdateInterval: noTick, Coordinator: coord}, nil)
		if err != nil {
			t.Fatal(err)
		}
		awaitReady(t, old)
		trOld.Shard(0).Observe(at(0))
		trA.Shard(0).Observe(at(5 * drift))
		awaitBlockedByGroup(t, a, 0)
		done := waitAsync(context.Background(), a, 0)
		expectBlocked(t, a, 1)
		// b restarts under the same name: it has no watermark, so it holds
		// nothing and a resumes at once.
		if err := old.Close(); err != nil {
			t.Fatal(err)
		}
		trNew := newTracker(t, time.Minute, 0)
		b := newAligner(t, trNew, coord, "b", noTick)
		expectReturn(t, done, nil)
		if err := b.Wait(context.Background(), 0); err != nil { // pending: may fetch
			t.Fatal(err)
		}
		// Its first fetch lands far ahead of a: it must not run ahead.
		trNew.Shard(0).Observe(at(50 * drift))
		if allowed(t, b, 0) {
			t.Fatal("restarted member runs ahead of the group")
		}
		// ... and it does not hold a back beyond its own watermark.
		trA.Shard(0).Observe(at(49 * drift))
		testutil.Poll(t, waitLong, "b allowed once a caught up", func() (bool, string) {
			m, _ := b.GroupMin()
			return allowed(t, b, 0), fmt.Sprintf("b's group minimum %v, stats %+v", m.Sub(base), b.Stats())
		})
		if !allowed(t, a, 0) {
			t.Fatal("a blocked behind the restarted member")
		}
	})
	t.Run("new shard without watermark", func(t *testing.T) { // FLINK-32414
		tr := newTracker(t, 300*time.Millisecond, 0)
		a := newAligner(t, tr, NewInProcessCoordinator(), "m", noTick)
		tr.Shard(0).Observe(at(0))
		mustAdd(t, tr, 1, time.Time{}) // holds at 0 until it emits or idles
		tr.Shard(0).Observe(at(3 * drift))
		if allowed(t, a, 0) {
			t.Fatal("shard ran ahead of a new shard's creation watermark")
		}
		start := time.Now()
		expectReturn(t, waitAsync(context.Background(), a, 0), nil)
		if st := tr.Shard(1).State(); st != ShardIdle {
			t.Fatalf("new shard state %v after %v, want idle", st, time.Since(start))
		}
	})
}

// A member that starts (or restarts) pending is anchored where the group is
// and holds it there only until its shards emit or turn idle: a member whose
// shards never deliver does not block the others forever.
func TestAlignerPendingMemberHoldsAtMostIdleTimeout(t *testing.T) {
	coord := NewInProcessCoordinator()
	trA := newTracker(t, time.Minute, 0)
	a := newAligner(t, trA, coord, "a", noTick)
	trA.Shard(0).Observe(base)
	trB := newTracker(t, 300*time.Millisecond, 0) // b's shard never delivers
	newAligner(t, trB, coord, "b", noTick)
	testutil.Poll(t, waitLong, "b anchored at a's watermark", func() (bool, string) {
		v, ok := a.View()
		return ok && v.Constrained && v.Min.Equal(base), fmt.Sprintf("%+v", v)
	})
	trA.Shard(0).Observe(at(5 * drift))
	if allowed(t, a, 0) {
		t.Fatal("a ran ahead of the pending member's anchor")
	}
	start := time.Now()
	expectReturn(t, waitAsync(context.Background(), a, 0), nil)
	if st := trB.Shard(0).State(); st != ShardIdle {
		t.Fatalf("b's shard %v after %v, want idle", st, time.Since(start))
	}
	if v, _ := a.View(); v.Constrained {
		t.Fatalf("a still constrained by the idle member: %+v", v)
	}
}

// No goroutine of an Aligner outlives Close, also with Waits blocked and a
// coordinator that is slow to answer.
func TestAlignerCloseEndsGoroutines(t *testing.T) {
	alignerGoroutines := func() string {
		var b strings.Builder
		for _, s := range testutil.GoroutineStacks() {
			if strings.Contains(s, "watermark.(*Aligner)") {
				b.WriteString(s + "\n\n")
			}
		}
		return b.String()
	}
	coord := NewInProcessCoordinator()
	var aligners []*Aligner
	var waits []<-chan error
	for m := range 3 {
		tr := newTracker(t, time.Minute, 0, 1)
		a, err := NewAligner(tr, AlignerConfig{Group: "g", Member: fmt.Sprint(m), MaxDrift: drift, Coordinator: coord}, nil)
		if err != nil {
			t.Fatal(err)
		}
		awaitReady(t, a)
		tr.Shard(1).Observe(base)
		tr.Shard(0).Observe(at(3 * drift))
		aligners = append(aligners, a)
		waits = append(waits, waitAsync(context.Background(), a, 0))
	}
	for _, a := range aligners {
		expectBlocked(t, a, 1)
	}
	if alignerGoroutines() == "" {
		t.Fatal("no Aligner goroutine found in the stacks: the check below would prove nothing")
	}
	for i, a := range aligners {
		if err := a.Close(); err != nil {
			t.Fatal(err)
		}
		expectReturn(t, waits[i], ErrClosed)
	}
	testutil.Poll(t, waitLong, "the Aligners' goroutines to end", func() (bool, string) {
		left := alignerGoroutines()
		return left == "", left
	})
}

// Finishing the blocked shard itself (read to its end while blocked, or handed
// over) ends its Wait.
func TestAlignerFinishingBlockedShardEndsWait(t *testing.T) {
	tr := newTracker(t, time.Minute, 0, 1)
	a := newAligner(t, tr, NewInProcessCoordinator(), "m", noTick)
	tr.Shard(1).Observe(base)
	tr.Shard(0).Observe(at(3 * drift))
	done := waitAsync(context.Background(), a, 0)
	expectBlocked(t, a, 1)
	if _, _, err := tr.FinishShard(0); err != nil {
		t.Fatal(err)
	}
	expectReturn(t, done, nil)
	tr.Shard(1).Resume() // unmatched: ignored
	if st := tr.Shard(1).State(); st != ShardActive {
		t.Fatalf("state after an unmatched Resume: %v", st)
	}
}

// WaitShardMargin returns at once within the limit, like WaitShard, but once
// blocked it waits until the limit is margin above the shard's watermark;
// the blocked shard is woken only when the limit reaches that point, not on
// every move of the group minimum below it.
func TestAlignerWaitShardMarginHysteresisAndThresholdWakeups(t *testing.T) {
	tr := newTracker(t, time.Minute, 0, 1)
	coord := NewInProcessCoordinator()
	a := newAligner(t, tr, coord, "m", noTick)
	fast, slow := tr.Shard(0), tr.Shard(1)
	slow.Observe(at(0))
	fast.Observe(at(drift))
	margin := drift / 2
	if err := a.WaitShardMargin(context.Background(), fast, margin); err != nil {
		t.Fatalf("WaitShardMargin within the limit: %v", err)
	}
	if st := a.Stats(); st.Blocks != 0 {
		t.Fatalf("a shard within the limit blocked: %+v", st)
	}
	fast.Observe(at(drift + time.Second)) // 1 s past the limit
	done := make(chan error, 1)
	go func() { done <- a.WaitShardMargin(context.Background(), fast, margin) }()
	expectBlocked(t, a, 1)
	wakes := a.wakes.Load()
	// The minimum moves in 100 steps to just below margin under the fast
	// shard's watermark minus MaxDrift: WaitShard would have returned after
	// the first 10; WaitShardMargin must not, and no step wakes it.
	const steps = 100
	last := at(time.Second + margin - time.Millisecond)
	for i := 1; i <= steps; i++ {
		slow.Observe(at(time.Second + time.Duration(i)*(margin-time.Millisecond)/steps))
	}
	if !allowed(t, a, 0) {
		t.Fatal("the fast shard is not within the limit after the steps")
	}
	// The Aligner's loop has seen the last step once it reported it.
	testutil.Poll(t, waitLong, "the last step reported", func() (bool, string) {
		coord.mu.Lock()
		defer coord.mu.Unlock()
		m := coord.groups["g"].members["m"]
		return m.wm == last.UnixNano(), fmt.Sprintf("reported %v", time.Duration(m.wm-base.UnixNano()))
	})
	select {
	case err := <-done:
		t.Fatalf("WaitShardMargin returned (%v) before the limit was margin above the watermark", err)
	default:
	}
	if a.resumable(fast, int64(margin)) {
		t.Fatal("resumable with the limit less than margin above the watermark")
	}
	if w := a.wakes.Load() - wakes; w != 0 {
		t.Fatalf("%d wake-ups while the minimum moved below the waiting shard's threshold", w)
	}
	slow.Observe(at(time.Second + margin)) // the limit is now exactly margin above
	expectReturn(t, done, nil)
	if w := a.wakes.Load() - wakes; w > 2 {
		t.Fatalf("%d wake-ups for one threshold crossing", w)
	}
	if st := fast.State(); st != ShardActive {
		t.Fatalf("resumed shard state %v", st)
	}
	// A margin larger than MaxDrift is clamped: the shard at the group
	// minimum never waits.
	if err := a.WaitShardMargin(context.Background(), slow, 10*drift); err != nil {
		t.Fatal(err)
	}
}

// The in-process coordinator hands a reporting member the group's change
// channel as it is after its own report: its own change does not wake it
// (one report per change, not two), another member's does.
func TestInProcessCoordinatorReportWatchSkipsOwnChange(t *testing.T) {
	c := NewInProcessCoordinator()
	ctx := context.Background()
	_, ch, err := c.reportWatch(ctx, "g", "a", MemberHolding, at(0))
	if err != nil {
		t.Fatal(err)
	}
	_, ch, _ = c.reportWatch(ctx, "g", "a", MemberHolding, at(time.Second)) // a change of a's own
	select {
	case <-ch:
		t.Fatal("the channel returned with a's report was closed by a's own change")
	default:
	}
	if _, err := c.Report(ctx, "g", "b", MemberHolding, at(0)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
	default:
		t.Fatal("another member's change did not close the channel")
	}
}

// Every event of the shard at the minimum moves the tracker's minimum. With
// a coordinator that notifies, the Aligner reports at most every
// minReportGap, so between two reports a rise must not wake its goroutine
// (one wake-up per message before); the last value is still reported, and
// a blocked shard is still woken as soon as the minimum reaches its need.
func TestAlignerRisesBetweenReportsDoNotWakeTheLoop(t *testing.T) {
	tr := newTracker(t, time.Minute, 0, 1)
	coord := NewInProcessCoordinator()
	a := newAligner(t, tr, coord, "m", noTick)
	slow, fast := tr.Shard(0), tr.Shard(1)
	slow.Observe(at(0))
	fast.Observe(at(drift + time.Hour)) // far past the limit
	done := make(chan error, 1)
	go func() { done <- a.WaitShard(context.Background(), fast) }()
	expectBlocked(t, a, 1)
	loops := a.loops.Load()
	// Rises 50 µs apart: each would find the loop idle.
	const steps = 2000
	for i := 1; i <= steps; i++ {
		slow.Observe(at(time.Duration(i) * time.Millisecond))
		for start := time.Now(); time.Since(start) < 50*time.Microsecond; {
		}
	}
	last := at(steps * time.Millisecond)
	testutil.Poll(t, waitLong, "the last step reported", func() (bool, string) {
		coord.mu.Lock()
		defer coord.mu.Unlock()
		m := coord.groups["g"].members["m"]
		return m.wm == last.UnixNano(), fmt.Sprintf("reported %v", time.Duration(m.wm-base.UnixNano()))
	})
	n := a.loops.Load() - loops
	t.Logf("%d rises of the minimum woke the Aligner's loop %d times", steps, n)
	if n > steps/2 {
		t.Fatalf("%d rises of the minimum woke the Aligner's loop %d times; want at most %d", steps, n, steps/2)
	}
	select {
	case err := <-done:
		t.Fatalf("the blocked shard returned (%v) before the minimum reached its need", err)
	default:
	}
	slow.Observe(at(time.Hour)) // the limit reaches the fast shard
	expectReturn(t, done, nil)
}

// A rise of the tracker's minimum that reaches a blocked shard's need wakes
// it within the Observe call that made it, on the observing goroutine: the
// resume does not wait for the Aligner's goroutine to be scheduled first.
func TestAlignerRiseWakesBlockedShardInObserve(t *testing.T) {
	tr := newTracker(t, time.Minute, 0, 1)
	coord := NewInProcessCoordinator()
	a := newAligner(t, tr, coord, "m", noTick)
	slow, fast := tr.Shard(0), tr.Shard(1)
	slow.Observe(at(0))
	fast.Observe(at(drift + time.Minute)) // a minute past the limit
	done := make(chan error, 1)
	go func() { done <- a.WaitShard(context.Background(), fast) }()
	expectBlocked(t, a, 1)
	testutil.Poll(t, waitLong, "the blocked shard's need registered", func() (bool, string) {
		return a.need.Load() != unconstrained, "no need registered"
	})
	ch := a.wakeChan()
	slow.Observe(at(30 * time.Second)) // below the need: no wake-up
	select {
	case <-ch:
		t.Fatal("a rise below the blocked shard's need woke it")
	default:
	}
	slow.Observe(at(time.Minute)) // the limit reaches the fast shard
	select {
	case <-ch:
	default:
		t.Fatal("the rise that reached the blocked shard's need did not wake it before Observe returned")
	}
	expectReturn(t, done, nil)
}
