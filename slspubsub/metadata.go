package slspubsub

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

// Metadata keys for SLS fields. Every key of this package starts with
// MetadataReservedPrefix.
//
// Written by the Publisher (through DefaultMarshaler) when present on a
// message: MetadataTopic, MetadataSource, MetadataTime and the
// MetadataTagPrefix keys become the LogGroup's topic, source and tags and the
// log's time.
//
// Set by the Subscriber on the messages it delivers and never written by the
// Publisher: MetadataMachineUUID and the position keys MetadataShard,
// MetadataCursor and MetadataIndex. They say where a message was read from,
// so a message read from one logstore and published to another does not carry
// stale positions.
const (
	// MetadataReservedPrefix starts every metadata key this package (and the
	// packages built on it) gives a meaning to. DefaultMarshaler does not
	// store keys with this prefix other than the ones it maps to SLS fields;
	// StripReservedMetadata removes them all.
	MetadataReservedPrefix = "sls."

	// MetadataTopic is the LogGroup topic.
	MetadataTopic = "sls.topic"
	// MetadataSource is the LogGroup source (SLS shows it as __source__,
	// usually the producer's IP address or host name).
	MetadataSource = "sls.source"
	// MetadataTime is the log time in RFC 3339 with nanoseconds
	// (time.RFC3339Nano: trailing zeros of the fraction dropped), in UTC
	// when set by the Subscriber. SLS keeps whole seconds from 1970 to 2106
	// plus nanoseconds.
	MetadataTime = "sls.time"
	// MetadataTagPrefix followed by a tag key holds that LogGroup tag's
	// value: one metadata key per tag, e.g. "sls.tag.env" for the tag "env".
	MetadataTagPrefix = "sls.tag."
	// MetadataMachineUUID is the LogGroup's machine UUID (set by Logtail).
	// Read-only: the Publisher does not write it.
	MetadataMachineUUID = "sls.machine_uuid"
	// MetadataShard is the id of the shard a message was read from, in
	// decimal. Read-only.
	MetadataShard = "sls.shard"
	// MetadataCursor is the cursor of the LogGroup a message was read from.
	// Read-only.
	MetadataCursor = "sls.cursor"
	// MetadataIndex is the index, in decimal from 0, of the log in its
	// LogGroup. Read-only.
	MetadataIndex = "sls.index"
)

// LogFields are the SLS fields of a received log: its LogGroup's topic,
// source, machine UUID and tags, and the log time.
type LogFields struct {
	// Topic is the LogGroup topic ("" when none).
	Topic string
	// Source is the LogGroup source ("" when none).
	Source string
	// MachineUUID is the LogGroup machine UUID ("" when none).
	MachineUUID string
	// Time is the log time with nanoseconds, in UTC; the zero Time when the
	// message has no MetadataTime.
	Time time.Time
	// Tags are the LogGroup tags, tag key to value; nil when there are none.
	Tags map[string]string
}

// LogFieldsFromMessage returns the SLS fields recorded in a message's
// metadata by the Subscriber (or set by a caller before Publish). Missing
// keys leave their field empty; the only error is a MetadataTime that is not
// RFC 3339, and it names the key and the value.
func LogFieldsFromMessage(msg *message.Message) (LogFields, error) {
	if msg == nil {
		return LogFields{}, errors.New("slspubsub: SLS fields of a nil message")
	}
	f := LogFields{
		Topic:       msg.Metadata[MetadataTopic],
		Source:      msg.Metadata[MetadataSource],
		MachineUUID: msg.Metadata[MetadataMachineUUID],
	}
	if s, ok := msg.Metadata[MetadataTime]; ok {
		t, err := parseMetadataTime(s)
		if err != nil {
			return LogFields{}, err
		}
		f.Time = t
	}
	for k, v := range msg.Metadata {
		if tag, ok := strings.CutPrefix(k, MetadataTagPrefix); ok {
			if f.Tags == nil {
				f.Tags = make(map[string]string)
			}
			f.Tags[tag] = v
		}
	}
	return f, nil
}

// StripReservedMetadata deletes from md every key that starts with
// MetadataReservedPrefix: the SLS fields and the position the Subscriber
// added. What remains of a received message's metadata is what its
// publisher stored with it, so a test can compare a published message with
// the received one after stripping both.
func StripReservedMetadata(md message.Metadata) {
	for k := range md {
		if strings.HasPrefix(k, MetadataReservedPrefix) {
			delete(md, k)
		}
	}
}

// parseMetadataTime parses a MetadataTime value (RFC 3339, with or without
// fractional seconds) into UTC.
func parseMetadataTime(s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("slspubsub: metadata %s: %q is not an RFC 3339 time: %w", MetadataTime, s, err)
	}
	return t.UTC(), nil
}

// formatMetadataTime formats t for MetadataTime: RFC 3339 in UTC with the
// nanoseconds.
func formatMetadataTime(t time.Time) string {
	var buf [40]byte
	return string(appendMetadataTime(buf[:0], t))
}

// appendMetadataTime appends formatMetadataTime(t) to dst.
func appendMetadataTime(dst []byte, t time.Time) []byte {
	return t.UTC().AppendFormat(dst, time.RFC3339Nano)
}

// wellKnownTagKeys holds the metadata keys of tags SLS and Logtail add to
// most LogGroups, so receiving them does not allocate a key per message.
var wellKnownTagKeys = func() map[string]string {
	m := make(map[string]string)
	for _, tag := range []string{
		"__client_ip__", "__receive_time__", "__pack_id__", "__hostname__",
		"__path__", "__user_defined_id__", "__host_ip__",
	} {
		m[tag] = MetadataTagPrefix + tag
	}
	return m
}()

func tagMetadataKey(tag string) string {
	if k, ok := wellKnownTagKeys[tag]; ok {
		return k
	}
	return MetadataTagPrefix + tag
}

// setLogFields writes the SLS fields of l and its group g into md: the
// group's (setGroupFields) and the time.
func setLogFields(md message.Metadata, g *LogGroup, l *Log) {
	setGroupFields(md, g)
	md[MetadataTime] = formatMetadataTime(l.Time)
}

// setGroupFields writes the SLS fields every log of g shares into md: topic,
// source and machine UUID when not empty, one key per tag.
func setGroupFields(md message.Metadata, g *LogGroup) {
	if g.Topic != "" {
		md[MetadataTopic] = g.Topic
	}
	if g.Source != "" {
		md[MetadataSource] = g.Source
	}
	if g.MachineUUID != "" {
		md[MetadataMachineUUID] = g.MachineUUID
	}
	for _, t := range g.Tags {
		md[tagMetadataKey(t.Key)] = t.Value
	}
}
