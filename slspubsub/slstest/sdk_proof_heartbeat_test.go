package slstest_test

import (
	"fmt"
	"net/http"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	sls "github.com/aliyun/aliyun-log-go-sdk"
	consumer "github.com/aliyun/aliyun-log-go-sdk/consumer"
	"github.com/watermill-sls/watermill-sls/internal/testutil"
	"github.com/watermill-sls/watermill-sls/slspubsub/slstest"
)

// TestSDKConsumerHeartbeatTimeout proves the consumer-group timeout with the SDK's consumer library: a worker
// that crashes (it stops talking to the server without StopAndWait, so it neither releases its shards nor
// flushes anything) keeps its shards until the group timeout has passed since its last heartbeat; then the
// survivor gets them and resumes from the crashed worker's last checkpoint, re-delivering exactly what had been
// consumed but not checkpointed.
//
// Two workers share a logstore of 4 shards (2 each). Phase 1: both consume and checkpoint. Phase 2: the doomed
// worker consumes its shards without checkpointing. Then its HTTP transport is cut (its requests hang and never
// reach the server: a dead process). Phase 3 is written after the survivor took over.
func TestSDKConsumerHeartbeatTimeout(t *testing.T) {
	const (
		project = "sdk-proof-hb"
		store   = "events"
		group   = "hb-group"
		shards  = 4
		// HeartbeatTimeoutInSecond. The SDK heartbeats every second; 4 s leaves a stalled heartbeat 3 s of margin
		// before the server expires a live worker, which would move shards in the middle of a phase.
		timeout = 4 * time.Second
	)
	groups, perGroup := testutil.SoakOr(10, 50), testutil.SoakOr(20, 100) // per shard and phase
	perPhase := groups * perGroup
	wait := testutil.SoakOr(time.Minute, 10*time.Minute)

	env := testutil.SLS(t)
	env.LogStore(t, project, store, shards)
	client := env.Client()
	baseline := testutil.SDKGoroutines()
	// The key of a log is its shard: every shard holds one ordered stream, seq 0..3*perPhase-1.
	rec := newProofRecorder(shards, 3*perPhase)
	infos, err := env.Server.Shards(project, store)
	if err != nil {
		t.Fatal(err)
	}
	put := func(phase int) {
		t.Helper()
		now := uint32(time.Now().Unix())
		for s, in := range infos {
			key := in.InclusiveBeginKey
			for g := range groups {
				lg := &sls.LogGroup{}
				for i := range perGroup {
					lg.Logs = append(lg.Logs, proofLog(s, (phase-1)*perPhase+g*perGroup+i, now))
				}
				if err := client.PostLogStoreLogs(project, store, lg, &key); err != nil {
					t.Fatalf("phase %d: PostLogStoreLogs to shard %d: %v", phase, s, err)
				}
			}
		}
	}

	partition := &proofPartition{base: env.HTTPClient.Transport}
	var dead, checkpointing atomic.Bool
	checkpointing.Store(true)
	newWorker := func(name string, base http.RoundTripper, autoCommit bool, process func(w *proofWorker, shard int, l *sls.LogGroupList, tr consumer.CheckPointTracker) error) *proofWorker {
		return newProofWorker(t, rec, consumer.LogHubConfig{
			Endpoint:                  env.Endpoint,
			AccessKeyID:               env.AccessKeyID,
			AccessKeySecret:           env.AccessKeySecret,
			Project:                   project,
			Logstore:                  store,
			ConsumerGroupName:         group,
			ConsumerName:              name,
			CursorPosition:            consumer.BEGIN_CURSOR,
			HeartbeatIntervalInSecond: 1,
			HeartbeatTimeoutInSecond:  int(timeout / time.Second),
			DataFetchIntervalInMs:     50,
			AutoCommitDisabled:        !autoCommit,
			AutoCommitIntervalInMS:    200,
			InOrder:                   true,
		}, base, process)
	}
	// doomed checkpoints (synchronously, nothing else: auto-commit is off) only while checkpointing is set, and
	// does nothing at all once dead: a crashed process consumes nothing.
	doomed := newWorker("doomed", partition, false,
		func(w *proofWorker, shard int, l *sls.LogGroupList, tr consumer.CheckPointTracker) error {
			if dead.Load() {
				return nil
			}
			rec.record(w.id, shard, l)
			if checkpointing.Load() {
				return tr.SaveCheckPoint(true)
			}
			return nil
		})
	survivor := newWorker("survivor", env.HTTPClient.Transport, true,
		func(w *proofWorker, shard int, l *sls.LogGroupList, tr consumer.CheckPointTracker) error {
			rec.record(w.id, shard, l)
			return tr.SaveCheckPoint(false)
		})
	t.Cleanup(func() {
		// The doomed worker's hung requests end only when the partition heals: stop both, then heal.
		done := make(chan struct{})
		go func() {
			defer close(done)
			proofStopAll(t, 30*time.Second, survivor, doomed)
		}()
		partition.Heal()
		<-done
	})
	doomed.w.Start()
	survivor.w.Start()

	state := func() slstest.ConsumerGroupState {
		st, err := env.Server.ConsumerGroupState(project, store, group)
		if err != nil {
			t.Fatalf("ConsumerGroupState: %v", err)
		}
		return st
	}
	holds := func(st slstest.ConsumerGroupState, name string) []int {
		var ids []int
		for _, a := range st.Shards {
			if a.Consumer == name && a.Status == slstest.AssignmentAllocated {
				ids = append(ids, a.Shard)
			}
		}
		return ids
	}
	status := func() string { return proofGroupStatus(env.Server, project, store, group) }
	consumed := func(n int) func() (bool, string) {
		return func() (bool, string) {
			unique, byShard := rec.counts()
			return unique == n && proofGroupDrained(t, env.Server, project, store, group) == "",
				fmt.Sprintf("%d of %d logs consumed, per shard %v\n%s", unique, n, byShard, status())
		}
	}

	// Phase 1: both consume and checkpoint; the group settles at 2 shards each.
	put(1)
	if !testutil.Poll(t, wait, "phase 1 to be consumed and checkpointed, 2 shards per worker", func() (bool, string) {
		done, s := consumed(shards * perPhase)()
		st := state()
		return done && len(holds(st, "doomed")) == 2 && len(holds(st, "survivor")) == 2, s
	}) {
		t.FailNow()
	}
	doomedShards := holds(state(), "doomed")

	// Phase 2: the doomed worker consumes without checkpointing.
	checkpointing.Store(false)
	put(2)
	if !testutil.Poll(t, wait, "phase 2 to be consumed", func() (bool, string) {
		unique, byShard := rec.counts()
		drained := true
		st := state()
		if got := holds(st, "doomed"); !slices.Equal(got, doomedShards) {
			t.Fatalf("the assignment changed during phase 2: doomed holds %v, held %v (a heartbeat stalled past the timeout?)\n%s",
				got, doomedShards, status())
		}
		for _, a := range st.Shards {
			_, end, _ := env.Server.Cursors(project, store, a.Shard)
			if !slices.Contains(doomedShards, a.Shard) && a.Checkpoint != end {
				drained = false
			}
		}
		return unique == 2*shards*perPhase && drained, fmt.Sprintf("%d logs consumed, per shard %v\n%s", unique, byShard, status())
	}) {
		t.FailNow()
	}
	st := state()
	for _, a := range st.Shards {
		if !slices.Contains(doomedShards, a.Shard) {
			continue
		}
		stored, err := env.Server.LogGroups(project, store, a.Shard)
		if err != nil {
			t.Fatal(err)
		}
		if want := stored[groups].Cursor; a.Checkpoint != want {
			t.Fatalf("shard %d: doomed's checkpoint is %q, want %q (the first group of phase 2)", a.Shard, a.Checkpoint, want)
		}
	}
	// What doomed consumed after its last checkpoint: the phase-2 logs of its shards.
	uncheckpointed := 0
	for _, r := range rec.snapshot() {
		if r.worker == doomed.id && r.seq >= int32(perPhase) {
			uncheckpointed++
		}
	}
	if uncheckpointed != len(doomedShards)*perPhase {
		t.Fatalf("doomed consumed %d logs of phase 2, want %d", uncheckpointed, len(doomedShards)*perPhase)
	}
	deliveredBeforeCrash := rec.delivered(doomed.id)
	recordsBeforeCrash := len(rec.snapshot())

	// Crash: the doomed worker's requests stop reaching the server.
	dead.Store(true)
	partition.Cut()
	cutAt := time.Now()
	var lastBeat time.Time
	st = state()
	if !slices.Equal(holds(st, "doomed"), doomedShards) {
		t.Fatalf("right after the crash doomed holds %v, want %v: the server must wait for the timeout\n%s", holds(st, "doomed"), doomedShards, status())
	}
	for _, c := range st.Consumers {
		if c.Name == "doomed" {
			lastBeat = c.LastHeartbeat
		}
	}
	var early []string
	testutil.Poll(t, wait, "the survivor to take over the crashed worker's shards", func() (bool, string) {
		st := state()
		alive := false
		for _, c := range st.Consumers {
			if c.Name == "doomed" {
				alive, lastBeat = true, c.LastHeartbeat
			}
		}
		if alive {
			for _, a := range st.Shards {
				if slices.Contains(doomedShards, a.Shard) && a.Consumer != "doomed" {
					early = append(early, fmt.Sprintf("shard %d is %s by %q while doomed is still alive", a.Shard, a.Status, a.Consumer))
				}
			}
		}
		return !alive && len(holds(st, "survivor")) == shards, status()
	})
	takenAt := time.Now()
	if t.Failed() {
		t.FailNow()
	}
	for _, e := range early {
		t.Error(e)
	}
	if lastBeat.IsZero() || takenAt.Sub(lastBeat) <= timeout {
		t.Errorf("the survivor took over %v after the crashed worker's last heartbeat (%v), before the %v timeout",
			takenAt.Sub(lastBeat), lastBeat, timeout)
	}
	t.Logf("survivor took over %v after the cut, %v after the crashed worker's last heartbeat",
		takenAt.Sub(cutAt).Round(10*time.Millisecond), takenAt.Sub(lastBeat).Round(10*time.Millisecond))

	// Phase 3, after the takeover: the survivor consumes everything to the end.
	put(3)
	testutil.Poll(t, wait, "phase 3 to be consumed and every shard checkpointed at its end", consumed(3*shards*perPhase))
	if t.Failed() {
		t.FailNow()
	}

	dups := rec.checkOrder(t)
	for _, d := range dups {
		if d.rec.worker != survivor.id || d.firstWorker != doomed.id || !slices.Contains(doomedShards, int(d.rec.shard)) ||
			d.rec.seq < int32(perPhase) || d.rec.seq >= int32(2*perPhase) {
			t.Errorf("unexpected duplicate: shard %d seq %d delivered to %s, first to %s; only the crashed worker's uncheckpointed phase-2 logs may come again",
				d.rec.shard, d.rec.seq, rec.name(d.rec.worker), rec.name(d.firstWorker))
		}
	}
	if len(dups) > uncheckpointed {
		t.Errorf("%d duplicates, more than the %d logs consumed but not checkpointed", len(dups), uncheckpointed)
	}
	if len(dups) != uncheckpointed {
		t.Errorf("%d duplicates, want %d: the survivor must resume exactly at the crashed worker's last checkpoint", len(dups), uncheckpointed)
	}
	firstBySurvivor := map[int32]int32{} // after the crash
	for _, r := range rec.snapshot()[recordsBeforeCrash:] {
		if _, ok := firstBySurvivor[r.shard]; !ok && r.worker == survivor.id && slices.Contains(doomedShards, int(r.shard)) {
			firstBySurvivor[r.shard] = r.seq
		}
	}
	for _, s := range doomedShards {
		if got, ok := firstBySurvivor[int32(s)]; !ok || got != int32(perPhase) {
			t.Errorf("shard %d: the survivor started at seq %d (found %v), want %d, the crashed worker's checkpoint", s, got, ok, perPhase)
		}
	}
	if n := rec.delivered(doomed.id); n != deliveredBeforeCrash {
		t.Errorf("the crashed worker was given %d logs after it crashed", n-deliveredBeforeCrash)
	}
	t.Logf("doomed held %v; %d logs consumed but not checkpointed; %d re-delivered to the survivor", doomedShards, uncheckpointed, len(dups))

	proofStopAll(t, 30*time.Second, survivor) // before the doomed worker: it must not take shards back
	done := make(chan struct{})
	go func() {
		defer close(done)
		doomed.stop(t, 30*time.Second)
	}()
	partition.Heal()
	<-done
	testutil.NoSDKGoroutines(t, baseline)
}
