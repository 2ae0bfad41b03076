package slspubsub

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"slices"
	"time"
	"unsafe"
)

// This file is the protobuf codec for SLS LogGroups (log.proto of the SDK,
// proto2, package sls):
//
//	LogContent   { required string Key = 1; required string Value = 2; }
//	Log          { required uint32 Time = 1; repeated LogContent Contents = 2; optional fixed32 TimeNs = 4; }
//	LogTag       { required string Key = 1; required string Value = 2; }
//	LogGroup     { repeated Log Logs = 1; optional string Category = 2; optional string Topic = 3;
//	               optional string Source = 4; optional string MachineUUID = 5; repeated LogTag LogTags = 6; }
//	LogGroupList { repeated LogGroup LogGroups = 1; }
//
// The encoder writes exactly the bytes the SDK's gogo-generated Marshal
// writes for the same content; the decoder accepts exactly what the
// generated Unmarshal accepts, without copying strings and with O(1)
// allocations per call. Both are checked against the SDK by differential
// fuzzing (codec_fuzz_test.go).

// Protobuf wire types.
const (
	wireVarint     = 0
	wireFixed64    = 1
	wireBytes      = 2
	wireStartGroup = 3
	wireEndGroup   = 4
	wireFixed32    = 5
)

// Field keys (field number << 3 | wire type) the encoder writes; all fit in
// one byte.
const (
	keyLogGroupLogs  = 1<<3 | wireBytes
	keyCategory      = 2<<3 | wireBytes
	keyTopic         = 3<<3 | wireBytes
	keySource        = 4<<3 | wireBytes
	keyMachineUUID   = 5<<3 | wireBytes
	keyLogTags       = 6<<3 | wireBytes
	keyLogTime       = 1<<3 | wireVarint
	keyLogContents   = 2<<3 | wireBytes
	keyLogTimeNs     = 4<<3 | wireFixed32
	keyContentKey    = 1<<3 | wireBytes
	keyContentValue  = 2<<3 | wireBytes
	keyLogGroupEntry = 1<<3 | wireBytes // LogGroupList.LogGroups
)

// ---- encoding ----

// appendLogGroup appends g encoded as an sls.LogGroup to dst and returns the
// extended slice. The bytes are exactly those (*sls.LogGroup).Marshal
// produces for the same content, where an empty Topic, Source, MachineUUID
// or Category is an absent (nil) field, and every Content becomes a
// LogContent or LogTag with both Key and Value set.
//
// Each log's Time becomes Time = uint32(Time.Unix()) and, only when the
// time has a non-zero nanosecond part, TimeNs = Time.Nanosecond(). SLS
// stores seconds as a uint32: times outside 1970-01-01..2106-02-07 UTC
// (including the zero time.Time) wrap, so callers must set a real time.
//
// It does not allocate when dst has logGroupSize(g) bytes of spare
// capacity, and otherwise grows dst as append does.
func appendLogGroup(dst []byte, g *LogGroup) []byte {
	for i := range g.Logs {
		l := &g.Logs[i]
		n := logSize(l)
		start, total := len(dst), lengthDelimitedSize(n)
		dst = slices.Grow(dst, total)[:start+total]
		b := dst[start:]
		b[0] = keyLogGroupLogs
		writeLog(b[1+binary.PutUvarint(b[1:], uint64(n)):], l)
	}
	dst = appendOptionalString(dst, keyCategory, g.Category)
	dst = appendOptionalString(dst, keyTopic, g.Topic)
	dst = appendOptionalString(dst, keySource, g.Source)
	dst = appendOptionalString(dst, keyMachineUUID, g.MachineUUID)
	for i := range g.Tags {
		c := &g.Tags[i]
		start, total := len(dst), lengthDelimitedSize(keyValueSize(c))
		dst = slices.Grow(dst, total)[:start+total]
		dst[start] = keyLogTags
		writeKeyValue(dst[start+1:], c)
	}
	return dst
}

// logGroupSize returns the exact length of appendLogGroup's encoding of g.
func logGroupSize(g *LogGroup) int {
	n := 0
	for i := range g.Logs {
		n += lengthDelimitedSize(logSize(&g.Logs[i]))
	}
	n += optionalStringSize(g.Category) + optionalStringSize(g.Topic) +
		optionalStringSize(g.Source) + optionalStringSize(g.MachineUUID)
	for i := range g.Tags {
		n += lengthDelimitedSize(keyValueSize(&g.Tags[i]))
	}
	return n
}

// wireTime splits t into the Time and TimeNs fields of an sls.Log.
func wireTime(t time.Time) (sec, nsec uint32) {
	return uint32(t.Unix()), uint32(t.Nanosecond())
}

// writeLog writes the body of a Log message into b, which holds exactly
// logSize(l) bytes.
func writeLog(b []byte, l *Log) {
	sec, nsec := wireTime(l.Time)
	b[0] = keyLogTime
	p := 1 + binary.PutUvarint(b[1:], uint64(sec))
	for i := range l.Contents {
		b[p] = keyLogContents
		p += 1 + writeKeyValue(b[p+1:], &l.Contents[i])
	}
	if nsec != 0 {
		b[p] = keyLogTimeNs
		binary.LittleEndian.PutUint32(b[p+1:], nsec)
	}
}

// logSize is the length of a Log message's body (without its key and length).
func logSize(l *Log) int {
	sec, nsec := wireTime(l.Time)
	n := 1 + varintSize(uint64(sec))
	for i := range l.Contents {
		n += lengthDelimitedSize(keyValueSize(&l.Contents[i]))
	}
	if nsec != 0 {
		n += 5
	}
	return n
}

// writeKeyValue writes a LogContent or LogTag message, length-prefixed,
// at the start of b and returns its length.
func writeKeyValue(b []byte, c *Content) int {
	p := binary.PutUvarint(b, uint64(keyValueSize(c)))
	b[p] = keyContentKey
	p++
	p += binary.PutUvarint(b[p:], uint64(len(c.Key)))
	p += copy(b[p:], c.Key)
	b[p] = keyContentValue
	p++
	p += binary.PutUvarint(b[p:], uint64(len(c.Value)))
	return p + copy(b[p:], c.Value)
}

func keyValueSize(c *Content) int {
	return lengthDelimitedSize(len(c.Key)) + lengthDelimitedSize(len(c.Value))
}

func appendOptionalString(dst []byte, key byte, s string) []byte {
	if s == "" {
		return dst
	}
	dst = append(dst, key)
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

func optionalStringSize(s string) int {
	if s == "" {
		return 0
	}
	return lengthDelimitedSize(len(s))
}

// lengthDelimitedSize is the size of a one-byte key, the varint length n and
// n bytes of value.
func lengthDelimitedSize(n int) int { return 1 + varintSize(uint64(n)) + n }

func varintSize(v uint64) int { return (bits.Len64(v|1) + 6) / 7 }

// ---- decoding ----

// decodeLogGroupList parses data, an encoded sls.LogGroupList (the
// decompressed body of a PullLogs response), appends its groups to dst and
// returns the extended slice. It accepts exactly the inputs
// (*sls.LogGroupList).Unmarshal accepts: required fields present, wire types
// as the schema says, lengths in bounds; unknown fields are skipped. On
// error dst is returned unchanged.
//
// Zero copy: every string of the result (keys, values, topic, source ...)
// aliases data through unsafe.String. data must never be modified
// afterwards, and any one of those strings keeps all of data alive.
//
// Each Log.Time is time.Unix(Time, TimeNs) in UTC. Empty groups, logs and
// tags have nil slices, as the SDK's decoding has.
//
// A call allocates O(1) times whatever the number of logs: all Logs of all
// groups share one backing []Log, all Contents and Tags share one backing
// []Content (each group's and log's slice is capped, so appending to one
// cannot overwrite a neighbour), and dst grows at most once.
func decodeLogGroupList(data []byte, dst []LogGroup) ([]LogGroup, error) {
	var c counts
	if err := countLogGroupList(data, &c); err != nil {
		return dst, fmt.Errorf("slspubsub: decode LogGroupList: %w", err)
	}
	f := newFiller(&c)
	dst = slices.Grow(dst, c.groups)
	for i := 0; i < len(data); {
		var fd field
		next, _ := readField(data, i, &fd) // validated by countLogGroupList
		i = next
		if fd.num == 1 {
			dst = append(dst, LogGroup{})
			f.group(data[fd.lo:fd.hi], &dst[len(dst)-1])
		}
	}
	return dst, nil
}

// decodeLogGroup parses data, one encoded sls.LogGroup, as
// decodeLogGroupList parses each group of a list: with the same validation,
// strings aliasing data, and O(1) allocations.
func decodeLogGroup(data []byte) (LogGroup, error) {
	var c counts
	if err := countLogGroup(data, &c); err != nil {
		return LogGroup{}, fmt.Errorf("slspubsub: decode LogGroup: %w", err)
	}
	f := newFiller(&c)
	var g LogGroup
	f.group(data, &g)
	return g, nil
}

var (
	errTruncated       = errors.New("truncated or overflowing protobuf field")
	errUnexpectedGroup = errors.New("end-group key outside a group")
)

func errWireType(field string, wire int) error {
	return fmt.Errorf("wrong wire type %d for %s", wire, field)
}

// field is one protobuf field as read by readField.
type field struct {
	num    int32
	wire   int
	u      uint64 // the value of a varint or fixed32 field
	lo, hi int    // the value bytes of a length-delimited field
}

// readField reads the field whose key starts at b[i] into f and returns the
// index just past it. It follows the generated code: the field number is the
// key's upper bits truncated to int32, varints are at most 10 bytes, groups
// (wire types 3 and 4, deprecated) are skipped by nesting depth.
func readField(b []byte, i int, f *field) (next int, err error) {
	key, i := uvarint(b, i)
	if i < 0 {
		return 0, errTruncated
	}
	f.num, f.wire = int32(key>>3), int(key&7)
	if f.wire == wireEndGroup {
		return 0, errUnexpectedGroup
	}
	if f.num <= 0 {
		return 0, fmt.Errorf("illegal field number %d", f.num)
	}
	switch f.wire {
	case wireVarint:
		if f.u, i = uvarint(b, i); i < 0 {
			return 0, errTruncated
		}
	case wireFixed64:
		if len(b)-i < 8 {
			return 0, errTruncated
		}
		i += 8
	case wireFixed32:
		if len(b)-i < 4 {
			return 0, errTruncated
		}
		f.u = uint64(binary.LittleEndian.Uint32(b[i:]))
		i += 4
	case wireBytes:
		var l uint64
		if l, i = uvarint(b, i); i < 0 || l > uint64(len(b)-i) {
			return 0, errTruncated
		}
		f.lo, f.hi = i, i+int(l)
		i = f.hi
	case wireStartGroup:
		n, err := skipGroup(b[i:])
		if err != nil {
			return 0, err
		}
		i += n
	default:
		return 0, fmt.Errorf("illegal wire type %d", f.wire)
	}
	return i, nil
}

// skipGroup skips the body of a group, including its end-group key, and
// returns the bytes consumed. Like the generated code it matches start and
// end keys by nesting depth only, and it counts the depth instead of
// recursing, so deeply nested input cannot exhaust the stack.
func skipGroup(b []byte) (int, error) {
	depth := 1
	for i := 0; i < len(b); {
		key, j := uvarint(b, i)
		if j < 0 {
			return 0, errTruncated
		}
		i = j
		switch key & 7 {
		case wireVarint:
			if _, i = uvarint(b, i); i < 0 {
				return 0, errTruncated
			}
		case wireFixed64:
			i += 8
		case wireFixed32:
			i += 4
		case wireBytes:
			var l uint64
			if l, i = uvarint(b, i); i < 0 || l > uint64(len(b)-i) {
				return 0, errTruncated
			}
			i += int(l)
		case wireStartGroup:
			depth++
		case wireEndGroup:
			if depth--; depth == 0 {
				return i, nil
			}
		default:
			return 0, fmt.Errorf("illegal wire type %d", key&7)
		}
		if i > len(b) {
			return 0, errTruncated
		}
	}
	return 0, errTruncated
}

// uvarint decodes the varint at b[i:] and returns it with the index past it,
// or a negative index when it is truncated or longer than 10 bytes.
func uvarint(b []byte, i int) (uint64, int) {
	if i < len(b) && b[i] < 0x80 {
		return uint64(b[i]), i + 1
	}
	var v uint64
	for shift := uint(0); shift < 64; shift += 7 {
		if i >= len(b) {
			return 0, -1
		}
		c := b[i]
		i++
		v |= uint64(c&0x7f) << shift
		if c < 0x80 {
			return v, i
		}
	}
	return 0, -1
}

// nextField reads the field at b[i] like readField, with a fast path for
// the one-byte keys with wire type varint, length-delimited or fixed32: the
// keys of every field of the schema as encoders write them. Anything else,
// including a truncated value, goes through readField.
func nextField(b []byte, i int, f *field) (int, error) {
	if k := b[i]; k < 0x80 && k >= 8 {
		switch k & 7 {
		case wireBytes:
			if l, j := uvarint(b, i+1); j >= 0 && l <= uint64(len(b)-j) {
				f.num, f.wire, f.lo, f.hi = int32(k>>3), wireBytes, j, j+int(l)
				return f.hi, nil
			}
		case wireVarint:
			if v, j := uvarint(b, i+1); j >= 0 {
				f.num, f.wire, f.u = int32(k>>3), wireVarint, v
				return j, nil
			}
		case wireFixed32:
			if len(b)-i >= 5 {
				f.num, f.wire, f.u = int32(k>>3), wireFixed32, uint64(binary.LittleEndian.Uint32(b[i+1:]))
				return i + 5, nil
			}
		}
	}
	return readField(b, i, f)
}

// keyValueFast recognises the canonical encoding of a LogContent or LogTag:
// Key then Value, each once, nothing else; ok is false for any other layout,
// which the general path then parses.
func keyValueFast(b []byte) (key, value []byte, ok bool) {
	if len(b) < 4 || b[0] != keyContentKey {
		return nil, nil, false
	}
	kl, i := uvarint(b, 1)
	if i < 0 || kl >= uint64(len(b)-i) {
		return nil, nil, false
	}
	k := i + int(kl)
	if b[k] != keyContentValue {
		return nil, nil, false
	}
	vl, j := uvarint(b, k+1)
	if j < 0 || vl != uint64(len(b)-j) {
		return nil, nil, false
	}
	return b[i:k], b[j:], true
}

// counts are the sizes of a LogGroupList, gathered by the validating pass so
// that the filling pass allocates each backing array once.
type counts struct {
	groups, logs, contents, tags int
}

// countLogGroupList validates a LogGroupList and counts what it holds.
func countLogGroupList(b []byte, c *counts) error {
	for i := 0; i < len(b); {
		var f field
		next, err := nextField(b, i, &f)
		if err != nil {
			return err
		}
		i = next
		if f.num == 1 {
			if f.wire != wireBytes {
				return errWireType("LogGroupList.LogGroups", f.wire)
			}
			c.groups++
			if err := countLogGroup(b[f.lo:f.hi], c); err != nil {
				return err
			}
		}
	}
	return nil
}

func countLogGroup(b []byte, c *counts) error {
	for i := 0; i < len(b); {
		var f field
		next, err := nextField(b, i, &f)
		if err != nil {
			return err
		}
		i = next
		switch f.num {
		case 1:
			if f.wire != wireBytes {
				return errWireType("LogGroup.Logs", f.wire)
			}
			c.logs++
			if err := countLog(b[f.lo:f.hi], c); err != nil {
				return err
			}
		case 2, 3, 4, 5:
			if f.wire != wireBytes {
				return errWireType("a LogGroup string field", f.wire)
			}
		case 6:
			if f.wire != wireBytes {
				return errWireType("LogGroup.LogTags", f.wire)
			}
			c.tags++
			if err := checkKeyValue(b[f.lo:f.hi], "LogTag"); err != nil {
				return err
			}
		}
	}
	return nil
}

func countLog(b []byte, c *counts) error {
	hasTime := false
	for i := 0; i < len(b); {
		if b[i] == keyLogContents { // the common case, without the general path
			if l, j := uvarint(b, i+1); j >= 0 && l <= uint64(len(b)-j) {
				i = j + int(l)
				c.contents++
				if _, _, ok := keyValueFast(b[j:i]); !ok {
					if err := checkKeyValue(b[j:i], "LogContent"); err != nil {
						return err
					}
				}
				continue
			}
		}
		var f field
		next, err := nextField(b, i, &f)
		if err != nil {
			return err
		}
		i = next
		switch f.num {
		case 1:
			if f.wire != wireVarint {
				return errWireType("Log.Time", f.wire)
			}
			hasTime = true
		case 2:
			if f.wire != wireBytes {
				return errWireType("Log.Contents", f.wire)
			}
			c.contents++
			if err := checkKeyValue(b[f.lo:f.hi], "LogContent"); err != nil {
				return err
			}
		case 4:
			if f.wire != wireFixed32 {
				return errWireType("Log.TimeNs", f.wire)
			}
		}
	}
	if !hasTime {
		return errors.New("required field Log.Time is missing")
	}
	return nil
}

func checkKeyValue(b []byte, name string) error {
	if _, _, ok := keyValueFast(b); ok {
		return nil
	}
	var hasKey, hasValue bool
	for i := 0; i < len(b); {
		var f field
		next, err := readField(b, i, &f)
		if err != nil {
			return err
		}
		i = next
		switch f.num {
		case 1:
			if f.wire != wireBytes {
				return errWireType(name+".Key", f.wire)
			}
			hasKey = true
		case 2:
			if f.wire != wireBytes {
				return errWireType(name+".Value", f.wire)
			}
			hasValue = true
		}
	}
	if !hasKey || !hasValue {
		return fmt.Errorf("required field %s.Key or %s.Value is missing", name, name)
	}
	return nil
}

// filler is the second pass of decoding: it fills groups from validated
// bytes, handing out consecutive parts of the shared backing arrays.
type filler struct {
	logs  []Log
	nlogs int
	kvs   []Content // contents in [0, c.contents), tags after them
	ncont int
	ntags int
}

func newFiller(c *counts) *filler {
	return &filler{
		logs:  make([]Log, c.logs),
		kvs:   make([]Content, c.contents+c.tags),
		ntags: c.contents,
	}
}

// group fills g from b, a validated LogGroup. Repeated scalar fields keep
// their last value, as in the generated code.
func (d *filler) group(b []byte, g *LogGroup) {
	firstLog, firstTag := d.nlogs, d.ntags
	for i := 0; i < len(b); {
		var f field
		next, _ := nextField(b, i, &f)
		i = next
		switch f.num {
		case 1:
			d.log(b[f.lo:f.hi], &d.logs[d.nlogs])
			d.nlogs++
		case 2:
			g.Category = aliasString(b[f.lo:f.hi])
		case 3:
			g.Topic = aliasString(b[f.lo:f.hi])
		case 4:
			g.Source = aliasString(b[f.lo:f.hi])
		case 5:
			g.MachineUUID = aliasString(b[f.lo:f.hi])
		case 6:
			fillKeyValue(b[f.lo:f.hi], &d.kvs[d.ntags])
			d.ntags++
		}
	}
	if d.nlogs > firstLog {
		g.Logs = d.logs[firstLog:d.nlogs:d.nlogs]
	}
	if d.ntags > firstTag {
		g.Tags = d.kvs[firstTag:d.ntags:d.ntags]
	}
}

func (d *filler) log(b []byte, l *Log) {
	var sec, nsec uint32
	first := d.ncont
	for i := 0; i < len(b); {
		if b[i] == keyLogContents { // the common case, without the general path
			if l, j := uvarint(b, i+1); j >= 0 && l <= uint64(len(b)-j) {
				i = j + int(l)
				fillKeyValue(b[j:i], &d.kvs[d.ncont])
				d.ncont++
				continue
			}
		}
		var f field
		next, _ := nextField(b, i, &f)
		i = next
		switch f.num {
		case 1:
			sec = uint32(f.u) // the generated code keeps the low 32 bits
		case 2:
			fillKeyValue(b[f.lo:f.hi], &d.kvs[d.ncont])
			d.ncont++
		case 4:
			nsec = uint32(f.u)
		}
	}
	l.Time = time.Unix(int64(sec), int64(nsec)).UTC()
	if d.ncont > first {
		l.Contents = d.kvs[first:d.ncont:d.ncont]
	}
}

func fillKeyValue(b []byte, c *Content) {
	if k, v, ok := keyValueFast(b); ok {
		c.Key, c.Value = aliasString(k), aliasString(v)
		return
	}
	for i := 0; i < len(b); {
		var f field
		next, _ := readField(b, i, &f)
		i = next
		switch f.num {
		case 1:
			c.Key = aliasString(b[f.lo:f.hi])
		case 2:
			c.Value = aliasString(b[f.lo:f.hi])
		}
	}
}

// aliasString returns b as a string sharing b's memory.
func aliasString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}
