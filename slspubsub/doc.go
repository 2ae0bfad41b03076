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
// seqid so a retried batch is never written twice. See Publisher.
//
// # Subscriber
//
// Subscribe reads every shard of the logstore (this process owns them all;
// consumer-group assignment across processes and following shard splits and
// merges are not built yet): one fetch loop per shard into a prefetch buffer
// bounded in bytes, in-order delivery per shard with at most MaxInFlight
// unacknowledged messages, resume from a PositionStore, then the SLS
// consumer-group checkpoint, then StartPosition, and optional stop
// positions for bounded backfills. A shard's committed position is the
// first log not yet acked. See Subscriber.
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
