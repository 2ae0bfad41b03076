package watermark_test

import (
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/watermill-sls/watermill-sls/watermark"
)

// A handler counts events per key in one-minute windows closed by the
// watermark the messages carry.
func Example() {
	tracker, _ := watermark.NewTracker(watermark.Strategy{MaxOutOfOrderness: 10 * time.Second})
	shard, _ := tracker.AddShard(0, time.Time{})
	counts, _ := watermark.NewWindows[string, int, int](watermark.WindowConfig{Size: time.Minute},
		func(acc, v int) int { return acc + v })

	start := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	for i, sec := range []int{5, 30, 61, 20, 75, 130, 10} {
		// The subscriber's side: observe the event time, stamp the watermark.
		et := start.Add(time.Duration(sec) * time.Second)
		msg := message.NewMessage(fmt.Sprint(i), nil)
		shard.Observe(et)
		tracker.Stamp(msg)

		// The handler's side.
		if counts.Add("page", et, 1) {
			fmt.Println("late:", et.Format("15:04:05"))
		}
		for _, r := range counts.AdvanceFromMessage(msg) {
			fmt.Printf("%s [%s, %s): %d\n", r.Key, r.Start.Format("15:04:05"), r.End.Format("15:04:05"), r.Value)
		}
	}
	// Output:
	// page [12:00:00, 12:01:00): 3
	// page [12:01:00, 12:02:00): 2
	// late: 12:00:10
}
