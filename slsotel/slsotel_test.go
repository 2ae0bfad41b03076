package slsotel_test

import (
	"context"
	"fmt"
	"strconv"
	"testing"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/watermill-sls/watermill-sls/slsotel"
)

func TestMetadataCarrier(t *testing.T) {
	md := message.Metadata{"a": "1"}
	c := slsotel.MetadataCarrier(md)
	c.Set("traceparent", "x")
	if md["traceparent"] != "x" || c.Get("traceparent") != "x" || c.Get("missing") != "" {
		t.Fatalf("Set/Get do not go through the metadata: %v", md)
	}
	keys := c.Keys()
	if len(keys) != 2 || !(keys[0] == "a" && keys[1] == "traceparent" || keys[1] == "a" && keys[0] == "traceparent") {
		t.Fatalf("Keys() = %v, want a and traceparent", keys)
	}
}

// handSpanContext returns a sampled span context with fixed ids derived
// from n, and the traceparent the W3C propagator writes for it.
func handSpanContext(t *testing.T, n byte, state string) (trace.SpanContext, string) {
	t.Helper()
	ts, err := trace.ParseTraceState(state)
	if err != nil {
		t.Fatal(err)
	}
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{0x4b, 0xf9, 15: n},
		SpanID:     trace.SpanID{0x00, 0xf0, 7: n},
		TraceFlags: trace.FlagsSampled,
		TraceState: ts,
	})
	return sc, fmt.Sprintf("00-%s-%s-01", sc.TraceID(), sc.SpanID())
}

func TestInjectExtract(t *testing.T) {
	sc, want := handSpanContext(t, 1, "vendor=v1")

	t.Run("nil metadata", func(t *testing.T) {
		msg := &message.Message{UUID: "u"}
		slsotel.Inject(trace.ContextWithSpanContext(context.Background(), sc), msg, slsotel.WithPropagator(w3c))
		if msg.Metadata["traceparent"] != want || msg.Metadata["tracestate"] != "vendor=v1" {
			t.Fatalf("metadata = %v, want traceparent %s and tracestate vendor=v1", msg.Metadata, want)
		}
	})
	t.Run("no span keeps existing keys", func(t *testing.T) {
		msg := message.NewMessage("u", nil)
		msg.Metadata["traceparent"] = want
		slsotel.Inject(context.Background(), msg, slsotel.WithPropagator(w3c))
		if msg.Metadata["traceparent"] != want {
			t.Fatalf("Inject without a span changed traceparent to %q", msg.Metadata["traceparent"])
		}
	})
	t.Run("extract derives from the message context", func(t *testing.T) {
		type key struct{}
		msg := message.NewMessage("u", nil)
		msg.SetContext(context.WithValue(context.Background(), key{}, "kept"))
		slsotel.Inject(trace.ContextWithSpanContext(context.Background(), sc), msg, slsotel.WithPropagator(w3c))
		ctx := slsotel.Extract(msg, slsotel.WithPropagator(w3c))
		got := trace.SpanContextFromContext(ctx)
		if got.TraceID() != sc.TraceID() || got.SpanID() != sc.SpanID() || !got.IsRemote() || got.TraceState().Get("vendor") != "v1" {
			t.Fatalf("extracted %v, want %v marked remote", got, sc)
		}
		if ctx.Value(key{}) != "kept" {
			t.Fatal("Extract dropped the values of msg.Context()")
		}
	})
	t.Run("global propagator", func(t *testing.T) {
		old := otel.GetTextMapPropagator()
		t.Cleanup(func() { otel.SetTextMapPropagator(old) })
		msg := message.NewMessage("u", nil)
		otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator()) // a no-op, as in a program that set none
		slsotel.Inject(trace.ContextWithSpanContext(context.Background(), sc), msg)
		if len(msg.Metadata) != 0 {
			t.Fatalf("a no-op global propagator injected %v", msg.Metadata)
		}
		otel.SetTextMapPropagator(propagation.TraceContext{})
		slsotel.Inject(trace.ContextWithSpanContext(context.Background(), sc), msg)
		if msg.Metadata["traceparent"] != want {
			t.Fatalf("the global TraceContext propagator injected %v", msg.Metadata)
		}
		if got := trace.SpanContextFromContext(slsotel.Extract(msg)); got.SpanID() != sc.SpanID() {
			t.Fatalf("Extract with the global propagator = %v", got)
		}
	})
}

// A trace context injected at publish comes back in the consumed message's
// metadata after the trip through SLS (DefaultMarshaler stores keys outside
// the "sls." namespace), and Extract yields the same trace and span.
func TestTraceContextThroughSLS(t *testing.T) {
	cfg := slsConfig(t, map[string]int{"orders": 2})
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	pub := slsotel.NewPublisher(newSLSPublisher(t, cfg), slsotel.WithPropagator(w3c))

	member, err := baggage.NewMember("tenant", "t-42")
	if err != nil {
		t.Fatal(err)
	}
	bag, err := baggage.New(member)
	if err != nil {
		t.Fatal(err)
	}
	handSC, handParent := handSpanContext(t, 9, "vendor=v9")

	const traced, untraced = 8, 3
	want := map[string]trace.SpanContext{} // UUID -> span context it was published with
	var msgs []*message.Message
	for i := range traced + untraced {
		msg := message.NewMessage(watermill.NewUUID(), []byte(strconv.Itoa(i)))
		msg.Metadata["i"] = strconv.Itoa(i)
		switch {
		case i == 0: // a span context built by hand, with a trace state
			msg.SetContext(trace.ContextWithSpanContext(context.Background(), handSC))
			want[msg.UUID] = handSC
		case i < traced: // a real span of the SDK, with baggage
			ctx, span := tp.Tracer("producer").Start(baggage.ContextWithBaggage(context.Background(), bag), "publish")
			span.End()
			msg.SetContext(ctx)
			want[msg.UUID] = span.SpanContext()
		}
		msgs = append(msgs, msg)
	}
	if err := pub.Publish("orders", msgs...); err != nil {
		t.Fatal(err)
	}

	got := readAll(t, cfg, "orders")
	if len(got) != len(msgs) {
		t.Fatalf("read %d messages, published %d", len(got), len(msgs))
	}
	for _, msg := range got {
		sc, ok := want[msg.UUID]
		ctx := slsotel.Extract(msg, slsotel.WithPropagator(w3c))
		extracted := trace.SpanContextFromContext(ctx)
		if !ok {
			if _, has := msg.Metadata["traceparent"]; has || extracted.IsValid() {
				t.Errorf("message %s published without a span arrived with traceparent %q", msg.Metadata["i"], msg.Metadata["traceparent"])
			}
			continue
		}
		wantParent := fmt.Sprintf("00-%s-%s-01", sc.TraceID(), sc.SpanID())
		if msg.Metadata["traceparent"] != wantParent {
			t.Errorf("message %s: traceparent %q, want %q", msg.Metadata["i"], msg.Metadata["traceparent"], wantParent)
		}
		if extracted.TraceID() != sc.TraceID() || extracted.SpanID() != sc.SpanID() || !extracted.IsRemote() || !extracted.IsSampled() {
			t.Errorf("message %s: extracted %+v, want trace %s span %s, remote and sampled", msg.Metadata["i"], extracted, sc.TraceID(), sc.SpanID())
		}
		if msg.Metadata["i"] == "0" {
			if wantParent != handParent || msg.Metadata["tracestate"] != "vendor=v9" || extracted.TraceState().Get("vendor") != "v9" {
				t.Errorf("hand-built span context: metadata %v, extracted trace state %q", msg.Metadata, extracted.TraceState())
			}
			continue
		}
		if v := baggage.FromContext(ctx).Member("tenant").Value(); v != "t-42" {
			t.Errorf("message %s: baggage tenant %q after the trip, want t-42 (metadata baggage %q)", msg.Metadata["i"], v, msg.Metadata["baggage"])
		}
	}
}
