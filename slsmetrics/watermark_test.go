package slsmetrics_test

import (
	"strconv"
	"testing"
	"time"

	sls "github.com/aliyun/aliyun-log-go-sdk"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/watermill-sls/watermill-sls/internal/testutil"
	"github.com/watermill-sls/watermill-sls/slsmetrics"
	"github.com/watermill-sls/watermill-sls/slspubsub"
	"github.com/watermill-sls/watermill-sls/watermark"
)

// TestSubscriberWatermarkAndAlignmentMetrics reads two shards whose event times advance at different speeds
// per fetch (shard 0: 5 logs a second apart per LogGroup; shard 1: one log per LogGroup, 30 s apart) with
// alignment (MaxDrift 10 s, 2 LogGroups per fetch): shard 1 runs ahead and must wait. The metrics must show
// the blocked fetches and shard 1's time waiting, each shard's watermark within the data's event times, and
// exactly one state per shard.
func TestSubscriberWatermarkAndAlignmentMetrics(t *testing.T) {
	const logstore = "skewed"
	env := slsEnv(t, nil, logstore, 2)
	base := time.Now().Add(-time.Hour).Truncate(time.Second)
	total := 0
	total += appendGroups(t, env, logstore, 0, base, 60, 5, time.Second)
	total += appendGroups(t, env, logstore, 1, base, 10, 1, 30*time.Second)

	reg := prometheus.NewRegistry()
	sm, err := slsmetrics.NewSubscriberMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	ch := subscribeCollected(t, reg, slspubsub.SubscriberConfig{ClientConfig: clientConfig(env), Metrics: sm,
		FetchCount: 2, FetchInterval: 5 * time.Millisecond, MaxFetchInterval: 20 * time.Millisecond,
		Watermark: &slspubsub.WatermarkConfig{Strategy: watermark.Strategy{IdleTimeout: time.Second},
			Alignment: &slspubsub.AlignmentConfig{Group: "g", MaxDrift: 10 * time.Second, Coordinator: watermark.NewInProcessCoordinator()}},
	}, logstore)
	for range total {
		receive(t, ch).Ack()
	}

	f := gather(t, reg)
	blocks, n := f.sum("watermill_sls_subscriber_alignment_blocks_total", "logstore", logstore)
	if n != 1 || blocks == 0 {
		t.Errorf("alignment_blocks_total = %v (%d series), want > 0", blocks, n)
	}
	if _, n := f.sum("watermill_sls_subscriber_alignment_blocked_shards", "logstore", logstore); n != 1 {
		t.Errorf("no alignment_blocked_shards series")
	}
	waited, _ := f.sum("watermill_sls_subscriber_alignment_wait_seconds_total", "logstore", logstore, "shard", "1")
	if waited <= 0 {
		t.Errorf("shard 1 waited %v s for alignment (%s)", waited, f.series("watermill_sls_subscriber_alignment_wait_seconds_total"))
	}
	for shard := range 2 {
		id := strconv.Itoa(shard)
		wm, n := f.sum("watermill_sls_subscriber_shard_watermark_seconds", "logstore", logstore, "shard", id)
		if n != 1 || wm < float64(base.Unix()) || wm > float64(base.Add(5*time.Minute).Unix()) {
			t.Errorf("shard %d watermark %v (%d series), want within [%d, %d]", shard, wm, n, base.Unix(), base.Add(5*time.Minute).Unix())
		}
		states, n := f.sum("watermill_sls_subscriber_shard_state", "logstore", logstore, "shard", id)
		if states != 1 || n != 5 {
			t.Errorf("shard %d: %v states set over %d series, want 1 over 5 (%s)", shard, states, n, f.series("watermill_sls_subscriber_shard_state"))
		}
	}
	t.Logf("%d logs; %v blocked fetches; shard 1 waited %.3f s for alignment", total, blocks, waited)
}

// appendGroups writes groups LogGroups of perGroup logs to shard, event times from base, step apart, and
// returns the number of logs.
func appendGroups(t *testing.T, env *testutil.SLSEnv, logstore string, shard int, base time.Time, groups, perGroup int, step time.Duration) int {
	t.Helper()
	n := 0
	for range groups {
		g := &sls.LogGroup{}
		for range perGroup {
			ts := uint32(base.Add(time.Duration(n) * step).Unix())
			k, v := "n", strconv.Itoa(n)
			g.Logs = append(g.Logs, &sls.Log{Time: &ts, Contents: []*sls.LogContent{{Key: &k, Value: &v}}})
			n++
		}
		if _, err := env.Server.AppendLogGroup(testProject, logstore, shard, g); err != nil {
			t.Fatal(err)
		}
	}
	return n
}
