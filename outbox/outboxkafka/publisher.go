// Package outboxkafka relays an outbox into Kafka exactly once for read_committed readers: it implements
// outbox.TransactionalPublisher with a sarama transactional producer. Each batch a Relay claims is written in
// one Kafka transaction together with a progress record (the batch's outbox row ids, keyed by the relay's name,
// in partition 0 of a progress topic). When a relay dies after the Kafka commit but before PostgreSQL marked the
// rows, its restart (same name, so same transactional id) fences the dead producer, reads its last progress
// record and marks those rows delivered before it publishes anything.
//
// Records are marshaled with watermill-kafka's DefaultMarshaler format (partitioned by the row's ordering key),
// so watermill-kafka subscribers read them. Readers must use read_committed isolation
// (sarama.ReadCommitted; Consumer.IsolationLevel) to see each message once.
//
// The progress topic should be compacted (cleanup.policy=compact): Recover reads partition 0 from its start.
package outboxkafka

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/watermill-sls/watermill-sls/outbox"
)

// DefaultProgressTopic is Config.ProgressTopic when empty.
const DefaultProgressTopic = "outbox_relay_progress"

// Config configures a TransactionalPublisher.
type Config struct {
	// Brokers are the seed broker addresses. Required.
	Brokers []string
	// RelayName is the outbox.RelayConfig.Name of the relay this publisher serves: its progress key and, by
	// default, its transactional id. Required; stable across restarts and unique among running relays.
	RelayName string
	// TransactionalID is the Kafka transactional id. Default: "outbox-relay-" + RelayName.
	TransactionalID string
	// ProgressTopic receives one progress record per batch, always in partition 0. Default:
	// DefaultProgressTopic.
	ProgressTopic string
	// Marshaler turns messages into records. Default: watermill-kafka's DefaultMarshaler with the record key
	// set to the row's ordering key (kafka.NewWithPartitioningMarshaler), so one key stays in one partition.
	Marshaler kafka.Marshaler
	// SaramaConfig is the base configuration; the publisher copies it and forces what transactions need:
	// Producer.Idempotent, Producer.Transaction.ID, Producer.RequiredAcks = WaitForAll,
	// Producer.Return.Successes, Net.MaxOpenRequests = 1, Consumer.IsolationLevel = ReadCommitted, and a
	// partitioner that sends the progress topic to partition 0 (hash partitioning elsewhere).
	// Default: sarama.NewConfig().
	SaramaConfig *sarama.Config
	// RecoverTimeout bounds reading the progress topic in Recover. Default: 1 minute.
	RecoverTimeout time.Duration
}

func (c *Config) setDefaults() {
	if c.TransactionalID == "" && c.RelayName != "" {
		c.TransactionalID = "outbox-relay-" + c.RelayName
	}
	if c.ProgressTopic == "" {
		c.ProgressTopic = DefaultProgressTopic
	}
	if c.Marshaler == nil {
		c.Marshaler = kafka.NewWithPartitioningMarshaler(func(_ string, msg *message.Message) (string, error) {
			return msg.Metadata.Get(outbox.MetadataOrderingKey), nil
		})
	}
	if c.SaramaConfig == nil {
		c.SaramaConfig = sarama.NewConfig()
	}
	if c.RecoverTimeout == 0 {
		c.RecoverTimeout = time.Minute
	}
}

// Validate reports every invalid field, each named, in one error.
func (c Config) Validate() error {
	var errs []error
	if len(c.Brokers) == 0 {
		errs = append(errs, errors.New("Brokers: is empty"))
	}
	if c.RelayName == "" {
		errs = append(errs, errors.New("RelayName: is empty"))
	}
	if c.RecoverTimeout < 0 {
		errs = append(errs, fmt.Errorf("RecoverTimeout: %v is negative", c.RecoverTimeout))
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("outboxkafka: invalid Config: %w", errors.Join(errs...))
}

// TransactionalPublisher is an outbox.TransactionalPublisher for Kafka. Use it from one Relay; it is not meant
// for concurrent use. Close it after the Relay's Run returned.
type TransactionalPublisher struct {
	config Config
	sarama *sarama.Config
	logger watermill.LoggerAdapter

	mu       sync.Mutex
	producer sarama.SyncProducer // nil until Recover, and after a failed batch
}

var _ outbox.TransactionalPublisher = (*TransactionalPublisher)(nil)

// NewTransactionalPublisher validates config. It connects in Recover, which the Relay calls first.
func NewTransactionalPublisher(config Config, logger watermill.LoggerAdapter) (*TransactionalPublisher, error) {
	config.setDefaults()
	if err := config.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = watermill.NopLogger{}
	}
	sc := *config.SaramaConfig
	sc.Producer.Idempotent = true
	sc.Producer.Transaction.ID = config.TransactionalID
	sc.Producer.RequiredAcks = sarama.WaitForAll
	sc.Producer.Return.Successes = true
	sc.Producer.Return.Errors = true
	sc.Net.MaxOpenRequests = 1
	sc.Consumer.IsolationLevel = sarama.ReadCommitted
	sc.Consumer.Return.Errors = true
	progress := config.ProgressTopic
	sc.Producer.Partitioner = func(topic string) sarama.Partitioner {
		if topic == progress {
			return sarama.NewManualPartitioner(topic)
		}
		return sarama.NewHashPartitioner(topic)
	}
	if err := sc.Validate(); err != nil {
		return nil, fmt.Errorf("outboxkafka: sarama config: %w", err)
	}
	return &TransactionalPublisher{config: config, sarama: &sc, logger: logger}, nil
}

// progressRecord is the value of a progress record (key: relay name) or of a recovery marker (key: relay
// name + "/recover").
type progressRecord struct {
	Relay   string  `json:"relay"`
	IDs     []int64 `json:"ids,omitempty"`
	Recover string  `json:"recover,omitempty"`
}

// Recover (re)creates the transactional producer, which fences earlier producers with the same transactional
// id and completes or aborts their open transaction; then it commits a marker record to the progress topic and
// reads partition 0 (read_committed) up to that marker: the last progress record of this relay before it names
// the rows of the last committed batch.
func (p *TransactionalPublisher) Recover(ctx context.Context) ([]int64, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closeProducer()
	producer, err := sarama.NewSyncProducer(p.config.Brokers, p.sarama)
	if err != nil {
		return nil, fmt.Errorf("outboxkafka: transactional producer %q: %w", p.config.TransactionalID, err)
	}
	nonce := watermill.NewUUID()
	marker, err := json.Marshal(progressRecord{Relay: p.config.RelayName, Recover: nonce})
	if err != nil {
		_ = producer.Close()
		return nil, err
	}
	markerOffset, err := p.inTxn(producer, []*sarama.ProducerMessage{p.progressMessage(p.config.RelayName+"/recover", marker)})
	if err != nil {
		_ = producer.Close()
		return nil, fmt.Errorf("outboxkafka: write recovery marker: %w", err)
	}
	ids, err := p.readProgress(ctx, markerOffset, nonce)
	if err != nil {
		_ = producer.Close()
		return nil, err
	}
	p.producer = producer
	return ids, nil
}

func (p *TransactionalPublisher) progressMessage(key string, value []byte) *sarama.ProducerMessage {
	return &sarama.ProducerMessage{Topic: p.config.ProgressTopic, Partition: 0,
		Key: sarama.StringEncoder(key), Value: sarama.ByteEncoder(value)}
}

// inTxn sends msgs in one transaction and returns the offset of the last one.
func (p *TransactionalPublisher) inTxn(producer sarama.SyncProducer, msgs []*sarama.ProducerMessage) (int64, error) {
	if err := producer.BeginTxn(); err != nil {
		return 0, fmt.Errorf("begin transaction: %w", err)
	}
	if err := producer.SendMessages(msgs); err != nil {
		if abortErr := producer.AbortTxn(); abortErr != nil {
			return 0, fmt.Errorf("send: %w (abort: %w)", err, abortErr)
		}
		return 0, fmt.Errorf("send: %w", err)
	}
	if err := producer.CommitTxn(); err != nil {
		return 0, fmt.Errorf("commit transaction: %w", err)
	}
	return msgs[len(msgs)-1].Offset, nil
}

// readProgress reads partition 0 of the progress topic from its start up to the marker at markerOffset.
func (p *TransactionalPublisher) readProgress(ctx context.Context, markerOffset int64, nonce string) ([]int64, error) {
	ctx, cancel := context.WithTimeout(ctx, p.config.RecoverTimeout)
	defer cancel()
	consumer, err := sarama.NewConsumer(p.config.Brokers, p.sarama)
	if err != nil {
		return nil, fmt.Errorf("outboxkafka: progress consumer: %w", err)
	}
	defer consumer.Close()
	pc, err := consumer.ConsumePartition(p.config.ProgressTopic, 0, sarama.OffsetOldest)
	if err != nil {
		return nil, fmt.Errorf("outboxkafka: read progress topic %s: %w", p.config.ProgressTopic, err)
	}
	defer pc.Close()
	var ids []int64
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("outboxkafka: read progress topic %s up to offset %d: %w", p.config.ProgressTopic, markerOffset, ctx.Err())
		case err := <-pc.Errors():
			return nil, fmt.Errorf("outboxkafka: read progress topic %s: %w", p.config.ProgressTopic, err)
		case m := <-pc.Messages():
			var rec progressRecord
			if err := json.Unmarshal(m.Value, &rec); err != nil {
				// Only relays write here; anything else means the topic is
				// shared or damaged, and recovering from it could lose rows.
				return nil, fmt.Errorf("outboxkafka: progress topic %s offset %d holds no progress record: %w",
					p.config.ProgressTopic, m.Offset, err)
			}
			if rec.Relay != p.config.RelayName {
				continue // another relay's record
			}
			if rec.Recover == nonce {
				return ids, nil
			}
			if string(m.Key) == p.config.RelayName {
				ids = rec.IDs
			}
			if m.Offset > markerOffset {
				return nil, fmt.Errorf("outboxkafka: progress topic %s: passed offset %d without seeing the recovery marker", p.config.ProgressTopic, markerOffset)
			}
		}
	}
}

// PublishBatch sends msgs and a progress record with their ids in one Kafka transaction. On error the
// producer is dropped: the Relay calls Recover, which re-creates it (completing or aborting the transaction).
// ctx is checked before sending; sarama bounds the calls with its own timeouts.
func (p *TransactionalPublisher) PublishBatch(ctx context.Context, msgs []outbox.BatchMessage) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.producer == nil {
		return errors.New("outboxkafka: no producer: Recover must succeed before PublishBatch")
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	records := make([]*sarama.ProducerMessage, 0, len(msgs)+1)
	ids := make([]int64, len(msgs))
	for i, m := range msgs {
		rec, err := p.config.Marshaler.Marshal(m.Topic, m.Message)
		if err != nil {
			return fmt.Errorf("outboxkafka: marshal: %w", &outbox.RowError{ID: m.ID, Err: err})
		}
		records = append(records, rec)
		ids[i] = m.ID
	}
	progress, err := json.Marshal(progressRecord{Relay: p.config.RelayName, IDs: ids})
	if err != nil {
		return err
	}
	records = append(records, p.progressMessage(p.config.RelayName, progress))
	if _, err := p.inTxn(p.producer, records); err != nil {
		p.closeProducer()
		return fmt.Errorf("outboxkafka: publish batch of %d: %w", len(msgs), err)
	}
	return nil
}

func (p *TransactionalPublisher) closeProducer() {
	if p.producer == nil {
		return
	}
	if err := p.producer.Close(); err != nil {
		p.logger.Error("Closing transactional producer", err, nil)
	}
	p.producer = nil
}

// Close closes the producer.
func (p *TransactionalPublisher) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closeProducer()
	return nil
}
