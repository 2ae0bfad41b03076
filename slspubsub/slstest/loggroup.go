package slstest

import (
	"errors"
	"fmt"
)

// scanLogGroup validates a protobuf-encoded sls.LogGroup without decoding
// it into Go values and returns its number of logs. It accepts exactly what
// the SDK's generated (*sls.LogGroup).Unmarshal accepts: required fields
// present, wire types matching the schema, lengths in bounds, unknown fields
// skipped. The emulator stores what it received as is, so this check is the
// only parse a PutLogs body goes through on the write path.
func scanLogGroup(b []byte) (logs int, err error) {
	err = scanMessage(b, func(field int, wire int, v []byte) error {
		switch field {
		case 1: // Logs
			if wire != wireBytes {
				return errWireType("LogGroup.Logs")
			}
			logs++
			return scanLog(v)
		case 2, 3, 4, 5: // Category, Topic, Source, MachineUUID
			if wire != wireBytes {
				return errWireType("LogGroup string field")
			}
		case 6: // LogTags
			if wire != wireBytes {
				return errWireType("LogGroup.LogTags")
			}
			return scanKeyValue(v, "LogTag")
		}
		return nil
	})
	return logs, err
}

func scanLog(b []byte) error {
	hasTime := false
	err := scanMessage(b, func(field int, wire int, v []byte) error {
		switch field {
		case 1: // Time
			if wire != wireVarint {
				return errWireType("Log.Time")
			}
			hasTime = true
		case 2: // Contents
			if wire != wireBytes {
				return errWireType("Log.Contents")
			}
			return scanKeyValue(v, "LogContent")
		case 4: // TimeNs
			if wire != wireFixed32 {
				return errWireType("Log.TimeNs")
			}
		}
		return nil
	})
	if err == nil && !hasTime {
		err = errors.New("Log.Time is required")
	}
	return err
}

func scanKeyValue(b []byte, name string) error {
	var hasKey, hasValue bool
	err := scanMessage(b, func(field int, wire int, _ []byte) error {
		switch field {
		case 1:
			if wire != wireBytes {
				return errWireType(name + ".Key")
			}
			hasKey = true
		case 2:
			if wire != wireBytes {
				return errWireType(name + ".Value")
			}
			hasValue = true
		}
		return nil
	})
	if err == nil && (!hasKey || !hasValue) {
		err = fmt.Errorf("%s.Key and %s.Value are required", name, name)
	}
	return err
}

const (
	wireVarint     = 0
	wireFixed64    = 1
	wireBytes      = 2
	wireStartGroup = 3
	wireEndGroup   = 4
	wireFixed32    = 5
)

func errWireType(field string) error {
	return fmt.Errorf("wrong wire type for %s", field)
}

var errTruncated = errors.New("truncated protobuf message")

// scanMessage walks the fields of one protobuf message and calls fn with
// each field number, wire type and, for length-delimited fields, the value
// bytes. Groups (deprecated wire types 3 and 4) are skipped as the generated
// code skips them.
func scanMessage(b []byte, fn func(field, wire int, v []byte) error) error {
	for i := 0; i < len(b); {
		key, n := uvarint(b[i:])
		if n <= 0 {
			return errTruncated
		}
		i += n
		// The generated code truncates the field number to int32; do the same
		// so that both accept the same inputs.
		field, wire := int(int32(key>>3)), int(key&7)
		if field <= 0 {
			return fmt.Errorf("illegal field number %d", field)
		}
		var v []byte
		switch wire {
		case wireVarint:
			_, n := uvarint(b[i:])
			if n <= 0 {
				return errTruncated
			}
			i += n
		case wireFixed64:
			if len(b)-i < 8 {
				return errTruncated
			}
			i += 8
		case wireFixed32:
			if len(b)-i < 4 {
				return errTruncated
			}
			i += 4
		case wireBytes:
			l, n := uvarint(b[i:])
			if n <= 0 || l > uint64(len(b)-i-n) {
				return errTruncated
			}
			i += n
			v = b[i : i+int(l)]
			i += int(l)
		case wireStartGroup:
			n, err := skipGroup(b[i:])
			if err != nil {
				return err
			}
			i += n
		default:
			return fmt.Errorf("illegal wire type %d", wire)
		}
		if err := fn(field, wire, v); err != nil {
			return err
		}
	}
	return nil
}

// skipGroup skips the body of a group, including its end-group key, and
// returns the bytes consumed. Like the generated code it matches start and end
// keys by nesting depth only, not by field number, and it counts the depth
// instead of recursing, so that deeply nested input cannot exhaust the stack.
func skipGroup(b []byte) (int, error) {
	depth := 1
	for i := 0; i < len(b); {
		key, n := uvarint(b[i:])
		if n <= 0 {
			return 0, errTruncated
		}
		i += n
		switch int(key & 7) {
		case wireVarint:
			_, n := uvarint(b[i:])
			if n <= 0 {
				return 0, errTruncated
			}
			i += n
		case wireFixed64:
			i += 8
		case wireFixed32:
			i += 4
		case wireBytes:
			l, n := uvarint(b[i:])
			if n <= 0 || l > uint64(len(b)-i-n) {
				return 0, errTruncated
			}
			i += n + int(l)
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

// uvarint decodes a protobuf varint; n <= 0 means truncated or overflowing.
func uvarint(b []byte) (v uint64, n int) {
	for shift := uint(0); shift < 64; shift += 7 {
		if n >= len(b) {
			return 0, 0
		}
		c := b[n]
		n++
		v |= uint64(c&0x7f) << shift
		if c < 0x80 {
			return v, n
		}
	}
	return 0, -1
}

// appendLogGroupListEntry appends one LogGroupList.LogGroups entry (field 1,
// length-delimited) holding the encoded LogGroup g.
func appendLogGroupListEntry(dst, g []byte) []byte {
	dst = append(dst, 0x0a)
	l := uint64(len(g))
	for l >= 0x80 {
		dst = append(dst, byte(l)|0x80)
		l >>= 7
	}
	dst = append(dst, byte(l))
	return append(dst, g...)
}

func listEntrySize(g []byte) int {
	n := 2
	for l := len(g); l >= 0x80; l >>= 7 {
		n++
	}
	return n + len(g)
}
