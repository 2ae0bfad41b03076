package slsotel

import (
	"github.com/ThreeDotsLabs/watermill/message"
)

// Middleware returns a Router handler middleware that sets each consumed
// message's context to Extract(msg) before the handler runs: the handler (and
// middleware added after this one) finds the publisher's span context in
// msg.Context(), and spans started from it are its children. Values and
// cancellation of the original context are kept (the result derives from
// it). Add it first, so that the other middleware see the trace context too:
//
//	router.AddMiddleware(slsotel.Middleware())
func Middleware(opts ...Option) message.HandlerMiddleware {
	o := newOptions(opts)
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			ctx := o.textMapPropagator().Extract(msg.Context(), MetadataCarrier(msg.Metadata))
			msg.SetContext(ctx)
			return h(msg)
		}
	}
}
