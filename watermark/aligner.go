package watermark

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
)

// DefaultUpdateInterval is the AlignerConfig.UpdateInterval used when the field
// is zero (the same as Flink's watermark alignment).
const DefaultUpdateInterval = time.Second

// maxReportTimeout bounds one report; a report also gets at least a second
// and at most one UpdateInterval.
const maxReportTimeout = 30 * time.Second

// leaveTimeout bounds the Leave call Close makes.
const leaveTimeout = 10 * time.Second

// minReportGap is the least time between two reports a coordinator with
// change notifications (in process) gets for changes of this member's
// watermark. Without it a watermark moving on every message made a report,
// a view and a wake-up per message; with it a blocked shard of another
// member resumes at most this much later than the change that allowed it.
// This member's own shards compare against its live tracker and are not
// delayed.
const minReportGap = time.Millisecond

// ErrClosed is returned by Aligner.Wait once the Aligner is closed.
var ErrClosed = errors.New("watermark: aligner closed")

// AlignerConfig configures an Aligner.
type AlignerConfig struct {
	// Group names the alignment group. Members of the same group on the same
	// Coordinator align with each other. Required.
	Group string

	// Member names this member in its group. It must be unique in the group
	// while the member runs. Keep it stable across restarts (for example the
	// consumer name and logstore) with the PostgreSQL coordinator: a
	// restarted member then replaces its old report at once instead of
	// leaving it to hold the group until it expires. Default: a random name.
	Member string

	// MaxDrift is how far, in event time, a shard's watermark may be ahead of
	// the group minimum before the shard stops fetching. Required, positive.
	MaxDrift time.Duration

	// UpdateInterval is how often the member reports its watermark and reads
	// the group minimum from a coordinator that is not a Notifier (the
	// PostgreSQL one). With a Notifier (InProcessCoordinator) reports are
	// immediate and the interval only paces a safety re-read. Blocked shards
	// never wait for this interval to pass when the minimum moves locally,
	// and resume as soon as a report shows the group minimum moved, by any
	// amount. Default DefaultUpdateInterval.
	UpdateInterval time.Duration

	// Coordinator holds the group's members' watermarks. Required.
	Coordinator Coordinator
}

func (c *AlignerConfig) setDefaults() {
	if c.UpdateInterval == 0 {
		c.UpdateInterval = DefaultUpdateInterval
	}
	if c.Member == "" {
		var b [8]byte
		_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
		c.Member = "member-" + hex.EncodeToString(b[:])
	}
}

// Validate reports every invalid field, after defaults are applied to zero
// fields (on a copy).
func (c AlignerConfig) Validate() error {
	c.setDefaults()
	var errs []error
	if c.Group == "" {
		errs = append(errs, errors.New("Group is empty"))
	}
	if c.MaxDrift <= 0 {
		errs = append(errs, fmt.Errorf("MaxDrift %v is not positive", c.MaxDrift))
	}
	if c.UpdateInterval < 0 {
		errs = append(errs, fmt.Errorf("UpdateInterval %v is negative", c.UpdateInterval))
	}
	if c.Coordinator == nil {
		errs = append(errs, errors.New("Coordinator is nil"))
	}
	if len(errs) > 0 {
		return fmt.Errorf("watermark: invalid AlignerConfig: %w", errors.Join(errs...))
	}
	return nil
}

// Aligner makes one member's shards (the shards of one Tracker) keep pace with
// its alignment group: a shard whose watermark is more than MaxDrift ahead of
// the group minimum must not fetch until the minimum catches up.
//
// The group minimum is the lowest of the tracker's own minimum, read live, and
// the other members' minimum, as last reported by the Coordinator. Shards that
// are idle, pending without anchor, or finished do not count, and a member
// whose shards all do not count reports no watermark; when nothing holds the
// group there is no limit, so an empty group, a group of one, all members idle
// or all finished never block. A shard without a watermark (pending) is never
// blocked: it cannot be ahead. A restarted member reports no watermark until
// its shards have one, so it does not hold the others with a stale value; its
// shards then align like any other (it cannot run ahead by more than MaxDrift
// plus one fetch).
//
// A blocked shard is paused in its Tracker for the whole wait, so waiting on
// alignment never makes it idle. A blocked shard registers the limit it
// needs; on every change of the tracker's minimum and of the group view (a
// signal, not a periodic tick) the Aligner wakes the blocked shards only
// when the limit reached the lowest need (or when the first view, the
// group's anchoring or the tracker's shards changed), and they resume as
// soon as their watermark is within MaxDrift of the new minimum (plus the
// margin of WaitShardMargin), however far the minimum jumped.
//
// An Aligner runs one goroutine, stopped by Close. Its methods are safe for
// concurrent use. One Aligner per Tracker.
type Aligner struct {
	cfg      AlignerConfig
	t        *Tracker
	notifier Notifier
	// watchesOwn: the coordinator is an ownWatcher and a Notifier, so the
	// change channel comes with each report.
	watchesOwn bool
	logger     watermill.LoggerAdapter
	drift      int64

	others     atomic.Int64 // min over the other members, or unconstrained
	unanchored atomic.Bool  // the last view had pending members without anchor
	view       atomic.Pointer[GroupView]
	viewTTL    atomic.Int64
	viewAt     atomic.Int64 // tracker clock of the last successful report
	blocked    atomic.Int64
	blocks     atomic.Int64
	reports    atomic.Int64
	wakeMu     sync.Mutex
	wake       chan struct{} // closed by broadcast; waiters select on it
	// need is the lowest limit a blocked waiter needs to resume (its
	// shard's watermark plus its margin), unconstrained while none waits.
	// Written under wakeMu; broadcast resets it.
	need     atomic.Int64
	wakes    atomic.Int64 // broadcasts made (tests)
	loops    atomic.Int64 // iterations of run's loop (tests)
	errMu    sync.Mutex
	err      error
	closing  chan struct{}
	done     chan struct{}
	ready    chan struct{}   // closed after the first report, successful or not
	ctx      context.Context // ends with Close
	cancel   context.CancelFunc
	closeMu  sync.Mutex
	closed   bool
	closeErr error
}

// NewAligner binds tracker to an alignment group and starts reporting its
// watermark. Add the shards the member starts with before, so that its first
// report says pending (the group anchors it) rather than released. A nil
// logger becomes a no-op logger. It fails when the config is invalid or the
// tracker already has an Aligner.
func NewAligner(tracker *Tracker, config AlignerConfig, logger watermill.LoggerAdapter) (*Aligner, error) {
	if err := config.Validate(); err != nil {
		return nil, err
	}
	if tracker == nil {
		return nil, errors.New("watermark: NewAligner: nil Tracker")
	}
	config.setDefaults()
	if !tracker.bound1.CompareAndSwap(false, true) {
		return nil, errors.New("watermark: NewAligner: the Tracker already has an Aligner")
	}
	if logger == nil {
		logger = watermill.NopLogger{}
	}
	a := &Aligner{
		cfg:     config,
		t:       tracker,
		logger:  logger.With(watermill.LogFields{"alignment_group": config.Group, "member": config.Member}),
		drift:   int64(config.MaxDrift),
		wake:    make(chan struct{}),
		closing: make(chan struct{}),
		done:    make(chan struct{}),
		ready:   make(chan struct{}),
	}
	a.ctx, a.cancel = context.WithCancel(context.Background())
	a.notifier, _ = config.Coordinator.(Notifier)
	_, ow := config.Coordinator.(ownWatcher)
	a.watchesOwn = ow && a.notifier != nil
	a.others.Store(unconstrained)
	a.need.Store(unconstrained)
	// A rise of the tracker's minimum that lets a blocked shard resume wakes
	// it on the goroutine that raised the minimum, not one hop later from
	// run: run would be readied, scheduled, and only then ready the waiter.
	rose := func(own int64) {
		need := a.need.Load()
		if need == unconstrained {
			return // nothing blocked
		}
		if m := min(own, a.othersMin()); m == unconstrained || m > unconstrained-a.drift || m+a.drift >= need {
			a.broadcast()
		}
	}
	tracker.rose.Store(&rose)
	go a.run()
	return a, nil
}

// Member returns the member name the Aligner reports under.
func (a *Aligner) Member() string { return a.cfg.Member }

// Wait blocks while shard id's watermark is more than MaxDrift ahead of the
// group minimum, and returns nil once it may fetch. The shard is paused in the
// Tracker while Wait blocks. It returns ctx's error when ctx ends first,
// ErrClosed when the Aligner is closed, and an ErrUnknownShard error for an
// id the Tracker does not hold. Call it before each fetch of the shard.
func (a *Aligner) Wait(ctx context.Context, id int) error {
	s := a.t.Shard(id)
	if s == nil {
		return fmt.Errorf("%w: %d", ErrUnknownShard, id)
	}
	return a.WaitShard(ctx, s)
}

// WaitShard is Wait for a shard handle of the Aligner's Tracker.
func (a *Aligner) WaitShard(ctx context.Context, s *Shard) error {
	return a.wait(ctx, s, 0)
}

// WaitShardMargin is WaitShard with hysteresis, for a caller that checks
// often (for example before every message it delivers): it returns at once
// while the shard's watermark is within the limit (at most MaxDrift ahead of
// the group minimum), exactly like WaitShard; once it has to block, it
// returns only when the limit is at least margin above the shard's
// watermark (or the shard is finished, or the group no longer limits it).
// So a shard that runs at the limit blocks once per margin of the group's
// progress, not once per event. margin is clamped to [0, MaxDrift]: the
// shard at the group minimum is at least MaxDrift below the limit, so it
// never waits and the group cannot deadlock.
func (a *Aligner) WaitShardMargin(ctx context.Context, s *Shard, margin time.Duration) error {
	return a.wait(ctx, s, min(max(int64(margin), 0), a.drift))
}

func (a *Aligner) wait(ctx context.Context, s *Shard, margin int64) error {
	if a.allowedFast(s) || a.allowed(s) {
		return nil
	}
	s.Pause()
	a.blocked.Add(1)
	a.blocks.Add(1)
	defer func() {
		a.blocked.Add(-1)
		s.Resume()
	}()
	for {
		ch := a.register(s, margin)
		if a.resumable(s, margin) {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-a.closing:
			return ErrClosed
		}
	}
}

// register returns the channel the next broadcast closes, and records the
// limit the shard needs to resume, so that the run loop wakes waiters only
// when the limit reaches the lowest such need (a waiter's watermark only
// grows, so a recorded need is never too high).
func (a *Aligner) register(s *Shard, margin int64) <-chan struct{} {
	need := int64(none) // no watermark: any limit will do
	if w := s.watermark(); w != none {
		need = w + margin
		if need < w { // overflow
			need = unconstrained
		}
	}
	a.wakeMu.Lock()
	defer a.wakeMu.Unlock()
	if need < a.need.Load() {
		a.need.Store(need)
		if f := a.floorFor(need); f < a.t.signalFloor.Load() {
			a.t.signalFloor.Store(f)
		}
	}
	return a.wake
}

// floorFor is the lowest tracker minimum at which a waiter that needs the
// limit need could resume (need minus MaxDrift, saturated).
func (a *Aligner) floorFor(need int64) int64 {
	switch {
	case need == none:
		return none
	case need == unconstrained:
		return unconstrained
	case need < none+a.drift:
		return none
	}
	return need - a.drift
}

// quiet sets the tracker's signalFloor: with everyChange, every change of
// the tracker's minimum wakes the run loop; otherwise only a rise that
// may let a blocked shard resume does (falls and changes of the set of
// shards always do). Under wakeMu, so that a waiter registering at the
// same time cannot be missed (register lowers the floor).
func (a *Aligner) quiet(everyChange bool) {
	a.wakeMu.Lock()
	defer a.wakeMu.Unlock()
	f := int64(none)
	if !everyChange {
		f = a.floorFor(a.need.Load())
	}
	a.t.signalFloor.Store(f)
}

// resumable reports whether a blocked shard may go on: allowed, with the
// limit at least margin above its watermark.
func (a *Aligner) resumable(s *Shard, margin int64) bool {
	if !a.allowed(s) {
		return false
	}
	if margin == 0 || s.finished.Load() {
		return true
	}
	w := s.watermark()
	l := a.limit()
	return w == none || l == unconstrained || l-w >= margin
}

// Allowed reports, without blocking, whether shard id may fetch now.
func (a *Aligner) Allowed(id int) (bool, error) {
	s := a.t.Shard(id)
	if s == nil {
		return false, fmt.Errorf("%w: %d", ErrUnknownShard, id)
	}
	return a.allowed(s), nil
}

func (a *Aligner) allowed(s *Shard) bool {
	if s.finished.Load() {
		return true
	}
	w := s.watermark()
	if allow, decided := a.decided(w); decided {
		return allow
	}
	return w <= a.limit()
}

// decided answers for a shard with watermark w when the limit does not
// matter: a shard without a watermark cannot be ahead; no shard may go
// before the member's first view of the group (a fresh member must not run
// ahead) or while members wait for an anchor (the next report gives them
// one).
func (a *Aligner) decided(w int64) (allow, ok bool) {
	if w == none {
		return true, true
	}
	select {
	case <-a.ready:
	default:
		return false, true
	}
	if a.unanchored.Load() {
		return false, true
	}
	return false, false
}

// allowedFast is allowed's common case with atomic loads only: a shard of
// a ready, anchored group within the limit computed from the last known
// minimums. It may say false where allowed says true (idleness transitions
// that are due, a view past its TTL: both only raise the limit), never the
// reverse.
func (a *Aligner) allowedFast(s *Shard) bool {
	w := s.watermark()
	if allow, decided := a.decided(w); decided {
		return allow
	}
	m := min(a.t.alignMin.Load(), a.others.Load())
	return m == unconstrained || m > unconstrained-a.drift || w <= m+a.drift
}

// limit is the highest watermark a shard may have and still fetch.
func (a *Aligner) limit() int64 {
	m := a.groupMin()
	if m == unconstrained || m > unconstrained-a.drift {
		return unconstrained
	}
	return m + a.drift
}

func (a *Aligner) groupMin() int64 { return min(a.t.alignmentMin(), a.othersMin()) }

func (a *Aligner) othersMin() int64 {
	o := a.others.Load()
	if ttl := a.viewTTL.Load(); ttl > 0 && o != unconstrained && a.t.now()-a.viewAt.Load() > ttl {
		return unconstrained
	}
	return o
}

// GroupMin returns the group minimum this member aligns to (its own tracker
// included), false when nothing holds the group.
func (a *Aligner) GroupMin() (time.Time, bool) {
	m := a.groupMin()
	if m == unconstrained {
		return time.Time{}, false
	}
	return time.Unix(0, m), true
}

// Limit returns the highest watermark a shard may have and still fetch
// (GroupMin plus MaxDrift), false when there is no limit.
func (a *Aligner) Limit() (time.Time, bool) {
	l := a.limit()
	if l == unconstrained {
		return time.Time{}, false
	}
	return time.Unix(0, l), true
}

// View returns the view of the other members from the last successful
// report, false before the first.
func (a *Aligner) View() (GroupView, bool) {
	v := a.view.Load()
	if v == nil {
		return GroupView{}, false
	}
	return *v, true
}

// AlignerStats are counters of an Aligner.
type AlignerStats struct {
	// Blocked is the number of shards blocked in Wait now.
	Blocked int
	// Blocks counts the Wait calls that had to block.
	Blocks int64
	// Reports counts successful reports to the Coordinator.
	Reports int64
}

// Stats returns the Aligner's counters.
func (a *Aligner) Stats() AlignerStats {
	return AlignerStats{Blocked: int(a.blocked.Load()), Blocks: a.blocks.Load(), Reports: a.reports.Load()}
}

// Err returns the error of the last failed report to the Coordinator, nil once
// a report succeeds again. Failures are also logged (at Error level, once per
// attempt). While reports fail the member keeps its last view of the group
// until the view's TTL passes, then aligns its own shards only; a member whose
// reports fail from the start has no view of the others.
func (a *Aligner) Err() error {
	a.errMu.Lock()
	defer a.errMu.Unlock()
	return a.err
}

func (a *Aligner) wakeChan() <-chan struct{} {
	a.wakeMu.Lock()
	defer a.wakeMu.Unlock()
	return a.wake
}

// broadcast wakes every blocked Wait to re-check its shard (those still
// blocked register their needs again).
func (a *Aligner) broadcast() {
	a.wakeMu.Lock()
	close(a.wake)
	a.wake = make(chan struct{})
	a.need.Store(unconstrained)
	a.wakeMu.Unlock()
	a.wakes.Add(1)
}

// run reports the member's watermark and wakes blocked shards when the
// limit reaches what one of them needs, or when something else they wait
// on changed (the first view, the group's anchoring, the tracker's set of
// shards).
func (a *Aligner) run() {
	defer close(a.done)
	interval := a.cfg.UpdateInterval
	timer := time.NewTimer(0)
	defer timer.Stop()
	nextReport := a.t.now()
	report := true
	lastReport := int64(0)
	var notify <-chan struct{}
	lastGen := a.t.gen.Load()
	lastUnanchored := false
	first := true
	reported := int64(none) // the tracker's minimum as of the last report
	for {
		if report {
			if a.notifier != nil && !a.watchesOwn {
				// Before the report, so no change is missed.
				notify = a.notifier.Changed(a.cfg.Group)
			}
			ch := a.report()
			if a.watchesOwn {
				if ch == nil { // the report failed: watch from now
					ch = a.notifier.Changed(a.cfg.Group)
				}
				notify = ch // the group's channel after this report's own change
			}
			reported = a.t.alignMin.Load()
			lastReport = a.t.now()
			nextReport = lastReport + int64(interval)
			report = false
			if first {
				close(a.ready)
			}
		}
		gen, unanchored := a.t.gen.Load(), a.unanchored.Load()
		if first || gen != lastGen || unanchored != lastUnanchored || a.limit() >= a.need.Load() {
			a.broadcast()
		}
		first, lastGen, lastUnanchored = false, gen, unanchored
		// A coordinator that notifies gets the member's changes at most
		// every minReportGap: once the minimum moved since the last
		// report, the next one is due then, and until it is made the
		// tracker wakes this loop only for what blocked shards need. Each
		// message of the shard at the minimum moves it: waking on each
		// cost a goroutine wake-up per message.
		changedSince := a.notifier != nil && a.t.alignMin.Load() != reported
		if changedSince {
			nextReport = min(nextReport, lastReport+int64(minReportGap))
		}
		a.quiet(a.notifier != nil && !changedSince)
		wait := nextReport - a.t.now()
		if d := a.t.nextDeadline.Load() - a.t.now(); d < wait {
			wait = d // an idleness transition is due: re-evaluate then
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(time.Duration(max(wait, int64(time.Millisecond))))
		a.loops.Add(1)
		select {
		case <-a.closing:
			return
		case <-a.t.changed:
			if a.notifier != nil {
				// Report now, or once minReportGap has passed since the last
				// report (the timer fires then).
				due := lastReport + int64(minReportGap)
				report = a.t.now() >= due
				if !report {
					nextReport = min(nextReport, due)
				}
			}
		case <-notify:
			report = true
		case <-timer.C:
			a.t.alignmentMin() // applies due idleness transitions, may signal t.changed
			report = a.t.now() >= nextReport
		}
	}
}

// ownWatcher is implemented by coordinators (the in-process one) that can
// return, with a report, the group's change channel as it is after the
// report: the reporting member is not woken by its own change.
type ownWatcher interface {
	reportWatch(ctx context.Context, group, member string, state MemberState, wm time.Time) (GroupView, <-chan struct{}, error)
}

// report reports the member's state and stores the view. With an
// ownWatcher coordinator it returns the group's change channel as of the
// report (nil otherwise, or when the report failed).
func (a *Aligner) report() <-chan struct{} {
	state, own := a.t.alignmentState()
	var wm time.Time
	if state == MemberHolding {
		wm = time.Unix(0, own)
	}
	// a.ctx ends with Close: Close must not wait for a slow coordinator.
	ctx, cancel := context.WithTimeout(a.ctx, min(max(a.cfg.UpdateInterval, time.Second), maxReportTimeout))
	defer cancel()
	var view GroupView
	var err error
	var changed <-chan struct{}
	if w, ok := a.cfg.Coordinator.(ownWatcher); ok && a.watchesOwn {
		view, changed, err = w.reportWatch(ctx, a.cfg.Group, a.cfg.Member, state, wm)
	} else {
		view, err = a.cfg.Coordinator.Report(ctx, a.cfg.Group, a.cfg.Member, state, wm)
	}
	a.errMu.Lock()
	a.err = err
	a.errMu.Unlock()
	if err != nil {
		a.logger.Error("Watermark report to the alignment coordinator failed", err, nil)
		return nil
	}
	o := int64(unconstrained)
	if view.Constrained {
		o = view.Min.UnixNano()
	}
	a.viewTTL.Store(int64(view.TTL))
	a.viewAt.Store(a.t.now())
	a.others.Store(o)
	a.unanchored.Store(view.Unanchored > 0)
	a.view.Store(&view)
	a.reports.Add(1)
	return changed
}

// Close stops the Aligner: blocked Wait calls return ErrClosed, the goroutine
// ends, and the member leaves its group (so it stops holding the others at
// once). It returns the error of Leave. Calling Close again returns the same
// result.
func (a *Aligner) Close() error {
	a.closeMu.Lock()
	defer a.closeMu.Unlock()
	if a.closed {
		return a.closeErr
	}
	a.closed = true
	a.t.rose.Store(nil)
	close(a.closing)
	a.cancel()
	<-a.done
	ctx, cancel := context.WithTimeout(context.Background(), leaveTimeout)
	defer cancel()
	if err := a.cfg.Coordinator.Leave(ctx, a.cfg.Group, a.cfg.Member); err != nil {
		a.closeErr = fmt.Errorf("watermark: leave alignment group %q: %w", a.cfg.Group, err)
	}
	a.t.bound1.Store(false)
	return a.closeErr
}
