package slspubsub

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"
	"unsafe"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/watermill-sls/watermill-sls/watermark"
)

// WatermarkConfig gives a Subscriber's subscriptions event-time watermarks
// (see package watermark) and, optionally, aligns their shards with each
// other and with other subscriptions (alignment groups).
//
// Per subscription (Subscribe call) a watermark.Tracker holds the shards
// being read: a shard is added when its reading starts (a split or merge
// child at its parent's final watermark, for a merge the lower of the
// parents' ones, when the parents were read here), finished when a readonly
// shard is read to its end, and removed when its reading stops otherwise
// (handed to another consumer, Close, an error). Every delivered message
// carries the subscription's watermark at delivery under
// watermark.MetadataKey (read it with watermark.FromMessage), and
// Subscriber.Watermark and Subscriber.ShardWatermarks expose the current
// values.
//
// Waiting is never idleness: a shard's fetch loop blocked on a full prefetch
// budget, and a delivery loop that waited on the consumer (the channel, an
// ack, a full MaxInFlight window) for a quarter of the IdleTimeout, pause the
// shard in its Tracker until the wait ends, so a slow handler holds the
// watermark back instead of letting it pass the shard's next events.
//
// Cost: without WatermarkConfig the delivery path does no watermark work;
// with it, each message costs an atomic update and a metadata entry, and no
// allocation (the watermark's text is formatted once per change).
type WatermarkConfig struct {
	// Strategy says where a message's event time comes from, how far out of
	// order events may be and when a shard that delivers nothing stops
	// holding the others back. A nil Strategy.EventTime means the SLS log
	// time with nanoseconds (as in MetadataTime), read from the log without
	// parsing; a custom one is called with the unmarshaled message, and a
	// message for which it fails is delivered without advancing its shard's
	// watermark (the error is logged). Strategy.IdleTimeout defaults to
	// watermark.DefaultIdleTimeout.
	Strategy watermark.Strategy

	// Alignment, when set, makes every shard of the subscription stop
	// fetching while its watermark is more than MaxDrift ahead of its
	// alignment group's minimum. Default: no alignment.
	Alignment *AlignmentConfig
}

// AlignmentConfig puts a Subscriber's subscriptions into an alignment group
// (see watermark.Aligner). Each subscription is one member of the group.
//
// Alignment acts at delivery: before each message a shard's delivery loop
// checks its watermark against the group's limit (the group minimum plus
// MaxDrift); a shard past the limit delivers nothing (and is paused, never
// idle) until the limit is MaxDrift/2 above its watermark, so a shard that
// runs at the limit waits once per MaxDrift/2 of the group's progress, not
// once per message. Its fetch loop also stops fetching while the shard is
// past the limit (watermark.Aligner.WaitShard), so at most the prefetched
// answers wait in memory, within PrefetchBytes. Fetches keep their full
// size (FetchCount, PrefetchBytes): alignment costs no extra requests.
//
// So no shard's watermark gets more than MaxDrift plus one event-time step
// of the shard (the gap between two consecutive logs' event times, plus
// MaxOutOfOrderness' effect on out-of-order logs) ahead of the group
// minimum as this member knows it: live for the shards of this
// subscription and, with an InProcessCoordinator, at most about a
// millisecond late for other members; with the PostgreSQL coordinator the
// others' minimum is as of their last report (UpdateInterval). A window
// operator fed by several aligned streams loses no event to that skew when
// its allowed lateness is at least MaxDrift plus that step. The shard at
// the group minimum is never held, so a group cannot deadlock.
//
// While a shard is held, acks of its messages already in flight (with
// MaxInFlight above 1) are counted, and its checkpoint moves, when it
// resumes; when the subscription or the shard's reading stops, a held
// shard finishes the LogGroup it started without waiting.
type AlignmentConfig struct {
	// Group names the alignment group. Required.
	Group string

	// Member is the prefix of this Subscriber's member names: each
	// subscription joins the group as "<Member>/<logstore>" (with "#2",
	// "#3" ... for further concurrent subscriptions of the same logstore).
	// Keep it stable across restarts with the PostgreSQL coordinator, so a
	// restarted process replaces its old reports at once. Default
	// ConsumerName.
	Member string

	// MaxDrift is how far, in event time, a shard's watermark may be ahead
	// of the group minimum before the shard stops fetching. Required,
	// positive.
	MaxDrift time.Duration

	// UpdateInterval is how often members report to a coordinator that
	// cannot notify (the PostgreSQL one). Default
	// watermark.DefaultUpdateInterval.
	UpdateInterval time.Duration

	// Coordinator holds the group's watermarks: a
	// *watermark.InProcessCoordinator shared by the Subscribers of one
	// process, or a *watermark.PostgresCoordinator for several processes.
	// Required.
	Coordinator watermark.Coordinator
}

// validate returns one error per invalid field of the watermark section.
func (c *WatermarkConfig) validate() []error {
	var errs []error
	if err := c.Strategy.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("Watermark.Strategy: %w", err))
	}
	if a := c.Alignment; a != nil {
		if a.Group == "" {
			errs = append(errs, errors.New("Watermark.Alignment.Group: must not be empty"))
		}
		if a.MaxDrift <= 0 {
			errs = append(errs, fmt.Errorf("Watermark.Alignment.MaxDrift %v: must be positive", a.MaxDrift))
		}
		if a.UpdateInterval < 0 {
			errs = append(errs, fmt.Errorf("Watermark.Alignment.UpdateInterval %v: must not be negative", a.UpdateInterval))
		}
		if a.Coordinator == nil {
			errs = append(errs, errors.New("Watermark.Alignment.Coordinator: must be set"))
		}
	}
	return errs
}

// subWatermark is the watermark state of one subscription.
type subWatermark struct {
	tracker *watermark.Tracker
	aligner *watermark.Aligner // nil without alignment
	member  string
	custom  bool          // Strategy.EventTime is set
	drift   time.Duration // Alignment.MaxDrift; 0 without alignment
}

// newSubWatermark creates the tracker of a subscription (without shards).
func newSubWatermark(cfg *WatermarkConfig) (*subWatermark, error) {
	tr, err := watermark.NewTracker(cfg.Strategy)
	if err != nil {
		return nil, err
	}
	return &subWatermark{tracker: tr, custom: cfg.Strategy.EventTime != nil}, nil
}

// align binds the tracker to its alignment group; call it after adding the
// shards the subscription starts with.
func (w *subWatermark) align(cfg *AlignmentConfig, member string, logger watermill.LoggerAdapter) error {
	a, err := watermark.NewAligner(w.tracker, watermark.AlignerConfig{
		Group: cfg.Group, Member: member, MaxDrift: cfg.MaxDrift,
		UpdateInterval: cfg.UpdateInterval, Coordinator: cfg.Coordinator,
	}, logger)
	if err != nil {
		return err
	}
	w.aligner, w.member, w.drift = a, member, cfg.MaxDrift
	return nil
}

// shardWatermark is what one shard's loops use of the subscription's
// watermark state.
type shardWatermark struct {
	w  *subWatermark
	sh *watermark.Shard

	// ctx is the shard worker's context (set before its loops start): a
	// delivery held by alignment ends its wait when it ends.
	ctx context.Context

	// Delivery loop only: the last stamped value and its text, and a slab
	// the texts are cut from (one allocation per many watermark changes).
	stamped int64
	text    string
	slab    []byte

	failures int // delivery loop: event times that could not be extracted
}

// observe records the event time of a message about to be delivered.
// With alignment it first holds the delivery while the shard is past the
// group's limit (see AlignmentConfig).
func (sw *shardWatermark) observe(d *delivery, msg *message.Message, l *Log, pos Position) {
	if a := sw.w.aligner; a != nil {
		sw.hold(a)
	}
	if !sw.w.custom {
		if !l.Time.IsZero() {
			sw.sh.Observe(l.Time)
		}
		return
	}
	if err := sw.w.tracker.ObserveMessage(sw.sh.ID(), msg); err != nil {
		sw.failures++
		if sw.failures == 1 || sw.failures%1000 == 0 {
			d.sub.s.logger.Error("SLS message has no usable event time; delivered without advancing the watermark", err,
				d.sub.fields(d.st).Add(watermill.LogFields{"position": pos.String(), "failures": sw.failures}))
		}
	}
}

// slabSize is the size of the buffers watermark texts are cut from.
const slabSize = 2048

// stamp sets the subscription's watermark on msg under
// watermark.MetadataKey (deleting the key while there is none). It formats
// a value once per change, into a shared slab.
func (sw *shardWatermark) stamp(msg *message.Message) {
	wm, ok := sw.w.tracker.Watermark()
	if !ok {
		delete(msg.Metadata, watermark.MetadataKey)
		return
	}
	ns := wm.UnixNano()
	if sw.text == "" || ns != sw.stamped {
		if cap(sw.slab)-len(sw.slab) < 20 {
			sw.slab = make([]byte, 0, slabSize)
		}
		start := len(sw.slab)
		sw.slab = strconv.AppendInt(sw.slab, ns, 10)
		b := sw.slab[start:]
		sw.stamped, sw.text = ns, unsafe.String(unsafe.SliceData(b), len(b))
	}
	if msg.Metadata == nil {
		msg.Metadata = make(message.Metadata, 1)
	}
	msg.Metadata[watermark.MetadataKey] = sw.text
}

// holdMargin is how far below the limit a shard held at delivery must be
// before it resumes, as a fraction of MaxDrift (see AlignmentConfig).
const holdMargin = 2 // MaxDrift / holdMargin

// hold waits, before a delivery, while the shard is past the group's limit
// (see AlignmentConfig). When the worker's context ends or the aligner
// closes, the shard is stopping: it delivers on without alignment.
func (sw *shardWatermark) hold(a *watermark.Aligner) {
	ctx := sw.ctx
	if ctx == nil {
		ctx = context.Background()
	}
	_ = a.WaitShardMargin(ctx, sw.sh, sw.w.drift/holdMargin)
}

// awaitFetch blocks until the shard may fetch (Aligner.WaitShard: its
// watermark is within the group's limit). It returns the context's error or
// watermark.ErrClosed when the subscription's aligner closed. The prefetched
// data needs no wait of its own: its delivery is held at the limit.
func (sw *shardWatermark) awaitFetch(ctx context.Context, _ *prefetchBudget) error {
	if a := sw.w.aligner; a != nil {
		return a.WaitShard(ctx, sw.sh)
	}
	return nil
}

// watermarkSubs returns the live subscriptions of topic with watermarks.
func (s *Subscriber) watermarkSubs(topic string) []*subWatermark {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*subWatermark
	for _, sub := range s.subs[topic] {
		if sub.wm != nil {
			out = append(out, sub.wm)
		}
	}
	return out
}

// Watermark returns the event-time watermark of the Subscriber's
// subscription to logstore topic: the minimum over its shards that are
// neither idle nor finished, which never goes backwards (see
// watermark.Tracker). It is false when WatermarkConfig is not set, when no
// subscription of topic is running, or while the subscription has no
// watermark yet (no shard delivered, or a shard that has not delivered yet
// holds it). With several running subscriptions of topic it returns the
// lowest. Safe for concurrent use; it does not allocate with one
// subscription.
func (s *Subscriber) Watermark(topic string) (time.Time, bool) {
	var out time.Time
	found := false
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sub := range s.subs[topic] {
		if sub.wm == nil {
			continue
		}
		if wm, ok := sub.wm.tracker.Watermark(); ok && (!found || wm.Before(out)) {
			out, found = wm, true
		}
	}
	return out, found
}

// ShardWatermarks returns the watermark of each shard of the subscription to
// logstore topic that has one, by shard id: the newest event time the shard
// delivered minus MaxOutOfOrderness (or the watermark it started at). It
// includes idle and finished shards (their last watermark); see
// ShardWatermarkStatus for their states. Nil when WatermarkConfig is not
// set or no subscription of topic is running. With several subscriptions of
// topic a shard's lowest watermark is given. Safe for concurrent use.
func (s *Subscriber) ShardWatermarks(topic string) map[int]time.Time {
	var out map[int]time.Time
	for _, st := range s.ShardWatermarkStatus(topic) {
		if !st.HasWatermark {
			continue
		}
		if out == nil {
			out = map[int]time.Time{}
		}
		if cur, ok := out[st.ID]; !ok || st.Watermark.Before(cur) {
			out[st.ID] = st.Watermark
		}
	}
	return out
}

// ShardWatermarkStatus returns the state and watermark of every shard the
// subscriptions to logstore topic track (active, pending, paused by
// alignment or back-pressure, idle or finished), ordered by shard id (a
// shard appears once per running subscription of topic). Nil when
// WatermarkConfig is not set or no subscription of topic is running. Safe
// for concurrent use.
func (s *Subscriber) ShardWatermarkStatus(topic string) []watermark.ShardStatus {
	var out []watermark.ShardStatus
	for _, w := range s.watermarkSubs(topic) {
		out = append(out, w.tracker.Shards()...)
	}
	return out
}

// AlignmentStats returns the alignment counters of the subscriptions to
// logstore topic, summed (blocked shards now, fetches that had to wait,
// reports to the coordinator); false when none of them is aligned. Safe for
// concurrent use.
func (s *Subscriber) AlignmentStats(topic string) (watermark.AlignerStats, bool) {
	var out watermark.AlignerStats
	found := false
	for _, w := range s.watermarkSubs(topic) {
		if w.aligner == nil {
			continue
		}
		st := w.aligner.Stats()
		out.Blocked += st.Blocked
		out.Blocks += st.Blocks
		out.Reports += st.Reports
		found = true
	}
	return out, found
}
