package slspubsub

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"runtime/metrics"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	sls "github.com/aliyun/aliyun-log-go-sdk"
	consumer "github.com/aliyun/aliyun-log-go-sdk/consumer"
	"github.com/go-kit/kit/log"
	"github.com/gogo/protobuf/proto"

	"github.com/watermill-sls/watermill-sls/internal/testutil"
)

// benchShards is the shard count of the benchmarks' logstores.
const benchShards = 8

// benchConsumeTimeout bounds one full consumption, so a broken run fails
// instead of hanging until the test binary's timeout.
const benchConsumeTimeout = 5 * time.Minute

// BenchmarkSubscriberVsSDKConsumer preloads one emulator with access-log
// lines of ~200 bytes (1 000 000 under WSLS_SOAK, 200 000 otherwise) over 8
// shards, in LogGroups of 100 to 1000 logs, and reads all of them from the
// beginning with this package's Subscriber and with the SDK's consumer
// library, side by side, then logs the throughput ratio (the target
// is at least 2x).
//
// Each iteration is one full consumption by a fresh reader, timed from its
// construction until the last log was handled; shutting it down is not
// timed (StopAndWait of the SDK sleeps at least 500 ms by design). Both
// sides report logs/s, MB/s of raw (protobuf-encoded, uncompressed) log
// bytes, the process's CPU time per log (cpu-ns/log) and the cores it kept
// busy on average (cores), and allocations per log. The emulator runs in
// the same process, so its work (serving and LZ4-compressing PullLogs
// answers), CPU time and allocations are counted on both sides alike. On a
// machine whose cores are shared, cpu-ns/log is the steadier figure: when
// other processes hold the cores, logs/s follows the CPU time per log.
//
//   - watermill-sls: a Subscriber with StartAtBegin, StopAtEnd (its
//     channel closes once everything was read and acked), FetchCount 1000,
//     defaults otherwise (LZ4, MaxInFlight 1, 16 MiB prefetch per shard);
//     one handler goroutine reads the channel, touches each payload and
//     acks every message.
//   - sdk-consumer: one consumer worker of a fresh consumer group,
//     BEGIN_CURSOR, MaxFetchLogGroupCount 1000, DataFetchIntervalInMs 1 (the
//     smallest: it never sleeps between full fetches), default auto commit
//     (every 60 s: not during the run), LZ4. The processor reads every key
//     and value of every log, as a handler would, and marks the batch
//     processed (SaveCheckPoint(false)).
func BenchmarkSubscriberVsSDKConsumer(b *testing.B) {
	const logstore = "access-log"
	env := testutil.SLS(b)
	b.Cleanup(env.HTTPClient.CloseIdleConnections)
	n := testutil.SoakOr(200_000, 1_000_000)
	env.LogStore(b, testProject, logstore, benchShards)
	raw := benchPreload(b, env, logstore, n)
	b.Logf("preloaded %d logs, %.1f MB raw (%.0f bytes a log), over %d shards", n, float64(raw)/1e6, float64(raw)/float64(n), benchShards)
	cb := consumeBench{env: env, logstore: logstore, logs: n, raw: raw}

	// Every call of a sub-benchmark (one per -count, and per b.N probe)
	// adds its rate; the ratio is of the best of each, which is the least
	// disturbed by other load on the machine.
	var ours, sdk []float64
	b.Run("watermill-sls", func(b *testing.B) { ours = append(ours, cb.subscriber(b)) })
	b.Run("sdk-consumer", func(b *testing.B) { sdk = append(sdk, cb.sdkConsumer(b)) })
	if len(ours) > 0 && len(sdk) > 0 {
		// fmt, not b.Logf: a parent benchmark's log shows only with -v.
		fmt.Printf("SubscriberVsSDKConsumer: %d logs from %d shards, best of %d/%d runs: watermill-sls %.0f logs/s, SDK consumer %.0f logs/s: ratio %.2f (target >= 2)\n",
			n, benchShards, len(ours), len(sdk), slices.Max(ours), slices.Max(sdk), slices.Max(ours)/slices.Max(sdk))
	}
}

// consumeBench is the preloaded logstore the consumers read.
type consumeBench struct {
	env      *testutil.SLSEnv
	logstore string
	logs     int
	raw      int64 // protobuf-encoded bytes of the logs' LogGroups
}

// subscriber measures full consumptions by a Subscriber and returns logs/s.
func (cb consumeBench) subscriber(b *testing.B) float64 {
	var elapsed, cpu time.Duration
	var mallocs uint64
	b.SetBytes(cb.raw)
	b.ReportAllocs()
	b.StopTimer()
	b.ResetTimer()
	for range b.N {
		cfg := SubscriberConfig{
			ClientConfig:  testConfig(cb.env),
			FetchCount:    1000,
			StartPosition: StartAtBegin(),
			StopPosition:  StopAtEnd(),
		}
		ctx, cancel := context.WithTimeout(context.Background(), benchConsumeTimeout)
		m0, c0 := benchMallocs(), benchCPU()
		b.StartTimer()
		start := time.Now()
		s, err := NewSubscriber(cfg, nil)
		if err != nil {
			b.Fatal(err)
		}
		ch, err := s.Subscribe(ctx, cb.logstore)
		if err != nil {
			b.Fatal(err)
		}
		count, touched := 0, 0
		for msg := range ch {
			touched += len(msg.Payload) + len(msg.UUID)
			count++
			msg.Ack()
		}
		elapsed += time.Since(start)
		b.StopTimer()
		cpu += benchCPU() - c0
		mallocs += benchMallocs() - m0
		timedOut := ctx.Err() != nil
		cancel()
		if err := s.Close(); err != nil {
			b.Fatalf("Close: %v", err)
		}
		if timedOut || count != cb.logs || touched == 0 {
			b.Fatalf("consumed %d of %d logs (timed out: %v)", count, cb.logs, timedOut)
		}
	}
	return cb.report(b, elapsed, cpu, mallocs)
}

// sdkConsumer measures full consumptions by the SDK's consumer library and
// returns logs/s.
func (cb consumeBench) sdkConsumer(b *testing.B) float64 {
	var elapsed, cpu time.Duration
	var mallocs uint64
	admin := cb.env.Client()
	b.SetBytes(cb.raw)
	b.ReportAllocs()
	b.StopTimer()
	b.ResetTimer()
	for i := range b.N {
		group := fmt.Sprintf("bench-sdk-%d", i)
		var seen, touched atomic.Int64
		done := make(chan struct{})
		var once sync.Once
		process := func(_ int, l *sls.LogGroupList, tr consumer.CheckPointTracker) (string, error) {
			logs, size := 0, 0
			for _, g := range l.LogGroups {
				for _, lg := range g.Logs {
					logs++
					size += int(lg.GetTime() & 1)
					for _, c := range lg.Contents {
						size += len(c.GetKey()) + len(c.GetValue())
					}
				}
			}
			touched.Add(int64(size))
			if seen.Add(int64(logs)) >= int64(cb.logs) {
				once.Do(func() { close(done) })
			}
			return "", tr.SaveCheckPoint(false)
		}
		cfg := consumer.LogHubConfig{
			Endpoint: cb.env.Endpoint, AccessKeyID: cb.env.AccessKeyID, AccessKeySecret: cb.env.AccessKeySecret,
			HTTPClient: cb.env.HTTPClient, Project: testProject, Logstore: cb.logstore,
			ConsumerGroupName: group, ConsumerName: "bench-worker", CursorPosition: consumer.BEGIN_CURSOR,
			MaxFetchLogGroupCount: 1000, DataFetchIntervalInMs: 1,
			Logger: log.NewNopLogger(), DisableRuntimeMetrics: true,
		}
		m0, c0 := benchMallocs(), benchCPU()
		b.StartTimer()
		start := time.Now()
		w := consumer.InitConsumerWorkerWithCheckpointTracker(cfg, process)
		w.Start()
		timedOut := false
		select {
		case <-done:
		case <-time.After(benchConsumeTimeout):
			timedOut = true
		}
		elapsed += time.Since(start)
		b.StopTimer()
		cpu += benchCPU() - c0
		mallocs += benchMallocs() - m0
		w.StopAndWait()
		if err := admin.DeleteConsumerGroup(testProject, cb.logstore, group); err != nil {
			b.Fatalf("DeleteConsumerGroup: %v", err)
		}
		if timedOut || seen.Load() != int64(cb.logs) || touched.Load() == 0 {
			b.Fatalf("consumed %d of %d logs (timed out: %v)", seen.Load(), cb.logs, timedOut)
		}
	}
	return cb.report(b, elapsed, cpu, mallocs)
}

// report reports logs/s, MB/s, CPU time and allocations per log over b.N
// consumptions that took elapsed, used cpu of the process's CPU time (the
// emulator's included) and allocated mallocs objects, and returns logs/s.
func (cb consumeBench) report(b *testing.B, elapsed, cpu time.Duration, mallocs uint64) float64 {
	logs := float64(cb.logs) * float64(b.N)
	rate := logs / elapsed.Seconds()
	b.ReportMetric(rate, "logs/s")
	b.ReportMetric(float64(cb.raw)*float64(b.N)/1e6/elapsed.Seconds(), "raw-MB/s")
	b.ReportMetric(float64(cpu.Nanoseconds())/logs, "cpu-ns/log")
	b.ReportMetric(cpu.Seconds()/elapsed.Seconds(), "cores")
	b.ReportMetric(float64(mallocs)/logs, "allocs/log")
	return rate
}

// benchMallocs returns the number of heap objects allocated so far.
func benchMallocs() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.Mallocs
}

// benchPreload appends n access-log lines to logstore's shards, round
// robin, in LogGroups of 100 to 1000 logs, and returns their encoded size.
func benchPreload(b *testing.B, env *testutil.SLSEnv, logstore string, n int) int64 {
	b.Helper()
	r := rand.New(rand.NewPCG(1, 2))
	now := uint32(time.Now().Unix())
	var raw int64
	for i, shard := 0, 0; i < n; shard = (shard + 1) % benchShards {
		size := min(100+r.IntN(901), n-i)
		g := &sls.LogGroup{Topic: proto.String("nginx"), Source: proto.String("10.0.0.1"), Logs: make([]*sls.Log, size)}
		for j := range g.Logs {
			g.Logs[j] = benchAccessLog(r, now)
		}
		if _, err := env.Server.AppendLogGroup(testProject, logstore, shard, g); err != nil {
			b.Fatalf("AppendLogGroup: %v", err)
		}
		raw += int64(g.Size())
		i += size
	}
	return raw
}

var (
	benchMethods = []string{"GET", "GET", "GET", "POST", "PUT", "DELETE"}
	benchStatus  = []string{"200", "200", "200", "200", "204", "301", "404", "500"}
	benchAgents  = []string{"curl/8.5.0", "Mozilla/5.0 (X11; Linux x86_64)", "Go-http-client/1.1", "kube-probe/1.29"}
)

// benchAccessLog returns a log like one line of an nginx access log, about
// 200 bytes encoded.
func benchAccessLog(r *rand.Rand, now uint32) *sls.Log {
	t := now - uint32(r.IntN(3600))
	kv := [...]string{
		"remote_addr", fmt.Sprintf("10.%d.%d.%d", r.IntN(256), r.IntN(256), r.IntN(256)),
		"time_local", time.Unix(int64(t), 0).UTC().Format("02/Jan/2006:15:04:05 -0700"),
		"method", benchMethods[r.IntN(len(benchMethods))],
		"uri", fmt.Sprintf("/api/v1/items/%d?page=%d", r.IntN(100000), r.IntN(50)),
		"status", benchStatus[r.IntN(len(benchStatus))],
		"body_bytes_sent", fmt.Sprint(r.IntN(20000)),
		"http_user_agent", benchAgents[r.IntN(len(benchAgents))],
		"request_time", fmt.Sprintf("0.%03d", r.IntN(1000)),
	}
	l := &sls.Log{Time: proto.Uint32(t), Contents: make([]*sls.LogContent, 0, len(kv)/2)}
	for i := 0; i < len(kv); i += 2 {
		l.Contents = append(l.Contents, &sls.LogContent{Key: proto.String(kv[i]), Value: proto.String(kv[i+1])})
	}
	return l
}

// BenchmarkSubscriberBacklogMemory lets a Subscriber sit on a large backlog
// (512 MiB of ~200-byte logs over 8 shards; 2 GiB under WSLS_SOAK) with a
// slow handler (it acks each message 1 ms after receiving it) for a while
// (5 s; 30 s under WSLS_SOAK), and reports the peak heap it added against
// the bound: PrefetchBytes per shard plus 64 MiB.
//
// The emulator lives in this process, so the figures are heap, not RSS,
// sampled every 10 ms, minus their value after preloading (and a forced
// collection):
//   - peak-live-MiB: "/gc/heap/live:bytes", the heap the last collection
//     found live; the figure compared with the bound. The emulator's
//     backlog inflates the GC's heap goal (GOGC 100 lets garbage grow to the
//     size of the live heap, backlog included), so garbage is left out.
//   - peak-heap-MiB: "/memory/classes/heap/objects:bytes", live and
//     not-yet-collected objects; an upper bound.
//
// Both include the emulator's transient allocations for the PullLogs
// answers it is serving (up to 32 MiB each, its default MaxPullBytes).
func BenchmarkSubscriberBacklogMemory(b *testing.B) {
	const logstore = "backlog"
	env := testutil.SLS(b)
	b.Cleanup(env.HTTPClient.CloseIdleConnections)
	env.LogStore(b, testProject, logstore, benchShards)
	backlog := testutil.SoakOr[int64](512<<20, 2<<30)
	runFor := testutil.SoakOr(5*time.Second, 30*time.Second)
	raw := benchPreloadBytes(b, env, logstore, backlog)
	b.Logf("preloaded %.0f MiB over %d shards", float64(raw)/(1<<20), benchShards)

	var peak benchHeapPeak
	var bound int64
	for range b.N {
		p, bnd, handled := benchBacklogRun(b, env, logstore, runFor)
		peak.live, peak.objects, bound = max(peak.live, p.live), max(peak.objects, p.objects), bnd
		b.Logf("handled %d messages in %v; peak above baseline: live heap %.1f MiB, heap objects %.1f MiB; bound %.0f MiB",
			handled, runFor, benchMiB(p.live), benchMiB(p.objects), benchMiB(bnd))
	}
	b.ReportMetric(benchMiB(peak.live), "peak-live-MiB")
	b.ReportMetric(benchMiB(peak.objects), "peak-heap-MiB")
	b.ReportMetric(benchMiB(bound), "bound-MiB")
	within := "within"
	if peak.live > bound {
		within = "OVER"
	}
	// fmt, not b.Logf: it shows without -v.
	fmt.Printf("SubscriberBacklogMemory: backlog %.0f MiB, slow handler: peak live heap added %.1f MiB (heap objects %.1f MiB), %s the bound PrefetchBytes*shards + 64 MiB = %.0f MiB\n",
		benchMiB(raw), benchMiB(peak.live), benchMiB(peak.objects), within, benchMiB(bound))
}

func benchMiB(n int64) float64 { return float64(n) / (1 << 20) }

// benchHeapPeak is the largest heap figures seen, in bytes.
type benchHeapPeak struct {
	live    int64 // "/gc/heap/live:bytes"
	objects int64 // "/memory/classes/heap/objects:bytes"
}

// benchBacklogRun runs one slow Subscriber on logstore for d and returns
// the peak heap above the baseline, the bound and the messages handled.
func benchBacklogRun(b *testing.B, env *testutil.SLSEnv, logstore string, d time.Duration) (peak benchHeapPeak, bound int64, handled int) {
	cfg := SubscriberConfig{ClientConfig: testConfig(env), StartPosition: StartAtBegin()}
	s, err := NewSubscriber(cfg, nil)
	if err != nil {
		b.Fatal(err)
	}
	bound = int64(s.cfg.PrefetchBytes)*benchShards + 64<<20
	runtime.GC()
	base := benchHeap()
	stopSampling := benchSampleHeap(&peak)

	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	ch, err := s.Subscribe(ctx, logstore)
	if err != nil {
		b.Fatal(err)
	}
	for msg := range ch {
		time.Sleep(time.Millisecond)
		msg.Ack()
		handled++
	}
	stopSampling()
	if err := s.Close(); err != nil {
		b.Fatalf("Close: %v", err)
	}
	peak.live -= base.live
	peak.objects -= base.objects
	return peak, bound, handled
}

// benchSampleHeap records into peak the largest heap figures seen every
// 10 ms until the returned stop is called.
func benchSampleHeap(peak *benchHeapPeak) (stop func()) {
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			h := benchHeap()
			peak.live, peak.objects = max(peak.live, h.live), max(peak.objects, h.objects)
			select {
			case <-t.C:
			case <-done:
				return
			}
		}
	}()
	return func() {
		close(done)
		<-stopped
	}
}

// benchHeap reads the current heap figures.
func benchHeap() benchHeapPeak {
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}, {Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	return benchHeapPeak{live: int64(s[0].Value.Uint64()), objects: int64(s[1].Value.Uint64())}
}

// benchPreloadBytes appends LogGroups of 1000 access-log lines to
// logstore's shards, round robin, until about size encoded bytes, and
// returns their encoded size. It cycles through 32 distinct groups, so
// preloading gigabytes takes seconds.
func benchPreloadBytes(b *testing.B, env *testutil.SLSEnv, logstore string, size int64) int64 {
	b.Helper()
	r := rand.New(rand.NewPCG(3, 4))
	now := uint32(time.Now().Unix())
	groups := make([]*sls.LogGroup, 32)
	for i := range groups {
		g := &sls.LogGroup{Topic: proto.String("nginx"), Source: proto.String("10.0.0.1"), Logs: make([]*sls.Log, 1000)}
		for j := range g.Logs {
			g.Logs[j] = benchAccessLog(r, now)
		}
		groups[i] = g
	}
	var raw int64
	for i := 0; raw < size; i++ {
		g := groups[i%len(groups)]
		if _, err := env.Server.AppendLogGroup(testProject, logstore, i%benchShards, g); err != nil {
			b.Fatalf("AppendLogGroup: %v", err)
		}
		raw += int64(g.Size())
	}
	return raw
}
