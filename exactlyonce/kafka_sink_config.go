package exactlyonce

import (
	"errors"
	"fmt"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	"github.com/ThreeDotsLabs/watermill/message"
)

// Defaults of KafkaSinkConfig.
const (
	DefaultKafkaSinkMaxBatchMessages = 1000
	DefaultKafkaSinkLoadTimeout      = time.Minute
)

// KafkaSinkTopicFunc chooses the Kafka topic of an output message. It must be safe for concurrent use.
type KafkaSinkTopicFunc func(out *message.Message) (string, error)

// KafkaSinkConfig configures a KafkaSink. Brokers, Consumer, TransactionalID, PositionsTopic and one of
// OutputTopic / TopicFunc are required.
type KafkaSinkConfig struct {
	// Brokers are the seed broker addresses ("host:port").
	Brokers []string

	// Sarama is the base client configuration (TLS, SASL, version, client id, timeouts). Nil means
	// sarama.NewConfig(). The sink works on a copy and overrides what transactions need: Producer.Idempotent,
	// Producer.Transaction.ID, Producer.RequiredAcks = WaitForAll, Producer.Return.Successes/Errors,
	// Net.MaxOpenRequests = 1. Version must be at least 0.11 (sarama's default, 2.1, is fine).
	Sarama *sarama.Config

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
	// transaction. Create it with cleanup.policy=compact: only the newest record of each key is needed. A topic
	// that does not exist yet reads as "nothing committed".
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

	// LoadTimeout bounds reading the committed positions in NewKafkaSink. Default 1 minute.
	LoadTimeout time.Duration
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
	if c.Sarama != nil && !c.Sarama.Version.IsAtLeast(sarama.V0_11_0_0) {
		bad("Sarama.Version", "= %s, transactions need 0.11.0.0 or later", c.Sarama.Version)
	}
	return errors.Join(errs...)
}

// saramaConfig returns the producer configuration: a copy of c.Sarama with what transactions need.
func (c KafkaSinkConfig) saramaConfig() (*sarama.Config, error) {
	var cfg sarama.Config
	if c.Sarama != nil {
		cfg = *c.Sarama
	} else {
		cfg = *sarama.NewConfig()
	}
	cfg.Producer.Idempotent = true
	cfg.Producer.Transaction.ID = c.TransactionalID
	cfg.Producer.RequiredAcks = sarama.WaitForAll
	cfg.Producer.Return.Successes = true
	cfg.Producer.Return.Errors = true
	cfg.Net.MaxOpenRequests = 1
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("exactlyonce: KafkaSinkConfig.Sarama: %w", err)
	}
	return &cfg, nil
}
