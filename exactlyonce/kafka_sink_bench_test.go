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
// output. Each source partition has a goroutine that delivers its messages in order with up to inflight of them
// in the Handler at once (1: strict mode; more: delivery-order mode, positions recorded as the
// SubscriberDecorator records them). Batches form from the messages waiting while a transaction commits, so
// partitions × inflight and MaxBatchDelay set the batch size; msgs/s and msgs/txn are reported.
func BenchmarkKafkaSink(b *testing.B) {
	for _, bc := range []struct {
		partitions, inflight int
		delay                time.Duration
		maxBatch             int
	}{
		{1, 1, 0, 0},
		{8, 1, 0, 0},
		{64, 1, 0, 0},
		{256, 1, 0, 0},
		{256, 1, 0, 16},
		{256, 1, 2 * time.Millisecond, 0},
		{1, 64, 0, 0},
		{8, 32, 0, 0},
		{8, 128, 0, 0},
	} {
		name := fmt.Sprintf("partitions=%d/inflight=%d/delay=%v/max=%d", bc.partitions, bc.inflight, bc.delay, bc.maxBatch)
		b.Run(name, func(b *testing.B) {
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
			fail := func(err error) {
				mu.Lock()
				failed = err
				mu.Unlock()
			}
			for p := range bc.partitions {
				wg.Add(1)
				go func() {
					defer wg.Done()
					slots := make(chan struct{}, bc.inflight)
					var handlers sync.WaitGroup
					for off := p; off < b.N; off += bc.partitions {
						msg := ksSource("bench", int32(p), int64(off))
						if bc.inflight == 1 {
							if err := h(msg); err != nil {
								fail(err)
								return
							}
							continue
						}
						slots <- struct{}{}
						sink.deliver(Position{Stream: "bench", Partition: int32(p), Offset: int64(off)})
						handlers.Add(1)
						go func() {
							defer handlers.Done()
							if err := h(msg); err != nil {
								fail(err)
							}
							<-slots
						}()
					}
					handlers.Wait()
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
