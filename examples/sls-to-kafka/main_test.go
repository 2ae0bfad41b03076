package main

import (
	"context"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
)

// TestDemo runs the in-process pipeline (stopped once midway and resumed)
// and requires every log in Kafka exactly once for read_committed readers.
func TestDemo(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res, err := demo(ctx, 5000, watermill.NopLogger{})
	if err != nil {
		t.Fatal(err)
	}
	if res.read != 5000 || res.duplicates != 0 || res.missing != 0 {
		t.Fatalf("%+v: want 5000 records, no duplicate, none missing", res)
	}
}
