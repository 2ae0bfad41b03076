package slsotel_test

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/watermill-sls/watermill-sls/slsotel"
	"github.com/watermill-sls/watermill-sls/slspubsub"
)

// A trace that crosses two logstores through a Router: the producer's span
// -> SLS -> the handler's span (a child, thanks to Middleware) -> the
// handler's output, published through PublisherDecorator -> SLS. Without
// the middleware the handler's spans are roots: the control that shows the
// check can fail.
func TestMiddlewareHandlerSpansAreChildren(t *testing.T) {
	for _, withMiddleware := range []bool{true, false} {
		t.Run(fmt.Sprintf("middleware=%v", withMiddleware), func(t *testing.T) {
			testHandlerSpans(t, withMiddleware)
		})
	}
}

func testHandlerSpans(t *testing.T, withMiddleware bool) {
	cfg := slsConfig(t, map[string]int{"requests": 2, "results": 1})
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	tracer := tp.Tracer("test")

	// Publish n messages, each in a span of its own trace.
	const n = 6
	pub := slsotel.NewPublisher(newSLSPublisher(t, cfg), slsotel.WithPropagator(w3c))
	published := map[string]trace.SpanContext{} // UUID -> producer span
	for i := range n {
		ctx, span := tracer.Start(context.Background(), "produce")
		msg := message.NewMessage(watermill.NewUUID(), []byte(strconv.Itoa(i)))
		msg.SetContext(ctx)
		if err := pub.Publish("requests", msg); err != nil {
			t.Fatal(err)
		}
		span.End()
		published[msg.UUID] = span.SpanContext()
	}

	// The router: the handler starts a span from msg.Context() and returns
	// an output whose context holds that span.
	var mu sync.Mutex
	handled := map[string]trace.SpanContext{} // input UUID -> handler span
	sub, err := slspubsub.NewSubscriber(slspubsub.SubscriberConfig{ClientConfig: cfg, StartPosition: slspubsub.StartAtBegin()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 10 * time.Second}, watermill.NopLogger{})
	if err != nil {
		t.Fatal(err)
	}
	if withMiddleware {
		router.AddMiddleware(slsotel.Middleware(slsotel.WithPropagator(w3c)))
	}
	router.AddPublisherDecorators(slsotel.PublisherDecorator(slsotel.WithPropagator(w3c)))
	router.AddHandler("work", "requests", sub, "results", newSLSPublisher(t, cfg),
		func(msg *message.Message) ([]*message.Message, error) {
			ctx, span := tracer.Start(msg.Context(), "handle")
			defer span.End()
			mu.Lock()
			handled[msg.UUID] = span.SpanContext()
			mu.Unlock()
			out := message.NewMessage("out-"+msg.UUID, msg.Payload)
			out.SetContext(ctx)
			return message.Messages{out}, nil
		})
	runErr := make(chan error, 1)
	go func() { runErr <- router.Run(context.Background()) }()
	defer func() {
		if err := router.Close(); err != nil {
			t.Errorf("close router: %v", err)
		}
		if err := <-runErr; err != nil {
			t.Errorf("router.Run: %v", err)
		}
	}()
	<-router.Running()

	// Wait for every output, read through a second Subscriber.
	outputs := map[string]*message.Message{}
	results, err := slspubsub.NewSubscriber(slspubsub.SubscriberConfig{ClientConfig: cfg, StartPosition: slspubsub.StartAtBegin()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := results.Close(); err != nil {
			t.Errorf("close results subscriber: %v", err)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ch, err := results.Subscribe(ctx, "results")
	if err != nil {
		t.Fatal(err)
	}
	for len(outputs) < n {
		select {
		case msg := <-ch:
			outputs[msg.UUID] = msg
			msg.Ack()
		case <-ctx.Done():
			t.Fatalf("%d of %d outputs within 30 s", len(outputs), n)
		}
	}

	mu.Lock()
	defer mu.Unlock()
	if len(handled) != n {
		t.Fatalf("handled %d of %d messages", len(handled), n)
	}
	parents := map[trace.SpanID]trace.SpanContext{} // handler span -> its parent
	for _, s := range rec.Ended() {
		if s.Name() == "handle" {
			parents[s.SpanContext().SpanID()] = s.Parent()
		}
	}
	for uuid, producer := range published {
		handler := handled[uuid]
		parent, ok := parents[handler.SpanID()]
		if !ok {
			t.Fatalf("handler span of %s was not recorded", uuid)
		}
		isChild := parent.TraceID() == producer.TraceID() && parent.SpanID() == producer.SpanID() &&
			parent.IsRemote() && handler.TraceID() == producer.TraceID()
		if isChild != withMiddleware {
			t.Errorf("message %s: handler span %s has parent %s/%s (remote %v); producer span %s/%s; child: %v, want %v",
				uuid, handler.SpanID(), parent.TraceID(), parent.SpanID(), parent.IsRemote(),
				producer.TraceID(), producer.SpanID(), isChild, withMiddleware)
		}
		// The output carries the handler's span, whichever trace it is in.
		out := outputs["out-"+uuid]
		if out == nil {
			t.Fatalf("no output for %s", uuid)
		}
		outSC := trace.SpanContextFromContext(slsotel.Extract(out, slsotel.WithPropagator(w3c)))
		if outSC.TraceID() != handler.TraceID() || outSC.SpanID() != handler.SpanID() {
			t.Errorf("output of %s carries %s/%s, want the handler span %s/%s",
				uuid, outSC.TraceID(), outSC.SpanID(), handler.TraceID(), handler.SpanID())
		}
	}
	t.Logf("%d messages: handler spans children of the producer's: %v", n, withMiddleware)
}
