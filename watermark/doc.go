// Package watermark will give a stream of events event-time watermarks per
// shard, with alignment across shards and processes so that a fast shard
// cannot run ahead of slow ones, and an event-time tumbling-window helper.
//
// Not built yet. It will hold: watermark strategies (event-time extractor,
// bounded out-of-orderness, idle timeout), per-shard tracking, in-process and
// PostgreSQL-backed alignment coordinators, and windows closed by watermark.
package watermark
