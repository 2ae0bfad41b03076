package watermark

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

func benchTracker(b *testing.B, shards int) *Tracker {
	b.Helper()
	tr, err := NewTracker(Strategy{MaxOutOfOrderness: time.Second, IdleTimeout: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	for i := range shards {
		if _, err := tr.AddShard(i, time.Time{}); err != nil {
			b.Fatal(err)
		}
		tr.Shard(i).Observe(base)
	}
	return tr
}

func reportRate(b *testing.B) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkShardObserve is the per-message path through a shard handle, on
// the shard holding the tracker's minimum (the costly case: every event moves
// the minimum) and on a shard ahead of it.
func BenchmarkShardObserve(b *testing.B) {
	for _, c := range []struct {
		name string
		id   int
	}{{"min-holder", 0}, {"ahead", 7}} {
		b.Run(c.name, func(b *testing.B) {
			tr := benchTracker(b, 8)
			for i := 1; i < 8; i++ {
				tr.Shard(i).Observe(at(time.Hour))
			}
			s := tr.Shard(c.id)
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				s.Observe(base.Add(time.Duration(i) * time.Microsecond))
			}
			reportRate(b)
		})
	}
}

// BenchmarkTrackerObserve is Observe by shard id (a map lookup more).
func BenchmarkTrackerObserve(b *testing.B) {
	tr := benchTracker(b, 8)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if err := tr.Observe(i&7, base.Add(time.Duration(i)*time.Microsecond)); err != nil {
			b.Fatal(err)
		}
	}
	reportRate(b)
}

// BenchmarkObserveParallel has one goroutine per shard, as the fetch loops of
// a Subscriber do.
func BenchmarkObserveParallel(b *testing.B) {
	tr := benchTracker(b, 64)
	var next atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		s := tr.Shard(int(next.Add(1)-1) % 64)
		i := 0
		for pb.Next() {
			i++
			s.Observe(base.Add(time.Duration(i) * time.Microsecond))
		}
	})
	reportRate(b)
}

// BenchmarkTrackerWatermark reads the tracker's watermark (per delivered
// message).
func BenchmarkTrackerWatermark(b *testing.B) {
	tr := benchTracker(b, 8)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, ok := tr.Watermark(); !ok {
			b.Fatal("no watermark")
		}
	}
	reportRate(b)
}

// BenchmarkTrackerStamp sets the watermark on a message whose metadata already
// has the key (the map does not grow): it allocates only when the watermark
// moved.
func BenchmarkTrackerStamp(b *testing.B) {
	tr := benchTracker(b, 8)
	msg := message.NewMessage("1", nil)
	tr.Stamp(msg)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		tr.Stamp(msg)
	}
	reportRate(b)
}

// BenchmarkAlignerAllowed is the check before a fetch, with another member in
// the group.
func BenchmarkAlignerAllowed(b *testing.B) {
	coord := NewInProcessCoordinator()
	tr := benchTracker(b, 8)
	a, err := NewAligner(tr, AlignerConfig{Group: "g", MaxDrift: time.Minute, Coordinator: coord}, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer a.Close()
	if err := a.Wait(context.Background(), 3); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if ok, err := a.Allowed(3); !ok || err != nil {
			b.Fatal(ok, err)
		}
	}
	reportRate(b)
}

// BenchmarkWindowsAdd adds events of 100 keys to 1-minute tumbling windows.
func BenchmarkWindowsAdd(b *testing.B) {
	w, err := NewWindows[int, int, int](WindowConfig{Size: time.Minute}, func(acc, v int) int { return acc + v })
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		et := base.Add(time.Duration(i) * time.Millisecond)
		w.Add(i%100, et, 1)
		if i%1000 == 0 {
			w.Advance(et.Add(-time.Minute))
		}
	}
	reportRate(b)
}
