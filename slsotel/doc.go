// Package slsotel carries OpenTelemetry trace context through Watermill
// message metadata, so that a trace started by a publisher continues in the
// handler that consumes the message from SLS (or from any other Watermill
// Pub/Sub).
//
// The trace context travels as ordinary metadata keys: with the W3C Trace
// Context propagator, "traceparent" and "tracestate" (and "baggage" with the
// Baggage propagator). slspubsub's DefaultMarshaler stores every metadata key
// that does not start with slspubsub.MetadataReservedPrefix ("sls.") in the
// log and gives it back unchanged on the consuming side, so these keys
// survive the trip through a logstore. A propagator whose keys start with
// "sls." would lose them: slspubsub reserves that namespace.
//
// The pieces:
//   - MetadataCarrier adapts message.Metadata to propagation.TextMapCarrier.
//   - Inject writes a context's trace context into a message's metadata;
//     Extract reads it back into a context derived from the message's own.
//   - NewPublisher (and PublisherDecorator, for a Router) wraps a Publisher
//     so that every published message carries the trace context of its own
//     msg.Context().
//   - Middleware is a Router handler middleware that extracts the trace
//     context into msg.Context() before the handler runs, so spans the handler
//     starts from msg.Context() are children of the publisher's span.
//
// Every function uses the global propagator (otel.GetTextMapPropagator, read
// at each call) unless WithPropagator gives one. The global propagator of a
// program that never called otel.SetTextMapPropagator is a no-op: nothing is
// injected and nothing is extracted. Set it once at start-up, e.g.
//
//	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(
//		propagation.TraceContext{}, propagation.Baggage{}))
//
// The Router gives the messages a handler returns their own contexts, not the
// consumed message's: to continue the trace downstream, inject it into each
// produced message (Inject(msg.Context(), out), or out.SetContext with a
// context holding the handler's span) before returning it.
package slsotel
