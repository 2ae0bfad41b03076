package slsotel_test

import (
	"context"
	"fmt"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/watermill-sls/watermill-sls/slsotel"
	"github.com/watermill-sls/watermill-sls/slspubsub"
	"github.com/watermill-sls/watermill-sls/slspubsub/slstest"
)

// A message published inside a span reaches the consumer with that span's
// trace context; the emulator stands in for SLS. In a real program the span
// comes from a tracer (tracer.Start) and a Router applies
// slsotel.Middleware, so handler spans become the publisher span's children.
func Example() {
	// Once at start-up: the W3C propagators (the default global propagator
	// injects nothing).
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(
		propagation.TraceContext{}, propagation.Baggage{}))

	srv, err := slstest.NewServer()
	if err != nil {
		panic(err)
	}
	defer srv.Close()
	if err := srv.CreateLogStore("my-project", "orders", 2); err != nil {
		panic(err)
	}
	cfg := slspubsub.ClientConfig{
		Endpoint: srv.Endpoint(), Project: "my-project",
		AccessKeyID: slstest.DefaultAccessKeyID, AccessKeySecret: slstest.DefaultAccessKeySecret,
		HTTPClient: srv.HTTPClient(),
	}

	slsPub, err := slspubsub.NewPublisher(slspubsub.PublisherConfig{ClientConfig: cfg}, nil)
	if err != nil {
		panic(err)
	}
	pub := slsotel.NewPublisher(slsPub) // injects each message's trace context
	defer pub.Close()

	// The publisher's span (fixed ids here, so the output is stable).
	traceID, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	spanID, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	span := trace.NewSpanContext(trace.SpanContextConfig{TraceID: traceID, SpanID: spanID, TraceFlags: trace.FlagsSampled})
	msg := message.NewMessage(watermill.NewUUID(), []byte(`{"order":1}`))
	msg.SetContext(trace.ContextWithSpanContext(context.Background(), span))
	if err := pub.Publish("orders", msg); err != nil {
		panic(err)
	}

	sub, err := slspubsub.NewSubscriber(slspubsub.SubscriberConfig{ClientConfig: cfg, StopPosition: slspubsub.StopAtEnd()}, nil)
	if err != nil {
		panic(err)
	}
	defer sub.Close()
	messages, err := sub.Subscribe(context.Background(), "orders")
	if err != nil {
		panic(err)
	}
	for m := range messages {
		got := trace.SpanContextFromContext(slsotel.Extract(m))
		fmt.Println("traceparent:", m.Metadata.Get("traceparent"))
		fmt.Println("trace:", got.TraceID(), "parent span:", got.SpanID(), "remote:", got.IsRemote())
		m.Ack()
	}
	// Output:
	// traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01
	// trace: 4bf92f3577b34da6a3ce929d0e0e4736 parent span: 00f067aa0ba902b7 remote: true
}
