package exactlyonce

import (
	"errors"
	"fmt"
	"math"

	"github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/watermill-sls/watermill-sls/slspubsub"
)

// SLSPosition is the PositionFunc of messages delivered by slspubsub.Subscriber: the partition, offset and
// index come from the message's position metadata (slspubsub.PositionFromMessage: shard, cursor value, index in
// the LogGroup) and the stream is the topic the Watermill router subscribed to (message.SubscribeTopicFromCtx),
// which for slspubsub is the logstore name. Outside a router the stream is empty; set HandlerConfig.Stream, or
// use SLSPositionOf.
func SLSPosition(msg *message.Message) (Position, error) {
	if msg == nil {
		return Position{}, errors.New("exactlyonce: position of a nil message")
	}
	return SLSPositionOf(message.SubscribeTopicFromCtx(msg.Context()))(msg)
}

// SLSPositionOf is SLSPosition with a fixed stream name (the logstore), for messages that do not come through
// a router.
func SLSPositionOf(logstore string) PositionFunc {
	return func(msg *message.Message) (Position, error) {
		p, err := slspubsub.PositionFromMessage(msg)
		if err != nil {
			return Position{}, fmt.Errorf("exactlyonce: SLS position: %w", err)
		}
		off, err := p.CursorValue()
		if err != nil {
			return Position{}, fmt.Errorf("exactlyonce: SLS position: %w", err)
		}
		if p.Shard > math.MaxInt32 || p.Index > math.MaxInt32 {
			return Position{}, fmt.Errorf("exactlyonce: SLS position %s out of range", p)
		}
		return Position{Stream: logstore, Partition: int32(p.Shard), Offset: off, Index: int32(p.Index)}, nil
	}
}

// KafkaPosition is the PositionFunc of messages delivered by watermill-kafka's Subscriber: partition and offset
// come from the message context (kafka.MessagePartitionFromCtx, kafka.MessagePartitionOffsetFromCtx) and the
// stream is the topic the router subscribed to (message.SubscribeTopicFromCtx); watermill-kafka does not put
// the topic on the message. Outside a router use KafkaPositionOf. Index is always 0.
func KafkaPosition(msg *message.Message) (Position, error) {
	if msg == nil {
		return Position{}, errors.New("exactlyonce: position of a nil message")
	}
	return KafkaPositionOf(message.SubscribeTopicFromCtx(msg.Context()))(msg)
}

// KafkaPositionOf is KafkaPosition with a fixed topic.
func KafkaPositionOf(topic string) PositionFunc {
	return func(msg *message.Message) (Position, error) {
		ctx := msg.Context()
		partition, ok := kafka.MessagePartitionFromCtx(ctx)
		if !ok {
			return Position{}, fmt.Errorf("exactlyonce: message %s has no Kafka partition in its context", msg.UUID)
		}
		offset, ok := kafka.MessagePartitionOffsetFromCtx(ctx)
		if !ok {
			return Position{}, fmt.Errorf("exactlyonce: message %s has no Kafka offset in its context", msg.UUID)
		}
		return Position{Stream: topic, Partition: partition, Offset: offset}, nil
	}
}
