package exactlyonce

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/watermill-sls/watermill-sls/internal/testutil"
)

// BenchmarkKafkaSink measures the sink's throughput on kfake over TCP: b.N messages of 100 bytes, each with one
// output, from one goroutine per source partition (one message per partition in flight, the Handler's contract).
// Batches form from the partitions waiting while a transaction commits, so the number of partitions and
// MaxBatchDelay set the batch size; msgs/s and msgs/txn are reported.
func BenchmarkKafkaSink(b *testing.B) {
	for _, bc := range []struct {
		partitions int
		delay      time.Duration
		maxBatch   int
	}{
		{1, 0, 0},
		{8, 0, 0},
		{64, 0, 0},
		{256, 0, 0},
		{256, 0, 16},
		{256, 2 * time.Millisecond, 0},
	} {
		b.Run(fmt.Sprintf("partitions=%d/delay=%v/max=%d", bc.partitions, bc.delay, bc.maxBatch), func(b *testing.B) {
			brokers := testutil.KafkaWithPartitions(b, 4, "positions", "out")
			cfg := ksConfig(brokers, "bench")
			cfg.MaxBatchDelay, cfg.MaxBatchMessages = bc.delay, bc.maxBatch
			sink := ksNewSink(b, cfg)
			payload := make([]byte, 100)
			process := func(*message.Message) ([]*message.Message, error) {
				return []*message.Message{message.NewMessage("out", payload)}, nil
			}
			h := sink.Handler(process, ksPosition)
			var wg sync.WaitGroup
			var failed error
			var mu sync.Mutex
			b.ResetTimer()
			start := time.Now()
			for p := range bc.partitions {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for off := p; off < b.N; off += bc.partitions {
						if err := h(ksSource("bench", int32(p), int64(off))); err != nil {
							mu.Lock()
							failed = err
							mu.Unlock()
							return
						}
					}
				}()
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			if failed != nil {
				b.Fatal(failed)
			}
			st := sink.Stats()
			b.ReportMetric(float64(st.Messages)/elapsed.Seconds(), "msgs/s")
			if st.Transactions > 0 {
				b.ReportMetric(float64(st.Messages)/float64(st.Transactions), "msgs/txn")
			}
		})
	}
}
