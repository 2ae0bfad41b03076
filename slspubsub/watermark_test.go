package slspubsub

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/watermill-sls/watermill-sls/internal/testutil"
	"github.com/watermill-sls/watermill-sls/watermark"
)

// wmBase is the event time the watermark tests start from (a whole minute,
// so one-minute windows align to it).
var wmBase = time.Date(2026, 3, 4, 5, 6, 0, 0, time.UTC)

// wmWrite appends logs with the given event (log) times to shard of
// logstore, perGroup logs per LogGroup. Log i has UUID "<prefix>-<i>" and
// payload payload(i) ("x" when nil).
func wmWrite(t testing.TB, env *testutil.SLSEnv, logstore string, shard int, prefix string, times []time.Time, perGroup int, payload func(i int) string) {
	t.Helper()
	for start := 0; start < len(times); start += perGroup {
		g := LogGroup{}
		for i := start; i < min(start+perGroup, len(times)); i++ {
			p := "x"
			if payload != nil {
				p = payload(i)
			}
			m := message.NewMessage(fmt.Sprintf("%s-%d", prefix, i), []byte(p))
			m.Metadata.Set(MetadataTime, times[i].Format(time.RFC3339Nano))
			rec, err := DefaultMarshaler{}.Marshal(logstore, m)
			if err != nil {
				t.Fatal(err)
			}
			g.Logs = append(g.Logs, rec.Log)
		}
		if _, err := env.Server.AppendLogGroup(testProject, logstore, shard, toSDK(&g)); err != nil {
			t.Fatalf("AppendLogGroup: %v", err)
		}
	}
}

// wmTimes returns n event times from wmBase+offset, step apart.
func wmTimes(offset, step time.Duration, n int) []time.Time {
	out := make([]time.Time, n)
	for i := range out {
		out[i] = wmBase.Add(offset + time.Duration(i)*step)
	}
	return out
}

func TestSubscriberWatermarkConfigValidate(t *testing.T) {
	cfg := SubscriberConfig{ClientConfig: ClientConfig{Endpoint: "e", Project: "proj", AccessKeyID: "a", AccessKeySecret: "s"},
		Watermark: &WatermarkConfig{
			Strategy:  watermark.Strategy{MaxOutOfOrderness: -1, IdleTimeout: -1},
			Alignment: &AlignmentConfig{MaxDrift: -time.Second, UpdateInterval: -1},
		}}
	err := cfg.Validate()
	if err == nil {
		t.Fatal("Validate accepted a bad watermark config")
	}
	for _, field := range []string{"Watermark.Strategy", "MaxOutOfOrderness", "IdleTimeout", "Watermark.Alignment.Group",
		"Watermark.Alignment.MaxDrift", "Watermark.Alignment.UpdateInterval", "Watermark.Alignment.Coordinator"} {
		if !strings.Contains(err.Error(), field) {
			t.Errorf("error does not name %s: %v", field, err)
		}
	}
	cfg.Watermark = &WatermarkConfig{Alignment: &AlignmentConfig{Group: "g", MaxDrift: time.Second, Coordinator: watermark.NewInProcessCoordinator()}}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("valid watermark config rejected: %v", err)
	}
	if _, err := NewSubscriber(cfg, nil); err != nil {
		t.Fatalf("NewSubscriber: %v", err)
	}
}

// TestSubscriberWatermarkStampsMessages reads two shards with known event
// times: every message carries the subscription's watermark, which never
// goes backwards and never passes the message's own event time on a shard
// that is still behind; once everything is delivered, Watermark and
// ShardWatermarks give the newest event times. Without WatermarkConfig
// messages carry no watermark and the accessors report none.
func TestSubscriberWatermarkStampsMessages(t *testing.T) {
	env := testutil.SLS(t)
	env.LogStore(t, testProject, testLogstore, 2)
	wmWrite(t, env, testLogstore, 0, "a", wmTimes(0, time.Second, 30), 10, nil)
	wmWrite(t, env, testLogstore, 1, "b", wmTimes(500*time.Millisecond, time.Second, 20), 10, nil)

	plain := stSubscriber(t, env, nil)
	ch, err := plain.Subscribe(context.Background(), testLogstore)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range stReceive(t, ch, 50, true) {
		if _, ok := m.Metadata[watermark.MetadataKey]; ok {
			t.Fatalf("message %s carries a watermark without WatermarkConfig", m.UUID)
		}
	}
	if _, ok := plain.Watermark(testLogstore); ok || plain.ShardWatermarks(testLogstore) != nil {
		t.Fatal("watermark reported without WatermarkConfig")
	}

	s := stSubscriber(t, env, func(c *SubscriberConfig) {
		c.Watermark = &WatermarkConfig{Strategy: watermark.Strategy{MaxOutOfOrderness: 2 * time.Second, IdleTimeout: time.Minute}}
	})
	ch, err = s.Subscribe(context.Background(), testLogstore)
	if err != nil {
		t.Fatal(err)
	}
	var last time.Time
	seen := map[string]bool{}
	unstamped := 0 // after both shards delivered
	for _, m := range stReceive(t, ch, 50, true) {
		seen[m.Metadata.Get(MetadataShard)] = true
		wm, ok := watermark.FromMessage(m)
		if !ok {
			// Until both shards delivered, a pending shard keeps the
			// watermark undefined; a message already stamped and waiting
			// for the channel may follow.
			if len(seen) == 2 {
				unstamped++
			}
			continue
		}
		if wm.Before(last) {
			t.Fatalf("message %s: watermark went back from %v to %v", m.UUID, last, wm)
		}
		last = wm
		f, err := LogFieldsFromMessage(m)
		if err != nil {
			t.Fatal(err)
		}
		if wm.After(f.Time) && !f.Time.Before(wmBase.Add(19*time.Second)) {
			t.Fatalf("message %s at %v delivered with watermark %v past it", m.UUID, f.Time.Sub(wmBase), wm.Sub(wmBase))
		}
	}
	if unstamped > 2 || last.IsZero() {
		t.Fatalf("%d messages without a watermark after both shards delivered (last watermark %v)", unstamped, last)
	}
	// Shard 1's newest event is at 19.5 s, shard 0's at 29 s; bound 2 s.
	want := map[int]time.Time{0: wmBase.Add(27 * time.Second), 1: wmBase.Add(17500 * time.Millisecond)}
	got := s.ShardWatermarks(testLogstore)
	for id, w := range want {
		if !got[id].Equal(w) {
			t.Errorf("shard %d watermark %v, want %v", id, got[id].Sub(wmBase), w.Sub(wmBase))
		}
	}
	if wm, ok := s.Watermark(testLogstore); !ok || !wm.Equal(want[1]) {
		t.Errorf("subscription watermark %v (%v), want %v", wm.Sub(wmBase), ok, want[1].Sub(wmBase))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Watermark(testLogstore); ok {
		t.Error("watermark reported after Close")
	}
}
