package watermark

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/watermill-sls/watermill-sls/internal/testutil"
)

// BenchmarkCoordinatorReport measures one update of a member's watermark
// (Report: store it and read the group's view), for the in-process and the
// PostgreSQL coordinator, in a group of 4 members.
func BenchmarkCoordinatorReport(b *testing.B) {
	ctx := context.Background()
	run := func(b *testing.B, c Coordinator) {
		for m := range 3 {
			if _, err := c.Report(ctx, "g", fmt.Sprintf("other-%d", m), MemberHolding, base); err != nil {
				b.Fatal(err)
			}
		}
		b.ResetTimer()
		i := 0
		for b.Loop() {
			i++
			if _, err := c.Report(ctx, "g", "me", MemberHolding, base.Add(time.Duration(i)*time.Millisecond)); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "µs/update")
	}
	b.Run("in-process", func(b *testing.B) { run(b, NewInProcessCoordinator()) })
	b.Run("postgres", func(b *testing.B) {
		c, err := NewPostgresCoordinator(testutil.Postgres(b), PostgresCoordinatorConfig{Table: "public.wm_bench", MemberTTL: time.Minute})
		if err != nil {
			b.Fatal(err)
		}
		if err := c.Migrate(ctx); err != nil {
			b.Fatal(err)
		}
		run(b, c)
	})
}
