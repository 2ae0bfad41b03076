package slspubsub

import (
	"bytes"
	"encoding/json"
	"maps"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/ThreeDotsLabs/watermill/message"
)

// mfMetadata reads metadata from fuzz bytes: pairs of a length byte and that
// many bytes, key then value. Reserved keys are left out (they map to SLS
// fields, which the fuzz target sets on its own).
func mfMetadata(b []byte) map[string]string {
	next := func() (string, bool) {
		if len(b) == 0 {
			return "", false
		}
		n := min(int(b[0]), len(b)-1)
		s := string(b[1 : 1+n])
		b = b[1+n:]
		return s, true
	}
	md := map[string]string{}
	for {
		k, ok := next()
		if !ok {
			return md
		}
		v, _ := next()
		if !strings.HasPrefix(k, MetadataReservedPrefix) {
			md[k] = v
		}
	}
}

func FuzzDefaultMarshalerRoundTrip(f *testing.F) {
	f.Add("0b9a9b0e-2f9d-4b4e-8e3a-4c1b1c1d1e1f", []byte(`{"order":1}`), []byte("\x04type\x07created\x00\x00"), "orders", "10.0.0.1", int64(1_700_000_000_123_456_789), "env", "prod")
	f.Add("", []byte(nil), []byte(nil), "", "", int64(0), "", "")
	f.Add("\xff", []byte{0xff, 0}, []byte("\x02k\xff\x03\"\\\n"), "t", "s", int64(-1), "k", "")
	f.Add("id", []byte("\u2028<>&"), []byte("\x01\x00\x01\x1f"), "\xff", "s", int64(5), "k", "v")
	f.Fuzz(func(t *testing.T, id string, payload, mdBytes []byte, topic, source string, timeNs int64, tagKey, tagValue string) {
		msg := message.NewMessage(id, payload)
		maps.Copy(msg.Metadata, mfMetadata(mdBytes))
		user := maps.Clone(msg.Metadata)

		// Any time SLS can hold, in a zone of its own.
		span := uint64(maxLogTime.Sub(minLogTime))
		ts := minLogTime.Add(time.Duration(uint64(timeNs) % span)).In(time.FixedZone("", int(timeNs%48)*1800))
		msg.Metadata[MetadataTime] = ts.Format(time.RFC3339Nano)
		if topic != "" {
			msg.Metadata[MetadataTopic] = topic
		}
		if source != "" {
			msg.Metadata[MetadataSource] = source
		}
		if tagKey != "" {
			msg.Metadata[MetadataTagPrefix+tagKey] = tagValue
		}
		// Read-only keys a received message carries are never written.
		msg.Metadata[MetadataShard] = "9"
		msg.Metadata[MetadataCursor] = "OTk5"
		msg.Metadata[MetadataMachineUUID] = "stale"

		rec, err := DefaultMarshaler{}.Marshal("store", msg)
		wantErr := !utf8.ValidString(topic) || !utf8.ValidString(source) ||
			(tagKey != "" && (!utf8.ValidString(tagKey) || !utf8.ValidString(tagValue)))
		if (err != nil) != wantErr {
			t.Fatalf("Marshal error %v, want error: %v", err, wantErr)
		}
		if err != nil {
			return
		}
		for _, c := range rec.Log.Contents {
			if !utf8.ValidString(c.Key) || !utf8.ValidString(c.Value) {
				t.Fatalf("content %q=%q is not valid UTF-8: SLS would reject it", c.Key, c.Value)
			}
		}

		g := mtViaProtobuf(t, rec, "")
		got, err := DefaultMarshaler{}.Unmarshal(mtReceived(g, 0, mtPosition))
		if err != nil {
			t.Fatalf("Unmarshal: %v", err)
		}
		if got.UUID != id {
			t.Errorf("UUID %q, want %q", got.UUID, id)
		}
		if got.Payload == nil || !bytes.Equal(got.Payload, payload) {
			t.Errorf("payload %q, want %q", got.Payload, payload)
		}
		if have := mtUserMetadata(got.Metadata); !maps.Equal(have, user) {
			t.Errorf("metadata %q, want %q", have, user)
		}
		wantSLS := message.Metadata{
			MetadataTime:   ts.UTC().Format(time.RFC3339Nano),
			MetadataShard:  "3",
			MetadataCursor: mtPosition.Cursor,
			MetadataIndex:  "7",
		}
		if topic != "" {
			wantSLS[MetadataTopic] = topic
		}
		if source != "" {
			wantSLS[MetadataSource] = source
		}
		if tagKey != "" {
			wantSLS[MetadataTagPrefix+tagKey] = tagValue
		}
		for k, v := range got.Metadata {
			if strings.HasPrefix(k, MetadataReservedPrefix) && wantSLS[k] != v {
				t.Errorf("metadata %s = %q, want %q", k, v, wantSLS[k])
			}
		}
		for k, v := range wantSLS {
			if got.Metadata[k] != v {
				t.Errorf("metadata %s = %q, want %q", k, got.Metadata[k], v)
			}
		}
	})
}

func FuzzJSONAppendString(f *testing.F) {
	for _, s := range mtJSONStrings {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := jsonAppendString(nil, s, false)
		if want := mtEncodingJSON(t, s); string(got) != want {
			t.Fatalf("jsonAppendString(%q) = %s, encoding/json: %s", s, got, want)
		}
		// Our scanner reads back what encoding/json reads back.
		obj := `{"k":` + string(got) + `}`
		var want map[string]string
		if err := json.Unmarshal([]byte(obj), &want); err != nil {
			t.Fatal(err)
		}
		var v string
		if err := jsonScanObject(obj, func(_, val string) error { v = val; return nil }); err != nil || v != want["k"] {
			t.Fatalf("jsonScanObject(%s) = %q, %v; want %q", obj, v, err, want["k"])
		}
		// Raw mode reads back the exact bytes.
		raw := `{"k":` + string(jsonAppendString(nil, s, true)) + `}`
		if err := jsonScanObject(raw, func(_, val string) error { v = val; return nil }); err != nil || v != s {
			t.Fatalf("raw: jsonScanObject(%q) = %q, %v; want %q", raw, v, err, s)
		}
	})
}

func FuzzJSONScanObject(f *testing.F) {
	for _, s := range []string{`{}`, `{"a":"b","a":"c"}`, `{"a":"\ud83d\ude42\u0000\/"}`, ` {"a" : "b"} `, `{"a":null}`, `null`, `{"a":"\ud800"}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := map[string]string{}
		err := jsonScanObject(s, func(k, v string) error { got[k] = v; return nil })
		var want map[string]string
		jsonErr := json.Unmarshal([]byte(s), &want)
		if !utf8.ValidString(s) {
			return // encoding/json replaces invalid bytes, we keep them
		}
		switch {
		case err == nil && jsonErr != nil:
			t.Fatalf("jsonScanObject accepts %q, encoding/json: %v", s, jsonErr)
		case err == nil && !maps.Equal(got, want):
			t.Fatalf("jsonScanObject(%q) = %q, encoding/json: %q", s, got, want)
		case err != nil && jsonErr == nil && !strings.Contains(s, "null"):
			// encoding/json also takes null (for the map or a value); we want
			// strings only.
			t.Fatalf("jsonScanObject(%q): %v; encoding/json accepts it: %q", s, err, want)
		}
	})
}
