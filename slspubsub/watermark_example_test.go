package slspubsub_test

import (
	"context"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/watermill-sls/watermill-sls/slspubsub"
	"github.com/watermill-sls/watermill-sls/watermark"
)

// Two logstores joined by key in one-minute event-time windows: both
// Subscribers align their shards in one group on an in-process coordinator
// (use watermark.NewPostgresCoordinator for processes on several machines),
// so neither stream's watermark runs more than MaxDrift (plus one fetched
// answer) ahead of the other's, and windows kept open for that long lose no
// match.
func Example_alignedJoin() {
	client := slspubsub.ClientConfig{
		Endpoint: "cn-hangzhou.log.aliyuncs.com", Project: "shop",
		AccessKeyID: "<id>", AccessKeySecret: "<secret>",
	}
	coord := watermark.NewInProcessCoordinator()
	const maxDrift = 30 * time.Second
	newSubscriber := func() (*slspubsub.Subscriber, error) {
		return slspubsub.NewSubscriber(slspubsub.SubscriberConfig{
			ClientConfig: client,
			Watermark: &slspubsub.WatermarkConfig{
				// Event time: the SLS log time (the default).
				Strategy:  watermark.Strategy{MaxOutOfOrderness: 2 * time.Second, IdleTimeout: time.Minute},
				Alignment: &slspubsub.AlignmentConfig{Group: "orders-payments", MaxDrift: maxDrift, Coordinator: coord},
			},
		}, nil)
	}
	windows, err := watermark.NewWindows[string, byte, byte](watermark.WindowConfig{
		Size: time.Minute, AllowedLateness: maxDrift + 10*time.Second,
	}, func(acc, side byte) byte { return acc | side })
	if err != nil {
		panic(err)
	}
	handle := func(side byte) func(*message.Message) {
		return func(m *message.Message) {
			f, _ := slspubsub.LogFieldsFromMessage(m)
			windows.Add(m.Metadata.Get("order_id"), f.Time, side)
			for _, r := range windows.AdvanceFromMessage(m) { // the watermark the message carries
				if r.Value == 3 {
					fmt.Println("order", r.Key, "paid in", r.Start.Format(time.TimeOnly))
				}
			}
			m.Ack()
		}
	}
	for side, logstore := range map[byte]string{1: "orders", 2: "payments"} {
		s, err := newSubscriber()
		if err != nil {
			panic(err)
		}
		defer s.Close()
		ch, err := s.Subscribe(context.Background(), logstore)
		if err != nil {
			fmt.Println(err) // no SLS here
			return
		}
		go func() {
			for m := range ch {
				handle(side)(m)
			}
		}()
	}
}
