package slspubsub

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/watermill-sls/watermill-sls/internal/testutil"
	"github.com/watermill-sls/watermill-sls/watermark"
)

// BenchmarkSubscriberWatermarkDelivery measures the Subscriber's delivery
// path (one shard, 200-byte payloads, every log with its own log time, so
// the watermark moves with every message: the costliest case for stamping)
// without watermarks, with watermarks, and with watermarks and alignment.
// allocs/op are per delivered message (the in-process emulator's included,
// the same in each case): watermarks must not add any.
func BenchmarkSubscriberWatermarkDelivery(b *testing.B) {
	for _, mode := range []string{"off", "watermark", "aligned"} {
		b.Run(mode, func(b *testing.B) {
			env := testutil.SLS(b)
			env.LogStore(b, testProject, testLogstore, 1)
			const perGroup = 1000
			payload := []byte(strings.Repeat("x", 200))
			for g := range (b.N + perGroup - 1) / perGroup {
				lg := LogGroup{}
				for i := range perGroup {
					m := message.NewMessage(fmt.Sprintf("g%d-%d", g, i), payload)
					m.Metadata.Set(MetadataTime, wmBase.Add(time.Duration(g*perGroup+i)*time.Millisecond).Format(time.RFC3339Nano))
					rec, err := DefaultMarshaler{}.Marshal(testLogstore, m)
					if err != nil {
						b.Fatal(err)
					}
					lg.Logs = append(lg.Logs, rec.Log)
				}
				if _, err := env.Server.AppendLogGroup(testProject, testLogstore, 0, toSDK(&lg)); err != nil {
					b.Fatal(err)
				}
			}
			cfg := SubscriberConfig{ClientConfig: testConfig(env), FetchInterval: time.Millisecond}
			switch mode {
			case "watermark":
				cfg.Watermark = &WatermarkConfig{}
			case "aligned":
				cfg.Watermark = &WatermarkConfig{Alignment: &AlignmentConfig{
					Group: "bench", MaxDrift: time.Hour, Coordinator: watermark.NewInProcessCoordinator()}}
			}
			s, err := NewSubscriber(cfg, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			b.ReportAllocs()
			b.ResetTimer()
			ch, err := s.Subscribe(context.Background(), testLogstore)
			if err != nil {
				b.Fatal(err)
			}
			for range b.N {
				(<-ch).Ack()
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "logs/s")
		})
	}
}
