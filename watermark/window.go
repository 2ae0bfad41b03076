package watermark

import (
	"container/heap"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

// WindowConfig configures event-time Windows.
type WindowConfig struct {
	// Size is the length of each window in event time. Required, positive.
	Size time.Duration

	// Slide is the distance between the starts of consecutive windows. Zero
	// (the default) means Size: tumbling windows, each event in exactly one
	// window. A Slide below Size gives sliding windows, each event in about
	// Size/Slide windows. Must not exceed Size.
	Slide time.Duration

	// Offset shifts window starts: windows start at Offset plus a multiple of
	// Slide since the Unix epoch (for example Size 24h with Offset 16h gives
	// days that start at 16:00 UTC, midnight in UTC+8). Must be in
	// [0, Slide).
	Offset time.Duration

	// AllowedLateness is how long, in event time, a window stays open after
	// its end. A window [start, end) fires once, when the watermark reaches
	// end + AllowedLateness; events for it that arrive before then are
	// aggregated, events after are late. Zero: fire as soon as the watermark
	// reaches the end. Must not be negative.
	AllowedLateness time.Duration

	// OnLate, when set, is called with each event that was dropped from every
	// window it belongs to (a late event). It is called without the Windows'
	// lock held, from the goroutine that called Add.
	OnLate func(LateEvent)
}

func (c *WindowConfig) setDefaults() {
	if c.Slide == 0 {
		c.Slide = c.Size
	}
}

// Validate reports every invalid field, after defaults are applied to zero
// fields (on a copy).
func (c WindowConfig) Validate() error {
	c.setDefaults()
	var errs []error
	if c.Size <= 0 {
		errs = append(errs, fmt.Errorf("Size %v is not positive", c.Size))
	}
	if c.Slide < 0 || c.Slide > c.Size && c.Size > 0 {
		errs = append(errs, fmt.Errorf("Slide %v is not in (0, Size]", c.Slide))
	}
	if c.Offset < 0 || c.Slide > 0 && c.Offset >= c.Slide {
		errs = append(errs, fmt.Errorf("Offset %v is not in [0, Slide)", c.Offset))
	}
	if c.AllowedLateness < 0 {
		errs = append(errs, fmt.Errorf("AllowedLateness %v is negative", c.AllowedLateness))
	}
	if len(errs) > 0 {
		return fmt.Errorf("watermark: invalid WindowConfig: %w", errors.Join(errs...))
	}
	return nil
}

// LateEvent describes an event that arrived after every window it belongs to
// had fired.
type LateEvent struct {
	// Key is the event's key (as passed to Add).
	Key any
	// EventTime is the event's time.
	EventTime time.Time
	// Watermark is the Windows' watermark when the event arrived.
	Watermark time.Time
}

// WindowResult is the final aggregate of one key in one window.
type WindowResult[K comparable, A any] struct {
	// Key is the key the events were added under.
	Key K
	// Start and End bound the window: [Start, End).
	Start, End time.Time
	// Value is the aggregate of the window's events.
	Value A
	// Count is the number of events aggregated.
	Count int64
}

// WindowStats are counters of Windows.
type WindowStats struct {
	// Added counts events aggregated into at least one window.
	Added int64
	// Late counts events dropped from every window they belong to.
	Late int64
	// PartlyLate counts events (of sliding windows) dropped from some of
	// their windows, already fired, and aggregated into the others.
	PartlyLate int64
	// Fired counts results returned by Advance and Flush.
	Fired int64
	// Open is the number of (key, window) aggregates not fired yet.
	Open int
}

// Windows aggregates keyed events into event-time tumbling or sliding windows
// and fires each window once, when the watermark passes its end plus the
// allowed lateness (one final result per key and window: no early or updated
// results, so a result can be written exactly once). Events for windows that
// have fired are late: counted, reported to OnLate, and not aggregated.
//
// In a Watermill handler: Add each message's event, then Advance with the
// message's watermark (AdvanceFromMessage) and publish or store the results
// returned. Handlers may run in parallel: all methods are safe for concurrent
// use, and the watermark only moves forward, so a handler passing an older
// watermark than another changes nothing.
//
// K is the key type, V the event value, A the aggregate; the aggregate of a
// window starts from A's zero value.
type Windows[K comparable, V any, A any] struct {
	cfg       WindowConfig
	size      int64
	slide     int64
	offset    int64
	lateness  int64
	aggregate func(acc A, v V) A

	mu    sync.Mutex
	wm    int64
	byEnd map[int64]map[K]*pane[A]
	ends  endHeap
	stats WindowStats
}

type pane[A any] struct {
	acc   A
	count int64
}

// NewWindows returns empty Windows with no watermark, or the config's
// validation error. aggregate folds an event's value into a window's
// aggregate; it is called with the Windows' lock held and must not call the
// Windows.
func NewWindows[K comparable, V any, A any](config WindowConfig, aggregate func(acc A, v V) A) (*Windows[K, V, A], error) {
	if err := config.Validate(); err != nil {
		return nil, err
	}
	if aggregate == nil {
		return nil, errors.New("watermark: NewWindows: nil aggregate")
	}
	config.setDefaults()
	return &Windows[K, V, A]{
		cfg:       config,
		size:      int64(config.Size),
		slide:     int64(config.Slide),
		offset:    int64(config.Offset),
		lateness:  int64(config.AllowedLateness),
		aggregate: aggregate,
		wm:        none,
		byEnd:     map[int64]map[K]*pane[A]{},
	}, nil
}

// floorDiv is a / b rounded toward minus infinity (b > 0).
func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && a < 0 {
		q--
	}
	return q
}

// Add aggregates an event into every window it belongs to that has not fired,
// and reports whether it was late (dropped from all of them).
func (w *Windows[K, V, A]) Add(key K, eventTime time.Time, value V) (late bool) {
	t := eventTime.UnixNano()
	lastStart := floorDiv(t-w.offset, w.slide)*w.slide + w.offset
	w.mu.Lock()
	added, dropped := 0, 0
	for start := lastStart; start+w.size > t; start -= w.slide {
		end := start + w.size
		if w.fired(end) {
			dropped++
			continue
		}
		panes := w.byEnd[end]
		if panes == nil {
			panes = map[K]*pane[A]{}
			w.byEnd[end] = panes
			heap.Push(&w.ends, end)
		}
		p := panes[key]
		if p == nil {
			p = &pane[A]{}
			panes[key] = p
			w.stats.Open++
		}
		p.acc = w.aggregate(p.acc, value)
		p.count++
		added++
	}
	switch {
	case added == 0:
		w.stats.Late++
	case dropped > 0:
		w.stats.PartlyLate++
		w.stats.Added++
	default:
		w.stats.Added++
	}
	wm := w.wm
	w.mu.Unlock()
	if added == 0 && w.cfg.OnLate != nil {
		w.cfg.OnLate(LateEvent{Key: key, EventTime: eventTime, Watermark: time.Unix(0, wm)})
	}
	return added == 0
}

// fired reports whether the window ending at end has fired. w.mu held.
func (w *Windows[K, V, A]) fired(end int64) bool {
	return w.wm != none && end+w.lateness <= w.wm
}

// Advance moves the watermark to wm (it never goes backwards) and returns the
// windows that fire: every window whose end plus AllowedLateness is at or
// before the watermark, ordered by end (keys of one window in no particular
// order). It returns nil when nothing fires.
func (w *Windows[K, V, A]) Advance(wm time.Time) []WindowResult[K, A] {
	w.mu.Lock()
	defer w.mu.Unlock()
	if n := wm.UnixNano(); n > w.wm {
		w.wm = n
	}
	var out []WindowResult[K, A]
	for len(w.ends) > 0 && w.fired(w.ends[0]) {
		out = w.fire(heap.Pop(&w.ends).(int64), out)
	}
	return out
}

// AdvanceFromMessage is Advance with the watermark msg carries (FromMessage);
// it returns nil when msg carries none.
func (w *Windows[K, V, A]) AdvanceFromMessage(msg *message.Message) []WindowResult[K, A] {
	wm, ok := FromMessage(msg)
	if !ok {
		return nil
	}
	return w.Advance(wm)
}

// Flush fires every open window, whatever the watermark, for the end of a
// bounded input (a backfill). Later events are then aggregated into new
// windows unless the watermark has passed them.
func (w *Windows[K, V, A]) Flush() []WindowResult[K, A] {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []WindowResult[K, A]
	for len(w.ends) > 0 {
		out = w.fire(heap.Pop(&w.ends).(int64), out)
	}
	return out
}

// fire appends the results of the window ending at end and forgets it. w.mu held.
func (w *Windows[K, V, A]) fire(end int64, out []WindowResult[K, A]) []WindowResult[K, A] {
	start, endT := time.Unix(0, end-w.size), time.Unix(0, end)
	for k, p := range w.byEnd[end] {
		out = append(out, WindowResult[K, A]{Key: k, Start: start, End: endT, Value: p.acc, Count: p.count})
		w.stats.Open--
		w.stats.Fired++
	}
	delete(w.byEnd, end)
	return out
}

// Watermark returns the Windows' watermark, false before the first Advance.
func (w *Windows[K, V, A]) Watermark() (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.wm == none {
		return time.Time{}, false
	}
	return time.Unix(0, w.wm), true
}

// Stats returns the Windows' counters.
func (w *Windows[K, V, A]) Stats() WindowStats {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.stats
}

// endHeap is a min-heap of window ends.
type endHeap []int64

func (h endHeap) Len() int           { return len(h) }
func (h endHeap) Less(i, j int) bool { return h[i] < h[j] }
func (h endHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *endHeap) Push(x any)        { *h = append(*h, x.(int64)) }
func (h *endHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
