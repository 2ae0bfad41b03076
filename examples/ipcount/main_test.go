package main

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/watermill-sls/watermill-sls/internal/testutil"
	"github.com/watermill-sls/watermill-sls/slspubsub/slstest"
)

func TestMain(m *testing.M) { testutil.Main(m) }

// TestIPCount runs the demo at a small size, twice on one logstore: the consumer, a child process (this test
// binary re-executed), is killed with SIGKILL once part of the logs are committed and a new one finishes the
// job. Every (window, IP) count in PostgreSQL must equal the count computed from the generated logs: nothing
// lost, nothing counted twice, every window emitted.
func TestIPCount(t *testing.T) {
	if os.Getenv(roleEnv) == "consumer" {
		if err := consumerMain(context.Background(), os.Stdout); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Setenv("DATABASE_URL", testutil.PostgresURL(t)) // a fresh database
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	spawn := func() *commandSpec {
		return &commandSpec{path: os.Args[0], args: []string{"-test.run=^TestIPCount$", "-test.count=1"}, env: []string{roleEnv + "=consumer"}}
	}
	o := options{logs: testutil.SoakOr(20_000, 200_000), shards: 4, killAt: 0.5, seed: 7, project: "ipcount", logstore: "access-log"}
	if err := o.validate(); err != nil {
		t.Fatal(err)
	}
	e, err := newEnv(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	defer e.close()
	checkRun(ctx, t, e, o, spawn)

	// A second run the way it runs against a real project (-endpoint, credentials from the environment), on
	// the same emulator, logstore and database: its consumers read the first run's logs and skip them, and its
	// counts are its own.
	t.Setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", slstest.DefaultAccessKeyID)
	t.Setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", slstest.DefaultAccessKeySecret)
	real := o
	real.endpoint, real.slsAddr = e.emulator, e.emulator
	real.logs, real.seed, real.killAt = o.logs/2, 8, 0.3
	if err := real.validate(); err != nil {
		t.Fatal(err)
	}
	re, err := newEnv(ctx, real)
	if err != nil {
		t.Fatal(err)
	}
	defer re.close()
	checkRun(ctx, t, re, real, spawn)

	// A missing logstore is created only when asked to.
	real.logstore = "created-by-ipcount"
	if ne, err := newEnv(ctx, real); err == nil || !strings.Contains(err.Error(), "LogStoreNotExist") {
		if ne != nil {
			ne.close()
		}
		t.Errorf("missing logstore without -create-logstore: %v, want a LogStoreNotExist error", err)
	}
	real.createLogstore = true
	ce, err := newEnv(ctx, real)
	if err != nil {
		t.Fatalf("with -create-logstore: %v", err)
	}
	ce.close()
	if _, err := sdkClient(re.client).GetLogStore(real.project, real.logstore); err != nil {
		t.Errorf("with -create-logstore: %v", err)
	}
}

func checkRun(ctx context.Context, t *testing.T, e *env, o options, spawn func() *commandSpec) {
	t.Helper()
	out := &testutil.Buffer{}
	v, err := runOn(ctx, e, o, spawn, out)
	t.Logf("demo output:\n%s", out.String())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "consumer 1: killed with SIGKILL") {
		t.Errorf("the first consumer was not killed midway")
	}
	if !strings.Contains(out.String(), "consumer 2: resumed from PostgreSQL") {
		t.Errorf("the second consumer did not resume from PostgreSQL")
	}
	if v.lost != 0 || v.duplicates != 0 || v.cellsDiffering != 0 || v.openLeft != 0 {
		t.Errorf("lost %d, duplicates %d, (window, IP) counts differing %d, never emitted %d: want all 0",
			v.lost, v.duplicates, v.cellsDiffering, v.openLeft)
	}
	if v.sinkTotal != int64(o.logs) || v.truthTotal != int64(o.logs) || v.sinkCells != v.truthCells {
		t.Errorf("sink %d requests in %d counts, truth %d in %d: want %d requests, equal counts",
			v.sinkTotal, v.sinkCells, v.truthTotal, v.truthCells, o.logs)
	}
	if !v.ok() {
		t.Errorf("verification not ok")
	}
}

// TestVerify checks the check: counts equal to the truth pass; a count too high, one missing, one left open
// and one for an IP that never came are each reported.
func TestVerify(t *testing.T) {
	db := testutil.Postgres(t)
	ctx := context.Background()
	if _, err := db.Exec(ctx, schema); err != nil {
		t.Fatal(err)
	}
	d := generate(2000, 2, time.Date(2026, 11, 21, 8, 0, 0, 0, time.UTC), 1, "r")
	for c, n := range d.truth {
		if _, err := db.Exec(ctx, `INSERT INTO ipcount_counts (run, window_start, ip, requests) VALUES ('r', $1, $2, $3)`, c.Window, c.IP, n); err != nil {
			t.Fatal(err)
		}
	}
	v, err := verify(ctx, db, "r", d)
	if err != nil {
		t.Fatal(err)
	}
	if !v.ok() || v.sinkTotal != 2000 || v.truthCells != v.sinkCells {
		t.Fatalf("the truth itself does not verify: %+v", v)
	}
	var first cell
	for c := range d.truth {
		first = c
		break
	}
	for _, tc := range []struct {
		name, sql string
		check     func(*verification) bool
	}{
		{"duplicate", `UPDATE ipcount_counts SET late = late + 1 WHERE window_start = $1 AND ip = $2`,
			func(v *verification) bool { return v.duplicates == 1 && v.lost == 0 && v.cellsDiffering == 1 }},
		{"lost", `UPDATE ipcount_counts SET requests = requests - 1 WHERE window_start = $1 AND ip = $2`,
			func(v *verification) bool { return v.lost == 1 && v.duplicates == 0 && v.cellsDiffering == 1 }},
		{"never emitted", `INSERT INTO ipcount_open (run, window_start, ip, requests) VALUES ('r', $1, $2, 1)`,
			func(v *verification) bool { return v.openLeft == 1 && v.lost == 0 }},
		{"unknown IP", `INSERT INTO ipcount_counts (run, window_start, ip, requests) VALUES ('r', $1, $2 || '-x', 1)`,
			func(v *verification) bool { return v.duplicates == 1 && v.sinkCells == v.truthCells+1 }},
	} {
		tx, err := db.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, tc.sql, first.Window, first.IP); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		v, err := verify(ctx, db, "r", d)
		if err != nil {
			t.Fatal(err)
		}
		if v.ok() || !tc.check(v) {
			t.Errorf("%s: not reported: %+v", tc.name, v)
		}
		// Undo, for the next case.
		if _, err := db.Exec(ctx, `DELETE FROM ipcount_open; DELETE FROM ipcount_counts WHERE ip LIKE '%-x';
			UPDATE ipcount_counts SET requests = requests + late, late = 0`); err != nil {
			t.Fatal(err)
		}
		if _, err := db.Exec(ctx, `UPDATE ipcount_counts SET requests = $3 WHERE window_start = $1 AND ip = $2`,
			first.Window, first.IP, d.truth[first]); err != nil {
			t.Fatal(err)
		}
	}
}
