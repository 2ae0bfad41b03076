package pgcluster_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/watermill-sls/watermill-sls/internal/pgcluster"
)

// TestStartServesAndStopRemoves starts a cluster (also when DATABASE_URL is
// set: this is the code path examples and plain `go test` take), runs a
// query on it, stops it and checks that it no longer accepts connections.
func TestStartServesAndStopRemoves(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), pgcluster.StartupTimeout)
	defer cancel()
	c, err := pgcluster.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, c.URL())
	if err != nil {
		_ = c.Stop()
		t.Fatal(err)
	}
	var one int
	err = conn.QueryRow(ctx, "SELECT 1").Scan(&one)
	_ = conn.Close(ctx)
	if err != nil || one != 1 {
		_ = c.Stop()
		t.Fatalf("SELECT 1 = %d, %v", one, err)
	}
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	short, cancelShort := context.WithTimeout(ctx, 5*time.Second)
	defer cancelShort()
	if conn, err := pgx.Connect(short, c.URL()); err == nil {
		_ = conn.Close(ctx)
		t.Fatal("the cluster still accepts connections after Stop")
	}
}
