package watermark

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

// Watermarks and event times are handled internally as int64 unix
// nanoseconds (the range of time.Time.UnixNano: years 1678 to 2262).
const (
	// none is "no watermark yet" for a shard or a tracker (-inf).
	none = math.MinInt64
	// unconstrained is a minimum over nothing (+inf): no member or shard holds
	// the group back.
	unconstrained = math.MaxInt64
)

// ErrUnknownShard is returned for a shard id the Tracker does not hold.
var ErrUnknownShard = errors.New("watermark: unknown shard")

// ErrShardExists is returned by AddShard for an id the Tracker already holds.
var ErrShardExists = errors.New("watermark: shard already tracked")

// ErrNoEventTime is returned by Tracker.ObserveMessage when the Strategy has no
// EventTime function.
var ErrNoEventTime = errors.New("watermark: Strategy.EventTime is nil")

// ShardState is where a shard stands in its Tracker.
type ShardState int

const (
	// ShardActive shards have a watermark and hold the tracker's watermark.
	ShardActive ShardState = iota
	// ShardPending shards have no event and no initial watermark yet. They
	// hold the tracker's watermark undefined until their first event or until
	// they are idle (see Tracker).
	ShardPending
	// ShardPaused shards are stopped by alignment or back-pressure. They hold
	// the tracker like active ones, and paused time never makes them idle.
	ShardPaused
	// ShardIdle shards delivered no event for the IdleTimeout (of unpaused
	// time). They do not hold the tracker back.
	ShardIdle
	// ShardFinished shards were read to their end (FinishShard). They do not
	// hold the tracker back.
	ShardFinished
)

// String returns the state's name ("active", "pending", ...).
func (s ShardState) String() string {
	switch s {
	case ShardActive:
		return "active"
	case ShardPending:
		return "pending"
	case ShardPaused:
		return "paused"
	case ShardIdle:
		return "idle"
	case ShardFinished:
		return "finished"
	}
	return fmt.Sprintf("ShardState(%d)", int(s))
}

// Tracker computes watermarks for a set of shards (splits) read by one
// consumer, typically one Subscriber's subscription to one logstore.
//
// A shard's watermark is the newest event time it delivered minus
// Strategy.MaxOutOfOrderness, never lower than the initial watermark it was
// added with. The tracker's watermark is the minimum over its shards that are
// neither idle nor finished; it never goes backwards. When no shard holds it,
// it stays where it was, and the tracker reports "no constraint" to its
// alignment group rather than a stale minimum.
//
// # Shards without a watermark
//
// A shard added without an initial watermark while the tracker has one starts
// at the tracker's watermark: it holds the tracker there until its first event
// or until it is idle, so it neither blocks the others for longer than the
// IdleTimeout nor lets them run ahead without bound. A shard added while the
// tracker has no watermark yet (at start) is pending: the tracker's watermark
// stays undefined while a pending shard is neither idle nor has delivered an
// event (no event is declared late because a shard was slow to start), and for
// alignment the pending shard is anchored at the first watermark any sibling
// reaches, so the siblings can run at most MaxDrift past it.
//
// A shard that was idle and becomes active again resumes at no lower than the
// tracker's watermark: its events below it are late whatever happens, so it
// must not stall the others.
//
// All methods are safe for concurrent use. Observe and Watermark do not
// allocate.
type Tracker struct {
	bound int64 // MaxOutOfOrderness in ns
	idle  int64 // IdleTimeout in ns
	extr  EventTimeFunc
	epoch time.Time
	now   func() int64 // monotonic ns since epoch; replaced in tests

	mu     sync.Mutex // serializes AddShard, Finish, Remove and recompute
	byID   atomic.Pointer[map[int]*Shard]
	shards atomic.Pointer[[]*Shard]

	// seq is odd while recompute runs; Observe reads it to catch a recompute
	// that read its shard before it advanced (see observe).
	seq          atomic.Uint64
	partial      atomic.Int64 // min watermark over active shards with one; unconstrained if none
	alignMin     atomic.Int64 // partial with pending anchors; unconstrained if nothing holds
	emitted      atomic.Int64 // the tracker's monotonic watermark; none until defined
	pending      atomic.Bool  // a shard holding the tracker has no watermark
	nextDeadline atomic.Int64 // earliest moment an active shard may turn idle
	stamp        atomic.Pointer[stampCache]

	// changed receives a value (non-blocking) whenever alignMin changed; the
	// Aligner bound to the tracker listens on it.
	changed chan struct{}
	// signalFloor quiets changed: a rise of alignMin to a value below it
	// is not signalled (falls, pending changes and changes of the set of
	// shards always are). The bound Aligner raises it to what its blocked
	// shards need while it has nothing else to do with a rise; none (the
	// default) signals every change.
	signalFloor atomic.Int64
	// gen counts changes of the set of shards (added, finished, removed):
	// the Aligner wakes its blocked shards when it moves.
	gen    atomic.Int64
	bound1 atomic.Bool // an Aligner is bound
	// rose, when set (by the bound Aligner), is called under mu with the
	// new alignMin when a rise reached signalFloor, before the signal.
	rose atomic.Pointer[func(int64)]
}

type stampCache struct {
	wm int64
	s  string
}

// NewTracker returns a Tracker with no shards, or the strategy's validation
// error.
func NewTracker(strategy Strategy) (*Tracker, error) {
	if err := strategy.Validate(); err != nil {
		return nil, err
	}
	strategy.setDefaults()
	t := &Tracker{
		bound:   int64(strategy.MaxOutOfOrderness),
		idle:    int64(strategy.IdleTimeout),
		extr:    strategy.EventTime,
		epoch:   time.Now(),
		changed: make(chan struct{}, 1),
	}
	t.now = func() int64 { return int64(time.Since(t.epoch)) }
	m := map[int]*Shard{}
	t.byID.Store(&m)
	var l []*Shard
	t.shards.Store(&l)
	t.partial.Store(unconstrained)
	t.alignMin.Store(unconstrained)
	t.signalFloor.Store(none)
	t.emitted.Store(none)
	t.nextDeadline.Store(unconstrained)
	return t, nil
}

// Shard is one shard (split) of a Tracker. The handle lets the per-message
// path skip the id lookup. Its methods are safe for concurrent use.
type Shard struct {
	t  *Tracker
	id int

	maxEvent   atomic.Int64 // newest event time; none before the first
	floor      atomic.Int64 // initial watermark (raised on reactivation); none if unset
	anchor     atomic.Int64 // alignment anchor while pending; none until set
	lastActive atomic.Int64 // monotonic ns of the last event, resume or creation
	paused     atomic.Int32
	finished   atomic.Bool
}

// ID returns the shard's id.
func (s *Shard) ID() int { return s.id }

// AddShard starts tracking a shard. initial is the watermark the shard starts
// at: for a shard created by a split or merge, pass the final watermark of its
// parent (for a merge, the lower of the two parents', as returned by
// FinishShard). With the zero time the shard starts at the tracker's current
// watermark, or is pending when the tracker has none (see Tracker). The
// shard's idle clock starts now. Add a shard when its reading starts, not when
// it is discovered: a child waiting for its parents would otherwise hold the
// tracker.
func (t *Tracker) AddShard(id int, initial time.Time) (*Shard, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	old := *t.byID.Load()
	if _, ok := old[id]; ok {
		return nil, fmt.Errorf("%w: %d", ErrShardExists, id)
	}
	s := &Shard{t: t, id: id}
	s.maxEvent.Store(none)
	s.anchor.Store(none)
	s.lastActive.Store(t.now())
	f := int64(none)
	if !initial.IsZero() {
		f = initial.UnixNano()
	} else if e := t.emitted.Load(); e != none {
		f = e
	}
	s.floor.Store(f)
	m := make(map[int]*Shard, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	m[id] = s
	t.byID.Store(&m)
	l := append(append([]*Shard(nil), *t.shards.Load()...), s)
	t.shards.Store(&l)
	t.gen.Add(1)
	t.recomputeLocked()
	t.signal()
	return s, nil
}

// Shard returns the handle of a tracked shard (finished ones included), or nil.
func (t *Tracker) Shard(id int) *Shard { return (*t.byID.Load())[id] }

// FinishShard marks a shard as read to its end: it no longer holds the
// tracker. It returns the shard's final watermark (false when it never had
// one), which is what a child shard's AddShard takes as initial watermark.
// Finishing twice is harmless.
func (t *Tracker) FinishShard(id int) (time.Time, bool, error) {
	s := t.Shard(id)
	if s == nil {
		return time.Time{}, false, fmt.Errorf("%w: %d", ErrUnknownShard, id)
	}
	s.finished.Store(true)
	t.gen.Add(1)
	t.recompute()
	t.signal() // a Wait blocked on this shard returns
	w, ok := s.Watermark()
	return w, ok, nil
}

// RemoveShard stops tracking a shard altogether (for example when it is
// assigned to another consumer).
func (t *Tracker) RemoveShard(id int) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	old := *t.byID.Load()
	s, ok := old[id]
	if !ok {
		return fmt.Errorf("%w: %d", ErrUnknownShard, id)
	}
	s.finished.Store(true)
	m := make(map[int]*Shard, len(old))
	for k, v := range old {
		if k != id {
			m[k] = v
		}
	}
	t.byID.Store(&m)
	var l []*Shard
	for _, v := range *t.shards.Load() {
		if v != s {
			l = append(l, v)
		}
	}
	t.shards.Store(&l)
	t.gen.Add(1)
	t.recomputeLocked()
	t.signal()
	return nil
}

// signal tells the bound Aligner (if any) that something changed.
func (t *Tracker) signal() {
	select {
	case t.changed <- struct{}{}:
	default:
	}
}

// Observe records an event time delivered by shard id. See Shard.Observe.
func (t *Tracker) Observe(id int, eventTime time.Time) error {
	s := t.Shard(id)
	if s == nil {
		return ErrUnknownShard
	}
	s.observe(eventTime.UnixNano(), t.now())
	return nil
}

// ObserveMessage extracts the message's event time with Strategy.EventTime and
// records it for shard id. It returns the extractor's error (wrapped) without
// recording anything.
func (t *Tracker) ObserveMessage(id int, msg *message.Message) error {
	if t.extr == nil {
		return ErrNoEventTime
	}
	s := t.Shard(id)
	if s == nil {
		return fmt.Errorf("%w: %d", ErrUnknownShard, id)
	}
	et, err := t.extr(msg)
	if err != nil {
		return fmt.Errorf("watermark: event time of message %s: %w", msg.UUID, err)
	}
	if et.IsZero() {
		return fmt.Errorf("watermark: event time of message %s: zero time", msg.UUID)
	}
	s.observe(et.UnixNano(), t.now())
	return nil
}

// Watermark returns the tracker's watermark, false while it has none (no
// shard delivered an event yet, or a pending shard holds it). It never goes
// backwards. Events with an event time before it are late.
func (t *Tracker) Watermark() (time.Time, bool) {
	w := t.current()
	if w == none {
		return time.Time{}, false
	}
	return time.Unix(0, w), true
}

// current returns the emitted watermark after applying any idleness
// transition that is due.
func (t *Tracker) current() int64 {
	if t.now() >= t.nextDeadline.Load() {
		t.recompute()
	}
	return t.emitted.Load()
}

// Stamp sets the tracker's current watermark on msg under MetadataKey (see
// SetOnMessage); while the tracker has no watermark it deletes the key, so a
// message never carries a watermark from elsewhere. It
// reuses the formatted value while the watermark does not move, so it
// allocates only when the watermark changed (and when the metadata map grows).
func (t *Tracker) Stamp(msg *message.Message) {
	w := t.current()
	if w == none {
		delete(msg.Metadata, MetadataKey)
		return
	}
	c := t.stamp.Load()
	if c == nil || c.wm != w {
		c = &stampCache{wm: w, s: formatNanos(w)}
		t.stamp.Store(c)
	}
	if msg.Metadata == nil {
		msg.Metadata = make(message.Metadata, 1)
	}
	msg.Metadata[MetadataKey] = c.s
}

// ShardStatus describes one shard of a Tracker.
type ShardStatus struct {
	// ID is the shard id.
	ID int
	// State is where the shard stands.
	State ShardState
	// Watermark is the shard's watermark; zero when HasWatermark is false.
	Watermark time.Time
	// HasWatermark is false for a shard with no event and no initial
	// watermark.
	HasWatermark bool
}

// Shards returns the status of every tracked shard, ordered by id.
func (t *Tracker) Shards() []ShardStatus {
	now := t.now()
	list := *t.shards.Load()
	out := make([]ShardStatus, 0, len(list))
	for _, s := range list {
		st := ShardStatus{ID: s.id, State: s.state(now)}
		st.Watermark, st.HasWatermark = s.Watermark()
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// ShardWatermark returns one shard's watermark, false when it has none.
func (t *Tracker) ShardWatermark(id int) (time.Time, bool, error) {
	s := t.Shard(id)
	if s == nil {
		return time.Time{}, false, fmt.Errorf("%w: %d", ErrUnknownShard, id)
	}
	w, ok := s.Watermark()
	return w, ok, nil
}

// Observe records an event time the shard delivered: it advances the shard's
// watermark when the event is its newest, and restarts its idle clock. Events
// observed on a finished shard are ignored. eventTime must be in the range of
// time.Time.UnixNano (years 1678 to 2262; not the zero Time). Safe for
// concurrent use; does not allocate.
func (s *Shard) Observe(eventTime time.Time) { s.observe(eventTime.UnixNano(), s.t.now()) }

func (s *Shard) observe(ev, now int64) {
	if s.finished.Load() {
		return
	}
	t := s.t
	force := s.activate(now)
	old := s.maxEvent.Load()
	advanced := false
	for ev > old {
		if s.maxEvent.CompareAndSwap(old, ev) {
			advanced = true
			break
		}
		old = s.maxEvent.Load()
	}
	if !advanced {
		if force || now >= t.nextDeadline.Load() {
			t.recompute()
		}
		return
	}
	oldWM := s.watermarkWith(old)
	// A recompute that read this shard before it advanced either still runs
	// (seq odd) or stored a partial minimum no higher than the shard's old
	// watermark; either way this call recomputes. Otherwise the shard was not
	// holding the minimum and nothing changes.
	seq := t.seq.Load()
	if force || oldWM == none || seq&1 == 1 || oldWM <= t.partial.Load() || now >= t.nextDeadline.Load() {
		t.recompute()
	}
}

// activate restarts the idle clock at now; when the shard was idle it raises
// the shard to the tracker's watermark and reports true (the set of shards
// holding the tracker changed).
func (s *Shard) activate(now int64) bool {
	last := s.lastActive.Load()
	wasIdle := s.paused.Load() == 0 && now-last >= s.t.idle
	if now > last {
		s.lastActive.CompareAndSwap(last, now)
	}
	if !wasIdle {
		return false
	}
	if e := s.t.emitted.Load(); e != none {
		for f := s.floor.Load(); f < e && !s.floor.CompareAndSwap(f, e); f = s.floor.Load() {
		}
	}
	return true
}

// Pause marks the shard as stopped by alignment or back-pressure: paused time
// never counts toward idleness. Pauses nest; each Pause needs a Resume.
func (s *Shard) Pause() {
	s.activate(s.t.now())
	s.paused.Add(1)
	s.t.recompute()
}

// Resume ends one Pause. The shard's idle clock restarts when the last pause
// ends. A Resume without a matching Pause is ignored.
func (s *Shard) Resume() {
	n := s.paused.Add(-1)
	if n < 0 { // a Resume without a Pause: ignored
		s.paused.Add(1)
		return
	}
	if n == 0 {
		now := s.t.now()
		if now > s.lastActive.Load() {
			s.lastActive.Store(now)
		}
	}
	s.t.recompute()
}

// Watermark returns the shard's watermark, false when it has none yet.
func (s *Shard) Watermark() (time.Time, bool) {
	w := s.watermark()
	if w == none {
		return time.Time{}, false
	}
	return time.Unix(0, w), true
}

func (s *Shard) watermark() int64 { return s.watermarkWith(s.maxEvent.Load()) }

func (s *Shard) watermarkWith(maxEvent int64) int64 {
	w := int64(none)
	if maxEvent != none {
		w = maxEvent - s.t.bound
		if w > maxEvent { // overflow near the minimum
			w = none
		}
	}
	if f := s.floor.Load(); f > w {
		w = f
	}
	return w
}

// State returns where the shard stands now.
func (s *Shard) State() ShardState { return s.state(s.t.now()) }

func (s *Shard) state(now int64) ShardState {
	switch {
	case s.finished.Load():
		return ShardFinished
	case s.paused.Load() > 0:
		return ShardPaused
	case now-s.lastActive.Load() >= s.t.idle:
		return ShardIdle
	case s.watermark() == none:
		return ShardPending
	}
	return ShardActive
}

// holds reports whether the shard holds the tracker (not finished, not idle)
// and, if it is not paused, when it turns idle.
func (s *Shard) holds(now int64) (holds bool, deadline int64) {
	if s.finished.Load() {
		return false, unconstrained
	}
	if s.paused.Load() > 0 {
		return true, unconstrained
	}
	last := s.lastActive.Load()
	if now-last >= s.t.idle {
		return false, unconstrained
	}
	return true, last + s.t.idle
}

func (t *Tracker) recompute() {
	t.mu.Lock()
	t.recomputeLocked()
	t.mu.Unlock()
}

// recomputeLocked recomputes the minimums and the idle deadline. t.mu held.
func (t *Tracker) recomputeLocked() {
	t.seq.Add(1)
	now := t.now()
	list := *t.shards.Load()
	partial, deadline := int64(unconstrained), int64(unconstrained)
	pending := false
	for _, s := range list {
		ok, d := s.holds(now)
		if !ok {
			continue
		}
		deadline = min(deadline, d)
		if w := s.watermark(); w != none {
			partial = min(partial, w)
		} else {
			pending = true
		}
	}
	align := partial
	if pending {
		for _, s := range list {
			if ok, _ := s.holds(now); !ok {
				continue
			}
			if w := s.watermark(); w != none {
				// A shard that got its first event since the pass above
				// is in neither partial nor the anchors: count it here.
				align = min(align, w)
				continue
			}
			a := s.anchor.Load()
			if a == none && partial != unconstrained {
				a = partial
				s.anchor.Store(a)
			}
			if a != none {
				align = min(align, a)
			}
		}
	}
	t.partial.Store(partial)
	t.nextDeadline.Store(deadline)
	pendingChanged := t.pending.Swap(pending) != pending
	if !pending && partial != unconstrained {
		if e := t.emitted.Load(); partial > e {
			t.emitted.Store(partial) // writes of emitted happen under t.mu
		}
	}
	if old := t.alignMin.Swap(align); pendingChanged || (old != align && (align < old || align >= t.signalFloor.Load())) {
		if f := t.rose.Load(); f != nil && align > old && !pendingChanged {
			(*f)(align)
		}
		t.signal()
	}
	t.seq.Add(1)
}

// alignmentState is what the tracker's member reports to its group: holding
// at alignmentMin, pending (shards that hold have no watermark or anchor yet),
// or released.
func (t *Tracker) alignmentState() (MemberState, int64) {
	m := t.alignmentMin()
	switch {
	case m != unconstrained:
		return MemberHolding, m
	case t.pending.Load():
		return MemberPending, m
	}
	return MemberReleased, m
}

// alignmentMin is the tracker's contribution to its alignment group: the
// minimum watermark over the shards that hold it (pending shards at their
// anchor), or unconstrained.
func (t *Tracker) alignmentMin() int64 {
	if t.now() >= t.nextDeadline.Load() {
		t.recompute()
	}
	return t.alignMin.Load()
}
