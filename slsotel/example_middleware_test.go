package slsotel_test

import (
	"context"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/watermill-sls/watermill-sls/slsotel"
	"github.com/watermill-sls/watermill-sls/slspubsub"
	"github.com/watermill-sls/watermill-sls/slspubsub/slstest"
)

// In a Router, Middleware puts the publisher's span context into each
// consumed message's context before the handler runs; a span the handler
// starts from msg.Context() is then the publisher span's child.
func ExampleMiddleware() {
	w3c := slsotel.WithPropagator(propagation.TraceContext{})
	srv, err := slstest.NewServer()
	if err != nil {
		panic(err)
	}
	defer srv.Close()
	if err := srv.CreateLogStore("my-project", "orders", 1); err != nil {
		panic(err)
	}
	cfg := slspubsub.ClientConfig{
		Endpoint: srv.Endpoint(), Project: "my-project",
		AccessKeyID: slstest.DefaultAccessKeyID, AccessKeySecret: slstest.DefaultAccessKeySecret,
		HTTPClient: srv.HTTPClient(),
	}

	// Publish one message inside a span (fixed ids here).
	slsPub, err := slspubsub.NewPublisher(slspubsub.PublisherConfig{ClientConfig: cfg}, nil)
	if err != nil {
		panic(err)
	}
	pub := slsotel.NewPublisher(slsPub, w3c)
	defer pub.Close()
	traceID, _ := trace.TraceIDFromHex("0af7651916cd43dd8448eb211c80319c")
	spanID, _ := trace.SpanIDFromHex("b7ad6b7169203331")
	msg := message.NewMessage(watermill.NewUUID(), []byte("order 1"))
	msg.SetContext(trace.ContextWithSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: traceID, SpanID: spanID, TraceFlags: trace.FlagsSampled,
	})))
	if err := pub.Publish("orders", msg); err != nil {
		panic(err)
	}

	// Consume it through a Router with the middleware.
	sub, err := slspubsub.NewSubscriber(slspubsub.SubscriberConfig{ClientConfig: cfg}, nil)
	if err != nil {
		panic(err)
	}
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 5 * time.Second}, watermill.NopLogger{})
	if err != nil {
		panic(err)
	}
	router.AddMiddleware(slsotel.Middleware(w3c))
	handled := make(chan string, 1)
	router.AddConsumerHandler("orders", "orders", sub, func(msg *message.Message) error {
		// tracer.Start(msg.Context(), "handle") would start a child of this span.
		parent := trace.SpanContextFromContext(msg.Context())
		handled <- fmt.Sprintf("%s: trace %s, parent span %s, remote %v", msg.Payload, parent.TraceID(), parent.SpanID(), parent.IsRemote())
		return nil
	})
	done := make(chan error, 1)
	go func() { done <- router.Run(context.Background()) }()
	fmt.Println(<-handled)
	if err := router.Close(); err != nil {
		panic(err)
	}
	if err := <-done; err != nil {
		panic(err)
	}
	// Output:
	// order 1: trace 0af7651916cd43dd8448eb211c80319c, parent span b7ad6b7169203331, remote true
}
