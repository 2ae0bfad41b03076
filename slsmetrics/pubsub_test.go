package slsmetrics_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/watermill-sls/watermill-sls/slsmetrics"
	"github.com/watermill-sls/watermill-sls/slspubsub"
	"github.com/watermill-sls/watermill-sls/slspubsub/slstest"
)

// TestPublisherAndSubscriberMetrics publishes through the emulator with two injected PutLogs failures, then
// consumes with two injected PullLogs failures, and checks the metrics against what happened: the logs
// published and fetched, the retries by SLS error code, the batch sizes, and the lag of each shard in
// LogGroups and in seconds from the cursor time (the data was received "10 minutes ago" by the emulator's
// clock) while a message is unacked, then 0 once everything is acked.
func TestPublisherAndSubscriberMetrics(t *testing.T) {
	const logstore, calls, perCall = "events", 4, 10
	const total = calls * perCall
	clock := &shiftedClock{}
	clock.setBack(10 * time.Minute)
	env := slsEnv(t, clock, logstore, 2)
	reg := prometheus.NewRegistry()
	pm, err := slsmetrics.NewPublisherMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	sm, err := slsmetrics.NewSubscriberMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}

	env.Server.InjectFault(slstest.Fault{Op: slstest.OpPutLogs, Times: 2, Status: 503, Code: "ServerBusy", Message: "injected"})
	pub, err := slspubsub.NewPublisher(slspubsub.PublisherConfig{ClientConfig: clientConfig(env), Metrics: pm,
		RetryInitialBackoff: time.Millisecond}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pub.Close() })
	for c := range calls {
		msgs := make([]*message.Message, perCall)
		for i := range msgs {
			msgs[i] = message.NewMessage(fmt.Sprintf("m-%d-%d", c, i), []byte("payload"))
		}
		if err := pub.Publish(logstore, msgs...); err != nil {
			t.Fatalf("Publish: %v", err)
		}
	}

	f := gather(t, reg)
	if v, _ := f.sum("watermill_sls_publisher_logs_total", "logstore", logstore); v != total {
		t.Errorf("logs_total = %v, want %d", v, total)
	}
	for _, name := range []string{"watermill_sls_publisher_put_logs_requests_total", "watermill_sls_publisher_retries_total"} {
		if v, _ := f.sum(name, "logstore", logstore, "code", "ServerBusy"); v != 2 {
			t.Errorf("%s{code=ServerBusy} = %v, want 2 (%s)", name, v, f.series(name))
		}
	}
	batches, _ := f.sum("watermill_sls_publisher_put_logs_requests_total", "code", "ok")
	if batches < calls || f.count("watermill_sls_publisher_batch_logs") != uint64(batches) {
		t.Errorf("%v successful PutLogs for %d calls, %d batch_logs samples", batches, calls, f.count("watermill_sls_publisher_batch_logs"))
	}
	if v, _ := f.sum("watermill_sls_publisher_batch_logs"); v != total {
		t.Errorf("batch_logs sum = %v, want %d", v, total)
	}
	if v, _ := f.sum("watermill_sls_publisher_batch_bytes"); v < total*float64(len("payload")) {
		t.Errorf("batch_bytes sum = %v, less than the payloads", v)
	}
	if c := f.count("watermill_sls_publisher_put_logs_duration_seconds"); c != uint64(batches)+2 {
		t.Errorf("put_logs_duration samples = %d, want %v", c, batches+2)
	}

	// Consume: the first message stays unacked while the lag is checked.
	clock.setBack(0)
	env.Server.InjectFault(slstest.Fault{Op: slstest.OpPullLogs, Times: 2, Status: 403, Code: "ReadQuotaExceed", Message: "injected"})
	ch := subscribeCollected(t, reg, slspubsub.SubscriberConfig{ClientConfig: clientConfig(env), Metrics: sm,
		FetchInterval: 5 * time.Millisecond, MaxFetchInterval: 20 * time.Millisecond}, logstore)
	first := receive(t, ch)
	shard := first.Metadata.Get(slspubsub.MetadataShard)
	var lagSeconds float64
	pollGather(t, reg, "lag of the unacked message's shard", func(f families) bool {
		groups, n := f.sum("watermill_sls_subscriber_shard_lag_log_groups", "logstore", logstore, "shard", shard)
		lagSeconds, _ = f.sum("watermill_sls_subscriber_shard_lag_seconds", "logstore", logstore, "shard", shard)
		return n == 1 && groups >= 1 && lagSeconds >= 590 && lagSeconds <= 900
	}, "watermill_sls_subscriber_shard_lag_log_groups", "watermill_sls_subscriber_shard_lag_seconds")
	t.Logf("lag of shard %s with a message unacked: %.0f s", shard, lagSeconds)

	first.Ack()
	got := map[string]bool{first.UUID: true}
	for len(got) < total {
		m := receive(t, ch)
		got[m.UUID] = true
		m.Ack()
	}
	pollGather(t, reg, "no lag once everything is acked", func(f families) bool {
		groups, n := f.sum("watermill_sls_subscriber_shard_lag_log_groups", "logstore", logstore)
		secs, n2 := f.sum("watermill_sls_subscriber_shard_lag_seconds", "logstore", logstore)
		return n == 2 && n2 == 2 && groups == 0 && secs == 0
	}, "watermill_sls_subscriber_shard_lag_log_groups", "watermill_sls_subscriber_shard_lag_seconds")

	f = gather(t, reg)
	if v, n := f.sum("watermill_sls_subscriber_logs_fetched_total", "logstore", logstore); v != total || n == 0 {
		t.Errorf("logs_fetched_total = %v over %d shards, want %d (%s)", v, n, total, f.series("watermill_sls_subscriber_logs_fetched_total"))
	}
	if v, _ := f.sum("watermill_sls_subscriber_fetch_logs", "logstore", logstore); v != total {
		t.Errorf("fetch_logs sum = %v, want %d", v, total)
	}
	if v, _ := f.sum("watermill_sls_subscriber_fetch_log_groups", "logstore", logstore); v != batches {
		t.Errorf("fetch_log_groups sum = %v, want one per PutLogs request: %v", v, batches)
	}
	for _, name := range []string{"watermill_sls_subscriber_pull_logs_requests_total", "watermill_sls_subscriber_retries_total"} {
		if v, _ := f.sum(name, "logstore", logstore, "code", "ReadQuotaExceed"); v != 2 {
			t.Errorf("%s{code=ReadQuotaExceed} = %v, want 2 (%s)", name, v, f.series(name))
		}
	}
	ok, _ := f.sum("watermill_sls_subscriber_pull_logs_requests_total", "code", "ok")
	all, _ := f.sum("watermill_sls_subscriber_pull_logs_requests_total")
	if ok < 2 || f.count("watermill_sls_subscriber_pull_logs_duration_seconds") < uint64(all) {
		t.Errorf("%v successful PullLogs, %v in all, %d duration samples", ok, all, f.count("watermill_sls_subscriber_pull_logs_duration_seconds"))
	}
	assertNoSecret(t, f, env.AccessKeySecret, env.AccessKeyID)
}

// subscribeCollected creates a Subscriber with cfg, registers its collector for logstore with reg, and
// subscribes to logstore until the test ends.
func subscribeCollected(t *testing.T, reg *prometheus.Registry, cfg slspubsub.SubscriberConfig, logstore string) <-chan *message.Message {
	t.Helper()
	sub, err := slspubsub.NewSubscriber(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Close() })
	if _, err := slsmetrics.NewSubscriberCollector(reg, sub, []string{logstore}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ch, err := sub.Subscribe(ctx, logstore)
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

// receive returns the next message of ch, failing the test after 20 s.
func receive(t *testing.T, ch <-chan *message.Message) *message.Message {
	t.Helper()
	select {
	case m, ok := <-ch:
		if !ok {
			t.Fatal("subscription closed")
		}
		return m
	case <-time.After(20 * time.Second):
		t.Fatal("no message within 20 s")
	}
	return nil
}

// pollGather gathers reg until cond holds, for up to 20 s; on timeout it shows the named metrics.
func pollGather(t *testing.T, reg *prometheus.Registry, what string, cond func(families) bool, show ...string) {
	t.Helper()
	var last families
	deadlinePoll(t, what, func() (bool, string) {
		last = gather(t, reg)
		var b strings.Builder
		for _, name := range show {
			b.WriteString(last.series(name) + "\n")
		}
		return cond(last), b.String()
	})
}

// assertNoSecret fails when a label value holds one of the secrets.
func assertNoSecret(t *testing.T, f families, secrets ...string) {
	t.Helper()
	for name, mf := range f {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				for _, s := range secrets {
					if s != "" && strings.Contains(l.GetValue(), s) {
						t.Errorf("%s label %s holds a credential", name, l.GetName())
					}
				}
			}
		}
	}
}

// TestPublisherRetryCodesOfTransportFailures: a reset connection and a request that outlives
// ClientConfig.RequestTimeout are retried, and counted under the codes network and timeout.
func TestPublisherRetryCodesOfTransportFailures(t *testing.T) {
	const logstore = "events"
	env := slsEnv(t, nil, logstore, 1)
	env.Server.InjectFault(slstest.Fault{Op: slstest.OpPutLogs, Times: 1, Reset: true})
	env.Server.InjectFault(slstest.Fault{Op: slstest.OpPutLogs, Skip: 1, Times: 1, Latency: 2 * time.Second})
	reg := prometheus.NewRegistry()
	pm, err := slsmetrics.NewPublisherMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	cc := clientConfig(env)
	cc.RequestTimeout = 300 * time.Millisecond
	pub, err := slspubsub.NewPublisher(slspubsub.PublisherConfig{ClientConfig: cc, Metrics: pm, RetryInitialBackoff: time.Millisecond}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pub.Close() })
	if err := pub.Publish(logstore, message.NewMessage("a", []byte("x"))); err != nil {
		t.Fatal(err)
	}
	f := gather(t, reg)
	for _, code := range []string{"network", "timeout"} {
		if v, _ := f.sum("watermill_sls_publisher_retries_total", "code", code); v != 1 {
			t.Errorf("retries_total{code=%s} = %v, want 1 (%s)", code, v, f.series("watermill_sls_publisher_retries_total"))
		}
	}
	if v, _ := f.sum("watermill_sls_publisher_logs_total"); v != 1 {
		t.Errorf("logs_total = %v, want 1", v)
	}
}

// TestSubscriberLagErrors: while SLS fails GetCursor, a scrape has no lag series and counts the failure;
// once SLS answers again the lag is back.
func TestSubscriberLagErrors(t *testing.T) {
	const logstore = "events"
	env := slsEnv(t, nil, logstore, 1)
	reg := prometheus.NewRegistry()
	subscribeCollected(t, reg, slspubsub.SubscriberConfig{ClientConfig: clientConfig(env), FetchInterval: 5 * time.Millisecond}, logstore)
	const lag = "watermill_sls_subscriber_shard_lag_log_groups"
	pollGather(t, reg, "the shard's lag", func(f families) bool { _, n := f.sum(lag); return n == 1 }, lag)

	remove := env.Server.InjectFault(slstest.ErrorFault(slstest.OpGetCursor, 500, "InternalServerError"))
	f := gather(t, reg)
	if _, n := f.sum(lag); n != 0 {
		t.Errorf("lag series while GetCursor fails: %s", f.series(lag))
	}
	if v, _ := f.sum("watermill_sls_subscriber_lag_errors_total", "logstore", logstore); v != 1 {
		t.Errorf("lag_errors_total = %v, want 1", v)
	}
	remove()
	if _, n := gather(t, reg).sum(lag); n != 1 {
		t.Errorf("no lag series once GetCursor answers again")
	}
}
