package slspubsub

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/watermill-sls/watermill-sls/internal/testutil"
	"github.com/watermill-sls/watermill-sls/watermark"
)

// BenchmarkWatermarkSkewedBackfill reads the skew test's data (8 shards over
// the same event-time span, 2 of them with 10x the logs; 3 000 s of event
// time, 78 000 logs; 30 000 s under WSLS_SOAK) from the beginning to the
// end, with watermarks and alignment (MaxDrift 30 s) and with watermarks
// but no alignment, and prints the total time of each and what alignment
// costs (target: under 10 % of the total time). A run is timed from
// Subscribe to the last log acked.
func BenchmarkWatermarkSkewedBackfill(b *testing.B) {
	env := testutil.SLS(b)
	env.LogStore(b, testProject, testLogstore, skewShards)
	span := testutil.SoakOr(3000*time.Second, 30000*time.Second)
	total := writeSkewed(b, env, testLogstore, span, nil)
	best := map[bool]time.Duration{}
	for range b.N {
		for _, aligned := range []bool{true, false} {
			d := wmBackfill(b, env, aligned, total)
			if best[aligned] == 0 || d < best[aligned] {
				best[aligned] = d
			}
		}
	}
	b.ReportMetric(best[true].Seconds(), "aligned-s")
	b.ReportMetric(best[false].Seconds(), "unaligned-s")
	cost := 100 * (best[true].Seconds()/best[false].Seconds() - 1)
	fmt.Printf("WatermarkSkewedBackfill: %d logs over %v of event time on %d shards (2 with %dx): aligned %v (%.0f logs/s), unaligned %v (%.0f logs/s): alignment costs %.1f %% (target < 10 %%)\n",
		total, span, skewShards, skewDense, best[true].Round(time.Millisecond), float64(total)/best[true].Seconds(),
		best[false].Round(time.Millisecond), float64(total)/best[false].Seconds(), cost)
}

func wmBackfill(b *testing.B, env *testutil.SLSEnv, aligned bool, total int) time.Duration {
	cfg := SubscriberConfig{
		ClientConfig: testConfig(env), FetchInterval: 5 * time.Millisecond, MaxFetchInterval: 20 * time.Millisecond,
		Watermark: &WatermarkConfig{Strategy: watermark.Strategy{IdleTimeout: 5 * time.Second}},
	}
	if aligned {
		cfg.Watermark.Alignment = &AlignmentConfig{Group: "backfill", MaxDrift: skewMaxDrift, Coordinator: watermark.NewInProcessCoordinator()}
	}
	s, err := NewSubscriber(cfg, nil)
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	ch, err := s.Subscribe(context.Background(), testLogstore)
	if err != nil {
		b.Fatal(err)
	}
	got, err := consumeAll(ch, total, nil)
	elapsed := time.Since(start)
	if err != nil {
		b.Fatalf("aligned=%v: %v", aligned, err)
	}
	if len(got) != total {
		b.Fatalf("aligned=%v: %d of %d logs", aligned, len(got), total)
	}
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
	return elapsed
}
