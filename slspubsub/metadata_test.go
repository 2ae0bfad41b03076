package slspubsub

import (
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

func TestLogFieldsFromMessage(t *testing.T) {
	tests := []struct {
		name string
		md   message.Metadata
		want LogFields
	}{
		{name: "none", md: message.Metadata{"other": "x"}, want: LogFields{}},
		{
			name: "all",
			md: message.Metadata{
				MetadataTopic:             "t",
				MetadataSource:            "s",
				MetadataMachineUUID:       "m",
				MetadataTime:              "2024-02-03T04:05:06.000000007+08:00",
				MetadataTagPrefix + "env": "prod",
				MetadataTagPrefix + "":    "empty key",
				MetadataTagPrefix + "e":   "",
				"sls.tag":                 "not a tag",
				MetadataShard:             "1",
			},
			want: LogFields{
				Topic: "t", Source: "s", MachineUUID: "m",
				Time: time.Date(2024, 2, 2, 20, 5, 6, 7, time.UTC),
				Tags: map[string]string{"env": "prod", "": "empty key", "e": ""},
			},
		},
		{
			name: "time without fraction",
			md:   message.Metadata{MetadataTime: "2024-02-03T04:05:06Z"},
			want: LogFields{Time: time.Date(2024, 2, 3, 4, 5, 6, 0, time.UTC)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg := message.NewMessage("id", nil)
			msg.Metadata = tt.md
			got, err := LogFieldsFromMessage(msg)
			if err != nil {
				t.Fatal(err)
			}
			if got.Topic != tt.want.Topic || got.Source != tt.want.Source || got.MachineUUID != tt.want.MachineUUID ||
				!got.Time.Equal(tt.want.Time) || !maps.Equal(got.Tags, tt.want.Tags) || (got.Tags == nil) != (tt.want.Tags == nil) {
				t.Errorf("LogFieldsFromMessage =\n%+v\nwant\n%+v", got, tt.want)
			}
			if !got.Time.IsZero() && got.Time.Location() != time.UTC {
				t.Errorf("time in %v, want UTC", got.Time.Location())
			}
		})
	}
}

func TestLogFieldsFromMessageBadTime(t *testing.T) {
	for _, v := range []string{"", "yesterday", "2024-02-03 04:05:06", "1700000000"} {
		msg := message.NewMessage("id", nil)
		msg.Metadata[MetadataTime] = v
		_, err := LogFieldsFromMessage(msg)
		if err == nil || !strings.Contains(err.Error(), MetadataTime) || !strings.Contains(err.Error(), `"`+v+`"`) {
			t.Errorf("time %q: error %v, want one naming the key and the value", v, err)
		}
	}
	if _, err := LogFieldsFromMessage(nil); err == nil {
		t.Error("LogFieldsFromMessage(nil) succeeded")
	}
}

func TestMetadataTimeKeepsNanoseconds(t *testing.T) {
	for _, ts := range []time.Time{
		time.Unix(1700000000, 1),
		time.Unix(1700000000, 999_999_999),
		time.Unix(1700000000, 120_000_000).In(time.FixedZone("", -7*3600)),
		time.Unix(0, 0),
		time.Unix(1<<32-1, 999_999_999),
	} {
		s := formatMetadataTime(ts)
		if !strings.HasSuffix(s, "Z") {
			t.Errorf("formatMetadataTime(%v) = %s, want UTC", ts, s)
		}
		back, err := parseMetadataTime(s)
		if err != nil || !back.Equal(ts) {
			t.Errorf("parseMetadataTime(%s) = %v, %v; want %v", s, back, err, ts)
		}
	}
}

func TestMetadataKeysAreReserved(t *testing.T) {
	for _, k := range []string{MetadataTopic, MetadataSource, MetadataTime, MetadataTagPrefix, MetadataMachineUUID,
		MetadataShard, MetadataCursor, MetadataIndex} {
		if !strings.HasPrefix(k, MetadataReservedPrefix) {
			t.Errorf("%s lacks the reserved prefix", k)
		}
	}
	for tag, key := range wellKnownTagKeys {
		if tagMetadataKey(tag) != key || key != MetadataTagPrefix+tag {
			t.Errorf("well-known tag %s: key %s", tag, key)
		}
	}
}
