package slstest

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"

	sls "github.com/aliyun/aliyun-log-go-sdk"
	"github.com/gogo/protobuf/proto"
)

// Protobuf building blocks for hand-made encodings (prefixed pb to keep them
// apart from other tests of the package).

func pbVarint(v uint64) []byte { return binary.AppendUvarint(nil, v) }

func pbKey(field, wire int) []byte { return pbVarint(uint64(field)<<3 | uint64(wire)) }

func pbCat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// pbBytes is a length-delimited field.
func pbBytes(field int, v []byte) []byte {
	return pbCat(pbKey(field, wireBytes), pbVarint(uint64(len(v))), v)
}

// pbUint is a varint field.
func pbUint(field int, v uint64) []byte { return pbCat(pbKey(field, wireVarint), pbVarint(v)) }

func pbFixed32(field int, v uint32) []byte {
	return pbCat(pbKey(field, wireFixed32), binary.LittleEndian.AppendUint32(nil, v))
}

func pbFixed64(field int, v uint64) []byte {
	return pbCat(pbKey(field, wireFixed64), binary.LittleEndian.AppendUint64(nil, v))
}

// pbGroup is a (deprecated) group field holding body.
func pbGroup(field int, body []byte) []byte {
	return pbCat(pbKey(field, wireStartGroup), body, pbKey(field, wireEndGroup))
}

// pbContent is an encoded LogContent (or LogTag: same shape).
func pbContent(k, v string) []byte { return pbCat(pbBytes(1, []byte(k)), pbBytes(2, []byte(v))) }

// pbLog is an encoded Log with a Time and the given extra fields.
func pbLog(extra ...[]byte) []byte {
	return pbCat(append([][]byte{pbUint(1, 1700000000)}, extra...)...)
}

// pbLogField wraps an encoded Log as LogGroup field 1.
func pbLogField(log []byte) []byte { return pbBytes(1, log) }

// sdkGroups are valid LogGroups built with the SDK's own types.
func sdkGroups() map[string]*sls.LogGroup {
	content := func(k, v string) *sls.LogContent {
		return &sls.LogContent{Key: proto.String(k), Value: proto.String(v)}
	}
	many := &sls.LogGroup{}
	for i := range 1000 {
		many.Logs = append(many.Logs, &sls.Log{Time: proto.Uint32(uint32(i)), Contents: []*sls.LogContent{content("i", strings.Repeat("x", i%50))}})
	}
	binaryValue := string([]byte{0x00, 0xff, 0xfe, 0x80, 0x0a, 0x12, 0x00})
	return map[string]*sls.LogGroup{
		"empty":     {},
		"one log":   {Logs: []*sls.Log{{Time: proto.Uint32(1)}}},
		"zero time": {Logs: []*sls.Log{{Time: proto.Uint32(0), Contents: []*sls.LogContent{content("", "")}}}},
		"contents":  {Logs: []*sls.Log{{Time: proto.Uint32(1700000000), Contents: []*sls.LogContent{content("a", "1"), content("b", "2")}}}},
		"time ns":   {Logs: []*sls.Log{{Time: proto.Uint32(1700000000), TimeNs: proto.Uint32(999999999)}}},
		"envelope": {
			Logs:        []*sls.Log{{Time: proto.Uint32(1), Contents: []*sls.LogContent{content("k", "v")}}},
			Category:    proto.String("cat"),
			Topic:       proto.String("topic"),
			Source:      proto.String("10.0.0.1"),
			MachineUUID: proto.String("uuid"),
			LogTags:     []*sls.LogTag{{Key: proto.String("__tag__:a"), Value: proto.String("1")}, {Key: proto.String("b"), Value: proto.String("")}},
		},
		"binary values": {Logs: []*sls.Log{{Time: proto.Uint32(^uint32(0)), Contents: []*sls.LogContent{content(binaryValue, binaryValue)}}},
			Topic: proto.String(binaryValue), LogTags: []*sls.LogTag{{Key: proto.String(binaryValue), Value: proto.String(binaryValue)}}},
		"large value": {Logs: []*sls.Log{{Time: proto.Uint32(1), Contents: []*sls.LogContent{content("big", strings.Repeat("y", 300000))}}}},
		"many logs":   many,
	}
}

// invalidEncodings are hand-made encodings, each tagged with whether the
// SDK's generated Unmarshal accepts it.
func handMadeEncodings() []struct {
	name  string
	b     []byte
	valid bool
} {
	deep := pbCat(bytes.Repeat(pbKey(9, wireStartGroup), 100000), bytes.Repeat(pbKey(9, wireEndGroup), 100000))
	return []struct {
		name  string
		b     []byte
		valid bool
	}{
		{"unknown fields of every wire type in the group", pbCat(pbLogField(pbLog()), pbUint(7, 5), pbFixed64(8, 1), pbBytes(9, []byte("x")), pbFixed32(10, 2), pbGroup(11, pbUint(1, 1))), true},
		{"unknown fields in a log", pbLogField(pbLog(pbUint(3, 1), pbFixed64(5, 2), pbBytes(6, nil), pbGroup(7, nil))), true},
		{"unknown fields in a content", pbLogField(pbLog(pbBytes(2, pbCat(pbContent("k", "v"), pbUint(3, 1), pbFixed32(4, 1))))), true},
		{"unknown fields in a tag", pbBytes(6, pbCat(pbContent("k", "v"), pbBytes(3, []byte("z")))), true},
		{"huge unknown field number", pbCat(pbKey(1<<28, wireVarint), pbVarint(1)), true},
		{"nested groups", pbGroup(12, pbGroup(13, pbCat(pbGroup(14, pbFixed64(1, 1)), pbBytes(2, []byte("q"))))), true},
		{"group end of another field number", pbCat(pbKey(12, wireStartGroup), pbKey(13, wireEndGroup)), true},
		{"deeply nested groups", deep, true},
		{"repeated time", pbLogField(pbCat(pbUint(1, 1), pbUint(1, 2))), true},
		{"ten-byte varint time", pbLogField(pbCat(pbKey(1, wireVarint), []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})), true},
		{"redundant varint length", pbCat(pbKey(3, wireBytes), []byte{0x80, 0x00}), true},

		{"log missing time", pbLogField(pbBytes(2, pbContent("k", "v"))), false},
		{"empty log", pbLogField(nil), false},
		{"content missing key", pbLogField(pbLog(pbBytes(2, pbBytes(2, []byte("v"))))), false},
		{"content missing value", pbLogField(pbLog(pbBytes(2, pbBytes(1, []byte("k"))))), false},
		{"tag missing key", pbBytes(6, pbBytes(2, []byte("v"))), false},
		{"tag missing value", pbBytes(6, pbBytes(1, []byte("k"))), false},
		{"logs as varint", pbUint(1, 3), false},
		{"topic as varint", pbUint(3, 3), false},
		{"category as fixed32", pbFixed32(2, 3), false},
		{"tags as fixed64", pbFixed64(6, 3), false},
		{"time as bytes", pbLogField(pbBytes(1, []byte{1})), false},
		{"time as fixed32", pbLogField(pbFixed32(1, 1)), false},
		{"time ns as varint", pbLogField(pbLog(pbUint(4, 1))), false},
		{"contents as varint", pbLogField(pbLog(pbUint(2, 1))), false},
		{"content key as varint", pbLogField(pbLog(pbBytes(2, pbCat(pbUint(1, 1), pbBytes(2, nil))))), false},
		{"logs as group", pbGroup(1, nil), false},
		{"time as group", pbLogField(pbGroup(1, nil)), false},
		{"truncated key varint", []byte{0x80}, false},
		{"truncated length", []byte{0x0a}, false},
		{"truncated length varint", []byte{0x0a, 0x80}, false},
		{"truncated time varint", pbLogField(pbCat(pbKey(1, wireVarint), []byte{0x80})), false},
		{"overlong varint", pbCat(pbKey(7, wireVarint), bytes.Repeat([]byte{0xff}, 10), []byte{0x01}), false},
		{"length beyond end", pbCat(pbKey(1, wireBytes), pbVarint(5), pbUint(1, 1)), false},
		{"string length beyond end", pbCat(pbKey(3, wireBytes), pbVarint(100), []byte("abc")), false},
		{"huge length", pbCat(pbKey(3, wireBytes), pbVarint(1<<63)), false},
		{"negative length", pbCat(pbKey(1, wireBytes), pbVarint(^uint64(0))), false},
		{"truncated fixed32", pbCat(pbKey(10, wireFixed32), []byte{1, 2}), false},
		{"truncated fixed64", pbCat(pbKey(10, wireFixed64), []byte{1, 2, 3}), false},
		{"truncated time ns", pbLogField(pbCat(pbUint(1, 1), pbKey(4, wireFixed32), []byte{1})), false},
		{"field number zero", pbUint(0, 1), false},
		{"wire type 6", pbKey(7, 6), false},
		{"wire type 7", pbKey(7, 7), false},
		{"end group without start", pbKey(7, wireEndGroup), false},
		{"unterminated group", pbKey(7, wireStartGroup), false},
		{"unterminated nested group", pbCat(pbKey(7, wireStartGroup), pbKey(8, wireStartGroup), pbKey(8, wireEndGroup)), false},
		{"truncated fixed64 in group", pbCat(pbKey(7, wireStartGroup), pbKey(1, wireFixed64), []byte{1}), false},
		{"bad wire type in group", pbCat(pbKey(7, wireStartGroup), pbKey(1, 6), pbKey(7, wireEndGroup)), false},
		{"length beyond end in group", pbCat(pbKey(7, wireStartGroup), pbKey(1, wireBytes), pbVarint(9), pbKey(7, wireEndGroup)), false},
		{"deeply nested unterminated groups", bytes.Repeat(pbKey(9, wireStartGroup), 10<<20), false},
	}
}

// checkAgainstSDK fails t unless scanLogGroup and the SDK's generated
// Unmarshal agree on b: both accept it with the same number of logs, or both
// reject it. It returns whether b was accepted.
func checkAgainstSDK(t testing.TB, b []byte) bool {
	t.Helper()
	logs, err := scanLogGroup(b)
	var g sls.LogGroup
	sdkErr := g.Unmarshal(b)
	switch {
	case (err == nil) != (sdkErr == nil):
		t.Fatalf("scanLogGroup error %v, sls.LogGroup.Unmarshal error %v (input %d bytes %x)", err, sdkErr, len(b), truncateForLog(b))
	case err == nil && logs != len(g.Logs):
		t.Fatalf("scanLogGroup counts %d logs, sls.LogGroup.Unmarshal %d", logs, len(g.Logs))
	}
	return err == nil
}

func truncateForLog(b []byte) []byte {
	if len(b) > 64 {
		return b[:64]
	}
	return b
}

func TestScanLogGroupAgreesOnSDKGroups(t *testing.T) {
	for name, g := range sdkGroups() {
		t.Run(name, func(t *testing.T) {
			b, err := g.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			if !checkAgainstSDK(t, b) {
				t.Fatal("a group the SDK marshalled is rejected")
			}
			if logs, _ := scanLogGroup(b); logs != len(g.Logs) {
				t.Fatalf("scanLogGroup counts %d logs, the group has %d", logs, len(g.Logs))
			}
		})
	}
}

func TestScanLogGroupAgreesOnHandMadeEncodings(t *testing.T) {
	for _, c := range handMadeEncodings() {
		t.Run(c.name, func(t *testing.T) {
			if got := checkAgainstSDK(t, c.b); got != c.valid {
				t.Fatalf("accepted = %v, want %v", got, c.valid)
			}
		})
	}
}

// Every strict prefix of a valid group with a log in it is either another
// valid group (cut at a field boundary of the group) or rejected by both.
func TestScanLogGroupAgreesOnPrefixes(t *testing.T) {
	b, err := sdkGroups()["envelope"].Marshal()
	if err != nil {
		t.Fatal(err)
	}
	for i := range len(b) {
		checkAgainstSDK(t, b[:i])
	}
}

func TestAppendLogGroupListEntry(t *testing.T) {
	var list []byte
	var want sls.LogGroupList
	for _, size := range []int{0, 1, 127, 128, 16383, 16384, 300000} {
		g := &sls.LogGroup{Topic: proto.String(strings.Repeat("t", size))}
		if size == 0 {
			g = &sls.LogGroup{}
		}
		b, err := g.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		before := len(list)
		list = appendLogGroupListEntry(list, b)
		// PullLogs announces the sum of listEntrySize as x-log-bodyrawsize,
		// which the SDK checks exactly.
		if got := len(list) - before; got != listEntrySize(b) {
			t.Fatalf("entry of a %d-byte group takes %d bytes, listEntrySize says %d", len(b), got, listEntrySize(b))
		}
		want.LogGroups = append(want.LogGroups, g)
	}
	var got sls.LogGroupList
	if err := got.Unmarshal(list); err != nil {
		t.Fatal(err)
	}
	if len(got.LogGroups) != len(want.LogGroups) {
		t.Fatalf("decoded %d groups, want %d", len(got.LogGroups), len(want.LogGroups))
	}
	for i := range got.LogGroups {
		if got.LogGroups[i].GetTopic() != want.LogGroups[i].GetTopic() {
			t.Fatalf("group %d differs", i)
		}
	}
}
