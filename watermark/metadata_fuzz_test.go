package watermark

import (
	"strconv"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

// FuzzFromMessage feeds arbitrary metadata values (they come from the network
// when a message crosses a broker) to FromMessage: it must not panic, must
// accept exactly the decimal int64 values, and SetOnMessage must round-trip
// what it accepts.
func FuzzFromMessage(f *testing.F) {
	for _, s := range []string{"0", "1700000000123456789", "-1", "9223372036854775807", "", "1e9", " 1", "+5"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		msg := message.NewMessage("1", nil)
		msg.Metadata.Set(MetadataKey, s)
		wm, ok := FromMessage(msg)
		ns, err := strconv.ParseInt(s, 10, 64)
		if ok != (err == nil) {
			t.Fatalf("FromMessage(%q) ok=%v, ParseInt err=%v", s, ok, err)
		}
		if !ok {
			return
		}
		if wm.UnixNano() != ns {
			t.Fatalf("FromMessage(%q) = %d", s, wm.UnixNano())
		}
		out := message.NewMessage("2", nil)
		SetOnMessage(out, wm)
		if back, ok := FromMessage(out); !ok || !back.Equal(time.Unix(0, ns)) {
			t.Fatalf("round trip of %q: %v %v", s, back, ok)
		}
	})
}
