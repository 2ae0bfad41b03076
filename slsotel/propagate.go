package slsotel

import (
	"context"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
)

// Option configures Inject, Extract, NewPublisher, PublisherDecorator and
// Middleware.
type Option func(*options)

type options struct {
	propagator propagation.TextMapPropagator
}

// WithPropagator makes the call use p instead of the global propagator
// (otel.GetTextMapPropagator). A nil p leaves the global one in use.
func WithPropagator(p propagation.TextMapPropagator) Option {
	return func(o *options) { o.propagator = p }
}

func newOptions(opts []Option) options {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// textMapPropagator returns the configured propagator, or the global one as
// it is now (so a propagator set after a Publisher was wrapped is used).
func (o options) textMapPropagator() propagation.TextMapPropagator {
	if o.propagator != nil {
		return o.propagator
	}
	return otel.GetTextMapPropagator()
}

// Inject writes the trace context of ctx (and whatever else the propagator
// carries, such as baggage) into msg's metadata, allocating the metadata
// when msg has none. When ctx holds no valid span context, the W3C
// propagators write nothing, so keys the message already carries stay as
// they are. Inject must not run concurrently with other access to
// msg.Metadata.
func Inject(ctx context.Context, msg *message.Message, opts ...Option) {
	if msg.Metadata == nil {
		msg.Metadata = make(message.Metadata)
	}
	newOptions(opts).textMapPropagator().Inject(ctx, MetadataCarrier(msg.Metadata))
}

// Extract returns msg.Context() extended with the trace context read from
// msg's metadata: trace.SpanContextFromContext on the result gives the
// publisher's span context, marked remote, and a span started from the
// result is its child. When the metadata carries no trace context the
// result is msg.Context() itself. Extract does not change msg; Middleware
// stores the result as the message's context.
func Extract(msg *message.Message, opts ...Option) context.Context {
	return newOptions(opts).textMapPropagator().Extract(msg.Context(), MetadataCarrier(msg.Metadata))
}
