// Package slspubsub will expose Alibaba Cloud Log Service (SLS) logstores as
// a Watermill Publisher and Subscriber.
//
// Not built yet. It will hold: the Publisher (synchronous Publish with group
// commit, hash-key partitioning, retries, back-pressure), the Subscriber
// (per-shard fetch loops, bounded prefetch, ordered delivery, positions,
// consumer-group, static and all-shard ownership, split and merge following
// with parent-first order), their configs, marshaling, and the metadata keys.
//
// Its tests run against the emulator in package slstest.
package slspubsub
