package slsotel

import (
	"github.com/ThreeDotsLabs/watermill/message"
	"go.opentelemetry.io/otel/propagation"
)

// MetadataCarrier is a propagation.TextMapCarrier over a message's metadata:
// Get and Set read and write metadata keys as they are (keys are
// case-sensitive; the W3C propagators use lower-case keys). Set on a nil
// MetadataCarrier panics, as on a nil map; Inject allocates the metadata of
// a message that has none. Like the map it wraps, it is not safe for
// concurrent use with writers.
type MetadataCarrier message.Metadata

var _ propagation.TextMapCarrier = MetadataCarrier(nil)

// Get returns the value of key, or "" when the metadata has no such key.
func (c MetadataCarrier) Get(key string) string { return c[key] }

// Set stores value under key, replacing any value it had.
func (c MetadataCarrier) Set(key, value string) { c[key] = value }

// Keys returns the metadata keys, in no particular order.
func (c MetadataCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}
