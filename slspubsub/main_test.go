package slspubsub

import (
	"testing"

	"github.com/watermill-sls/watermill-sls/internal/testutil"
)

// TestMain stops the PostgreSQL cluster testutil.Postgres may start (the
// watermark alignment tests across processes use one).
func TestMain(m *testing.M) { testutil.Main(m) }
