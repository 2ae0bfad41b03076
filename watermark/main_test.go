package watermark

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/watermill-sls/watermill-sls/internal/testutil"
)

func TestMain(m *testing.M) { testutil.Main(m) }

// base is the event time the tests start from.
var base = time.Date(2026, 1, 2, 3, 4, 0, 0, time.UTC) // whole minutes: windows align to it

// at returns base plus d.
func at(d time.Duration) time.Time { return base.Add(d) }

// manualClock replaces a Tracker's monotonic clock, so idleness is tested
// without waiting.
type manualClock struct{ ns atomic.Int64 }

func (c *manualClock) advance(d time.Duration) { c.ns.Add(int64(d)) }

func newManualTracker(t *testing.T, s Strategy) (*Tracker, *manualClock) {
	t.Helper()
	tr, err := NewTracker(s)
	if err != nil {
		t.Fatal(err)
	}
	c := &manualClock{}
	c.ns.Store(1)
	tr.now = c.ns.Load
	return tr, c
}

func mustAdd(t *testing.T, tr *Tracker, id int, initial time.Time) *Shard {
	t.Helper()
	s, err := tr.AddShard(id, initial)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// wantWM checks the tracker's watermark; zero want means "none".
func wantWM(t *testing.T, tr *Tracker, want time.Time) {
	t.Helper()
	got, ok := tr.Watermark()
	switch {
	case want.IsZero() && ok:
		t.Fatalf("tracker watermark = %v, want none", got.Sub(base))
	case !want.IsZero() && !ok:
		t.Fatalf("tracker watermark = none, want %v", want.Sub(base))
	case !want.IsZero() && !got.Equal(want):
		t.Fatalf("tracker watermark = %v, want %v", got.Sub(base), want.Sub(base))
	}
}

// wantAlign checks the tracker's alignment minimum; zero want means
// unconstrained.
func wantAlign(t *testing.T, tr *Tracker, want time.Time) {
	t.Helper()
	got := tr.alignmentMin()
	switch {
	case want.IsZero() && got != unconstrained:
		t.Fatalf("alignment minimum = %v, want unconstrained", time.Unix(0, got).Sub(base))
	case !want.IsZero() && got != want.UnixNano():
		if got == unconstrained {
			t.Fatalf("alignment minimum = unconstrained, want %v", want.Sub(base))
		}
		t.Fatalf("alignment minimum = %v, want %v", time.Unix(0, got).Sub(base), want.Sub(base))
	}
}
