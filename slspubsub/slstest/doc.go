// Package slstest is an in-process Alibaba Cloud Log Service (SLS, "LogHub")
// server for tests: the real aliyun-log-go-sdk client, and its producer and
// consumer libraries, talk to it over loopback HTTP, unmodified, and cannot
// tell it from SLS for the calls a streaming application makes.
//
// Use it to test code that reads or writes SLS without a cloud account:
//
//	srv, err := slstest.NewServer()
//	if err != nil { ... }
//	defer srv.Close()
//	srv.CreateLogStore("my-project", "app-log", 4) // 4 shards
//
//	client := &sls.Client{
//		Endpoint:        srv.Endpoint(),
//		AccessKeyID:     slstest.DefaultAccessKeyID,
//		AccessKeySecret: slstest.DefaultAccessKeySecret,
//		HTTPClient:      srv.HTTPClient(), // the SDK puts the project in the host name
//	}
//
// # What it serves
//
// Projects and logstores (create, get, list, update, delete); shards with MD5
// hash ranges, ListShards, SplitShard (at a key, at the midpoint, or into N)
// and MergeShards; PutLogs (load-balanced) and PostLogStoreLogs with a route
// key, with lz4, zstd or uncompressed bodies, and optional per-hash-key
// sequence ids (seqid) for idempotent writes; GetCursor (begin, end, unix
// time), GetCursorTime, PullLogs with count, end_cursor and lz4 or zstd
// responses; consumer groups with server-side shard assignment by heartbeat,
// checkpoints, consumer expiry and ordered (parent-first) consumption of
// split and merged shards. The wire format is SLS's, as the SDK speaks it.
//
// Each shard stores the LogGroups it received as bytes, in order; PullLogs
// copies them into the response without decoding them. Cursors are base64
// decimal integers, one per LogGroup, from ranges no two shards share. Stored
// data never expires (TTL is recorded, not enforced).
//
// # Accounts and permissions
//
// Requests must be signed (V1 or V4, as the SDK signs) by a registered
// Account; without WithAccount the server accepts DefaultAccessKeyID and
// DefaultAccessKeySecret. An Account may be an STS identity (SecurityToken,
// Expiration) and may carry a RAM-style Policy, an allow-list of SLS actions
// ("log:PostLogStoreLogs", "log:GetCursorOrData", "log:ConsumerGroupHeartBeat"
// ...) on "project/logstore" resources (consumer-group actions on
// "project/logstore/consumergroup/group", as SLS checks them), to test an
// application under least privilege. WithoutAuth turns all checks off.
//
// # Trouble on demand
//
// InjectFault makes matching requests fail with an SLS error (500, 503, 403
// quota codes ...), wait, lose their connection, or receive a short body;
// WithSeed makes probabilistic faults repeatable. WithShardQuota enforces
// per-shard write and read limits like SLS's. Every malformed request gets an
// SLS-shaped JSON error, never a panic or a hang.
//
// # Inspecting state
//
// Shards, LogGroups, Cursors, ConsumerGroupState and AppendLogGroup read and
// change the server directly, and WithRequestObserver reports every request
// with its operation, shard and outcome.
//
// # Other languages
//
// The command slstest/slsemu serves the same emulator on a fixed address.
//
// # Error codes
//
// Errors carry SLS's codes, spelled as SLS spells them (including the
// consumer-group codes "ConsumerNotExsit" and "ShardNotExsit" that the SDK
// compares literally). A PostLogStoreLogs request whose seqid is not greater
// than the last one written for its hash key fails with HTTP 400 and
// CodeInvalidSequenceID: the batch was already written.
package slstest
