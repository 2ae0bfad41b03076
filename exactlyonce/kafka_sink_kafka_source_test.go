package exactlyonce

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/watermill-sls/watermill-sls/internal/testutil"
)

// watermillKafkaPosition is the PositionFunc of messages of a watermill-kafka Subscriber of topic: partition and
// offset come from the message's context.
func watermillKafkaPosition(topic string) PositionFunc {
	return func(msg *message.Message) (Position, error) {
		p, ok1 := kafka.MessagePartitionFromCtx(msg.Context())
		o, ok2 := kafka.MessagePartitionOffsetFromCtx(msg.Context())
		if !ok1 || !ok2 {
			return Position{}, fmt.Errorf("message %s carries no Kafka partition and offset", msg.UUID)
		}
		return Position{Stream: topic, Partition: p, Offset: o}, nil
	}
}

// kafkaPipeline runs a watermill-kafka Subscriber (consumer group group, from the oldest offset) -> Handler ->
// sink until stop returns true, and returns how many times process ran.
func kafkaPipeline(t *testing.T, brokers []string, group string, stop func(*KafkaSink, int64) bool) int64 {
	t.Helper()
	cfg := ksConfig(brokers, "kafka-source")
	cfg.OutputTopic = "dst"
	sink := ksNewSink(t, cfg)
	scfg := kafka.DefaultSaramaSubscriberConfig()
	scfg.Consumer.Offsets.Initial = sarama.OffsetOldest
	sub, err := kafka.NewSubscriber(kafka.SubscriberConfig{
		Brokers: brokers, Unmarshaler: kafka.DefaultMarshaler{}, ConsumerGroup: group, OverwriteSaramaConfig: scfg,
	}, watermill.NopLogger{})
	if err != nil {
		t.Fatalf("watermill-kafka subscriber: %v", err)
	}
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: ksWait}, watermill.NopLogger{})
	if err != nil {
		t.Fatal(err)
	}
	var processed, handled atomic.Int64
	process := func(msg *message.Message) ([]*message.Message, error) {
		processed.Add(1)
		return ksEcho(msg)
	}
	h := sink.Handler(process, watermillKafkaPosition("src"))
	router.AddConsumerHandler("kafka-to-kafka", "src", sub, func(msg *message.Message) error {
		err := h(msg)
		if err == nil {
			handled.Add(1)
		}
		return err
	})
	done := make(chan error, 1)
	go func() { done <- router.Run(context.Background()) }()
	testutil.Poll(t, ksWait, "the pipeline to finish", func() (bool, string) {
		return stop(sink, handled.Load()), fmt.Sprintf("handled %d, stats %+v, err %v", handled.Load(), sink.Stats(), sink.Err())
	})
	if err := router.Close(); err != nil {
		t.Errorf("router close: %v", err)
	}
	if err := <-done; err != nil {
		t.Errorf("router: %v", err)
	}
	if err := errors.Join(sub.Close(), sink.Close()); err != nil {
		t.Errorf("close: %v", err)
	}
	return processed.Load()
}

// TestKafkaSinkKafkaSource: a Kafka -> Kafka pipeline on watermill-kafka's Subscriber. A second run with a new
// consumer group (the source offsets forgotten, everything redelivered) produces nothing twice: the Handler skips
// what the sink committed. New records after that are processed once.
func TestKafkaSinkKafkaSource(t *testing.T) {
	brokers := testutil.KafkaWithPartitions(t, 3, "positions", "src", "dst")
	pub, err := kafka.NewPublisher(kafka.PublisherConfig{Brokers: brokers, Marshaler: kafka.DefaultMarshaler{}}, watermill.NopLogger{})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	publish := func(from, to int) {
		for i := from; i < to; i++ {
			if err := pub.Publish("src", message.NewMessage("src-"+strconv.Itoa(i), []byte("x"))); err != nil {
				t.Fatal(err)
			}
		}
	}
	const first, second = 60, 30
	publish(0, first)

	n := kafkaPipeline(t, brokers, "group-1", func(s *KafkaSink, _ int64) bool { return s.Stats().Messages == first })
	if n != first {
		t.Errorf("first run processed %d messages, want %d", n, first)
	}
	publish(first, first+second)
	n = kafkaPipeline(t, brokers, "group-2", func(_ *KafkaSink, handled int64) bool { return handled >= first+second })
	if n != second {
		t.Errorf("second run (all %d redelivered) processed %d, want only the %d new ones", first+second, n, second)
	}

	seen := map[string]int{}
	for _, m := range readOutputs(t, brokers, "dst") {
		seen[m.UUID]++
	}
	for i := range first + second {
		if c := seen["out-src-"+strconv.Itoa(i)]; c != 1 {
			t.Errorf("output of src-%d read %d times, want once", i, c)
		}
	}
	if len(seen) != first+second {
		t.Errorf("%d distinct outputs, want %d", len(seen), first+second)
	}
}
