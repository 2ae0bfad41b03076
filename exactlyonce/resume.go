package exactlyonce

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	"github.com/watermill-sls/watermill-sls/slspubsub"
)

// SubscriberPositions returns the resume source of an slspubsub.Subscriber reading for consumer: set it as
// slspubsub.SubscriberConfig.PositionStore. The Subscriber then starts each shard right after the last log
// consumer applied (stream = logstore, partition = shard), before looking at consumer-group checkpoints.
//
// Positions are keyed by logstore name, not by project: consumers reading logstores of the same name in two
// projects need distinct consumer names.
func (s *Store) SubscriberPositions(consumer string) slspubsub.PositionStore {
	return subscriberPositions{s, consumer}
}

type subscriberPositions struct {
	store    *Store
	consumer string
}

// LoadPosition implements slspubsub.PositionStore.
func (p subscriberPositions) LoadPosition(ctx context.Context, logstore string, shard int) (slspubsub.Position, bool, error) {
	if shard < 0 || shard > math.MaxInt32 {
		return slspubsub.Position{}, false, fmt.Errorf("exactlyonce: shard %d out of range", shard)
	}
	pos, ok, err := p.store.Load(ctx, p.consumer, logstore, int32(shard))
	if err != nil || !ok {
		return slspubsub.Position{}, ok, err
	}
	return slspubsub.Position{Shard: shard, Cursor: pos.SLSCursor(), Index: int(pos.Index)}, true, nil
}

// KafkaResumeTimeout bounds the position lookups of a KafkaResume hook per consumer-group session or partition.
const KafkaResumeTimeout = 30 * time.Second

// KafkaResume returns a watermill-kafka SaramaTracer (set it as kafka.SubscriberConfig.Tracer) that starts
// every partition of the subscription right after the last message consumer applied, as stored in s. inner,
// when not nil, is another tracer (e.g. kafka.NewOTELSaramaTracer()) applied as well.
//
// With a consumer group it wraps the group handler: Setup sets the session's next offset of each claimed
// partition with a stored position to its offset + 1 (backward or forward of the group's committed offset: the
// store wins), before sarama starts fetching. Without a consumer group it replaces the initial offset of each
// partition consumer. Partitions without a stored position start as sarama would (committed offset, then
// Consumer.Offsets.Initial). A lookup error fails the session's Setup (sarama retries the session) or the
// partition consumer.
func (s *Store) KafkaResume(consumer string, inner kafka.SaramaTracer) kafka.SaramaTracer {
	return kafkaResume{store: s, consumer: consumer, inner: inner}
}

type kafkaResume struct {
	store    *Store
	consumer string
	inner    kafka.SaramaTracer
}

func (r kafkaResume) WrapConsumer(c sarama.Consumer) sarama.Consumer {
	if r.inner != nil {
		c = r.inner.WrapConsumer(c)
	}
	return resumeConsumer{Consumer: c, r: r}
}

func (r kafkaResume) WrapPartitionConsumer(pc sarama.PartitionConsumer) sarama.PartitionConsumer {
	if r.inner != nil {
		return r.inner.WrapPartitionConsumer(pc)
	}
	return pc
}

func (r kafkaResume) WrapConsumerGroupHandler(h sarama.ConsumerGroupHandler) sarama.ConsumerGroupHandler {
	if r.inner != nil {
		h = r.inner.WrapConsumerGroupHandler(h)
	}
	return resumeGroupHandler{ConsumerGroupHandler: h, r: r}
}

func (r kafkaResume) WrapSyncProducer(cfg *sarama.Config, p sarama.SyncProducer) sarama.SyncProducer {
	if r.inner != nil {
		return r.inner.WrapSyncProducer(cfg, p)
	}
	return p
}

// next returns the offset to resume partition of topic at, and false when nothing is stored.
func (r kafkaResume) next(ctx context.Context, topic string, partition int32) (int64, bool, error) {
	pos, ok, err := r.store.Load(ctx, r.consumer, topic, partition)
	if err != nil || !ok {
		return 0, false, err
	}
	return pos.Offset + 1, true, nil
}

type resumeGroupHandler struct {
	sarama.ConsumerGroupHandler
	r kafkaResume
}

func (h resumeGroupHandler) Setup(sess sarama.ConsumerGroupSession) error {
	ctx, cancel := context.WithTimeout(sess.Context(), KafkaResumeTimeout)
	defer cancel()
	for topic, partitions := range sess.Claims() {
		for _, partition := range partitions {
			next, ok, err := h.r.next(ctx, topic, partition)
			if err != nil {
				return fmt.Errorf("exactlyonce: resume %s/%d: %w", topic, partition, err)
			}
			if ok {
				// ResetOffset only moves the session's offset back, MarkOffset only forward: together they set it.
				sess.ResetOffset(topic, partition, next, "")
				sess.MarkOffset(topic, partition, next, "")
			}
		}
	}
	return h.ConsumerGroupHandler.Setup(sess)
}

type resumeConsumer struct {
	sarama.Consumer
	r kafkaResume
}

func (c resumeConsumer) ConsumePartition(topic string, partition int32, offset int64) (sarama.PartitionConsumer, error) {
	ctx, cancel := context.WithTimeout(context.Background(), KafkaResumeTimeout)
	defer cancel()
	next, ok, err := c.r.next(ctx, topic, partition)
	if err != nil {
		return nil, fmt.Errorf("exactlyonce: resume %s/%d: %w", topic, partition, err)
	}
	if ok {
		offset = next
	}
	return c.Consumer.ConsumePartition(topic, partition, offset)
}
