package outbox_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/watermill-sls/watermill-sls/internal/testutil"
	"github.com/watermill-sls/watermill-sls/outbox"
)

func TestSequenceKeyAndID(t *testing.T) {
	msg := func(md map[string]string) *message.Message {
		m := message.NewMessage(watermill.NewUUID(), nil)
		for k, v := range md {
			m.Metadata.Set(k, v)
		}
		return m
	}
	cases := []struct {
		name    string
		md      map[string]string
		key     string
		id      int64
		idError bool
	}{
		{"keyed", map[string]string{outbox.MetadataOutboxID: "7", outbox.MetadataOrderingKey: "k"}, "k", 7, false},
		{"unkeyed", map[string]string{outbox.MetadataOutboxID: "8"}, "\x00outbox_id:8", 8, false},
		{"empty key", map[string]string{outbox.MetadataOutboxID: "9", outbox.MetadataOrderingKey: ""}, "\x00outbox_id:9", 9, false},
		{"no id", map[string]string{outbox.MetadataOrderingKey: "k"}, "k", 0, true},
		{"bad id", map[string]string{outbox.MetadataOutboxID: "x"}, "\x00outbox_id:x", 0, true},
		{"negative id", map[string]string{outbox.MetadataOutboxID: "-1"}, "\x00outbox_id:-1", 0, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := msg(tc.md)
			key, err := outbox.SequenceKey("t", m)
			if err != nil || key != tc.key {
				t.Errorf("SequenceKey = %q, %v; want %q", key, err, tc.key)
			}
			id, err := outbox.SequenceID("t", m)
			if tc.idError != (err != nil) || id != tc.id {
				t.Errorf("SequenceID = %d, %v; want %d (error %v)", id, err, tc.id, tc.idError)
			}
		})
	}
}

// TestRelayedMessageSequenceMetadata: a relayed message carries its row id and its row's ordering key, and no
// ordering key when its row has none, even when the stored metadata held one (here a custom OrderingKey
// ignored it): a stale key would merge the row's sequence with a key's.
func TestRelayedMessageSequenceMetadata(t *testing.T) {
	db := migrated(t)
	ctx := context.Background()
	noKey := outbox.PublisherConfig{OrderingKey: func(string, *message.Message) (string, error) { return "", nil }}
	stale := keyed("stale", "unkeyed")
	if err := publishInTx(ctx, db, noKey, "t", "", 0, true, stale); err != nil {
		t.Fatal(err)
	}
	k := keyed("k", "keyed")
	if err := publishInTx(ctx, db, outbox.PublisherConfig{}, "t", "k", 1, true, k); err != nil {
		t.Fatal(err)
	}
	dest := &collector{}
	runRelay(t, db, outbox.RelayConfig{Publisher: dest, PollInterval: 20 * time.Millisecond})
	testutil.Poll(t, 30*time.Second, "2 relayed messages", func() (bool, string) {
		return dest.count() == 2, strconv.Itoa(dest.count())
	})
	var ids []int64
	for _, r := range dest.snapshot() {
		key, _ := outbox.SequenceKey(r.topic, r.msg)
		id, err := outbox.SequenceID(r.topic, r.msg)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
		switch r.uuid {
		case stale.UUID:
			if v, ok := r.msg.Metadata[outbox.MetadataOrderingKey]; ok {
				t.Errorf("unkeyed row relayed with %s %q", outbox.MetadataOrderingKey, v)
			}
			if want := "\x00outbox_id:" + strconv.FormatInt(id, 10); key != want {
				t.Errorf("unkeyed row: SequenceKey %q, want %q", key, want)
			}
		case k.UUID:
			if key != "k" {
				t.Errorf("keyed row: SequenceKey %q, want k", key)
			}
		}
	}
	if len(ids) != 2 || ids[0] == ids[1] {
		t.Fatalf("sequence ids %v, want two distinct row ids", ids)
	}
}
