package slspubsub

import (
	"errors"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

// SLS's limits on one PutLogs request (one LogGroup).
const (
	putMaxLogs  = 40960    // logs per request
	putMaxBytes = 10 << 20 // uncompressed LogGroup bytes per request
)

// PublisherConfig configures a Publisher. Zero values mean the documented
// defaults; NewPublisher fills them in and validates the result.
type PublisherConfig struct {
	// ClientConfig says where SLS is and how to sign requests: endpoint,
	// project, credentials (AccessKey, STS token or a CredentialsProvider),
	// signature version, HTTP client and request timeout.
	ClientConfig

	// Marshaler turns a Watermill message into an SLS log and the LogGroup
	// fields (topic, source, tags) it belongs with.
	// Default: DefaultMarshaler{}.
	Marshaler Marshaler

	// HashKey returns a message's partition key. Messages with the same key
	// go to the same shard, in order (see Publisher). The key is md5-hashed
	// into SLS's 128-bit hash space (and reduced to a bucket when
	// HashBuckets is set); an empty key is a key like any other.
	//
	// An error fails the Publish call before anything is sent.
	//
	// Default: nil, no key: each PutLogs request goes to a shard SLS picks
	// (load-balanced writes), and no order is kept between requests.
	HashKey func(logstore string, msg *message.Message) (string, error)

	// HashBuckets, when not 0, reduces each key's md5 to its top
	// log2(HashBuckets) bits, as the SDK producer's AdjustShargHash does:
	// all keys of a bucket share one hash key, so one request carries
	// messages of many keys and group commit can batch them. Order per key
	// is kept (a bucket is ordered as a whole). Without it, every distinct
	// key is its own batch. A power of two from 1 to 256; it requires
	// HashKey. Use at least the logstore's shard count, so that every shard
	// receives buckets.
	//
	// Default: 0, no reduction.
	HashBuckets int

	// MaxBatchCount is the most logs one PutLogs request carries.
	// Default: 4096. At most 40960, SLS's limit per request.
	MaxBatchCount int

	// MaxBatchBytes is the largest encoded (uncompressed) LogGroup one
	// PutLogs request carries. A message whose log does not fit alone fails
	// its Publish. Default: 1 MiB. At most 10 MiB, SLS's limit per request.
	MaxBatchBytes int

	// MaxBufferBytes bounds the messages accepted by Publish but not yet
	// written, counted as encoded log bytes (the memory held is a small
	// multiple of it). When it is full, Publish blocks (back-pressure) until
	// written messages free room, or until the waiting message's Context()
	// ends. A message larger than the whole buffer is admitted alone.
	// Default: 64 MiB.
	MaxBufferBytes int

	// MaxConcurrentRequests bounds the PutLogs requests in flight over all
	// logstores and keys. Default: 32.
	MaxConcurrentRequests int

	// Compression of request bodies. Default: CompressionLZ4 (the zero
	// value).
	Compression Compression

	// MaxRetries is how many times a batch is retried after a retryable
	// error (network failures, HTTP 5xx, 403 quota errors; see
	// IsRetryable). Other errors fail the batch at once. Default: 10;
	// a negative value disables retries.
	MaxRetries int

	// RetryInitialBackoff is the upper bound of the first wait before a
	// retry; each retry doubles it, up to RetryMaxBackoff. The wait is drawn
	// uniformly from [0, bound] ("full jitter"), so that many publishers
	// throttled together do not retry together. Default: 100 ms.
	RetryInitialBackoff time.Duration

	// RetryMaxBackoff caps the bound of a retry wait. Default: 5 s.
	RetryMaxBackoff time.Duration

	// RetryTimeout bounds the time from a batch's first attempt to its
	// outcome, requests and waits included. A batch still failing then
	// fails with its last error. Default: 2 minutes.
	RetryTimeout time.Duration

	// IdempotentWrites makes each PutLogs request carry a sequence id for
	// its hash key (SLS's idempotent write, the "seqid" parameter of
	// PostLogStoreLogs), so that a retry of a batch SLS had already written
	// is recognised as a duplicate and reported as success instead of being
	// written twice. It relies on SLS's idempotent-write feature; see
	// Publisher for the guarantees and their conditions (one Publisher at a
	// time per hash key). Requires HashKey. Default: false.
	IdempotentWrites bool

	// SequenceID, with IdempotentWrites, makes the sequence id of each
	// request the caller's own instead of the Publisher's clock: a
	// message's position in a sequence that the caller keeps per hash key,
	// such as a transactional outbox's row id (outbox.SequenceID). Then a
	// message sent again by another process, after a crash, is refused by
	// SLS as a duplicate, where clock-based ids only recognise the retries
	// of one Publisher. See "Caller sequence ids" in the Publisher
	// documentation for the contract it relies on.
	//
	// Each request then carries one message, sent with its SequenceID; a
	// request refused with InvalidSequenceId counts as written. Within a
	// Publish call the ids of the messages of one hash key must be strictly
	// increasing, and not negative; otherwise, or when SequenceID returns an
	// error, the call fails before anything is sent.
	//
	// Requires IdempotentWrites and HashKey, and HashBuckets 0 (each key its
	// own hash key: the ids of two keys are unrelated). Default: nil, the
	// Publisher's clock-based ids.
	SequenceID func(logstore string, msg *message.Message) (int64, error)

	// CloseTimeout bounds how long Close waits for accepted messages to be
	// written; what is left then fails. Default: 30 s.
	CloseTimeout time.Duration

	// Metrics receives every PutLogs attempt and retry, for monitoring
	// (slsmetrics.NewPublisherMetrics). Default: NopPublisherMetrics.
	Metrics PublisherMetrics
}

func (c *PublisherConfig) setDefaults() {
	c.ClientConfig.setDefaults()
	if c.Marshaler == nil {
		c.Marshaler = DefaultMarshaler{}
	}
	setDefault(&c.MaxBatchCount, 4096)
	setDefault(&c.MaxBatchBytes, 1<<20)
	setDefault(&c.MaxBufferBytes, 64<<20)
	setDefault(&c.MaxConcurrentRequests, 32)
	setDefault(&c.MaxRetries, 10)
	setDefault(&c.RetryInitialBackoff, 100*time.Millisecond)
	setDefault(&c.RetryMaxBackoff, 5*time.Second)
	setDefault(&c.RetryTimeout, 2*time.Minute)
	setDefault(&c.CloseTimeout, 30*time.Second)
	if c.Metrics == nil {
		c.Metrics = NopPublisherMetrics{}
	}
}

func setDefault[T int | time.Duration](v *T, def T) {
	if *v == 0 {
		*v = def
	}
}

// Validate reports every invalid field, each named, in one error. Call it
// after the defaults are set (NewPublisher does): it treats zero values as
// invalid where the default would not be.
func (c PublisherConfig) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{field}, args...)...))
	}
	if err := c.ClientConfig.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.Marshaler == nil {
		bad("Marshaler", "is nil")
	}
	if c.HashBuckets != 0 {
		if c.HashBuckets < 1 || c.HashBuckets > maxHashBuckets || c.HashBuckets&(c.HashBuckets-1) != 0 {
			bad("HashBuckets", "%d is not a power of two from 1 to %d", c.HashBuckets, maxHashBuckets)
		}
		if c.HashKey == nil {
			bad("HashBuckets", "is set but HashKey is nil")
		}
	}
	if c.MaxBatchCount < 1 || c.MaxBatchCount > putMaxLogs {
		bad("MaxBatchCount", "%d is not from 1 to %d (SLS's limit of logs per request)", c.MaxBatchCount, putMaxLogs)
	}
	if c.MaxBatchBytes < 1 || c.MaxBatchBytes > putMaxBytes {
		bad("MaxBatchBytes", "%d is not from 1 to %d (SLS's limit of bytes per request)", c.MaxBatchBytes, putMaxBytes)
	}
	if c.MaxBufferBytes < 1 {
		bad("MaxBufferBytes", "%d is not positive", c.MaxBufferBytes)
	}
	if c.MaxConcurrentRequests < 1 {
		bad("MaxConcurrentRequests", "%d is not positive", c.MaxConcurrentRequests)
	}
	if !c.Compression.valid() {
		bad("Compression", "%v is not CompressionLZ4, CompressionZstd or CompressionNone", c.Compression)
	}
	if c.RetryInitialBackoff < 0 {
		bad("RetryInitialBackoff", "%v is negative", c.RetryInitialBackoff)
	}
	if c.RetryMaxBackoff < 0 {
		bad("RetryMaxBackoff", "%v is negative", c.RetryMaxBackoff)
	} else if c.RetryMaxBackoff < c.RetryInitialBackoff {
		bad("RetryMaxBackoff", "%v is less than RetryInitialBackoff %v", c.RetryMaxBackoff, c.RetryInitialBackoff)
	}
	if c.RetryTimeout < 0 {
		bad("RetryTimeout", "%v is negative", c.RetryTimeout)
	}
	if c.IdempotentWrites && c.HashKey == nil {
		bad("IdempotentWrites", "requires HashKey: SLS keeps sequence ids per hash key")
	}
	if c.SequenceID != nil {
		if !c.IdempotentWrites {
			bad("SequenceID", "requires IdempotentWrites")
		}
		if c.HashKey == nil {
			bad("SequenceID", "requires HashKey: SLS keeps sequence ids per hash key")
		}
		if c.HashBuckets != 0 {
			bad("SequenceID", "requires HashBuckets 0: keys sharing a bucket would share one sequence")
		}
	}
	if c.CloseTimeout < 0 {
		bad("CloseTimeout", "%v is negative", c.CloseTimeout)
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("slspubsub: invalid PublisherConfig: %w", errors.Join(errs...))
}
