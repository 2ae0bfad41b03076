package main

import (
	"context"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
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
	res, err := run(ctx, cfg, 500, watermill.NopLogger{})
	if err != nil {
		t.Fatal(err)
	}
	if res.written != 500 || res.enriched != 490 || res.poisoned != 10 {
		t.Fatalf("written %d, enriched %d, poisoned %d; want 500, 490, 10", res.written, res.enriched, res.poisoned)
	}
}
