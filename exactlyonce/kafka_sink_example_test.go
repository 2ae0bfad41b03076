package exactlyonce_test

import (
	"context"
	"log"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/watermill-sls/watermill-sls/exactlyonce"
	"github.com/watermill-sls/watermill-sls/slspubsub"
)

// An SLS -> Kafka pipeline that writes every log to Kafka exactly once. The sink reads the committed positions
// when it starts; the Subscriber resumes after them through the sink's PositionStore.
func ExampleKafkaSink() {
	const logstore = "access-log"
	sink, err := exactlyonce.NewKafkaSink(exactlyonce.KafkaSinkConfig{
		Brokers:         []string{"kafka-1:9092", "kafka-2:9092"},
		Consumer:        "access-log-to-kafka",
		TransactionalID: "access-log-to-kafka-0", // stable per instance; a restart fences the old one
		PositionsTopic:  "eo-positions",          // create it with cleanup.policy=compact
		OutputTopic:     "access-log-events",
	}, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer sink.Close()

	sub, err := slspubsub.NewSubscriber(slspubsub.SubscriberConfig{
		ClientConfig:  slspubsub.ClientConfig{Endpoint: "cn-hangzhou.log.aliyuncs.com", Project: "web"},
		MaxInFlight:   64, // several logs per shard at once: needs the SubscriberDecorator below
		PositionStore: sink.PositionStore(),
	}, nil)
	if err != nil {
		log.Fatal(err)
	}
	// The decorator sees messages before the router names their topic, so
	// the logstore is given.
	position := exactlyonce.SLSPositionOf(logstore)
	transform := func(msg *message.Message) ([]*message.Message, error) {
		return []*message.Message{message.NewMessage(watermill.NewUUID(), msg.Payload)}, nil
	}

	router, err := message.NewRouter(message.RouterConfig{}, nil)
	if err != nil {
		log.Fatal(err)
	}
	router.AddSubscriberDecorators(sink.SubscriberDecorator(position))
	router.AddConsumerHandler("to-kafka", logstore, sub, sink.Handler(transform, position))
	if err := router.Run(context.Background()); err != nil {
		log.Fatal(err)
	}
}
