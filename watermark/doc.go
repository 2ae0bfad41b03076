// Package watermark gives a stream of events event-time watermarks per shard,
// aligns shards across consumers and processes so that a fast shard cannot run
// ahead of slow ones, and closes event-time windows by watermark.
//
// It does not depend on slspubsub (slspubsub depends on it): shards are ints,
// messages are Watermill messages, and the event time comes from a function.
//
// # Watermarks
//
// A Strategy says where a message's event time comes from (EventTime; the
// slspubsub Subscriber supplies the SLS log time with nanoseconds), how far out
// of order events may be (MaxOutOfOrderness) and after how long without events
// a shard stops holding the others back (IdleTimeout, counting only unpaused
// time).
//
// A Tracker holds the shards (splits) one consumer reads. A shard's watermark
// is the newest event time it delivered minus MaxOutOfOrderness; the tracker's
// watermark is the minimum over shards that are neither idle nor finished, and
// never goes backwards. Events before the watermark are late. The rules for
// shards without a watermark are on Tracker: a shard added mid-stream starts at
// the tracker's watermark (a split child at its parent's final watermark) and
// holds it there until its first event or its IdleTimeout; at start a pending
// shard keeps the watermark undefined, so a slow start makes no event late. A
// paused shard (blocked by alignment or back-pressure) never turns idle; an
// idle shard that comes back resumes at the tracker's watermark.
//
// The watermark travels on each delivered message under MetadataKey, in
// decimal unix nanoseconds: Tracker.Stamp or SetOnMessage write it,
// FromMessage reads it.
//
// # Alignment
//
// An Aligner binds a Tracker (one member) to a named alignment group on a
// Coordinator. Before each fetch, a shard calls Aligner.Wait: it blocks while
// the shard's watermark is more than MaxDrift ahead of the group minimum, with
// the shard paused in its Tracker. A caller that checks before every message
// it delivers calls Aligner.WaitShardMargin, which once blocked waits for the
// limit to be a margin above the shard (one wait per margin of progress, not
// per message). The group minimum is the lowest of the
// member's own minimum (read live) and the minimum the Coordinator reports
// for the other members. Blocked shards are woken on the change that brings
// the limit to what one of them needs (or changes the group's anchoring or the
// tracker's shards), not on a timer nor on every move of the minimum, and
// resume as soon as the minimum allows, however far it moved (unlike
// FLINK-37399, where catch-up was capped at MaxDrift per interval).
//
// Nothing deadlocks: idle, finished and released shards and members do not
// count; with nothing counting there is no limit (an empty group, a group of
// one, all idle, all finished); a shard without a watermark is never blocked;
// and a member that starts or restarts without a watermark is pending: the
// Coordinator anchors it at the group minimum when it joins (or at the group's
// first watermark), so it neither lets the others run ahead of where it joined
// nor holds them behind that point, and it stops holding when its shards emit
// or turn idle. Members leave on Close; with PostgreSQL, a member that stops
// reporting expires after MemberTTL, and a member restarted under the same
// name replaces its report at once.
//
// Coordinators: InProcessCoordinator for members in one process (several
// Subscribers, for example two joined logstores), which signals changes at
// once; PostgresCoordinator for members in several processes, one table
// (created by Migrate, see SchemaSQL), one statement per report, polled every
// UpdateInterval (no LISTEN/NOTIFY).
//
// The bound: with members holding continuously, no shard's watermark gets more
// than MaxDrift plus what one fetch adds beyond the slowest shard's when the
// checks are made before each fetch, plus one event's step when they are made
// before each delivered message (as slspubsub does). Views of
// other members are snapshots, refreshed on every change in process and every
// UpdateInterval with PostgreSQL; a member that turns from released (idle,
// finished, no shards) to holding with an older watermark is seen by the
// others at their next report. Create the Aligner after adding the shards a
// member starts with, so its first report says pending rather than released.
//
// # Seams for a Subscriber
//
// What a Pub/Sub's subscriber (slspubsub's) calls, and when:
//
//   - At Subscribe: NewTracker(strategy); AddShard(id, time.Time{}) for each
//     shard it starts reading; then NewAligner(tracker, config, logger) when
//     alignment is configured. Close the Aligner on Close.
//   - In each shard's fetch loop, before every fetch: Aligner.WaitShard(ctx,
//     shard) (or Wait(ctx, id)); return on its error (ctx done, ErrClosed).
//     Around a blocking hand-off to a full buffer (back-pressure):
//     Shard.Pause() and Shard.Resume(), so the wait is not taken for idleness.
//   - Per delivered message, before it is sent: with alignment,
//     Aligner.WaitShardMargin(ctx, shard, margin) (atomic loads only while
//     the shard is within the limit); then Shard.Observe(eventTime) (or
//     Tracker.ObserveMessage(id, msg) with Strategy.EventTime), then
//     Tracker.Stamp(msg). Neither allocates (Stamp only when the watermark
//     moved).
//   - When a readonly shard is read to its end: final, ok, _ :=
//     FinishShard(id); start each child with AddShard(childID, final) (for a
//     merge, the lower of the parents' finals), when the child's reading
//     starts, not when it is discovered. When a shard is handed to another
//     consumer: RemoveShard(id).
//   - To expose watermarks: Tracker.Watermark (overall), Tracker.Shards or
//     ShardWatermark (per shard), Aligner.GroupMin, Limit, Stats and View.
//
// # Windows
//
// Windows aggregates keyed events into tumbling or sliding event-time windows
// and fires each window once, when the watermark reaches its end plus
// AllowedLateness; events for fired windows are late (counted in Stats, given
// to OnLate). It is safe for parallel handlers.
package watermark
