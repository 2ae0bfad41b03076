package exactlyonce

import (
	"errors"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Defaults of KafkaSinkConfig.
const (
	DefaultKafkaSinkMaxBatchMessages = 1000
	DefaultKafkaSinkLoadTimeout      = time.Minute
	DefaultKafkaSinkCommitTimeout    = time.Minute
)

// KafkaSinkTopicFunc chooses the Kafka topic of an output message. It must be safe for concurrent use.
type KafkaSinkTopicFunc func(out *message.Message) (string, error)

// KafkaSinkConfig configures a KafkaSink. Brokers, Consumer, TransactionalID, PositionsTopic and one of
// OutputTopic / TopicFunc are required.
type KafkaSinkConfig struct {
	// Brokers are the seed broker addresses ("host:port").
	Brokers []string

	// ClientOptions are extra franz-go client options for the producer and the positions reader: TLS
	// (kgo.DialTLSConfig), SASL (kgo.SASL), kgo.ClientID, kgo.TransactionTimeout (default 40 s), timeouts. The
	// sink sets the seed brokers and the transactional id itself, and places keyed records on partitions as
	// sarama's default partitioner does (so keys land where watermill-kafka's publisher would put them); an
	// option here may replace the partitioner.
	ClientOptions []kgo.Opt

	// Consumer names the pipeline whose positions the sink commits: positions are keyed by
	// (Consumer, stream, partition) in PositionsTopic. Two pipelines reading the same source need two names.
	Consumer string

	// TransactionalID is the Kafka transactional id of the sink's producer. It must be stable across restarts of
	// the same instance and unique among running instances, and an instance must keep owning the same source
	// partitions (e.g. "<consumer>-<instance index>" with static shard assignment): when the instance restarts,
	// the new producer fences the old one (the zombie's transactions can no longer commit) and aborts its open
	// transaction before the committed positions are read.
	TransactionalID string

	// PositionsTopic holds the committed source positions, one record per (Consumer, stream, partition) and
	// transaction. Create it before the first start, with cleanup.policy=compact (only the newest record of each
	// key is needed); NewKafkaSink fails when it does not exist, rather than start over from nothing committed.
	// Several consumers may share it.
	PositionsTopic string

	// OutputTopic is the topic of every output message, used when TopicFunc is nil.
	OutputTopic string
	// TopicFunc chooses the topic per output message; it takes precedence over OutputTopic.
	TopicFunc KafkaSinkTopicFunc

	// Marshaler turns output messages into Kafka records. Default: watermill-kafka's kafka.DefaultMarshaler,
	// so watermill-kafka subscribers (with read_committed isolation) read the outputs back.
	Marshaler kafka.Marshaler

	// MaxBatchMessages bounds the number of consumed messages one transaction carries (group commit: messages
	// that arrive while a transaction is being committed join the next one). Default 1000.
	MaxBatchMessages int

	// MaxBatchDelay is how long a transaction waits for more messages after the first one before it starts.
	// Default 0: a lone message is sent at once, and batches form only from messages that arrive while the
	// previous transaction commits. A small delay (a few ms) gives larger batches when handlers are few.
	MaxBatchDelay time.Duration

	// LoadTimeout bounds starting the producer session and reading the committed positions in NewKafkaSink.
	// Default 1 minute.
	LoadTimeout time.Duration

	// CommitTimeout bounds one transaction: producing its records and committing, and, after a failure, starting
	// a new producer session and reading the positions back. Default 1 minute.
	CommitTimeout time.Duration
}

func (c *KafkaSinkConfig) setDefaults() {
	if c.Marshaler == nil {
		c.Marshaler = kafka.DefaultMarshaler{}
	}
	if c.MaxBatchMessages == 0 {
		c.MaxBatchMessages = DefaultKafkaSinkMaxBatchMessages
	}
	if c.LoadTimeout == 0 {
		c.LoadTimeout = DefaultKafkaSinkLoadTimeout
	}
	if c.CommitTimeout == 0 {
		c.CommitTimeout = DefaultKafkaSinkCommitTimeout
	}
}

// Validate reports every invalid field of c, each named, joined in one error.
func (c KafkaSinkConfig) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("exactlyonce: KafkaSinkConfig.%s %s", field, fmt.Sprintf(format, args...)))
	}
	if len(c.Brokers) == 0 {
		bad("Brokers", "is empty")
	}
	for i, b := range c.Brokers {
		if b == "" {
			bad(fmt.Sprintf("Brokers[%d]", i), "is empty")
		}
	}
	if c.Consumer == "" {
		bad("Consumer", "is empty")
	}
	if c.TransactionalID == "" {
		bad("TransactionalID", "is empty")
	}
	if c.PositionsTopic == "" {
		bad("PositionsTopic", "is empty")
	}
	if c.OutputTopic == "" && c.TopicFunc == nil {
		bad("OutputTopic", "is empty and TopicFunc is nil: one of them must say where outputs go")
	}
	if c.OutputTopic != "" && c.OutputTopic == c.PositionsTopic {
		bad("OutputTopic", "is the PositionsTopic %q", c.PositionsTopic)
	}
	if c.MaxBatchMessages < 0 {
		bad("MaxBatchMessages", "= %d, must be positive (0 selects the default)", c.MaxBatchMessages)
	}
	if c.MaxBatchDelay < 0 {
		bad("MaxBatchDelay", "= %v, must not be negative", c.MaxBatchDelay)
	}
	if c.LoadTimeout < 0 {
		bad("LoadTimeout", "= %v, must not be negative (0 selects the default)", c.LoadTimeout)
	}
	if c.CommitTimeout < 0 {
		bad("CommitTimeout", "= %v, must not be negative (0 selects the default)", c.CommitTimeout)
	}
	for i, o := range c.ClientOptions {
		if o == nil {
			bad(fmt.Sprintf("ClientOptions[%d]", i), "is nil")
		}
	}
	return errors.Join(errs...)
}
