package slspubsub

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	sls "github.com/aliyun/aliyun-log-go-sdk"
	"github.com/google/uuid"
)

// mtViaProtobuf writes rec as the only log of a LogGroup into SLS's protobuf
// with the SDK's own types, reads it back and returns the group, as the
// Subscriber would see it after a PutLogs and a PullLogs. It fails the test
// when the SDK cannot encode or decode the group.
func mtViaProtobuf(t testing.TB, rec Record, machineUUID string) *LogGroup {
	t.Helper()
	sec := uint32(rec.Log.Time.Unix())
	ns := uint32(rec.Log.Time.Nanosecond())
	in := &sls.LogGroup{
		Topic:       &rec.Topic,
		Source:      &rec.Source,
		MachineUUID: &machineUUID,
		Logs:        []*sls.Log{{Time: &sec, TimeNs: &ns}},
	}
	for _, c := range rec.Log.Contents {
		in.Logs[0].Contents = append(in.Logs[0].Contents, &sls.LogContent{Key: &c.Key, Value: &c.Value})
	}
	for _, tag := range rec.Tags {
		in.LogTags = append(in.LogTags, &sls.LogTag{Key: &tag.Key, Value: &tag.Value})
	}
	wire, err := in.Marshal()
	if err != nil {
		t.Fatalf("sls.LogGroup.Marshal: %v", err)
	}
	var out sls.LogGroup
	if err := out.Unmarshal(wire); err != nil {
		t.Fatalf("sls.LogGroup.Unmarshal: %v", err)
	}
	g := &LogGroup{Topic: out.GetTopic(), Source: out.GetSource(), MachineUUID: out.GetMachineUUID()}
	for _, tag := range out.LogTags {
		g.Tags = append(g.Tags, Content{Key: tag.GetKey(), Value: tag.GetValue()})
	}
	for _, l := range out.Logs {
		log := Log{Time: time.Unix(int64(l.GetTime()), int64(l.GetTimeNs())).UTC()}
		for _, c := range l.Contents {
			log.Contents = append(log.Contents, Content{Key: c.GetKey(), Value: c.GetValue()})
		}
		g.Logs = append(g.Logs, log)
	}
	return g
}

var mtPosition = Position{Shard: 3, Cursor: "MTYwMDAwMDAwMDAwMDAwMDAwMQ==", Index: 7}

func mtReceived(g *LogGroup, i int, p Position) ReceivedLog {
	return ReceivedLog{Project: "proj", Logstore: "store", Group: g, Log: &g.Logs[i], Position: p}
}

// mtRoundTrip marshals msg, passes it through the SDK's protobuf and
// unmarshals it.
func mtRoundTrip(t testing.TB, msg *message.Message) (Record, *message.Message) {
	t.Helper()
	var m DefaultMarshaler
	rec, err := m.Marshal("store", msg)
	if err != nil {
		t.Fatalf("Marshal: %v", err)
	}
	g := mtViaProtobuf(t, rec, "")
	got, err := m.Unmarshal(mtReceived(g, 0, mtPosition))
	if err != nil {
		t.Fatalf("Unmarshal: %v", err)
	}
	return rec, got
}

func mtMessage(id string, payload []byte, md map[string]string) *message.Message {
	msg := message.NewMessage(id, payload)
	maps.Copy(msg.Metadata, md)
	return msg
}

// mtUserMetadata is md without the reserved keys.
func mtUserMetadata(md message.Metadata) message.Metadata {
	out := maps.Clone(md)
	if out == nil {
		out = message.Metadata{}
	}
	StripReservedMetadata(out)
	return out
}

func TestDefaultMarshalerRoundTrip(t *testing.T) {
	tests := []struct {
		name    string
		uuid    string
		payload []byte
		md      map[string]string
	}{
		{name: "plain", uuid: uuid.NewString(), payload: []byte(`{"a":1}`), md: map[string]string{"k": "v"}},
		{name: "no metadata", uuid: "id", payload: []byte("hello")},
		{name: "nil payload", uuid: "id", payload: nil},
		{name: "empty payload", uuid: "id", payload: []byte{}},
		{name: "empty uuid", uuid: "", payload: []byte("x")},
		{name: "binary payload", uuid: "id", payload: []byte{0, 0xff, 0xfe, 'a', 0x80}},
		{name: "NUL and control bytes in UTF-8 payload", uuid: "id", payload: []byte("a\x00b\x01\n\t\u2028")},
		{name: "payload that looks like base64", uuid: "id", payload: []byte("AAEC")},
		{name: "invalid UTF-8 uuid", uuid: "\xff\xfeid", payload: []byte("x")},
		{name: "empty values and odd keys", uuid: "id", payload: []byte("p"), md: map[string]string{
			"":            "",
			"empty":       "",
			" ":           "space",
			"wm_uuid":     "not the uuid",
			"wm_payload":  "not the payload",
			`"{}\`:        `\"}`,
			"ключ":        "значение 🙂",
			"ctl\x00\x1f": "\b\f\n\r\t\u2028\u2029<>&",
			"sls":         "not reserved",
			"sls_topic":   "not reserved either",
		}},
		{name: "invalid UTF-8 metadata", uuid: "id", payload: []byte("p"), md: map[string]string{
			"ok": "v", "bad\xff": "x", "v": "\xc3\x28",
		}},
		{name: "many keys", uuid: "id", payload: []byte("p"), md: func() map[string]string {
			m := map[string]string{}
			for i := range 100 {
				m["key"+strconv.Itoa(i)] = strings.Repeat("v", i)
			}
			return m
		}()},
		{name: "SLS fields", uuid: "id", payload: []byte("p"), md: map[string]string{
			MetadataTopic:              "topic",
			MetadataSource:             "10.0.0.1",
			MetadataTime:               "2024-05-06T07:08:09.123456789Z",
			MetadataTagPrefix + "env":  "prod",
			MetadataTagPrefix + "zone": "",
			"user":                     "kept",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg := mtMessage(tt.uuid, tt.payload, tt.md)
			_, got := mtRoundTrip(t, msg)
			if got.UUID != msg.UUID {
				t.Errorf("UUID = %q, want %q", got.UUID, msg.UUID)
			}
			if got.Payload == nil || !bytes.Equal(got.Payload, msg.Payload) {
				t.Errorf("Payload = %#v, want %#v (never nil)", got.Payload, msg.Payload)
			}
			if want, have := mtUserMetadata(msg.Metadata), mtUserMetadata(got.Metadata); !maps.Equal(want, have) {
				t.Errorf("metadata without reserved keys:\n got %q\nwant %q", have, want)
			}
			for k, v := range msg.Metadata {
				if strings.HasPrefix(k, MetadataReservedPrefix) && v != "" && got.Metadata[k] != v {
					t.Errorf("metadata %s = %q, want %q", k, got.Metadata[k], v)
				}
			}
		})
	}
}

func TestDefaultMarshalerMarshalFormat(t *testing.T) {
	msg := mtMessage("id-1", []byte("payload"), map[string]string{
		"b": "2", "a": "1<&>",
		MetadataTopic:                "t",
		MetadataSource:               "s",
		MetadataTime:                 "2024-05-06T09:08:09.5+02:00",
		MetadataTagPrefix + "z":      "26",
		MetadataTagPrefix + "a":      "1",
		MetadataTagPrefix + "m":      "13",
		MetadataShard:                "1",
		MetadataCursor:               "MTA=",
		MetadataIndex:                "0",
		MetadataMachineUUID:          "machine",
		MetadataReservedPrefix + "x": "unknown reserved key",
	})
	rec, err := DefaultMarshaler{}.Marshal("store", msg)
	if err != nil {
		t.Fatal(err)
	}
	want := Record{
		Log: Log{
			Time: time.Date(2024, 5, 6, 7, 8, 9, 500_000_000, time.UTC),
			Contents: []Content{
				{Key: "wm_uuid", Value: "id-1"},
				{Key: "wm_payload", Value: "payload"},
				{Key: "wm_metadata", Value: `{"a":"1<&>","b":"2"}`},
			},
		},
		Topic:  "t",
		Source: "s",
		Tags:   []Content{{Key: "a", Value: "1"}, {Key: "m", Value: "13"}, {Key: "z", Value: "26"}},
	}
	if !rec.Log.Time.Equal(want.Log.Time) || rec.Topic != want.Topic || rec.Source != want.Source ||
		!slices.Equal(rec.Tags, want.Tags) || !slices.Equal(rec.Log.Contents, want.Log.Contents) {
		t.Errorf("Marshal =\n%+v\nwant\n%+v", rec, want)
	}
}

func TestDefaultMarshalerMarshalBase64(t *testing.T) {
	msg := mtMessage("\xffid", []byte{0xff, 0}, map[string]string{"k\xff": "v"})
	rec, err := DefaultMarshaler{}.Marshal("store", msg)
	if err != nil {
		t.Fatal(err)
	}
	want := []Content{
		{Key: "wm_uuid", Value: base64.StdEncoding.EncodeToString([]byte("\xffid"))},
		{Key: "wm_uuid_encoding", Value: "base64"},
		{Key: "wm_payload", Value: base64.StdEncoding.EncodeToString([]byte{0xff, 0})},
		{Key: "wm_payload_encoding", Value: "base64"},
		{Key: "wm_metadata", Value: base64.StdEncoding.EncodeToString([]byte("{\"k\xff\":\"v\"}"))},
		{Key: "wm_metadata_encoding", Value: "base64"},
	}
	if !slices.Equal(rec.Log.Contents, want) {
		t.Errorf("contents =\n%q\nwant\n%q", rec.Log.Contents, want)
	}
}

func TestDefaultMarshalerMarshalTimeNow(t *testing.T) {
	before := time.Now()
	rec, err := DefaultMarshaler{}.Marshal("store", message.NewMessage("id", nil))
	after := time.Now()
	if err != nil {
		t.Fatal(err)
	}
	if rec.Log.Time.Before(before.Truncate(time.Nanosecond)) || rec.Log.Time.After(after) {
		t.Errorf("log time %v not between %v and %v", rec.Log.Time, before, after)
	}
	if rec.Log.Time.Location() != time.UTC {
		t.Errorf("log time location = %v, want UTC", rec.Log.Time.Location())
	}
}

func TestDefaultMarshalerMarshalErrors(t *testing.T) {
	tests := []struct {
		name string
		md   map[string]string
		want []string // substrings of the error
	}{
		{"time not RFC 3339", map[string]string{MetadataTime: "yesterday"}, []string{MetadataTime, `"yesterday"`}},
		{"time before 1970", map[string]string{MetadataTime: "1969-12-31T23:59:59Z"}, []string{MetadataTime, "1969-12-31T23:59:59Z"}},
		{"time after 2106", map[string]string{MetadataTime: "2106-02-07T06:28:16Z"}, []string{MetadataTime, "2106-02-07T06:28:16Z"}},
		{"topic not UTF-8", map[string]string{MetadataTopic: "\xff"}, []string{MetadataTopic, "UTF-8"}},
		{"source not UTF-8", map[string]string{MetadataSource: "\xff"}, []string{MetadataSource, "UTF-8"}},
		{"tag not UTF-8", map[string]string{MetadataTagPrefix + "k\xff": "v"}, []string{MetadataTagPrefix, "UTF-8"}},
		{"empty tag key", map[string]string{MetadataTagPrefix: "v"}, []string{MetadataTagPrefix, "empty tag key"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DefaultMarshaler{}.Marshal("store", mtMessage("id", nil, tt.md))
			if err == nil {
				t.Fatal("Marshal succeeded, want an error")
			}
			for _, s := range tt.want {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not contain %q", err, s)
				}
			}
		})
	}
	if _, err := (DefaultMarshaler{}).Marshal("store", nil); err == nil {
		t.Error("Marshal(nil) succeeded")
	}
	// The edges of the range are fine.
	for _, ts := range []string{"1970-01-01T00:00:00Z", "2106-02-07T06:28:15.999999999Z"} {
		if _, err := (DefaultMarshaler{}).Marshal("store", mtMessage("id", nil, map[string]string{MetadataTime: ts})); err != nil {
			t.Errorf("time %s: %v", ts, err)
		}
	}
}

func TestDefaultMarshalerUnmarshalSetsSLSFields(t *testing.T) {
	g := &LogGroup{
		Topic:       "topic",
		Source:      "10.1.2.3",
		MachineUUID: "machine-1",
		Tags:        []Content{{Key: "__receive_time__", Value: "1700000000"}, {Key: "env", Value: "prod"}},
		Logs: []Log{{
			Time:     time.Date(2024, 1, 2, 3, 4, 5, 600, time.FixedZone("X", 3600)),
			Contents: []Content{{Key: "wm_uuid", Value: "u"}, {Key: "wm_payload", Value: "p"}, {Key: "wm_metadata", Value: `{"k":"v"}`}},
		}},
	}
	pos := Position{Shard: 12, Cursor: "MTIzNA==", Index: 345}
	msg, err := DefaultMarshaler{}.Unmarshal(mtReceived(g, 0, pos))
	if err != nil {
		t.Fatal(err)
	}
	want := message.Metadata{
		"k":                                    "v",
		MetadataTopic:                          "topic",
		MetadataSource:                         "10.1.2.3",
		MetadataMachineUUID:                    "machine-1",
		MetadataTime:                           "2024-01-02T02:04:05.0000006Z",
		MetadataTagPrefix + "__receive_time__": "1700000000",
		MetadataTagPrefix + "env":              "prod",
		MetadataShard:                          "12",
		MetadataCursor:                         "MTIzNA==",
		MetadataIndex:                          "345",
	}
	if !maps.Equal(msg.Metadata, want) {
		t.Errorf("metadata =\n%q\nwant\n%q", msg.Metadata, want)
	}
	got, err := PositionFromMessage(msg)
	if err != nil || got != pos {
		t.Errorf("PositionFromMessage = %v, %v; want %v", got, err, pos)
	}
	f, err := LogFieldsFromMessage(msg)
	if err != nil {
		t.Fatal(err)
	}
	if !f.Time.Equal(g.Logs[0].Time) || f.Topic != "topic" || f.Source != "10.1.2.3" || f.MachineUUID != "machine-1" ||
		!maps.Equal(f.Tags, map[string]string{"__receive_time__": "1700000000", "env": "prod"}) {
		t.Errorf("LogFieldsFromMessage = %+v", f)
	}

	// Empty group fields are not set; reserved keys smuggled into
	// wm_metadata by another writer do not override the real ones.
	g2 := &LogGroup{Logs: []Log{{Time: time.Unix(1, 0), Contents: []Content{
		{Key: "wm_uuid", Value: "u"},
		{Key: "wm_metadata", Value: `{"sls.shard":"99","sls.topic":"fake","x":"y"}`},
	}}}}
	msg, err = DefaultMarshaler{}.Unmarshal(mtReceived(g2, 0, pos))
	if err != nil {
		t.Fatal(err)
	}
	want = message.Metadata{
		"x": "y", MetadataTime: "1970-01-01T00:00:01Z",
		MetadataShard: "12", MetadataCursor: "MTIzNA==", MetadataIndex: "345",
	}
	if !maps.Equal(msg.Metadata, want) {
		t.Errorf("metadata =\n%q\nwant\n%q", msg.Metadata, want)
	}
	if msg.Payload == nil || len(msg.Payload) != 0 {
		t.Errorf("payload of a log without wm_payload = %#v, want empty non-nil", msg.Payload)
	}
}

func TestDefaultMarshalerRepublishDropsReadOnlyKeys(t *testing.T) {
	// A message read from one logstore and published to another.
	g := &LogGroup{Topic: "t", MachineUUID: "m", Tags: []Content{{Key: "env", Value: "prod"}}, Logs: []Log{{
		Time: time.Unix(1700000000, 5), Contents: []Content{{Key: "level", Value: "info"}},
	}}}
	read, err := DefaultMarshaler{}.Unmarshal(mtReceived(g, 0, mtPosition))
	if err != nil {
		t.Fatal(err)
	}
	rec, err := DefaultMarshaler{}.Marshal("other", read)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range rec.Log.Contents {
		for _, k := range []string{MetadataShard, MetadataCursor, MetadataIndex, MetadataMachineUUID} {
			if strings.Contains(c.Value, k) {
				t.Errorf("content %s = %q carries %s", c.Key, c.Value, k)
			}
		}
	}
	if rec.Topic != "t" || !slices.Equal(rec.Tags, g.Tags) || !rec.Log.Time.Equal(g.Logs[0].Time) {
		t.Errorf("record %+v does not keep topic, tags and time of %+v", rec, g)
	}
	again, err := DefaultMarshaler{}.Unmarshal(mtReceived(mtViaProtobuf(t, rec, ""), 0, Position{Shard: 0, Cursor: "MQ==", Index: 0}))
	if err != nil {
		t.Fatal(err)
	}
	if again.UUID != read.UUID || !bytes.Equal(again.Payload, read.Payload) {
		t.Errorf("republished message %s %q, want %s %q", again.UUID, again.Payload, read.UUID, read.Payload)
	}
	if p, _ := PositionFromMessage(again); p.Cursor != "MQ==" || again.Metadata[MetadataMachineUUID] != "" {
		t.Errorf("republished message has stale position or machine uuid: %q", again.Metadata)
	}
}

func TestDefaultMarshalerUnmarshalForeign(t *testing.T) {
	g := &LogGroup{
		Topic:  "nginx",
		Source: "10.0.0.9",
		Tags:   []Content{{Key: "__hostname__", Value: "web-1"}},
		Logs: []Log{{
			Time: time.Date(2024, 3, 4, 5, 6, 7, 890, time.UTC),
			Contents: []Content{
				{Key: "method", Value: "GET"},
				{Key: "dup", Value: "first"},
				{Key: "path", Value: `/a?b=<c>&d="e"`},
				{Key: "dup", Value: "last"},
				{Key: "empty", Value: ""},
				{Key: "bad", Value: "\xff"},
			},
		}},
	}
	pos := Position{Shard: 2, Cursor: "MTYwMDAwMDAwMDAwMDAwMDAwMQ==", Index: 4}
	msg, err := DefaultMarshaler{}.Unmarshal(mtReceived(g, 0, pos))
	if err != nil {
		t.Fatal(err)
	}
	wantPayload := `{"method":"GET","path":"/a?b=<c>&d=\"e\"","dup":"last","empty":"","bad":"\ufffd"}`
	if string(msg.Payload) != wantPayload {
		t.Errorf("payload =\n%s\nwant\n%s", msg.Payload, wantPayload)
	}
	wantUUID := uuid.NewSHA1(uuid.NameSpaceURL, []byte("sls://proj/store/2/MTYwMDAwMDAwMDAwMDAwMDAwMQ==/4")).String()
	if msg.UUID != wantUUID {
		t.Errorf("UUID = %s, want %s", msg.UUID, wantUUID)
	}
	wantMD := message.Metadata{
		MetadataTopic:                      "nginx",
		MetadataSource:                     "10.0.0.9",
		MetadataTime:                       "2024-03-04T05:06:07.00000089Z",
		MetadataTagPrefix + "__hostname__": "web-1",
		MetadataShard:                      "2",
		MetadataCursor:                     pos.Cursor,
		MetadataIndex:                      "4",
	}
	if !maps.Equal(msg.Metadata, wantMD) {
		t.Errorf("metadata =\n%q\nwant\n%q", msg.Metadata, wantMD)
	}

	// Redelivery: same UUID. Any other position: another UUID.
	again, _ := DefaultMarshaler{}.Unmarshal(mtReceived(g, 0, pos))
	if again.UUID != msg.UUID {
		t.Errorf("redelivered UUID %s != %s", again.UUID, msg.UUID)
	}
	seen := map[string]string{msg.UUID: "original"}
	for name, in := range map[string]ReceivedLog{
		"project":  {Project: "proj2", Logstore: "store", Position: pos},
		"logstore": {Project: "proj", Logstore: "store2", Position: pos},
		"shard":    {Project: "proj", Logstore: "store", Position: Position{Shard: 3, Cursor: pos.Cursor, Index: 4}},
		"cursor":   {Project: "proj", Logstore: "store", Position: Position{Shard: 2, Cursor: "MQ==", Index: 4}},
		"index":    {Project: "proj", Logstore: "store", Position: Position{Shard: 2, Cursor: pos.Cursor, Index: 5}},
	} {
		in.Group, in.Log = g, &g.Logs[0]
		m, err := DefaultMarshaler{}.Unmarshal(in)
		if err != nil {
			t.Fatal(err)
		}
		if prev, dup := seen[m.UUID]; dup {
			t.Errorf("other %s gives the UUID of %s", name, prev)
		}
		seen[m.UUID] = name
	}
}

func TestAppendContentsJSON(t *testing.T) {
	tests := []struct {
		name     string
		contents []Content
	}{
		{"none", nil},
		{"one", []Content{{"k", "v"}}},
		{"escapes", []Content{{"\"\\", "\x00\x1f\x7f"}, {"<html>", "&amp;"}, {"\u2028", "\u2029"}, {"\xff", "a\xc3"}}},
		{"duplicates", []Content{{"a", "1"}, {"b", "2"}, {"a", "3"}, {"a", "4"}, {"c", ""}}},
		{"many duplicates", func() (cs []Content) {
			for i := range 300 {
				cs = append(cs, Content{Key: "k" + strconv.Itoa(i%70), Value: strconv.Itoa(i)})
			}
			return cs
		}()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := appendContentsJSON(nil, tt.contents)
			var m map[string]string
			if err := json.Unmarshal(got, &m); err != nil {
				t.Fatalf("not JSON: %v: %s", err, got)
			}
			want := map[string]string{}
			var order []string
			for _, c := range tt.contents {
				k := strings.ToValidUTF8(c.Key, "\uFFFD")
				want[k] = strings.ToValidUTF8(c.Value, "\uFFFD")
				order = slices.DeleteFunc(order, func(s string) bool { return s == k })
				order = append(order, k)
			}
			if !maps.Equal(m, want) {
				t.Errorf("decoded %q, want %q", m, want)
			}
			// Each key once, at its last place.
			var keys []string
			if err := jsonScanObject(string(got), func(k, _ string) error { keys = append(keys, k); return nil }); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(keys, order) && !(len(keys) == 0 && len(order) == 0) {
				t.Errorf("keys in order %q, want %q", keys, order)
			}
		})
	}
}

// mtEncodingJSON is encoding/json's encoding of s with SetEscapeHTML(false).
func mtEncodingJSON(t testing.TB, s string) string {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(s); err != nil {
		t.Fatal(err)
	}
	return strings.TrimSuffix(buf.String(), "\n")
}

var mtJSONStrings = []string{
	"", "plain", `"quoted"`, `back\slash`, "/slash",
	"\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f",
	"\x10\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1a\x1b\x1c\x1d\x1e\x1f\x7f",
	"<script>&amp;</script>", "\u2028\u2029", "é漢字🙂",
	"\xff", "a\xffb", "\xc3\x28", "\xe2\x82", "\xed\xa0\x80", "\xf4\x90\x80\x80", "🙂"[:3],
	"\ufffd", "mixed \"\\\n<\u2028\xfe>",
}

func TestJSONAppendStringMatchesEncodingJSON(t *testing.T) {
	for _, s := range mtJSONStrings {
		got := string(jsonAppendString(nil, s, false))
		if want := mtEncodingJSON(t, s); got != want {
			t.Errorf("jsonAppendString(%q) = %s, want %s", s, got, want)
		}
	}
	for b := range 256 {
		s := string([]byte{'x', byte(b), 'y'})
		if got, want := string(jsonAppendString(nil, s, false)), mtEncodingJSON(t, s); got != want {
			t.Errorf("jsonAppendString(%q) = %s, want %s", s, got, want)
		}
	}
}

func TestJSONScanObject(t *testing.T) {
	valid := []string{
		`{}`, ` { } `, `{"a":"b"}`, "{\n\t\"a\" : \"b\" ,\r\n \"c\":\"\"}",
		`{"esc":"\"\\\/\b\f\n\r\t\u0041\u00e9\u2028\ud83d\ude42"}`,
		`{"lone high":"\ud800x","lone low":"\udc00","high high":"\ud800\ud800","upper":"\u00C9"}`,
		`{"a":"1","a":"2"}`, `{"<":"\u003c\u003e\u0026"}`,
	}
	for _, s := range valid {
		var want map[string]string
		if err := json.Unmarshal([]byte(s), &want); err != nil {
			t.Fatalf("bad test input %s: %v", s, err)
		}
		got := map[string]string{}
		if err := jsonScanObject(s, func(k, v string) error { got[k] = v; return nil }); err != nil {
			t.Errorf("jsonScanObject(%s): %v", s, err)
			continue
		}
		if !maps.Equal(got, want) {
			t.Errorf("jsonScanObject(%s) = %q, want %q", s, got, want)
		}
	}
	invalid := []string{
		``, ` `, `[]`, `"a"`, `{`, `{"a"}`, `{"a":}`, `{"a":1}`, `{"a":null}`, `{"a":"b",}`, `{"a":"b"`,
		`{"a":"b"}x`, `{"a":"b" "c":"d"}`, `{a:"b"}`, "{\"a\":\"\x01\"}", `{"a":"\x"}`, `{"a":"\u12"}`,
		`{"a":"\u12g4"}`, `{"a":"b}`, `{"a":"\`, `{"a":"\"}`, `{"a":"b"}}`,
	}
	for _, s := range invalid {
		if err := jsonScanObject(s, func(k, v string) error { return nil }); err == nil {
			t.Errorf("jsonScanObject(%q) succeeded, want an error", s)
		}
	}
	// Raw bytes are kept (the base64 metadata form depends on it).
	var got string
	if err := jsonScanObject("{\"k\":\"\xff\\n\xfe\"}", func(_, v string) error { got = v; return nil }); err != nil || got != "\xff\n\xfe" {
		t.Errorf("raw bytes: got %q, %v", got, err)
	}
	// An error of yield stops the scan and is returned as it is.
	stop := errors.New("stop")
	calls := 0
	err := jsonScanObject(`{"a":"1","b":"2"}`, func(k, v string) error { calls++; return stop })
	if err != stop || calls != 1 {
		t.Errorf("yield error: got %v after %d calls", err, calls)
	}
}

func TestDefaultMarshalerUnmarshalErrors(t *testing.T) {
	tests := []struct {
		name     string
		contents []Content
		key      string
	}{
		{"payload not base64", []Content{{"wm_uuid", "u"}, {"wm_payload", "!!"}, {"wm_payload_encoding", "base64"}}, "wm_payload"},
		{"unknown payload encoding", []Content{{"wm_uuid", "u"}, {"wm_payload", "x"}, {"wm_payload_encoding", "gzip"}}, "wm_payload"},
		{"uuid not base64", []Content{{"wm_uuid", "!!"}, {"wm_uuid_encoding", "base64"}}, "wm_uuid"},
		{"metadata not JSON", []Content{{"wm_uuid", "u"}, {"wm_metadata", "{"}}, "wm_metadata"},
		{"metadata not strings", []Content{{"wm_uuid", "u"}, {"wm_metadata", `{"a":1}`}}, "wm_metadata"},
		{"metadata not base64", []Content{{"wm_uuid", "u"}, {"wm_metadata", "{}"}, {"wm_metadata_encoding", "base64"}}, "wm_metadata"},
	}
	pos := Position{Shard: 1, Cursor: "NDI=", Index: 9}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := &LogGroup{Logs: []Log{{Time: time.Unix(1, 0), Contents: tt.contents}}}
			msg, err := DefaultMarshaler{}.Unmarshal(mtReceived(g, 0, pos))
			if err == nil {
				t.Fatalf("Unmarshal = %v, want an error", msg)
			}
			var ue *UnmarshalError
			if !errors.As(err, &ue) || ue.Key != tt.key || ue.Position != pos || ue.Logstore != "store" || ue.Project != "proj" {
				t.Fatalf("error %#v, want an *UnmarshalError for key %s at %v", err, tt.key, pos)
			}
			for _, s := range []string{tt.key, pos.String(), "proj/store"} {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not name %q", err, s)
				}
			}
		})
	}
	if _, err := (DefaultMarshaler{}).Unmarshal(ReceivedLog{Position: pos}); err == nil || !strings.Contains(err.Error(), pos.String()) {
		t.Errorf("nil group: error %v", err)
	}
}

func TestForeignUUID(t *testing.T) {
	long := strings.Repeat("p", 300) // beyond the stack buffer
	for _, in := range []struct {
		project, logstore string
		p                 Position
	}{
		{"proj", "store", mtPosition},
		{"", "", Position{}},
		{long, long, Position{Shard: 1 << 40, Cursor: "LTE=", Index: 123456}},
	} {
		name := "sls://" + in.project + "/" + in.logstore + "/" + strconv.Itoa(in.p.Shard) + "/" + in.p.Cursor + "/" + strconv.Itoa(in.p.Index)
		want := uuid.NewSHA1(uuid.NameSpaceURL, []byte(name)).String()
		if got := foreignUUID(in.project, in.logstore, in.p); got != want {
			t.Errorf("foreignUUID(%.20s...) = %s, want %s", name, got, want)
		}
	}
}

func TestStripReservedMetadata(t *testing.T) {
	md := message.Metadata{"a": "1", "sls.topic": "t", "sls.tag.x": "y", "sls.other": "", "sls": "kept", "SLS.x": "kept"}
	StripReservedMetadata(md)
	if want := (message.Metadata{"a": "1", "sls": "kept", "SLS.x": "kept"}); !maps.Equal(md, want) {
		t.Errorf("got %q, want %q", md, want)
	}
	StripReservedMetadata(nil) // no panic
}

// mtBenchGroup is a LogGroup of foreign logs of about 200 bytes each, with
// the tags SLS adds.
func mtBenchGroup() *LogGroup {
	g := &LogGroup{
		Topic: "access", Source: "10.0.0.1",
		Tags: []Content{{Key: "__receive_time__", Value: "1700000000"}, {Key: "__client_ip__", Value: "10.0.0.2"}},
	}
	for i := range 64 {
		g.Logs = append(g.Logs, Log{Time: time.Unix(1700000000, int64(i)), Contents: []Content{
			{Key: "ip", Value: "192.168.10.23"},
			{Key: "method", Value: "GET"},
			{Key: "path", Value: "/api/v1/users/12345/orders?page=2&size=50"},
			{Key: "status", Value: "200"},
			{Key: "bytes", Value: "5123"},
			{Key: "latency", Value: "12.5ms"},
			{Key: "ua", Value: "Mozilla/5.0 (X11; Linux x86_64) \"quoted\""},
			{Key: "time", Value: "2023-11-14T22:13:20.123Z"},
		}})
	}
	return g
}

func BenchmarkDefaultMarshalerMarshal(b *testing.B) {
	msg := mtMessage(uuid.NewString(), bytes.Repeat([]byte("x"), 200), map[string]string{
		"correlation_id": uuid.NewString(), "type": "order.created", MetadataTopic: "orders", MetadataTagPrefix + "env": "prod",
	})
	var m DefaultMarshaler
	b.ReportAllocs()
	for b.Loop() {
		if _, err := m.Marshal("store", msg); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

func BenchmarkDefaultMarshalerUnmarshalOwn(b *testing.B) {
	var m DefaultMarshaler
	rec, err := m.Marshal("store", mtMessage(uuid.NewString(), bytes.Repeat([]byte("x"), 200), map[string]string{
		"correlation_id": uuid.NewString(), "type": "order.created", MetadataTopic: "orders",
	}))
	if err != nil {
		b.Fatal(err)
	}
	g := &LogGroup{Topic: rec.Topic, Tags: mtBenchGroup().Tags, Logs: []Log{rec.Log}}
	in := mtReceived(g, 0, Position{Shard: 3, Cursor: "MTYwMDAwMDAwMDAwMDAwMDAwMQ==", Index: 200})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := m.Unmarshal(in); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "logs/s")
}

// BenchmarkDefaultMarshalerUnmarshalForeign measures a foreign log's
// message built the general way ("ReceivedLog") and the Subscriber's way,
// with what the logs of the group share computed once per group
// ("subscriber").
func BenchmarkDefaultMarshalerUnmarshalForeign(b *testing.B) {
	b.Run("ReceivedLog", func(b *testing.B) { benchUnmarshalForeign(b, false) })
	b.Run("subscriber", func(b *testing.B) { benchUnmarshalForeign(b, true) })
}

func benchUnmarshalForeign(b *testing.B, shared bool) {
	var m DefaultMarshaler
	g := mtBenchGroup()
	var a arena
	gs := newGroupShared(g, "3", "MTYwMDAwMDAwMDAwMDAwMDAwMQ==", &a)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		in := mtReceived(g, i%len(g.Logs), Position{Shard: 3, Cursor: "MTYwMDAwMDAwMDAwMDAwMDAwMQ==", Index: 200 + i%len(g.Logs)})
		if shared {
			in.shared = gs
		}
		if _, err := m.Unmarshal(in); err != nil {
			b.Fatal(err)
		}
		i++
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "logs/s")
}

func TestReceivedLogSetMetadata(t *testing.T) {
	// What a custom Unmarshaler does to make the helpers work.
	g := &LogGroup{Source: "src", Tags: []Content{{Key: "k", Value: "v"}}, Logs: []Log{{Time: time.Unix(1700000000, 42)}}}
	in := mtReceived(g, 0, mtPosition)
	msg := message.NewMessage("custom", []byte("x"))
	in.SetMetadata(msg.Metadata)
	p, err := PositionFromMessage(msg)
	if err != nil || p != mtPosition {
		t.Errorf("PositionFromMessage = %v, %v", p, err)
	}
	f, err := LogFieldsFromMessage(msg)
	if err != nil || f.Source != "src" || f.Topic != "" || !f.Time.Equal(g.Logs[0].Time) || f.Tags["k"] != "v" {
		t.Errorf("LogFieldsFromMessage = %+v, %v", f, err)
	}
}
