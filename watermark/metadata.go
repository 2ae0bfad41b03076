package watermark

import (
	"strconv"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

// MetadataKey is the metadata key under which a delivered message carries the
// watermark of its subscriber at delivery: decimal unix nanoseconds (for
// example "1700000000123456789"). It starts with slspubsub's reserved prefix
// "sls.", so slspubsub's DefaultMarshaler does not publish it and
// StripReservedMetadata removes it: a watermark describes the stream a message
// was read from, not the one it is written to.
const MetadataKey = "sls.watermark"

// FromMessage returns the watermark carried by msg under MetadataKey, and
// false when the message carries none or the value is not decimal
// nanoseconds.
func FromMessage(msg *message.Message) (time.Time, bool) {
	if msg == nil {
		return time.Time{}, false
	}
	s, ok := msg.Metadata[MetadataKey]
	if !ok {
		return time.Time{}, false
	}
	ns, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, false
	}
	return time.Unix(0, ns), true
}

// SetOnMessage sets wm on msg under MetadataKey, replacing any value. The
// Tracker's Stamp does the same with its current watermark without formatting
// it again for every message.
func SetOnMessage(msg *message.Message, wm time.Time) {
	if msg.Metadata == nil {
		msg.Metadata = make(message.Metadata, 1)
	}
	msg.Metadata[MetadataKey] = formatNanos(wm.UnixNano())
}

func formatNanos(ns int64) string { return strconv.FormatInt(ns, 10) }
