package slsotel

import (
	"github.com/ThreeDotsLabs/watermill/message"
)

// Publisher is a message.Publisher that injects each message's trace context
// into its metadata before handing it to the wrapped Publisher. It is safe
// for concurrent use when the wrapped Publisher is.
type Publisher struct {
	pub  message.Publisher
	opts options
}

var _ message.Publisher = (*Publisher)(nil)

// NewPublisher wraps pub so that every message published through it carries
// the trace context of its own msg.Context() (see Inject): set the context
// with msg.SetContext(ctx) before Publish. Messages whose context holds no
// span are passed on unchanged.
func NewPublisher(pub message.Publisher, opts ...Option) *Publisher {
	return &Publisher{pub: pub, opts: newOptions(opts)}
}

// PublisherDecorator returns a decorator for message.Router's
// AddPublisherDecorators that wraps every handler's Publisher with
// NewPublisher.
func PublisherDecorator(opts ...Option) message.PublisherDecorator {
	return func(pub message.Publisher) (message.Publisher, error) {
		return NewPublisher(pub, opts...), nil
	}
}

// Publish injects the trace context of each message's Context() into its
// metadata, then publishes the messages through the wrapped Publisher and
// returns its error unchanged. The messages' metadata is modified in place,
// so a message must not be published concurrently from two goroutines.
func (p *Publisher) Publish(topic string, messages ...*message.Message) error {
	prop := p.opts.textMapPropagator()
	for _, msg := range messages {
		if msg.Metadata == nil {
			msg.Metadata = make(message.Metadata)
		}
		prop.Inject(msg.Context(), MetadataCarrier(msg.Metadata))
	}
	return p.pub.Publish(topic, messages...)
}

// Close closes the wrapped Publisher.
func (p *Publisher) Close() error { return p.pub.Close() }
