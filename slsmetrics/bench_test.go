package slsmetrics_test

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/watermill-sls/watermill-sls/exactlyonce"
	"github.com/watermill-sls/watermill-sls/slsmetrics"
	"github.com/watermill-sls/watermill-sls/slspubsub"
)

// BenchmarkObserve measures what one observation costs the code that reports it: a PutLogs attempt, a
// PullLogs request with its logs, an exactly-once transaction (each once per request or transaction, never
// per message).
func BenchmarkObserve(b *testing.B) {
	reg := prometheus.NewRegistry()
	pm, err := slsmetrics.NewPublisherMetrics(reg)
	if err != nil {
		b.Fatal(err)
	}
	sm, err := slsmetrics.NewSubscriberMetrics(reg)
	if err != nil {
		b.Fatal(err)
	}
	hm, err := slsmetrics.NewHandlerMetrics(reg)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("PutLogs", func(b *testing.B) {
		s := slspubsub.PutLogsStats{Logstore: "events", Logs: 100, Bytes: 10000, Attempt: 1, Duration: time.Millisecond}
		b.ReportAllocs()
		for b.Loop() {
			pm.PutLogs(s)
		}
	})
	b.Run("PullLogs", func(b *testing.B) {
		s := slspubsub.PullLogsStats{Logstore: "events", Shard: 3, LogGroups: 10, RawBytes: 100000, Duration: time.Millisecond}
		b.ReportAllocs()
		for b.Loop() {
			sm.PullLogs(s)
			sm.LogsFetched("events", 3, 1000)
		}
	})
	b.Run("Transaction", func(b *testing.B) {
		s := exactlyonce.TransactionStats{Consumer: "c", Messages: 100, Applied: 100, Duration: time.Millisecond}
		b.ReportAllocs()
		for b.Loop() {
			hm.Transaction(s)
		}
	})
}
