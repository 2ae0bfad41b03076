package testutil

import (
	"fmt"
	"os"
	"sync/atomic"
	"testing"
)

// mainActive records that the test binary runs under [Main], which is what stops a PostgreSQL cluster the
// fixture started. Fixtures that would start such a cluster refuse to without it, rather than leak it.
var mainActive atomic.Bool

// Main runs the tests of a package and then releases what the fixtures started for the whole test binary (the
// PostgreSQL cluster [Postgres] starts when DATABASE_URL is unset). Call it from TestMain:
//
//	func TestMain(m *testing.M) { testutil.Main(m) }
//
// It does not return: it exits the process with the tests' status, or with status 1 when the tests passed but
// the cleanup failed. Should the process die before Main's cleanup (a panic, a -timeout, a signal), a watchdog
// process still stops the cluster and removes its files once the test binary is gone.
func Main(m *testing.M) {
	mainActive.Store(true)
	code := m.Run()
	if err := stopLocalCluster(); err != nil {
		fmt.Fprintf(os.Stderr, "testutil: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}
