package slspubsub

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"time"
)

// Subscriber defaults, applied by SubscriberConfig when a field is zero.
const (
	DefaultFetchCount       = 1000
	DefaultFetchInterval    = 200 * time.Millisecond
	DefaultMaxFetchInterval = 2 * time.Second
	DefaultPrefetchBytes    = 16 << 20
	DefaultMaxInFlight      = 1
	DefaultCommitInterval   = 5 * time.Second

	DefaultHeartbeatInterval   = 5 * time.Second
	DefaultHeartbeatTimeout    = 30 * time.Second
	DefaultRediscoveryInterval = 10 * time.Second
	DefaultCloseTimeout        = 5 * time.Second
	DefaultLogStoreShards      = 2
	DefaultLogStoreTTLDays     = 7
)

// maxFetchCount is the largest count SLS accepts in one PullLogs request.
const maxFetchCount = 1000

// StartKind says where a shard is read from when no stored position exists.
type StartKind int

const (
	// StartBegin reads from the oldest LogGroup the shard retains.
	StartBegin StartKind = iota
	// StartEnd reads only LogGroups written after the subscription started.
	StartEnd
	// StartTime reads from the first LogGroup received at or after a time.
	StartTime
)

// StartPosition says where a shard is read from when neither the
// PositionStore nor the consumer group has a position for it. The zero value
// is StartAtBegin.
type StartPosition struct {
	// Kind is begin, end or a time.
	Kind StartKind
	// Time is the receive time for StartTime (SLS resolves it to whole
	// seconds).
	Time time.Time
}

// StartAtBegin reads every shard from its oldest retained LogGroup.
func StartAtBegin() StartPosition { return StartPosition{Kind: StartBegin} }

// StartAtEnd reads only what is written after Subscribe.
func StartAtEnd() StartPosition { return StartPosition{Kind: StartEnd} }

// StartAtTime reads from the first LogGroup SLS received at or after t.
func StartAtTime(t time.Time) StartPosition { return StartPosition{Kind: StartTime, Time: t} }

// StopKind says where a bounded subscription ends.
type StopKind int

const (
	// StopNever is an unbounded subscription (the zero value).
	StopNever StopKind = iota
	// StopEnd ends each shard where its end was when Subscribe was called.
	StopEnd
	// StopTime ends each shard before the first LogGroup received at or
	// after a time.
	StopTime
)

// StopPosition turns a subscription into a bounded read (a backfill): when
// every shard reached it, and every message read was acked, the
// subscription's channel is closed. The zero value never stops.
type StopPosition struct {
	// Kind is never, end or a time.
	Kind StopKind
	// Time is the receive time for StopTime (whole seconds).
	Time time.Time
}

// StopAtEnd ends each shard at its end as of Subscribe.
func StopAtEnd() StopPosition { return StopPosition{Kind: StopEnd} }

// StopAtTime ends each shard before the first LogGroup received at or after t.
func StopAtTime(t time.Time) StopPosition { return StopPosition{Kind: StopTime, Time: t} }

// UnmarshalErrorPolicy says what the Subscriber does with a log its
// Unmarshaler rejects. No policy skips a log silently.
type UnmarshalErrorPolicy int

const (
	// UnmarshalErrorFail (the default) stops the shard at the log: the error
	// is logged at Error level, nothing further of that shard is delivered,
	// and Close returns the error. The shard's committed position stays at
	// the log, so a restart fails on it again until the Unmarshaler or the
	// policy changes.
	UnmarshalErrorFail UnmarshalErrorPolicy = iota
	// UnmarshalErrorDeliverRaw delivers, in the log's place, a message whose
	// payload is the JSON object of the log's contents (as for logs written
	// by other clients), with the SLS metadata and MetadataUnmarshalError
	// holding the error text. The error is also logged at Error level.
	UnmarshalErrorDeliverRaw
)

// MetadataUnmarshalError is set, with the error text, on messages delivered
// under UnmarshalErrorDeliverRaw.
const MetadataUnmarshalError = "sls.unmarshal_error"

// SubscriberConfig configures a Subscriber. The zero value of every field
// but the embedded ClientConfig is a valid default.
type SubscriberConfig struct {
	ClientConfig

	// Unmarshaler turns received logs into messages. Default
	// DefaultMarshaler{}. A shard's fetch loop calls it for a whole answer
	// as soon as the answer arrives, ahead of delivery (within
	// PrefetchBytes), so it may be called for logs that are never delivered
	// when the subscription ends first.
	Unmarshaler Unmarshaler

	// FetchCount is the number of LogGroups asked for per PullLogs request,
	// 1 to 1000. Default 1000.
	FetchCount int
	// FetchInterval is the pause after a fetch that found a shard empty. While
	// the shard stays empty the pause doubles up to MaxFetchInterval; data
	// resets it. Failed fetches back off the same way, with jitter. Default
	// 200 ms.
	FetchInterval time.Duration
	// MaxFetchInterval caps the adaptive pause. Default 2 s; it must not be
	// below FetchInterval.
	MaxFetchInterval time.Duration
	// PrefetchBytes bounds, per shard, the memory of fetched logs not yet
	// settled: decoded answers waiting for delivery and the answer being
	// delivered, counted as their bytes plus the structures over them and
	// an estimate of the messages built from them. The
	// fetch loop pulls only when the shard is under the bound and asks for
	// as many LogGroups as fit in half of it (judged by the size of recent
	// groups; the first pull of a shard asks for a few), so an answer that
	// is larger than estimated exceeds it by at most that error. With
	// MaxInFlight above 1, messages still in flight may keep one settled
	// answer alive beyond it. Default 16 MiB.
	PrefetchBytes int
	// MaxInFlight is the number of messages per shard delivered but not yet
	// acked or nacked. With 1 (the default) a shard's messages are handled
	// strictly in order; with more, acks may come out of order and a nacked
	// message is redelivered after those already in flight.
	MaxInFlight int

	// StartPosition is where a shard is read from when neither the
	// PositionStore nor the consumer group has a position for it. Default
	// StartAtBegin().
	StartPosition StartPosition
	// StopPosition optionally bounds the subscription (see StopPosition).
	// Default: never stop.
	StopPosition StopPosition

	// ConsumerGroup, when not empty, names an SLS consumer group: Subscribe
	// creates it when missing (with order=true, so SLS hands out a child
	// shard only after its parents are finished), resumes each shard from
	// its checkpoint, and commits checkpoints every CommitInterval and when
	// a shard is given up or the subscription ends. The committed
	// checkpoint of a shard is the cursor of its first LogGroup with a log
	// not yet acked, so a restart redelivers at most the acked logs of that
	// group. With the default Assignment the group also assigns shards
	// (AssignConsumerGroup). Default: none.
	ConsumerGroup string
	// ConsumerName names this process in the consumer group: in heartbeats
	// and checkpoint commits. Two live processes must not share a name.
	// Default: host name, process id and a random suffix, unique per
	// Subscriber.
	ConsumerName string

	// Assignment selects which shards this Subscriber reads: all of them,
	// those the consumer group assigns, or a static share. Default
	// AssignAuto (the consumer group's assignment when ConsumerGroup is
	// set, else all shards).
	Assignment Assignment
	// StaticInstances and StaticIndex are the number of processes sharing
	// the logstore and this process's index (from 0), for AssignStatic.
	StaticInstances, StaticIndex int
	// ShardAssigner splits shards among static instances. Default
	// ConsistentAssigner{}.
	ShardAssigner ShardAssigner
	// HeartbeatInterval is how often a consumer-group member heartbeats
	// (AssignConsumerGroup). Default 5 s.
	HeartbeatInterval time.Duration
	// HeartbeatTimeout is the consumer group's timeout, in whole seconds,
	// set when Subscribe creates the group: SLS gives a member's shards to
	// others once it has not heartbeated for that long. A member that has
	// not heartbeated successfully for HeartbeatTimeout minus
	// HeartbeatInterval stops fetching every shard, so that it is never
	// reading a shard SLS may have handed on. At least 3 x
	// HeartbeatInterval. Default 30 s; an existing group's own timeout
	// takes precedence.
	HeartbeatTimeout time.Duration
	// RediscoveryInterval is how often the shard list is read again to
	// follow splits and merges (a shard found gone is rediscovered at
	// once). Bounded subscriptions (with a StopPosition) read the shards
	// that exist at Subscribe and do not rediscover. Default 10 s.
	RediscoveryInterval time.Duration

	// CommitInterval is how often consumer-group checkpoints are committed.
	// Default 5 s.
	CommitInterval time.Duration

	// CloseTimeout bounds how long the end of a shard's reading (Close,
	// the end of Subscribe's context, a shard handed to another consumer)
	// may take to end cleanly: the LogGroup being delivered is delivered to
	// its end and messages in flight may still be acked. The checkpoint
	// then lands on a LogGroup boundary (SLS checkpoints are LogGroup
	// cursors), so the shard's next reader redelivers nothing that was
	// handled. Messages' contexts end when it runs out; a consumer that
	// stopped reading the channel makes Close wait that long. Default 5 s;
	// a negative value ends at once (the acked logs of a partly handled
	// LogGroup are then delivered again by the next reader).
	CloseTimeout time.Duration

	// PositionStore, when set, is consulted first for each shard's resume
	// position (see PositionStore). Default: none.
	PositionStore PositionStore

	// InitializeLogStore makes SubscribeInitialize create the logstore (with
	// LogStoreShards shards and LogStoreTTLDays of retention) when it does
	// not exist. Default false: SubscribeInitialize only checks that it
	// exists.
	InitializeLogStore bool
	// LogStoreShards is the shard count of a logstore SubscribeInitialize
	// creates. Default 2.
	LogStoreShards int
	// LogStoreTTLDays is the retention of a logstore SubscribeInitialize
	// creates, in days. Default 7.
	LogStoreTTLDays int

	// Compression is the encoding asked for PullLogs answers: CompressionLZ4
	// (default) or CompressionZstd; CompressionNone means LZ4 (SLS always
	// compresses them).
	Compression Compression

	// OnUnmarshalError is the policy for logs the Unmarshaler rejects.
	// Default UnmarshalErrorFail.
	OnUnmarshalError UnmarshalErrorPolicy

	// Watermark, when set, gives each subscription event-time watermarks
	// per shard, stamps them on delivered messages and optionally aligns
	// shards (see WatermarkConfig). Default nil: no watermarks, and the
	// delivery path does no watermark work at all.
	Watermark *WatermarkConfig

	// Metrics receives every PullLogs request, the logs fetched and the
	// alignment waits, for monitoring (slsmetrics.NewSubscriberMetrics).
	// Default: NopSubscriberMetrics.
	Metrics SubscriberMetrics
}

func (c *SubscriberConfig) setDefaults() {
	c.ClientConfig.setDefaults()
	if c.Unmarshaler == nil {
		c.Unmarshaler = DefaultMarshaler{}
	}
	if c.FetchCount == 0 {
		c.FetchCount = DefaultFetchCount
	}
	if c.FetchInterval == 0 {
		c.FetchInterval = DefaultFetchInterval
	}
	if c.MaxFetchInterval == 0 {
		c.MaxFetchInterval = max(DefaultMaxFetchInterval, c.FetchInterval)
	}
	if c.PrefetchBytes == 0 {
		c.PrefetchBytes = DefaultPrefetchBytes
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = DefaultMaxInFlight
	}
	if c.ConsumerName == "" {
		c.ConsumerName = defaultConsumerName()
	}
	if c.ShardAssigner == nil {
		c.ShardAssigner = ConsistentAssigner{}
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if c.HeartbeatTimeout == 0 {
		c.HeartbeatTimeout = max(DefaultHeartbeatTimeout, 3*c.HeartbeatInterval).Round(time.Second)
	}
	if c.RediscoveryInterval == 0 {
		c.RediscoveryInterval = DefaultRediscoveryInterval
	}
	if c.CloseTimeout == 0 {
		c.CloseTimeout = DefaultCloseTimeout
	}
	if c.CommitInterval == 0 {
		c.CommitInterval = DefaultCommitInterval
	}
	if c.LogStoreShards == 0 {
		c.LogStoreShards = DefaultLogStoreShards
	}
	if c.LogStoreTTLDays == 0 {
		c.LogStoreTTLDays = DefaultLogStoreTTLDays
	}
	if c.Metrics == nil {
		c.Metrics = NopSubscriberMetrics{}
	}
}

// Validate reports every invalid field in one error, before or after
// defaults are applied (zero means default).
func (c SubscriberConfig) Validate() error {
	var errs []error
	if err := c.ClientConfig.Validate(); err != nil {
		errs = append(errs, err)
	}
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.FetchCount < 0 || c.FetchCount > maxFetchCount {
		bad("FetchCount %d: must be 1 to %d", c.FetchCount, maxFetchCount)
	}
	if c.FetchInterval < 0 {
		bad("FetchInterval %v: must not be negative", c.FetchInterval)
	}
	if c.MaxFetchInterval < 0 || (c.MaxFetchInterval > 0 && c.MaxFetchInterval < c.FetchInterval) {
		bad("MaxFetchInterval %v: must not be negative nor below FetchInterval", c.MaxFetchInterval)
	}
	if c.PrefetchBytes < 0 {
		bad("PrefetchBytes %d: must not be negative", c.PrefetchBytes)
	}
	if c.MaxInFlight < 0 {
		bad("MaxInFlight %d: must not be negative", c.MaxInFlight)
	}
	switch c.StartPosition.Kind {
	case StartBegin, StartEnd:
	case StartTime:
		if c.StartPosition.Time.IsZero() {
			bad("StartPosition: StartTime needs a Time")
		}
	default:
		bad("StartPosition: unknown kind %d", c.StartPosition.Kind)
	}
	switch c.StopPosition.Kind {
	case StopNever, StopEnd:
	case StopTime:
		if c.StopPosition.Time.IsZero() {
			bad("StopPosition: StopTime needs a Time")
		}
	default:
		bad("StopPosition: unknown kind %d", c.StopPosition.Kind)
	}
	if c.CommitInterval < 0 {
		bad("CommitInterval %v: must not be negative", c.CommitInterval)
	}
	if c.LogStoreShards < 0 {
		bad("LogStoreShards %d: must not be negative", c.LogStoreShards)
	}
	if c.LogStoreTTLDays < 0 {
		bad("LogStoreTTLDays %d: must not be negative", c.LogStoreTTLDays)
	}
	switch c.Compression {
	case CompressionLZ4, CompressionZstd, CompressionNone:
	default:
		bad("Compression %d: unknown", c.Compression)
	}
	switch c.OnUnmarshalError {
	case UnmarshalErrorFail, UnmarshalErrorDeliverRaw:
	default:
		bad("OnUnmarshalError %d: unknown policy", c.OnUnmarshalError)
	}
	errs = append(errs, c.validateAssignment()...)
	if c.Watermark != nil {
		errs = append(errs, c.Watermark.validate()...)
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("slspubsub: invalid SubscriberConfig: %w", errors.Join(errs...))
}

// defaultConsumerName is "<host>-<pid>-<random>", unique per call.
func defaultConsumerName() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "watermill-sls"
	}
	return fmt.Sprintf("%s-%d-%08x", host, os.Getpid(), rand.Uint32())
}
