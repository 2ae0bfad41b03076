package exactlyonce_test

import (
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/watermill-sls/watermill-sls/exactlyonce"
)

// BenchmarkHandlers compares the throughput of MessageHandler (a transaction per message) and BatchHandler
// (group commit) on the same PostgreSQL, each message inserting one sink row. Partitions are handled by one
// goroutine each, one message at a time, as a router does with one unacked message per partition; with 1
// partition batching cannot help, with many it shares transactions.
func BenchmarkHandlers(b *testing.B) {
	for _, partitions := range []int{1, 8, 64} {
		b.Run("message/partitions="+itoa(partitions), func(b *testing.B) {
			store, _ := newStore(b)
			h, err := exactlyonce.NewMessageHandler(store, exactlyonce.HandlerConfig{Consumer: "c", Position: testPosition}, insertSink)
			if err != nil {
				b.Fatal(err)
			}
			benchHandle(b, partitions, h.Handle)
		})
		b.Run("batch/partitions="+itoa(partitions), func(b *testing.B) {
			store, _ := newStore(b)
			h, err := exactlyonce.NewBatchHandler(store, exactlyonce.BatchConfig{
				HandlerConfig: exactlyonce.HandlerConfig{Consumer: "c", Position: testPosition},
				MaxBatch:      partitions,
				MaxWait:       time.Millisecond,
			}, insertSink)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = h.Close() })
			benchHandle(b, partitions, h.Handle)
		})
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// benchHandle hands b.N messages to handle, spread over partitions, each partition in order from its own
// goroutine, and reports messages per second.
func benchHandle(b *testing.B, partitions int, handle func(*message.Message) error) {
	var next atomic.Int64
	var failed atomic.Int64
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for p := range partitions {
		wg.Go(func() {
			for off := int64(0); ; off++ {
				if next.Add(1) > int64(b.N) {
					return
				}
				if err := handle(testMsg(p, off)); err != nil {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	if n := failed.Load(); n > 0 {
		b.Fatalf("%d messages failed", n)
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
}
