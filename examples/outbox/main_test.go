package main

import (
	"context"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"

	"github.com/watermill-sls/watermill-sls/internal/testutil"
)

func TestMain(m *testing.M) { testutil.Main(m) }

// TestRun posts orders to the service and requires exactly the accepted
// orders' events in SLS and in Kafka: refused orders publish nothing.
func TestRun(t *testing.T) {
	t.Setenv("DATABASE_URL", testutil.PostgresURL(t)) // a fresh database
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res, err := run(ctx, "127.0.0.1:0", 100, watermill.NopLogger{})
	if err != nil {
		t.Fatal(err)
	}
	if res.posted != 100 || res.refused != 5 || res.sls != 95 || res.kafka != 95 {
		t.Fatalf("%+v: want 100 posted, 5 refused, 95 events in SLS and in Kafka", res)
	}
}
