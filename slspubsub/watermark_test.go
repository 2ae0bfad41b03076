package slspubsub

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/watermill-sls/watermill-sls/internal/testutil"
	"github.com/watermill-sls/watermill-sls/watermark"
)

// wmBase is the event time the watermark tests start from (a whole minute,
// so one-minute windows align to it).
var wmBase = time.Date(2026, 3, 4, 5, 6, 0, 0, time.UTC)

// wmWrite appends logs with the given event (log) times to shard of
// logstore, perGroup logs per LogGroup. Log i has UUID "<prefix>-<i>" and
// payload payload(i) ("x" when nil).
func wmWrite(t testing.TB, env *testutil.SLSEnv, logstore string, shard int, prefix string, times []time.Time, perGroup int, payload func(i int) string) {
	t.Helper()
	for start := 0; start < len(times); start += perGroup {
		g := LogGroup{}
		for i := start; i < min(start+perGroup, len(times)); i++ {
			p := "x"
			if payload != nil {
				p = payload(i)
			}
			m := message.NewMessage(fmt.Sprintf("%s-%d", prefix, i), []byte(p))
			m.Metadata.Set(MetadataTime, times[i].Format(time.RFC3339Nano))
			rec, err := DefaultMarshaler{}.Marshal(logstore, m)
			if err != nil {
				t.Fatal(err)
			}
			g.Logs = append(g.Logs, rec.Log)
		}
		if _, err := env.Server.AppendLogGroup(testProject, logstore, shard, toSDK(&g)); err != nil {
			t.Fatalf("AppendLogGroup: %v", err)
		}
	}
}

// wmTimes returns n event times from wmBase+offset, step apart.
func wmTimes(offset, step time.Duration, n int) []time.Time {
	out := make([]time.Time, n)
	for i := range out {
		out[i] = wmBase.Add(offset + time.Duration(i)*step)
	}
	return out
}

func TestSubscriberWatermarkConfigValidate(t *testing.T) {
	cfg := SubscriberConfig{ClientConfig: ClientConfig{Endpoint: "e", Project: "proj", AccessKeyID: "a", AccessKeySecret: "s"},
		Watermark: &WatermarkConfig{
			Strategy:  watermark.Strategy{MaxOutOfOrderness: -1, IdleTimeout: -1},
			Alignment: &AlignmentConfig{MaxDrift: -time.Second, UpdateInterval: -1},
		}}
	err := cfg.Validate()
	if err == nil {
		t.Fatal("Validate accepted a bad watermark config")
	}
	for _, field := range []string{"Watermark.Strategy", "MaxOutOfOrderness", "IdleTimeout", "Watermark.Alignment.Group",
		"Watermark.Alignment.MaxDrift", "Watermark.Alignment.UpdateInterval", "Watermark.Alignment.Coordinator"} {
		if !strings.Contains(err.Error(), field) {
			t.Errorf("error does not name %s: %v", field, err)
		}
	}
	cfg.Watermark = &WatermarkConfig{Alignment: &AlignmentConfig{Group: "g", MaxDrift: time.Second, Coordinator: watermark.NewInProcessCoordinator()}}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("valid watermark config rejected: %v", err)
	}
	if _, err := NewSubscriber(cfg, nil); err != nil {
		t.Fatalf("NewSubscriber: %v", err)
	}
}

// TestSubscriberWatermarkStampsMessages reads two shards with known event
// times: every message carries the subscription's watermark, which never
// goes backwards and never passes the message's own event time on a shard
// that is still behind; once everything is delivered, Watermark and
// ShardWatermarks give the newest event times. Without WatermarkConfig
// messages carry no watermark and the accessors report none.
func TestSubscriberWatermarkStampsMessages(t *testing.T) {
	env := testutil.SLS(t)
	env.LogStore(t, testProject, testLogstore, 2)
	wmWrite(t, env, testLogstore, 0, "a", wmTimes(0, time.Second, 30), 10, nil)
	wmWrite(t, env, testLogstore, 1, "b", wmTimes(500*time.Millisecond, time.Second, 20), 10, nil)

	plain := stSubscriber(t, env, nil)
	ch, err := plain.Subscribe(context.Background(), testLogstore)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range stReceive(t, ch, 50, true) {
		if _, ok := m.Metadata[watermark.MetadataKey]; ok {
			t.Fatalf("message %s carries a watermark without WatermarkConfig", m.UUID)
		}
	}
	if _, ok := plain.Watermark(testLogstore); ok || plain.ShardWatermarks(testLogstore) != nil {
		t.Fatal("watermark reported without WatermarkConfig")
	}

	s := stSubscriber(t, env, func(c *SubscriberConfig) {
		c.Watermark = &WatermarkConfig{Strategy: watermark.Strategy{MaxOutOfOrderness: 2 * time.Second, IdleTimeout: time.Minute}}
	})
	ch, err = s.Subscribe(context.Background(), testLogstore)
	if err != nil {
		t.Fatal(err)
	}
	var last time.Time
	seen := map[string]bool{}
	unstamped := 0 // after both shards delivered
	for _, m := range stReceive(t, ch, 50, true) {
		seen[m.Metadata.Get(MetadataShard)] = true
		wm, ok := watermark.FromMessage(m)
		if !ok {
			// Until both shards delivered, a pending shard keeps the
			// watermark undefined; a message already stamped and waiting
			// for the channel may follow.
			if len(seen) == 2 {
				unstamped++
			}
			continue
		}
		if wm.Before(last) {
			t.Fatalf("message %s: watermark went back from %v to %v", m.UUID, last, wm)
		}
		last = wm
		f, err := LogFieldsFromMessage(m)
		if err != nil {
			t.Fatal(err)
		}
		if wm.After(f.Time) && !f.Time.Before(wmBase.Add(19*time.Second)) {
			t.Fatalf("message %s at %v delivered with watermark %v past it", m.UUID, f.Time.Sub(wmBase), wm.Sub(wmBase))
		}
	}
	if unstamped > 2 || last.IsZero() {
		t.Fatalf("%d messages without a watermark after both shards delivered (last watermark %v)", unstamped, last)
	}
	// Shard 1's newest event is at 19.5 s, shard 0's at 29 s; bound 2 s.
	want := map[int]time.Time{0: wmBase.Add(27 * time.Second), 1: wmBase.Add(17500 * time.Millisecond)}
	got := s.ShardWatermarks(testLogstore)
	for id, w := range want {
		if !got[id].Equal(w) {
			t.Errorf("shard %d watermark %v, want %v", id, got[id].Sub(wmBase), w.Sub(wmBase))
		}
	}
	if wm, ok := s.Watermark(testLogstore); !ok || !wm.Equal(want[1]) {
		t.Errorf("subscription watermark %v (%v), want %v", wm.Sub(wmBase), ok, want[1].Sub(wmBase))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Watermark(testLogstore); ok {
		t.Error("watermark reported after Close")
	}
}

// Sizes of the skew tests: 8 shards over span of event time; shards 0 and
// 1 hold skewDense logs per event second, the others one.
const (
	skewShards   = 8
	skewDense    = 10
	skewPerGroup = 5
	skewFetch    = 2 // LogGroups per PullLogs
	skewMaxDrift = 30 * time.Second
)

// skewBatchSpan is the event-time span of one fetched answer of a sparse
// shard: skewFetch groups of skewPerGroup logs, one second apart.
const skewBatchSpan = skewFetch * skewPerGroup * time.Second

// skewStep is the largest event-time step between two consecutive logs of
// a shard of writeSkewed (the sparse shards'): alignment holds a shard's
// delivery at the limit, so its watermark passes it by at most this much.
const skewStep = time.Second

// writeSkewed fills an 8-shard logstore: every shard covers the same span
// of event time from wmBase; shards 0 and 1 with 10x the logs. It returns
// the number of logs written.
func writeSkewed(t testing.TB, env *testutil.SLSEnv, logstore string, span time.Duration, payload func(shard, i int) string) int {
	t.Helper()
	total := 0
	for shard := range skewShards {
		step := time.Second
		if shard < 2 {
			step = time.Second / skewDense
		}
		n := int(span / step)
		var p func(int) string
		if payload != nil {
			p = func(i int) string { return payload(shard, i) }
		}
		wmWrite(t, env, logstore, shard, fmt.Sprintf("%s-s%d", logstore, shard), wmTimes(0, step, n), skewPerGroup, p)
		total += n
	}
	return total
}

// spreadSampler measures, continuously, the spread between the highest
// and the lowest watermark of the shards that hold a subscription's
// watermark (active or paused, with a watermark).
type spreadSampler struct {
	max     time.Duration
	samples int
	where   string
}

func (sp *spreadSampler) sample(first, second []watermark.ShardStatus) {
	lo, hi, n := holdingSpread(first, second)
	if n < 2 {
		return
	}
	sp.samples++
	if d := hi.Sub(lo); d > sp.max {
		sp.max = d
		sp.where = fmt.Sprintf("%+v then %+v", first, second)
	}
}

// holdingSpread returns the highest watermark in first and the lowest in
// second of the shards that hold the watermark (active or paused, with a
// watermark) in both. A status list is read shard by shard while the
// shards move on; with first read before second, and watermarks that only
// grow, hi - lo never overstates the spread at a moment between the reads
// (a single list could: a goroutine descheduled between two shards' reads
// pairs an old value with a new one).
func holdingSpread(first, second []watermark.ShardStatus) (lo, hi time.Time, n int) {
	holding := func(st watermark.ShardStatus) bool {
		return st.HasWatermark && (st.State == watermark.ShardActive || st.State == watermark.ShardPaused)
	}
	for _, a := range first {
		if !holding(a) {
			continue
		}
		for _, b := range second {
			if b.ID != a.ID || !holding(b) {
				continue
			}
			if n == 0 || a.Watermark.After(hi) {
				hi = a.Watermark
			}
			if n == 0 || b.Watermark.Before(lo) {
				lo = b.Watermark
			}
			n++
		}
	}
	return lo, hi, n
}

// sampleWhile samples statuses() every 200 µs until done closes.
func (sp *spreadSampler) sampleWhile(done <-chan struct{}, statuses func() []watermark.ShardStatus) {
	tick := time.NewTicker(200 * time.Microsecond)
	defer tick.Stop()
	for {
		select {
		case <-done:
			return
		case <-tick.C:
			sp.sample(statuses(), statuses())
		}
	}
}

// skewSubscriber subscribes to logstore with watermarks (aligned in group
// when coord is set), fast pacing and skewFetch LogGroups per fetch.
func skewSubscriber(t *testing.T, env *testutil.SLSEnv, name, group string, coord watermark.Coordinator) *Subscriber {
	return skewSubscriberFetch(t, env, name, group, coord, skewFetch)
}

// skewSubscriberFetch is skewSubscriber with fetchCount LogGroups per fetch
// (0: the default).
func skewSubscriberFetch(t *testing.T, env *testutil.SLSEnv, name, group string, coord watermark.Coordinator, fetchCount int) *Subscriber {
	return stSubscriber(t, env, func(c *SubscriberConfig) {
		c.ConsumerName = name
		c.FetchCount = fetchCount
		c.Watermark = &WatermarkConfig{Strategy: watermark.Strategy{IdleTimeout: 5 * time.Second}}
		if coord != nil {
			c.Watermark.Alignment = &AlignmentConfig{Group: group, MaxDrift: skewMaxDrift, Coordinator: coord}
		}
	})
}

// consumeAll receives from ch, acking, until want distinct messages came,
// and returns them by UUID; it may run on any goroutine.
func consumeAll(ch <-chan *message.Message, want int, handle func(*message.Message)) (map[string]int, error) {
	got := map[string]int{}
	timeout := time.After(testutil.SoakOr(2*time.Minute, 20*time.Minute))
	for len(got) < want {
		select {
		case m, ok := <-ch:
			if !ok {
				return got, fmt.Errorf("channel closed after %d of %d messages", len(got), want)
			}
			got[m.UUID]++
			if handle != nil {
				handle(m)
			}
			m.Ack()
		case <-timeout:
			return got, fmt.Errorf("received %d of %d messages", len(got), want)
		}
	}
	return got, nil
}

// TestSubscriberWatermarkAlignmentSkew is issue 5's skew case: a logstore
// with 8 shards where 2 shards hold 10x the logs for the same event-time
// span, read from the beginning with MaxDrift 30 s. Sampled continuously,
// the spread between the fastest and the slowest shard's watermark never
// exceeds MaxDrift plus one event-time step of a shard (alignment holds
// deliveries at the limit, so it does not depend on how much one fetch
// brings: small fetches, and the default FetchCount whose one answer spans
// the whole sparse shards), and every log is delivered. The same data read
// without alignment shows the spread the alignment prevents.
func TestSubscriberWatermarkAlignmentSkew(t *testing.T) {
	env := testutil.SLS(t)
	env.LogStore(t, testProject, testLogstore, skewShards)
	span := testutil.SoakOr(300*time.Second, 3000*time.Second)
	total := writeSkewed(t, env, testLogstore, span, nil)
	bound := skewMaxDrift + skewStep

	run := func(aligned bool, fetchCount int) (spreadSampler, watermark.AlignerStats) {
		var coord watermark.Coordinator
		if aligned {
			coord = watermark.NewInProcessCoordinator()
		}
		s := skewSubscriberFetch(t, env, fmt.Sprintf("aligned-%v-%d", aligned, fetchCount), "skew", coord, fetchCount)
		ch, err := s.Subscribe(context.Background(), testLogstore)
		if err != nil {
			t.Fatal(err)
		}
		var sp spreadSampler
		done, sampled := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(sampled)
			sp.sampleWhile(done, func() []watermark.ShardStatus { return s.ShardWatermarkStatus(testLogstore) })
		}()
		got, err := consumeAll(ch, total, nil)
		close(done)
		<-sampled
		if err != nil {
			t.Fatalf("aligned=%v FetchCount %d: %v", aligned, fetchCount, err)
		}
		for id, n := range got {
			if n != 1 {
				t.Errorf("aligned=%v FetchCount %d: %s delivered %d times", aligned, fetchCount, id, n)
			}
		}
		stats, _ := s.AlignmentStats(testLogstore)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		return sp, stats
	}
	for _, fetchCount := range []int{skewFetch, 0} {
		al, stats := run(true, fetchCount)
		t.Logf("FetchCount %d (0: default %d): %d logs over %v of event time on %d shards (2 with %dx the logs): max watermark spread aligned %v (bound %v = MaxDrift %v + one event step %v; %d samples, %d blocked waits)",
			fetchCount, DefaultFetchCount, total, span, skewShards, skewDense, al.max, bound, skewMaxDrift, skewStep, al.samples, stats.Blocks)
		if al.max > bound {
			t.Errorf("FetchCount %d: aligned spread %v exceeds %v at %s", fetchCount, al.max, bound, al.where)
		}
		if al.samples == 0 || stats.Blocks == 0 {
			t.Errorf("FetchCount %d: alignment not exercised: %d samples, %d blocked waits", fetchCount, al.samples, stats.Blocks)
		}
	}
	free, _ := run(false, skewFetch)
	t.Logf("unaligned (FetchCount %d): max watermark spread %v (%d samples)", skewFetch, free.max, free.samples)
	if free.max <= bound+skewBatchSpan {
		t.Errorf("without alignment the spread %v stayed within %v: the data does not show skew", free.max, bound+skewBatchSpan)
	}
}

// joinResult is what one run of the join test found.
type joinResult struct {
	orders, matched, late int
}

// TestSubscriberWatermarkAlignedJoin is the users' problem: orders and
// payments, two logstores of 4 shards each, joined by order id in
// one-minute event-time windows. Two payment shards carry 10x the logs
// (other payment events), so the payments stream advances slowly in event
// time while the orders stream races ahead. The join advances its windows
// with the watermark every message carries (as watermark.Windows tells a
// handler to), so the faster stream's watermark fires windows before the
// slower stream's events for them came, unless the two Subscribers are
// aligned in one group: then, with AllowedLateness of MaxDrift plus one
// event-time step of a shard (see AlignmentConfig), no match is lost.
// Without alignment the same data loses matches.
func TestSubscriberWatermarkAlignedJoin(t *testing.T) {
	span := testutil.SoakOr(300*time.Second, 3000*time.Second)
	aligned := runJoin(t, span, true)
	free := runJoin(t, span, false)
	t.Logf("%d orders over %v of event time: join matches lost with alignment %d (%d late events), without alignment %d (%d late events)",
		aligned.orders, span, aligned.orders-aligned.matched, aligned.late, free.orders-free.matched, free.late)
	if aligned.matched != aligned.orders || aligned.late != 0 {
		t.Errorf("aligned: %d of %d orders matched, %d late events; want all matched, none late", aligned.matched, aligned.orders, aligned.late)
	}
	if free.matched >= free.orders {
		t.Errorf("without alignment every order matched (%d): the data does not show the loss alignment prevents", free.matched)
	}
}

func runJoin(t *testing.T, span time.Duration, aligned bool) joinResult {
	const (
		shards = 4
		orders = "orders"
		pays   = "payments"
	)
	env := testutil.SLS(t)
	env.LogStore(t, testProject, orders, shards)
	env.LogStore(t, testProject, pays, shards)
	n := int(span / time.Second) // orders per shard, one per second
	total := 0
	for shard := range shards {
		offset := time.Duration(shard) * 250 * time.Millisecond
		id := func(i int) string { return fmt.Sprintf("o%d-%d", shard, i) }
		wmWrite(t, env, orders, shard, fmt.Sprintf("order%d", shard), wmTimes(offset, time.Second, n), skewPerGroup,
			func(i int) string { return "order|" + id(i) })
		total += n
		if shard >= 2 {
			wmWrite(t, env, pays, shard, fmt.Sprintf("pay%d", shard), wmTimes(offset, time.Second, n), skewPerGroup,
				func(i int) string { return "pay|" + id(i) })
			continue
		}
		// 10x: each payment is followed by 9 other events in its second.
		wmWrite(t, env, pays, shard, fmt.Sprintf("pay%d", shard), wmTimes(offset, time.Second/skewDense, n*skewDense), skewPerGroup,
			func(i int) string {
				if i%skewDense != 0 {
					return "other"
				}
				return "pay|" + id(i/skewDense)
			})
	}
	payLogs := 2*n + 2*n*skewDense

	var coord watermark.Coordinator
	if aligned {
		coord = watermark.NewInProcessCoordinator()
	}
	join, err := watermark.NewWindows[string, byte, byte](watermark.WindowConfig{
		Size: time.Minute, AllowedLateness: skewMaxDrift + skewStep,
	}, func(acc, side byte) byte { return acc | side })
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	res := joinResult{orders: total}
	fired := func(rs []watermark.WindowResult[string, byte]) {
		mu.Lock()
		defer mu.Unlock()
		for _, r := range rs {
			if r.Value == 3 {
				res.matched++
			}
		}
	}
	handle := func(m *message.Message) {
		side, id, _ := strings.Cut(string(m.Payload), "|")
		f, err := LogFieldsFromMessage(m)
		if err != nil {
			t.Error(err)
			return
		}
		switch side {
		case "order":
			if join.Add(id, f.Time, 1) {
				mu.Lock()
				res.late++
				mu.Unlock()
			}
		case "pay":
			if join.Add(id, f.Time, 2) {
				mu.Lock()
				res.late++
				mu.Unlock()
			}
		}
		fired(join.AdvanceFromMessage(m))
	}
	var wg sync.WaitGroup
	for _, topic := range []struct {
		name string
		logs int
	}{{orders, total}, {pays, payLogs}} {
		s := skewSubscriber(t, env, topic.name, "join", coord)
		ch, err := s.Subscribe(context.Background(), topic.name)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := consumeAll(ch, topic.logs, handle); err != nil {
				t.Errorf("%s: %v", topic.name, err)
			}
		}()
	}
	wg.Wait()
	fired(join.Flush())
	return res
}

// TestSubscriberWatermarkSplitDuringAlignment splits a shard while
// alignment pauses it (it is far ahead of the dense shard): the paused
// parent still drains, is read to its end once the group catches up, and
// finishes; its children start at its final watermark and are read; the
// spread stays within MaxDrift plus one answer's span all along and every
// log is delivered exactly once.
func TestSubscriberWatermarkSplitDuringAlignment(t *testing.T) {
	env := testutil.SLS(t)
	env.LogStore(t, testProject, testLogstore, 2)
	const parentSpan = 200 * time.Second
	// Shard 0: dense; shard 1: sparse, ahead by alignment soon.
	wmWrite(t, env, testLogstore, 0, "dense", wmTimes(0, time.Second/skewDense, int(parentSpan/time.Second)*skewDense), skewPerGroup, nil)
	wmWrite(t, env, testLogstore, 1, "sparse", wmTimes(0, time.Second, int(parentSpan/time.Second)), skewPerGroup, nil)
	total := int(parentSpan/time.Second)*(skewDense+1) + 2*60

	coord := watermark.NewInProcessCoordinator()
	s := stSubscriber(t, env, func(c *SubscriberConfig) {
		c.FetchCount = skewFetch
		c.RediscoveryInterval = 20 * time.Millisecond
		c.Watermark = &WatermarkConfig{
			// The dense shard ends 60 s of event time before the children:
			// they wait until it is idle.
			Strategy:  watermark.Strategy{IdleTimeout: 2 * time.Second},
			Alignment: &AlignmentConfig{Group: "split", MaxDrift: skewMaxDrift, Coordinator: coord},
		}
	})
	ch, err := s.Subscribe(context.Background(), testLogstore)
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu  sync.Mutex
		got = map[string]int{}
	)
	var sp spreadSampler
	consumed := make(chan error, 1)
	gate := make(chan struct{}) // closed after the split: until then the consumer stalls after 300 logs
	go func() {
		n := 0
		_, err := consumeAll(ch, total, func(m *message.Message) {
			n++
			if n == 300 {
				<-gate
			}
			mu.Lock()
			got[m.UUID]++
			mu.Unlock()
			sp.sample(s.ShardWatermarkStatus(testLogstore), s.ShardWatermarkStatus(testLogstore))
		})
		consumed <- err
	}()
	testutil.Poll(t, 30*time.Second, "the sparse shard paused by alignment", func() (bool, string) {
		sh := s.ShardWatermarkStatus(testLogstore)
		return len(sh) == 2 && sh[1].State == watermark.ShardPaused, fmt.Sprintf("%+v", sh)
	})
	infos, err := env.Server.SplitShard(testProject, testLogstore, 1, "")
	if err != nil {
		t.Fatal(err)
	}
	var children []int
	for _, in := range infos {
		if in.ShardID != 1 {
			children = append(children, in.ShardID)
			wmWrite(t, env, testLogstore, in.ShardID, fmt.Sprintf("child%d", in.ShardID), wmTimes(parentSpan, time.Second, 60), skewPerGroup, nil)
		}
	}
	close(gate)
	if err := <-consumed; err != nil {
		t.Fatal(err)
	}
	for id, n := range got {
		if n != 1 {
			t.Errorf("%s delivered %d times", id, n)
		}
	}
	status := s.ShardWatermarkStatus(testLogstore)
	byID := map[int]watermark.ShardStatus{}
	for _, st := range status {
		byID[st.ID] = st
	}
	parentFinal := wmBase.Add(parentSpan - time.Second)
	if p := byID[1]; p.State != watermark.ShardFinished || !p.Watermark.Equal(parentFinal) {
		t.Errorf("parent shard 1: %+v, want finished at %v", p, parentFinal.Sub(wmBase))
	}
	stats, _ := s.AlignmentStats(testLogstore)
	t.Logf("split of a paused shard: %d logs, max spread %v (bound %v), %d blocked fetches, children %v, statuses %+v",
		len(got), sp.max, skewMaxDrift+skewBatchSpan, stats.Blocks, children, status)
	for _, c := range children {
		if _, ok := byID[c]; !ok {
			t.Errorf("child %d not tracked", c)
		}
	}
	if sp.max > skewMaxDrift+skewBatchSpan {
		t.Errorf("spread %v exceeds %v at %s", sp.max, skewMaxDrift+skewBatchSpan, sp.where)
	}
	if stats.Blocks == 0 {
		t.Error("alignment never blocked a fetch")
	}
}

// TestSubscriberWatermarkGatedChildrenDoNotHoldGroup: a subscription whose
// only unread shard is a child waiting for a parent read elsewhere (static
// instance 1 of 2, instance 0 not running) tracks no shard and so does not
// hold its alignment group: the other member, on another logstore, reads
// all of its data, far more than MaxDrift of event time.
func TestSubscriberWatermarkGatedChildrenDoNotHoldGroup(t *testing.T) {
	env := testutil.SLS(t)
	const other = "other"
	env.LogStore(t, testProject, testLogstore, 1)
	env.LogStore(t, testProject, other, 1)
	if _, err := env.Server.SplitShard(testProject, testLogstore, 0, ""); err != nil {
		t.Fatal(err)
	}
	// Data in the children, which instance 1 must not read before the
	// parent (read by the absent instance 0) is finished.
	wmWrite(t, env, testLogstore, 1, "c1", wmTimes(0, time.Second, 10), 5, nil)
	wmWrite(t, env, testLogstore, 2, "c2", wmTimes(0, time.Second, 10), 5, nil)
	const n = 300
	wmWrite(t, env, other, 0, "o", wmTimes(0, time.Second, n), 5, nil)

	coord := watermark.NewInProcessCoordinator()
	wm := func(c *SubscriberConfig) {
		c.Watermark = &WatermarkConfig{
			Strategy:  watermark.Strategy{IdleTimeout: time.Minute}, // longer than the test: idleness must not be what frees the group
			Alignment: &AlignmentConfig{Group: "gated", MaxDrift: skewMaxDrift, Coordinator: coord},
		}
	}
	gated := stSubscriber(t, env, func(c *SubscriberConfig) {
		fastGroup("i1")(c)
		c.Assignment, c.StaticInstances, c.StaticIndex = AssignStatic, 2, 1
		c.ShardAssigner = RoundRobinAssigner{} // shards [0 1 2]: instance 1 gets child 1 only
		wm(c)
	})
	gch, err := gated.Subscribe(context.Background(), testLogstore)
	if err != nil {
		t.Fatal(err)
	}
	free := stSubscriber(t, env, func(c *SubscriberConfig) { c.FetchCount = skewFetch; wm(c) })
	och, err := free.Subscribe(context.Background(), other)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := consumeAll(och, n, nil); err != nil {
		t.Fatalf("the other member was held by the gated one: %v", err)
	}
	stNothing(t, gch)
	if st := gated.ShardWatermarkStatus(testLogstore); len(st) != 0 {
		t.Errorf("gated subscription tracks %+v, want no shard", st)
	}
	if wm, ok := gated.Watermark(testLogstore); ok {
		t.Errorf("gated subscription has watermark %v", wm)
	}
	if wm, ok := free.Watermark(other); !ok || !wm.Equal(wmBase.Add((n-1)*time.Second)) {
		t.Errorf("other logstore's watermark %v (%v), want %v", wm.Sub(wmBase), ok, (n-1)*time.Second)
	}
}

// TestWatermarkStampAllocations: observing a message's event time and
// stamping the watermark on it allocate nothing per message (the texts of
// moving watermarks are cut from shared slabs), nor does reading the
// Subscriber's watermark.
func TestWatermarkStampAllocations(t *testing.T) {
	w, err := newSubWatermark(&WatermarkConfig{})
	if err != nil {
		t.Fatal(err)
	}
	sh, err := w.tracker.AddShard(0, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	sw := &shardWatermark{w: w, sh: sh}
	msg := message.NewMessage("m", nil)
	msg.Metadata[watermark.MetadataKey] = "0"
	log := &Log{Time: wmBase}
	allocs := testing.AllocsPerRun(10000, func() {
		log.Time = log.Time.Add(time.Millisecond) // the watermark moves every time
		sw.observe(nil, msg, log, Position{})
		sw.stamp(msg)
	})
	if got, ok := watermark.FromMessage(msg); !ok || !got.Equal(log.Time) {
		t.Fatalf("stamped %v (%v), want %v", got, ok, log.Time)
	}
	if allocs > 0.05 {
		t.Errorf("observe + stamp: %.3f allocations per message, want amortized 0", allocs)
	}
	s := &Subscriber{subs: map[string][]*subscription{"t": {{wm: w}}}}
	if a := testing.AllocsPerRun(100, func() { s.Watermark("t") }); a != 0 {
		t.Errorf("Subscriber.Watermark: %v allocations", a)
	}
}

// TestSubscriberWatermarkSlowHandlerIsNotIdle: a handler that holds a
// message of one shard far longer than the IdleTimeout is back-pressure,
// not idleness (FLINK-35886): the shard keeps holding the watermark, which
// never passes the event time of the shard's next messages, although the
// other shard is minutes ahead.
func TestSubscriberWatermarkSlowHandlerIsNotIdle(t *testing.T) {
	env := testutil.SLS(t)
	env.LogStore(t, testProject, testLogstore, 2)
	wmWrite(t, env, testLogstore, 0, "slow", wmTimes(0, time.Second, 5), 5, nil)
	wmWrite(t, env, testLogstore, 1, "ahead", wmTimes(10*time.Minute, time.Second, 5), 5, nil)
	const idle = 200 * time.Millisecond
	s := stSubscriber(t, env, func(c *SubscriberConfig) {
		c.Watermark = &WatermarkConfig{Strategy: watermark.Strategy{IdleTimeout: idle}}
	})
	ch, err := s.Subscribe(context.Background(), testLogstore)
	if err != nil {
		t.Fatal(err)
	}
	var held *message.Message
	for range 6 { // one of shard 0 (held) and all five of shard 1, in some order
		m := stReceive(t, ch, 1, false)[0]
		if m.Metadata.Get(MetadataShard) == "0" && held == nil {
			held = m
			continue
		}
		if m.Metadata.Get(MetadataShard) == "0" {
			t.Fatalf("shard 0 delivered %s before %s was acked", m.UUID, held.UUID)
		}
		m.Ack()
	}
	// Hold shard 0's message for 5 IdleTimeouts.
	deadline := time.Now().Add(5 * idle)
	for time.Now().Before(deadline) {
		if wm, ok := s.Watermark(testLogstore); ok && wm.After(wmBase) {
			t.Fatalf("watermark moved to %v while shard 0's handler held its message at 0s", wm.Sub(wmBase))
		}
		if st := s.ShardWatermarkStatus(testLogstore); st[0].State == watermark.ShardIdle {
			t.Fatalf("shard 0 turned idle while its handler held a message: %+v", st)
		}
		time.Sleep(10 * time.Millisecond) // sampling while the handler holds the message, not waiting for a condition
	}
	held.Ack()
	for _, m := range stReceive(t, ch, 4, true) {
		wm, _ := watermark.FromMessage(m)
		f, _ := LogFieldsFromMessage(m)
		if wm.After(f.Time) {
			t.Fatalf("%s at %v delivered with watermark %v: late after a slow handler", m.UUID, f.Time.Sub(wmBase), wm.Sub(wmBase))
		}
	}
}

// TestSubscriberWatermarkChildrenStartAtParentsFinal: a shard created by a
// merge starts at the lower of its parents' final watermarks, a shard
// created by a split at its parent's; children without data keep it. A
// third shard holds the subscription's watermark at 10 s, so a child
// started at the subscription's watermark would show 10 s.
func TestSubscriberWatermarkChildrenStartAtParentsFinal(t *testing.T) {
	env := testutil.SLS(t)
	env.LogStore(t, testProject, testLogstore, 3)
	wmWrite(t, env, testLogstore, 2, "low", wmTimes(0, time.Second, 11), 11, nil) // holds at 10 s
	wmWrite(t, env, testLogstore, 0, "p0", wmTimes(0, time.Second, 51), 10, nil)  // final 50 s
	wmWrite(t, env, testLogstore, 1, "p1", wmTimes(0, time.Second, 31), 10, nil)  // final 30 s
	s := stSubscriber(t, env, func(c *SubscriberConfig) {
		c.RediscoveryInterval = 20 * time.Millisecond
		c.Watermark = &WatermarkConfig{Strategy: watermark.Strategy{IdleTimeout: time.Minute}}
	})
	ch, err := s.Subscribe(context.Background(), testLogstore)
	if err != nil {
		t.Fatal(err)
	}
	stReceive(t, ch, 93, true)
	if wm, ok := s.Watermark(testLogstore); !ok || !wm.Equal(wmBase.Add(10*time.Second)) {
		t.Fatalf("subscription watermark %v (%v), want 10s", wm.Sub(wmBase), ok)
	}
	infos, err := env.Server.MergeShards(testProject, testLogstore, 0) // with shard 1
	if err != nil {
		t.Fatal(err)
	}
	merged := -1
	for _, in := range infos {
		if in.ShardID > 2 {
			merged = in.ShardID
		}
	}
	status := func(id int) (watermark.ShardStatus, bool) {
		for _, st := range s.ShardWatermarkStatus(testLogstore) {
			if st.ID == id {
				return st, true
			}
		}
		return watermark.ShardStatus{}, false
	}
	testutil.Poll(t, 30*time.Second, "the merged shard tracked", func() (bool, string) {
		_, ok := status(merged)
		return ok, fmt.Sprintf("%+v", s.ShardWatermarkStatus(testLogstore))
	})
	if st, _ := status(merged); !st.HasWatermark || !st.Watermark.Equal(wmBase.Add(30*time.Second)) {
		t.Fatalf("merged shard %d: %+v, want the lower parent final 30s", merged, st)
	}
	// Give the merged shard a newest event at 70 s, then split it.
	wmWrite(t, env, testLogstore, merged, "m", wmTimes(70*time.Second, time.Second, 1), 1, nil)
	stReceive(t, ch, 1, true)
	infos, err = env.Server.SplitShard(testProject, testLogstore, merged, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range infos {
		if in.ShardID == merged {
			continue
		}
		testutil.Poll(t, 30*time.Second, fmt.Sprintf("split child %d tracked", in.ShardID), func() (bool, string) {
			_, ok := status(in.ShardID)
			return ok, fmt.Sprintf("%+v", s.ShardWatermarkStatus(testLogstore))
		})
		if st, _ := status(in.ShardID); !st.HasWatermark || !st.Watermark.Equal(wmBase.Add(70*time.Second)) {
			t.Errorf("split child %d: %+v, want its parent's final 70s", in.ShardID, st)
		}
	}
}

// TestSubscriberWatermarkConsumerGroupHandOver: two aligned members of an
// SLS consumer group track exactly the shards SLS assigns them; when one
// closes, the other takes its shards over, tracks them and reads them, and
// nothing blocks (the closed member left the alignment group).
func TestSubscriberWatermarkConsumerGroupHandOver(t *testing.T) {
	env := testutil.SLS(t)
	env.LogStore(t, testProject, testLogstore, 4)
	coord := watermark.NewInProcessCoordinator()
	member := func(name string) *Subscriber {
		return stSubscriber(t, env, func(c *SubscriberConfig) {
			fastGroup(name)(c)
			c.Watermark = &WatermarkConfig{
				Strategy:  watermark.Strategy{IdleTimeout: time.Minute},
				Alignment: &AlignmentConfig{Group: "cg", MaxDrift: skewMaxDrift, Coordinator: coord},
			}
		})
	}
	a, b := member("a"), member("b")
	r := newReceived()
	for name, s := range map[string]*Subscriber{"a": a, "b": b} {
		ch, err := s.Subscribe(context.Background(), testLogstore)
		if err != nil {
			t.Fatal(err)
		}
		r.consume(t, name, ch)
	}
	tracked := func(s *Subscriber) []int {
		var ids []int
		for _, st := range s.ShardWatermarkStatus(testLogstore) {
			ids = append(ids, st.ID)
		}
		return ids
	}
	testutil.Poll(t, 30*time.Second, "2 shards tracked by each member", func() (bool, string) {
		ta, tb := tracked(a), tracked(b)
		return len(ta) == 2 && len(tb) == 2, fmt.Sprintf("a %v, b %v", ta, tb)
	})
	for shard := range 4 {
		wmWrite(t, env, testLogstore, shard, fmt.Sprintf("first%d", shard), wmTimes(0, time.Second, 10), 5, nil)
	}
	testutil.Poll(t, 30*time.Second, "40 messages", func() (bool, string) {
		return r.distinct() == 40, fmt.Sprint(r.distinct())
	})
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	testutil.Poll(t, 30*time.Second, "a tracking all 4 shards", func() (bool, string) {
		ta := tracked(a)
		return len(ta) == 4, fmt.Sprint(ta)
	})
	for shard := range 4 {
		wmWrite(t, env, testLogstore, shard, fmt.Sprintf("second%d", shard), wmTimes(5*time.Minute, time.Second, 10), 5, nil)
	}
	testutil.Poll(t, 30*time.Second, "80 messages", func() (bool, string) {
		return r.distinct() == 80, fmt.Sprint(r.distinct())
	})
	want := wmBase.Add(5*time.Minute + 9*time.Second)
	testutil.Poll(t, 10*time.Second, "a's watermark at the newest event", func() (bool, string) {
		wm, ok := a.Watermark(testLogstore)
		return ok && wm.Equal(want), fmt.Sprintf("%v %v", wm.Sub(wmBase), ok)
	})
}
