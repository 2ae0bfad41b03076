// Package slspubsub exposes Alibaba Cloud Log Service (SLS) logstores as a
// Watermill Publisher and Subscriber. The topic is the logstore name; the
// project, endpoint and credentials come from ClientConfig (static
// AccessKey, STS token or an SDK CredentialsProvider; V1 or V4 signing; a
// custom *http.Client).
//
// # Publisher
//
// Publish is synchronous: nil means SLS answered 200 for every message.
// Concurrent calls share PutLogs requests (group commit: no linger time, a
// lone caller is sent at once); a hash key keeps per-key order across
// retries; a byte budget applies back-pressure; IdempotentWrites uses SLS's
// seqid so a retried batch is never written twice, and SequenceID lets a
// caller (the outbox relay) give each message its own sequence id so a
// re-sent message is recognised too. See Publisher.
//
// # Subscriber
//
// Subscribe reads the shards its Assignment gives it: every shard, the
// shards SLS assigns to this process in a consumer group (heartbeats; run
// more processes to scale out), or a static share of N instances. Shard
// splits and merges are followed without a restart, parents before
// children, so per-key order holds. Each shard has a fetch loop into a
// prefetch buffer bounded in bytes and in-order delivery with at most
// MaxInFlight unacknowledged messages; a shard resumes from a
// PositionStore, then the consumer-group checkpoint, then StartPosition;
// stop positions make bounded backfills. A shard's committed position is
// the first log not yet acked, and a stopping shard finishes its LogGroup
// so a clean handover redelivers nothing. SubscribeObserved lets a wrapper
// see each message as its shard delivers it (the exactlyonce handlers number
// messages this way). See Subscriber.
//
// # Watermarks
//
// With SubscriberConfig.Watermark, every message carries the event-time
// watermark of its subscription (package watermark: per-shard watermarks,
// idleness, splits), readable with watermark.FromMessage, and the
// Subscriber exposes it per topic and shard (Subscriber.Watermark,
// ShardWatermarks). With an alignment group, a shard more than MaxDrift
// ahead of its group's slowest stops delivering and fetching until the
// group catches up,
// across shards, subscribers and (through a PostgreSQL coordinator)
// processes, so event-time windows and joins over a backfill lose nothing.
//
// # Messages
//
// DefaultMarshaler round-trips Watermill messages exactly and maps the
// Metadata* keys to the LogGroup's topic, source, tags and the log time.
// Logs written by anyone else (the SDK producer, Logtail) arrive as a JSON
// object of their contents. Every received message carries its SLS fields
// and its Position in metadata (LogFieldsFromMessage, PositionFromMessage);
// Decoder decodes a log's contents into a struct by `sls` field tags.
//
// The hot paths use their own context-aware requests, signed by the SDK's
// signers, and a zero-copy protobuf codec; the package's tests run against
// the emulator in package slstest.
package slspubsub
