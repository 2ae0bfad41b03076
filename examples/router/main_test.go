package main

import (
	"context"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/prometheus/client_golang/prometheus"
)

// TestRun runs the example against the in-process emulator: every order is
// enriched once, and every 50th (a negative amount) ends in the poison
// logstore after its retries.
func TestRun(t *testing.T) {
	cfg, cleanup, err := clientConfig("", "router-example")
	if err != nil {
		t.Fatal(err)
	}
	defer cleanup()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	reg := prometheus.NewRegistry()
	res, err := run(ctx, cfg, 500, reg, watermill.NopLogger{})
	if err != nil {
		t.Fatal(err)
	}
	if res.written != 500 || res.enriched != 490 || res.poisoned != 10 {
		t.Fatalf("written %d, enriched %d, poisoned %d; want 500, 490, 10", res.written, res.enriched, res.poisoned)
	}
	// The metrics saw the same run: every order, enriched order and poisoned
	// order went through the one Publisher, the orders Subscriber fetched each
	// order, and the router ran the enrich handler at least once per order.
	for name, want := range map[string]float64{
		"watermill_sls_publisher_logs_total":          1000,
		"watermill_sls_subscriber_logs_fetched_total": 500,
	} {
		got, err := metricSum(reg, name)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	handled, err := metricSum(reg, "router_example_handler_execution_time_seconds")
	if err != nil {
		t.Fatal(err)
	}
	if handled < 500 {
		t.Errorf("router_example_handler_execution_time_seconds count = %v, want at least 500 (one per order)", handled)
	}
}
