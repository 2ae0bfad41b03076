package slstest_test

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	sls "github.com/aliyun/aliyun-log-go-sdk"
	consumer "github.com/aliyun/aliyun-log-go-sdk/consumer"
	"github.com/aliyun/aliyun-log-go-sdk/producer"
	"github.com/watermill-sls/watermill-sls/internal/testutil"
	"github.com/watermill-sls/watermill-sls/slspubsub/slstest"
)

// proofScale sizes TestSDKProducerConsumerSplitMerge: keys x perKey logs, each key sent in chunks of about chunk
// logs (1 .. 2*chunk-1), one chunk in flight per key.
type proofScale struct {
	keys, perKey, chunk int
}

const (
	proofBuckets    = 64 // producer bucket adjustment: hash keys are 6-bit md5 prefixes
	proofMaxHashKey = "ffffffffffffffffffffffffffffffff"
)

func proofKeyName(k int) string { return fmt.Sprintf("key-%05d", k) }

// proofRoute is the hash key the SDK producer sends for key k: PostLogStoreLogs routes it to the readwrite
// shard whose range holds it.
func proofRoute(t *testing.T, k int) string {
	h, err := producer.AdjustHash(proofKeyName(k), proofBuckets)
	if err != nil {
		t.Fatalf("AdjustHash: %v", err)
	}
	return h
}

func proofInRange(key string, in slstest.ShardInfo) bool {
	return key >= in.InclusiveBeginKey && (key < in.ExclusiveEndKey || in.ExclusiveEndKey == proofMaxHashKey)
}

// proofWindow is when a shard turned readonly: between from and to.
type proofWindow struct{ from, to time.Time }

// proofAck is the producer callback of one send.
type proofAck chan *producer.Result

func (a proofAck) Success(r *producer.Result) { a <- r }
func (a proofAck) Fail(r *producer.Result)    { a <- r }

// TestSDKProducerConsumerSplitMerge proves that the SDK's own producer and consumer libraries, unmodified, work
// against the emulator across splits, merges and consumer-group membership changes, with the order=true
// semantics: per hash key, logs are consumed in the order they were produced, and a child shard is consumed only
// after its parents were read to the end.
//
// 200 keys x 500 logs (1 000 keys x 1 000 logs under WSLS_SOAK) go through producer.HashSendLogListWithCallBack
// into a logstore of 4 shards. The SDK producer sends batches concurrently and keeps no order, so every key has
// one send in flight at a time (its next chunk waits for the previous chunk's callback) while all keys are in
// flight together. Meanwhile a consumer group of 3 workers (InOrder) consumes; at 20% of the acknowledged logs
// shard 0 is split, at 30% worker c2 starts stopping (StopAndWait), at 45% worker c4 joins, at 60% shards 2 and 3
// are merged. Then the test waits for the group to drain and checks what was consumed and what was stored.
func TestSDKProducerConsumerSplitMerge(t *testing.T) {
	sc := testutil.SoakOr(proofScale{keys: 200, perKey: 500, chunk: 10}, proofScale{keys: 1000, perKey: 1000, chunk: 20})
	total := sc.keys * sc.perKey
	wait := testutil.SoakOr(2*time.Minute, 30*time.Minute) // deadline of each long wait, never reached when all is well
	const (
		project = "sdk-proof"
		store   = "events"
		group   = "proof-group"
	)
	env := testutil.SLS(t)
	env.LogStore(t, project, store, 4)
	client := env.Client()
	baseline := testutil.SDKGoroutines()
	rec := newProofRecorder(sc.keys, sc.perKey)

	var workers []*proofWorker
	t.Cleanup(func() { proofStopAll(t, 30*time.Second, workers...) })
	startWorker := func(name string) *proofWorker {
		w := newProofWorker(t, rec, consumer.LogHubConfig{
			Endpoint:                  env.Endpoint,
			AccessKeyID:               env.AccessKeyID,
			AccessKeySecret:           env.AccessKeySecret,
			Project:                   project,
			Logstore:                  store,
			ConsumerGroupName:         group,
			ConsumerName:              name,
			CursorPosition:            consumer.BEGIN_CURSOR,
			HeartbeatIntervalInSecond: 1,
			HeartbeatTimeoutInSecond:  3,
			DataFetchIntervalInMs:     50,
			AutoCommitIntervalInMS:    200,
			InOrder:                   true,
		}, env.HTTPClient.Transport, func(w *proofWorker, shard int, l *sls.LogGroupList, tr consumer.CheckPointTracker) error {
			rec.record(w.id, shard, l)
			return tr.SaveCheckPoint(false)
		})
		w.w.Start()
		workers = append(workers, w)
		return w
	}

	cfg := producer.GetDefaultProducerConfig()
	cfg.Endpoint = env.Endpoint
	cfg.AccessKeyID = env.AccessKeyID
	cfg.AccessKeySecret = env.AccessKeySecret
	cfg.HTTPClient = env.HTTPClient
	cfg.LingerMs = 100
	cfg.AdjustShargHash = true
	cfg.Buckets = proofBuckets
	cfg.Logger = testutil.SDKLogger(t, "producer", nil)
	cfg.DisableRuntimeMetrics = true
	prod := producer.InitProducer(cfg)
	testutil.PreinitSDKClient(t, prod, "threadPool", "ioworker", "client")
	prod.Start()
	var closeOnce sync.Once
	closeProducer := func() {
		closeOnce.Do(func() { testutil.Within(t, 60*time.Second, "producer SafeClose", prod.SafeClose) })
	}
	t.Cleanup(closeProducer)

	c1, c2, c3 := startWorker("c1"), startWorker("c2"), startWorker("c3")

	// Production: one goroutine per key, one chunk in flight per key.
	var (
		acked, sends, successes atomic.Int64
		failMu                  sync.Mutex
		failures                []string
		prodWG                  sync.WaitGroup
	)
	stopProduction := make(chan struct{})
	var stopOnce sync.Once
	t.Cleanup(func() { stopOnce.Do(func() { close(stopProduction) }) })
	fail := func(format string, args ...any) {
		failMu.Lock()
		failures = append(failures, fmt.Sprintf(format, args...))
		failMu.Unlock()
	}
	failed := func() []string {
		failMu.Lock()
		defer failMu.Unlock()
		return slices.Clone(failures)
	}
	for k := range sc.keys {
		prodWG.Add(1)
		go func() {
			defer prodWG.Done()
			ack := make(proofAck, 1)
			for seq, round := 0, 0; seq < sc.perKey; round++ {
				n := min(1+(k*7+round*13)%(2*sc.chunk-1), sc.perKey-seq)
				now := uint32(time.Now().Unix())
				logs := make([]*sls.Log, n)
				for i := range logs {
					logs[i] = proofLog(k, seq+i, now)
				}
				sends.Add(1)
				if err := prod.HashSendLogListWithCallBack(project, store, proofKeyName(k), "", "", logs, ack); err != nil {
					fail("key %d seq %d: send: %v", k, seq, err)
					return
				}
				select {
				case r := <-ack:
					if !r.IsSuccessful() {
						fail("key %d seq %d: callback Fail: %s %s (request %s)", k, seq, r.GetErrorCode(), r.GetErrorMessage(), r.GetRequestId())
						return
					}
					successes.Add(1)
				case <-time.After(wait):
					fail("key %d seq %d: no callback within %v", k, seq, wait)
					return
				case <-stopProduction:
					return
				}
				acked.Add(int64(n))
				seq += n
			}
		}()
	}
	waitAcked := func(frac float64) {
		t.Helper()
		want := int64(frac * float64(total))
		if !testutil.Poll(t, wait, fmt.Sprintf("%d acknowledged logs", want), func() (bool, string) {
			a := acked.Load()
			return a >= want || len(failed()) > 0, fmt.Sprintf("%d of %d acknowledged", a, total)
		}) {
			t.FailNow()
		}
		if f := failed(); len(f) > 0 {
			t.Fatalf("production failed (%d failures), first: %s", len(f), f[0])
		}
	}

	// Topology changes while producing. parents maps a new shard to the shards it was made from;
	// readonlyAt is when a parent's SplitShard / MergeShards call started and returned.
	parents := map[int][]int{}
	readonlyAt := map[int]proofWindow{}

	waitAcked(0.20)
	from := time.Now()
	split, err := client.SplitShard(project, store, 0, "20000000000000000000000000000000")
	if err != nil {
		t.Fatalf("SplitShard(0): %v", err)
	}
	readonlyAt[0] = proofWindow{from, time.Now()}
	if len(split) != 3 || split[0].ShardID != 0 || split[0].Status != slstest.ShardReadOnly ||
		split[1].Status != slstest.ShardReadWrite || split[2].Status != slstest.ShardReadWrite {
		t.Fatalf("SplitShard(0) answered %s, want the readonly parent then two readwrite children", proofShards(split))
	}
	parents[split[1].ShardID], parents[split[2].ShardID] = []int{0}, []int{0}
	t.Logf("split shard 0 into %d and %d at %d acknowledged logs", split[1].ShardID, split[2].ShardID, acked.Load())

	waitAcked(0.30)
	if !testutil.Poll(t, wait, "worker c2 to consume before it is stopped", func() (bool, string) {
		return rec.delivered(c2.id) > 0, proofGroupStatus(env.Server, project, store, group)
	}) {
		t.FailNow()
	}
	// c2 stops in the background (StopAndWait takes a second or two), so that c4 joins and shards 2 and 3 merge
	// while c2 is going away and its shards wait for the group timeout.
	t.Logf("stopping c2 (%d logs delivered to it so far) at %d acknowledged logs", rec.delivered(c2.id), acked.Load())
	c2Stopped := make(chan bool, 1)
	go func() { c2Stopped <- c2.stop(t, 30*time.Second) }()

	waitAcked(0.45)
	c4 := startWorker("c4")
	t.Logf("started c4 at %d acknowledged logs", acked.Load())

	waitAcked(0.60)
	from = time.Now()
	merged, err := client.MergeShards(project, store, 2)
	if err != nil {
		t.Fatalf("MergeShards(2): %v", err)
	}
	readonlyAt[2], readonlyAt[3] = proofWindow{from, time.Now()}, proofWindow{from, time.Now()}
	if len(merged) != 3 || merged[0].Status != slstest.ShardReadWrite || merged[1].ShardID != 2 || merged[2].ShardID != 3 ||
		merged[1].Status != slstest.ShardReadOnly || merged[2].Status != slstest.ShardReadOnly {
		t.Fatalf("MergeShards(2) answered %s, want the readwrite merged shard then readonly 2 and 3", proofShards(merged))
	}
	parents[merged[0].ShardID] = []int{2, 3}
	t.Logf("merged shards 2 and 3 into %d at %d acknowledged logs", merged[0].ShardID, acked.Load())

	if !testutil.Within(t, wait, "production", prodWG.Wait) || !<-c2Stopped {
		t.FailNow()
	}
	if f := failed(); len(f) > 0 {
		t.Fatalf("production failed (%d failures), first: %s", len(f), f[0])
	}
	if acked.Load() != int64(total) || successes.Load() != sends.Load() {
		t.Fatalf("%d of %d logs acknowledged, %d of %d callbacks successful", acked.Load(), total, successes.Load(), sends.Load())
	}
	closeProducer()
	t.Logf("produced %d logs in %d sends, all callbacks successful", total, sends.Load())

	// Drain: every log consumed, every checkpoint at its shard's end, every readonly shard over, and the late
	// joiner c4 given its share of the shards.
	c4Assigned := false
	testutil.Poll(t, wait, "the consumer group to drain", func() (bool, string) {
		unique, byShard := rec.counts()
		done := unique == total && proofGroupDrained(t, env.Server, project, store, group) == ""
		if st, err := env.Server.ConsumerGroupState(project, store, group); err == nil {
			for _, c := range st.Consumers {
				c4Assigned = c4Assigned || (c.Name == c4.name && len(c.Shards) > 0)
			}
		}
		done = done && c4Assigned
		return done, fmt.Sprintf("%d of %d logs consumed, per shard %v\n%s", unique, total, byShard,
			proofGroupStatus(env.Server, project, store, group))
	})
	live := slices.DeleteFunc(slices.Clone(workers), func(w *proofWorker) bool { return w == c2 })
	proofStopAll(t, 30*time.Second, live...)
	if t.Failed() {
		t.FailNow()
	}
	if msg := proofGroupDrained(t, env.Server, project, store, group); msg != "" {
		t.Errorf("after the workers stopped: %s", msg)
	}

	// Consumption: all logs, per-key order, duplicates only at handovers, parents before children.
	dups := rec.checkOrder(t)
	for _, d := range dups {
		if d.rec.worker == d.firstWorker || d.rec.shard != d.firstShard {
			t.Errorf("key %d seq %d delivered by %s from shard %d after %s from shard %d: a duplicate that is no handover",
				d.rec.key, d.rec.seq, rec.name(d.rec.worker), d.rec.shard, rec.name(d.firstWorker), d.firstShard)
		}
	}
	proofParentsFirst(t, rec, parents)
	for _, w := range []*proofWorker{c1, c2, c3, c4} {
		t.Logf("worker %s: %d logs delivered", w.name, rec.delivered(w.id))
	}
	t.Logf("%d duplicate deliveries (all at handovers between workers)", len(dups))

	// Storage: what the SDK producer wrote, shard by shard.
	proofCheckStorage(t, env.Server, project, store, sc, rec, parents, readonlyAt)

	testutil.NoSDKGoroutines(t, baseline)
}

func proofShards(shards []*sls.Shard) string {
	var parts []string
	for _, s := range shards {
		parts = append(parts, fmt.Sprintf("%d:%s[%s,%s)", s.ShardID, s.Status, s.InclusiveBeginKey, s.ExclusiveBeginKey))
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// proofGroupDrained returns "" when every shard's checkpoint in group equals its end cursor and every readonly
// shard is over, else what is not.
func proofGroupDrained(t *testing.T, srv *slstest.Server, project, store, group string) string {
	t.Helper()
	st, err := srv.ConsumerGroupState(project, store, group)
	if err != nil {
		return err.Error()
	}
	infos, err := srv.Shards(project, store)
	if err != nil {
		return err.Error()
	}
	ro := map[int]bool{}
	for _, in := range infos {
		ro[in.ShardID] = in.Status == slstest.ShardReadOnly
	}
	var bad []string
	for _, a := range st.Shards {
		_, end, err := srv.Cursors(project, store, a.Shard)
		if err != nil {
			return err.Error()
		}
		if a.Checkpoint != end {
			bad = append(bad, fmt.Sprintf("shard %d checkpoint %q != end %q", a.Shard, a.Checkpoint, end))
		}
		if ro[a.Shard] && a.Status != slstest.AssignmentOver {
			bad = append(bad, fmt.Sprintf("readonly shard %d is %s, not over", a.Shard, a.Status))
		}
	}
	if len(st.Shards) != len(infos) {
		bad = append(bad, fmt.Sprintf("group lists %d shards, the logstore has %d", len(st.Shards), len(infos)))
	}
	return strings.Join(bad, "; ")
}

// proofParentsFirst checks, on the global consumption order, that every parent was finished (the last of its
// logs was delivered for the first time) before the first delivery from each of its children. Re-deliveries are
// left out of "finished": a worker the server expired while it was still running (a heartbeat stalled past the
// timeout) may re-deliver a parent's logs after the parent is over, as it would against SLS.
func proofParentsFirst(t *testing.T, rec *proofRecorder, parents map[int][]int) {
	t.Helper()
	first, last := map[int32]int{}, map[int32]int{}
	seen := make([]bool, rec.keys*rec.perKey)
	for i, r := range rec.snapshot() {
		if _, ok := first[r.shard]; !ok {
			first[r.shard] = i
		}
		if j := int(r.key)*rec.perKey + int(r.seq); !seen[j] {
			seen[j] = true
			last[r.shard] = i
		}
	}
	for child, ps := range parents {
		cf, ok := first[int32(child)]
		if !ok {
			t.Errorf("child shard %d: nothing consumed, though production went on after it was created", child)
			continue
		}
		for _, p := range ps {
			pl, ok := last[int32(p)]
			if !ok {
				t.Errorf("parent shard %d: nothing consumed", p)
				continue
			}
			if pl >= cf {
				t.Errorf("child shard %d was consumed (delivery #%d) before parent %d was finished (its last delivery is #%d)", child, cf, p, pl)
			} else {
				t.Logf("parent %d last delivery #%d < child %d first delivery #%d", p, pl, child, cf)
			}
		}
	}
}

// proofCheckStorage checks what the SDK producer wrote: every log stored exactly once, in a shard whose range
// holds its key's hash; per key in produced order, moving only from a parent to one child and never writing to
// a shard after it turned readonly; per shard as many logs as were consumed from it.
func proofCheckStorage(t *testing.T, srv *slstest.Server, project, store string, sc proofScale, rec *proofRecorder,
	parents map[int][]int, readonlyAt map[int]proofWindow) {
	t.Helper()
	total := sc.keys * sc.perKey
	where := make([]int32, total)
	recv := make([]time.Time, total)
	for i := range where {
		where[i] = -1
	}
	routes := make([]string, sc.keys)
	for k := range routes {
		routes[k] = proofRoute(t, k)
	}
	infos, err := srv.Shards(project, store)
	if err != nil {
		t.Fatal(err)
	}
	stored, problems := map[int]int{}, 0
	problem := func(format string, args ...any) {
		if problems++; problems <= 10 {
			t.Errorf(format, args...)
		}
	}
	sum := 0
	for _, in := range infos {
		groups, err := srv.LogGroups(project, store, in.ShardID)
		if err != nil {
			t.Fatal(err)
		}
		for _, g := range groups {
			for _, l := range g.Group.Logs {
				k, s, err := proofParse(l)
				if err != nil || k >= sc.keys || s >= sc.perKey {
					problem("shard %d stores a log that was not produced: %v %v", in.ShardID, l.Contents, err)
					continue
				}
				i := k*sc.perKey + s
				if where[i] >= 0 {
					problem("key %d seq %d stored twice: shards %d and %d", k, s, where[i], in.ShardID)
				}
				where[i], recv[i] = int32(in.ShardID), g.ReceiveTime
				stored[in.ShardID]++
				sum++
				if !proofInRange(routes[k], in) {
					problem("key %d (hash %s) stored in shard %d [%s, %s)", k, routes[k], in.ShardID, in.InclusiveBeginKey, in.ExclusiveEndKey)
				}
				if w, ok := readonlyAt[in.ShardID]; ok && g.ReceiveTime.After(w.to) {
					problem("shard %d received key %d seq %d at %v, after it turned readonly (%v)", in.ShardID, k, s, g.ReceiveTime, w.to)
				}
				for _, p := range parents[in.ShardID] {
					if w := readonlyAt[p]; g.ReceiveTime.Before(w.from) {
						problem("child shard %d received key %d seq %d at %v, before parent %d turned readonly (%v)", in.ShardID, k, s, g.ReceiveTime, p, w.from)
					}
				}
			}
		}
	}
	if sum != total {
		t.Errorf("the logstore holds %d logs, %d were produced", sum, total)
	}
	_, consumed := rec.counts()
	for _, in := range infos {
		if stored[in.ShardID] != consumed[in.ShardID] {
			t.Errorf("shard %d: %d logs stored, %d consumed from it", in.ShardID, stored[in.ShardID], consumed[in.ShardID])
		}
	}
	t.Logf("logs stored per shard: %v (sum %d)", stored, sum)

	moves := map[[2]int32]int{}
	for k := range sc.keys {
		visited := map[int32]bool{}
		for s := range sc.perKey {
			i := k*sc.perKey + s
			cur := where[i]
			if cur < 0 {
				problem("key %d seq %d is not stored", k, s)
				continue
			}
			if s == 0 {
				visited[cur] = true
				continue
			}
			prev := where[i-1]
			if recv[i].Before(recv[i-1]) {
				problem("key %d: seq %d stored at %v, before seq %d (%v)", k, s, recv[i], s-1, recv[i-1])
			}
			if cur == prev || prev < 0 {
				continue
			}
			if visited[cur] || !slices.Contains(parents[int(cur)], int(prev)) {
				problem("key %d moved from shard %d to shard %d at seq %d: not from a parent to its child", k, prev, cur, s)
			}
			visited[cur] = true
			moves[[2]int32{prev, cur}]++
		}
	}
	for child, ps := range parents {
		n := 0
		for _, p := range ps {
			n += moves[[2]int32{int32(p), int32(child)}]
		}
		if n == 0 {
			t.Errorf("no key moved into shard %d mid-stream", child)
		}
	}
	t.Logf("keys moving parent->child mid-stream: %v", moves)
	if problems > 10 {
		t.Errorf("%d storage problems in all", problems)
	}
}
