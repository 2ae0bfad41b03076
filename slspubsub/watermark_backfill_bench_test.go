package slspubsub

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/watermill-sls/watermill-sls/internal/testutil"
	"github.com/watermill-sls/watermill-sls/watermark"
)

// backfillPairsEnv sets how many aligned/unaligned pairs one op of
// BenchmarkWatermarkSkewedBackfill runs (default backfillPairs).
const backfillPairsEnv = "WSLS_BACKFILL_PAIRS"

// backfillPairs is the default number of pairs per op: a run takes a few
// hundred milliseconds on 2 cores, so one op takes some seconds.
const backfillPairs = 12

// BenchmarkWatermarkSkewedBackfill reads the skew test's data (8 shards over
// the same event-time span, 2 of them with 10x the logs; 3 000 s of event
// time, 78 000 logs; 30 000 s under WSLS_SOAK) from the beginning to the
// end, with watermarks and alignment (MaxDrift 30 s) and with watermarks
// but no alignment, and reports what alignment costs (target: under 10 %
// of the total time).
//
// Both sides do the same work: a fresh Subscriber with the same config
// (default FetchCount and PrefetchBytes) but for Alignment reads the same
// logs, and the same consumer acks each message. A run is timed from
// Subscribe to the last log acked: the total time of the backfill. Two
// consumers, as sub-benchmarks:
//   - router: a Watermill router with a handler that only counts (how the
//     library is used; the router runs each message in a goroutine);
//   - channel: one goroutine that takes each message from the channel and
//     acks it at once. Nothing else runs, so event time flies (MaxDrift,
//     30 s, is about 300 logs of a dense shard, under a millisecond), and a
//     shard whose goroutine waits a moment to be scheduled holds the
//     others back: the worst case for alignment.
//
// The machine is shared and noisy, so the two sides are interleaved (A B,
// B A, A B, ...: each pair shares the machine's conditions, and neither side
// is always first), after a warm-up pair that is not counted, with a GC
// before each run. Each op runs WSLS_BACKFILL_PAIRS pairs (default 12). It
// reports the median time of each side and the median of the per-pair
// ratios aligned/unaligned as cost-% (the figure to compare with the
// target), and prints the spread (min, quartiles, max) of both. It also
// reports the median per-pair ratio of the process's CPU time over the runs
// (cpu-cost-%; the emulator's work, the same on both sides, included): the
// CPU a run takes does not grow when other processes take the cores, its
// wall time does.
func BenchmarkWatermarkSkewedBackfill(b *testing.B) {
	env := testutil.SLS(b)
	env.LogStore(b, testProject, testLogstore, skewShards)
	span := testutil.SoakOr(3000*time.Second, 30000*time.Second)
	total := writeSkewed(b, env, testLogstore, span, nil)
	for _, router := range []bool{true, false} {
		name := "channel"
		if router {
			name = "router"
		}
		b.Run(name, func(b *testing.B) { backfillPairsBench(b, env, span, total, router) })
	}
	// What the aligned side buys: one more run of each, untimed, with the
	// spread of the shards' watermarks sampled as in the skew test.
	al, un := wmBackfillSpread(b, env, true, total), wmBackfillSpread(b, env, false, total)
	fmt.Printf("  max watermark spread (untimed runs, sampled every 200 µs): aligned %v (MaxDrift %v), unaligned %v\n", al, skewMaxDrift, un)
}

// backfillPairsBench runs BenchmarkWatermarkSkewedBackfill's interleaved
// pairs with one consumer (router or channel) and reports them.
func backfillPairsBench(b *testing.B, env *testutil.SLSEnv, span time.Duration, total int, router bool) {
	pairs := backfillPairs
	if v := os.Getenv(backfillPairsEnv); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			b.Fatalf("%s=%q: want a positive integer", backfillPairsEnv, v)
		}
		pairs = n
	}
	wmBackfill(b, env, true, total, router) // warm-up: the emulator's and the runtime's first allocations
	wmBackfill(b, env, false, total, router)
	var aligned, unaligned, ratios, cpuA, cpuU, cpuRatios []float64
	var blocks int64
	b.ResetTimer()
	for range b.N {
		for i := range pairs {
			order := []bool{true, false}
			if i%2 == 1 {
				order = []bool{false, true}
			}
			var d, c [2]float64 // unaligned, aligned
			for _, al := range order {
				runtime.GC()
				r := wmBackfill(b, env, al, total, router)
				k := 0
				if al {
					k = 1
					blocks += r.stats.Blocks
				}
				d[k], c[k] = r.elapsed.Seconds(), r.cpu.Seconds()
			}
			unaligned, aligned = append(unaligned, d[0]), append(aligned, d[1])
			ratios = append(ratios, d[1]/d[0])
			cpuU, cpuA = append(cpuU, c[0]), append(cpuA, c[1])
			if c[0] > 0 {
				cpuRatios = append(cpuRatios, c[1]/c[0])
			}
		}
	}
	b.StopTimer()
	ma, mu, mr := median(aligned), median(unaligned), median(ratios)
	b.ReportMetric(ma, "aligned-s")
	b.ReportMetric(mu, "unaligned-s")
	b.ReportMetric(100*(mr-1), "cost-%")
	b.ReportMetric(float64(total)/ma, "aligned-logs/s")
	b.ReportMetric(float64(total)/mu, "unaligned-logs/s")
	mc := median(cpuRatios)
	if len(cpuRatios) > 0 {
		b.ReportMetric(100*(mc-1), "cpu-cost-%")
	}
	name, via := "channel", "a channel consumer"
	if router {
		name, via = "router", "a router"
	}
	fmt.Printf("WatermarkSkewedBackfill/%s: %d logs over %v of event time on %d shards (2 with %dx) through %s, %d pairs interleaved: "+
		"aligned median %.3fs (%.0f logs/s), unaligned median %.3fs (%.0f logs/s); alignment costs %.1f %% (median of per-pair ratios; target < 10 %%), %.1f blocked waits (fetches or deliveries held) per aligned run\n",
		name, total, span, skewShards, skewDense, via, len(ratios), ma, float64(total)/ma, mu, float64(total)/mu, 100*(mr-1),
		float64(blocks)/float64(len(aligned)))
	fmt.Printf("  spread (min p25 median p75 max): aligned s %s; unaligned s %s; cost %% %s\n",
		quartiles(aligned, 1, "%.3f"), quartiles(unaligned, 1, "%.3f"), quartiles(ratios, 100, "%+.1f", -1))
	if len(cpuRatios) > 0 {
		fmt.Printf("  process CPU time (user+sys, the emulator's included; less sensitive to other load): aligned median %.3fs, unaligned median %.3fs, cost %% %s\n",
			median(cpuA), median(cpuU), quartiles(cpuRatios, 100, "%+.1f", -1))
	}
	var each []string
	for i := range ratios {
		each = append(each, fmt.Sprintf("%.3f/%.3f", aligned[i], unaligned[i]))
	}
	fmt.Printf("  pairs (aligned/unaligned s): %s\n", strings.Join(each, " "))
}

// wmBackfillSpread reads the backfill once, like wmBackfill, and returns
// the largest spread of the shards' watermarks it sampled.
func wmBackfillSpread(b *testing.B, env *testutil.SLSEnv, aligned bool, total int) time.Duration {
	var s *Subscriber
	var sp spreadSampler
	done, sampled := make(chan struct{}), make(chan struct{})
	wmBackfillWith(b, env, aligned, total, func(sub *Subscriber) {
		s = sub
		go func() {
			defer close(sampled)
			sp.sampleWhile(done, func() []watermark.ShardStatus { return s.ShardWatermarkStatus(testLogstore) })
		}()
	}, func() {
		close(done)
		<-sampled
	})
	return sp.max
}

// median returns the median of v (v is not modified).
func median(v []float64) float64 { return quantile(v, 0.5) }

// quantile returns the q-quantile of v by linear interpolation (v is not
// modified).
func quantile(v []float64, q float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	x := q * float64(len(s)-1)
	i := int(x)
	if i+1 >= len(s) {
		return s[len(s)-1]
	}
	return s[i] + (x-float64(i))*(s[i+1]-s[i])
}

// quartiles formats min, p25, median, p75 and max of v, each scaled by
// scale after adding offset (optional).
func quartiles(v []float64, scale float64, format string, offset ...float64) string {
	off := 0.0
	if len(offset) > 0 {
		off = offset[0]
	}
	var out []string
	for _, q := range []float64{0, 0.25, 0.5, 0.75, 1} {
		out = append(out, fmt.Sprintf(format, (quantile(v, q)+off)*scale))
	}
	return strings.Join(out, " ")
}

// backfillRun is one timed read of the backfill.
type backfillRun struct {
	elapsed time.Duration
	cpu     time.Duration // process CPU time (user + system) over the run
	stats   watermark.AlignerStats
}

// wmBackfill reads the backfill once, through a router or a channel
// consumer.
func wmBackfill(b *testing.B, env *testutil.SLSEnv, aligned bool, total int, router bool) backfillRun {
	if router {
		return wmBackfillRouter(b, env, aligned, total)
	}
	return wmBackfillWith(b, env, aligned, total, nil, nil)
}

// backfillConfig is the Subscriber config of a backfill run.
func backfillConfig(env *testutil.SLSEnv, aligned bool) SubscriberConfig {
	cfg := SubscriberConfig{
		ClientConfig: testConfig(env), FetchInterval: 5 * time.Millisecond, MaxFetchInterval: 20 * time.Millisecond,
		Watermark: &WatermarkConfig{Strategy: watermark.Strategy{IdleTimeout: 5 * time.Second}},
	}
	if aligned {
		cfg.Watermark.Alignment = &AlignmentConfig{Group: "backfill", MaxDrift: skewMaxDrift, Coordinator: watermark.NewInProcessCoordinator()}
	}
	return cfg
}

// wmBackfillRouter reads the backfill once through a Watermill router whose
// handler counts the messages; the run ends when the handler returned for
// every log.
func wmBackfillRouter(b *testing.B, env *testutil.SLSEnv, aligned bool, total int) backfillRun {
	s, err := NewSubscriber(backfillConfig(env, aligned), nil)
	if err != nil {
		b.Fatal(err)
	}
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 10 * time.Second}, nil)
	if err != nil {
		b.Fatal(err)
	}
	var handled atomic.Int64
	done := make(chan struct{})
	router.AddConsumerHandler("backfill", testLogstore, s, func(*message.Message) error {
		if handled.Add(1) == int64(total) {
			close(done)
		}
		return nil
	})
	start, cpu := time.Now(), benchCPU()
	runErr := make(chan error, 1)
	go func() { runErr <- router.Run(context.Background()) }()
	select {
	case <-done:
	case err := <-runErr:
		b.Fatalf("aligned=%v: the router stopped after %d of %d logs: %v", aligned, handled.Load(), total, err)
	case <-time.After(testutil.SoakOr(2*time.Minute, 20*time.Minute)):
		b.Fatalf("aligned=%v: %d of %d logs handled", aligned, handled.Load(), total)
	}
	elapsed, cpu := time.Since(start), benchCPU()-cpu
	stats, _ := s.AlignmentStats(testLogstore)
	if err := router.Close(); err != nil {
		b.Fatal(err)
	}
	if err := <-runErr; err != nil {
		b.Fatal(err)
	}
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
	if n := handled.Load(); n != int64(total) {
		b.Fatalf("aligned=%v: %d handler calls for %d logs", aligned, n, total)
	}
	return backfillRun{elapsed: elapsed, cpu: cpu, stats: stats}
}

// wmBackfillWith is wmBackfill with hooks called after Subscribe and once
// every log was received (before Close); nil hooks are skipped.
func wmBackfillWith(b *testing.B, env *testutil.SLSEnv, aligned bool, total int, started func(*Subscriber), received func()) backfillRun {
	s, err := NewSubscriber(backfillConfig(env, aligned), nil)
	if err != nil {
		b.Fatal(err)
	}
	start, cpu := time.Now(), benchCPU()
	ch, err := s.Subscribe(context.Background(), testLogstore)
	if err != nil {
		b.Fatal(err)
	}
	if started != nil {
		started(s)
	}
	got, err := consumeAll(ch, total, nil)
	elapsed, cpu := time.Since(start), benchCPU()-cpu
	if received != nil {
		received()
	}
	if err != nil {
		b.Fatalf("aligned=%v: %v", aligned, err)
	}
	if len(got) != total {
		b.Fatalf("aligned=%v: %d of %d logs", aligned, len(got), total)
	}
	stats, _ := s.AlignmentStats(testLogstore)
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
	return backfillRun{elapsed: elapsed, cpu: cpu, stats: stats}
}
