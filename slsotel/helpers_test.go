package slsotel_test

import (
	"context"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.opentelemetry.io/otel/propagation"

	"github.com/watermill-sls/watermill-sls/internal/testutil"
	"github.com/watermill-sls/watermill-sls/slspubsub"
)

const testProject = "otel-proj"

// w3c is the propagator the tests pass explicitly: W3C trace context and
// baggage, whatever the global propagator is.
var w3c = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})

// slsConfig starts an emulator with the given logstores (name to shard
// count) and returns a ClientConfig for it.
func slsConfig(t *testing.T, logstores map[string]int) slspubsub.ClientConfig {
	t.Helper()
	env := testutil.SLS(t)
	for name, shards := range logstores {
		env.LogStore(t, testProject, name, shards)
	}
	return slspubsub.ClientConfig{
		Endpoint: env.Endpoint, Project: testProject,
		AccessKeyID: env.AccessKeyID, AccessKeySecret: env.AccessKeySecret,
		HTTPClient: env.HTTPClient,
	}
}

func newSLSPublisher(t *testing.T, cfg slspubsub.ClientConfig) *slspubsub.Publisher {
	t.Helper()
	pub, err := slspubsub.NewPublisher(slspubsub.PublisherConfig{ClientConfig: cfg}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := pub.Close(); err != nil {
			t.Errorf("close publisher: %v", err)
		}
	})
	return pub
}

// readAll reads logstore from its beginning to its end as of the call
// through a real Subscriber, acking every message, and returns the messages
// (their metadata and payload stay readable after the ack).
func readAll(t *testing.T, cfg slspubsub.ClientConfig, logstore string) []*message.Message {
	t.Helper()
	sub, err := slspubsub.NewSubscriber(slspubsub.SubscriberConfig{
		ClientConfig:  cfg,
		StartPosition: slspubsub.StartAtBegin(),
		StopPosition:  slspubsub.StopAtEnd(),
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := sub.Close(); err != nil {
			t.Errorf("close subscriber: %v", err)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ch, err := sub.Subscribe(ctx, logstore)
	if err != nil {
		t.Fatal(err)
	}
	var got []*message.Message
	for msg := range ch {
		got = append(got, msg)
		msg.Ack()
	}
	if ctx.Err() != nil {
		t.Fatalf("reading %s did not end within 30 s (%d messages read)", logstore, len(got))
	}
	return got
}
