package watermark

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/watermill-sls/watermill-sls/internal/testutil"
)

func newPool(t *testing.T, url string) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

func newPGCoordinator(t *testing.T, db DB, ttl time.Duration) *PostgresCoordinator {
	t.Helper()
	c, err := NewPostgresCoordinator(db, PostgresCoordinatorConfig{Table: "public.wm_align", MemberTTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestPostgresCoordinatorConfigAndMigrate(t *testing.T) {
	err := PostgresCoordinatorConfig{Table: "a.b.c", MemberTTL: time.Microsecond}.Validate()
	for _, f := range []string{"Table", "MemberTTL"} {
		if err == nil || !strings.Contains(err.Error(), f) {
			t.Errorf("Validate error %v does not name %s", err, f)
		}
	}
	if _, err := NewPostgresCoordinator(nil, PostgresCoordinatorConfig{}); err == nil {
		t.Error("nil DB accepted")
	}
	pool := testutil.Postgres(t)
	c := newPGCoordinator(t, pool, time.Minute)
	if err := c.Migrate(context.Background()); err != nil { // idempotent
		t.Fatal(err)
	}
	ctx := context.Background()
	if v, err := c.Report(ctx, "g", "a", MemberPending, time.Time{}); err != nil || v.Constrained || v.Unanchored != 0 {
		t.Fatalf("first report: %+v %v", v, err)
	}
	// b joins pending too: a is pending without an anchor.
	if v, err := c.Report(ctx, "g", "b", MemberPending, time.Time{}); err != nil || v.Constrained || v.Unanchored != 1 {
		t.Fatalf("second pending report: %+v %v", v, err)
	}
	// c's first watermark anchors a and b there, in the same statement.
	if v, err := c.Report(ctx, "g", "c", MemberHolding, at(time.Minute)); err != nil || !v.Min.Equal(at(time.Minute)) || v.Members != 2 || v.Unanchored != 0 {
		t.Fatalf("first holding report: %+v %v", v, err)
	}
	if v, err := c.Report(ctx, "g", "a", MemberPending, time.Time{}); err != nil || !v.Min.Equal(at(time.Minute)) || v.Members != 2 {
		t.Fatalf("anchored pending member's view: %+v %v", v, err)
	}
	if _, err := c.Report(ctx, "g", "c", MemberHolding, at(time.Hour)); err != nil {
		t.Fatal(err)
	}
	// a and b stay anchored at 1m (not at c's new watermark).
	if v, err := c.Report(ctx, "g", "c", MemberHolding, at(time.Hour)); err != nil || !v.Min.Equal(at(time.Minute)) {
		t.Fatalf("anchors moved: %+v %v", v, err)
	}
	if _, err := c.Report(ctx, "g", "a", MemberReleased, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if err := c.Leave(ctx, "g", "b"); err != nil {
		t.Fatal(err)
	}
	if v, err := c.Report(ctx, "g", "c", MemberHolding, at(time.Hour)); err != nil || v.Constrained || v.Members != 0 {
		t.Fatalf("view with a released and b gone: %+v %v", v, err)
	}
	ms, err := c.Members(ctx, "g")
	if err != nil || len(ms) != 2 || ms[0].Member != "a" || ms[0].State != MemberReleased || ms[1].State != MemberHolding || !ms[1].Watermark.Equal(at(time.Hour)) || !ms[1].Live {
		t.Fatalf("Members = %+v %v", ms, err)
	}
}

// Two coordinators, each on its own pool, on one database: the skew
// simulation's bound holds across them.
func TestPostgresCoordinatorSkewSimulation(t *testing.T) {
	url := testutil.PostgresURL(t)
	coords := []Coordinator{
		newPGCoordinator(t, newPool(t, url), 10*time.Second),
		newPGCoordinator(t, newPool(t, url), 10*time.Second),
	}
	span := testutil.SoakOr(300*time.Second, 3000*time.Second)
	runSkewSimulation(t, 2, func(m int) Coordinator { return coords[m] }, 20*time.Millisecond, span)
}

// A member that stops reporting (a crashed process) stops holding the group
// once its report expires.
func TestPostgresCoordinatorMemberExpiry(t *testing.T) {
	pool := testutil.Postgres(t)
	const ttl = 700 * time.Millisecond
	c := newPGCoordinator(t, pool, ttl)
	ctx := context.Background()
	if _, err := c.Report(ctx, "g", "crashed", MemberHolding, base); err != nil {
		t.Fatal(err)
	}
	reported := time.Now()
	tr := newTracker(t, time.Minute, 0)
	a, err := NewAligner(tr, AlignerConfig{Group: "g", Member: "a", MaxDrift: drift, UpdateInterval: 50 * time.Millisecond, Coordinator: c}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close() })
	tr.Shard(0).Observe(at(5 * drift))
	awaitBlockedByGroup(t, a, 0)
	done := waitAsync(context.Background(), a, 0)
	expectBlocked(t, a, 1)
	expectReturn(t, done, nil)
	if waited := time.Since(reported); waited < ttl {
		t.Fatalf("shard resumed %v after the crashed member's report, before its TTL %v", waited, ttl)
	}
	ms, err := c.Members(ctx, "g")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("members after expiry: %+v", ms)
	// Rows expired for more than a TTL are deleted by the others' reports.
	testutil.Poll(t, waitLong, "the expired row to be deleted", func() (bool, string) {
		ms, err := c.Members(ctx, "g")
		return err == nil && len(ms) == 1 && ms[0].Member == "a", fmt.Sprintf("%+v %v", ms, err)
	})
}

// A member restarted under the same name replaces its old report at once: it
// neither holds the group at its stale watermark until the TTL nor runs ahead.
func TestPostgresCoordinatorRestartedMember(t *testing.T) {
	pool := testutil.Postgres(t)
	c := newPGCoordinator(t, pool, time.Hour) // expiry cannot be what releases the group
	ctx := context.Background()
	if _, err := c.Report(ctx, "g", "b", MemberHolding, base); err != nil { // b, before its crash
		t.Fatal(err)
	}
	trA := newTracker(t, time.Minute, 0)
	a, err := NewAligner(trA, AlignerConfig{Group: "g", Member: "a", MaxDrift: drift, UpdateInterval: 50 * time.Millisecond, Coordinator: c}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close() })
	trA.Shard(0).Observe(at(5 * drift))
	awaitBlockedByGroup(t, a, 0)
	done := waitAsync(context.Background(), a, 0)
	expectBlocked(t, a, 1)

	trB := newTracker(t, time.Minute, 0) // b restarts: no watermark yet
	b, err := NewAligner(trB, AlignerConfig{Group: "g", Member: "b", MaxDrift: drift, UpdateInterval: 50 * time.Millisecond, Coordinator: c}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	expectReturn(t, done, nil)
	if err := b.Wait(ctx, 0); err != nil { // pending: may fetch
		t.Fatal(err)
	}
	ms, err := c.Members(ctx, "g")
	if err != nil || len(ms) != 2 || ms[1].State != MemberPending || !ms[1].Watermark.Equal(at(5*drift)) {
		t.Fatalf("restarted member not anchored at the group minimum: %+v %v", ms, err)
	}
	trB.Shard(0).Observe(at(50 * drift))
	testutil.Poll(t, waitLong, "the restarted member to be held by the group", func() (bool, string) {
		return !allowed(t, b, 0), "restarted member runs ahead"
	})
}

const childEnv = "WATERMARK_ALIGN_CHILD"

// TestPostgresCoordinatorAcrossProcesses runs half of the shards in a child
// process (this test binary re-executed) and half here, aligned through one
// PostgreSQL group. Every shard records its watermark in a progress table after
// each batch; the parent samples the spread from that table (one statement, one
// snapshot). The recorded value of a shard lags its live watermark by up to the
// batch in flight, so the bound checked is MaxDrift plus two batch spans.
func TestPostgresCoordinatorAcrossProcesses(t *testing.T) {
	url := testutil.PostgresURL(t)
	pool := newPool(t, url)
	c := newPGCoordinator(t, pool, 10*time.Second)
	if _, err := pool.Exec(context.Background(), progressSchema); err != nil {
		t.Fatal(err)
	}
	span := testutil.SoakOr(200*time.Second, 2000*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestPostgresCoordinatorChild$", "-test.v")
	cmd.Env = append(os.Environ(), childEnv+"="+url, "WATERMARK_ALIGN_SPAN="+span.String())
	var childOut strings.Builder
	cmd.Stdout, cmd.Stderr = &childOut, &childOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	childDone := make(chan error, 1)
	go func() { childDone <- cmd.Wait() }()

	var wg sync.WaitGroup
	wg.Add(1)
	var runErr error
	go func() {
		defer wg.Done()
		runErr = runProgressShards(ctx, pool, c, "parent", []int{0, 2, 4, 6}, span)
	}()
	maxSpread, samples := time.Duration(0), 0
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	parentDone := make(chan struct{})
	go func() { wg.Wait(); close(parentDone) }()
	var childErr error
	childFinished, parentFinished := false, false
	for !childFinished || !parentFinished {
		select {
		case childErr = <-childDone:
			childFinished = true
		case <-parentDone:
			parentFinished, parentDone = true, nil
		case <-tick.C:
		}
		var spread *int64
		if err := pool.QueryRow(ctx, `SELECT max(wm) - min(wm) FROM wm_progress WHERE NOT finished`).Scan(&spread); err != nil {
			t.Fatal(err)
		}
		if spread != nil {
			maxSpread = max(maxSpread, time.Duration(*spread))
			samples++
		}
	}
	if childErr != nil || runErr != nil {
		t.Fatalf("child: %v, parent: %v; child output:\n%s", childErr, runErr, childOut.String())
	}
	var shards, events int64
	if err := pool.QueryRow(ctx, `SELECT count(*), sum(events) FROM wm_progress WHERE finished`).Scan(&shards, &events); err != nil {
		t.Fatal(err)
	}
	want := int64(span/(normalStepX/10))*2 + int64(span/normalStepX)*6
	bound := drift3 + 2*batchSpanX
	t.Logf("across processes: %d shards finished, %d events, max spread %v (bound %v) over %d samples",
		shards, events, maxSpread, bound, samples)
	if shards != 8 || events != want {
		t.Errorf("%d shards finished with %d events, want 8 with %d", shards, events, want)
	}
	if maxSpread > bound {
		t.Errorf("max spread %v exceeds %v", maxSpread, bound)
	}
	if samples == 0 {
		t.Error("no sample")
	}
}

// TestPostgresCoordinatorChild is the child role of
// TestPostgresCoordinatorAcrossProcesses; without its environment it does
// nothing.
func TestPostgresCoordinatorChild(t *testing.T) {
	url := os.Getenv(childEnv)
	if url == "" {
		return // only a role of TestPostgresCoordinatorAcrossProcesses
	}
	span, err := time.ParseDuration(os.Getenv("WATERMARK_ALIGN_SPAN"))
	if err != nil {
		t.Fatal(err)
	}
	pool := newPool(t, url)
	c, err := NewPostgresCoordinator(pool, PostgresCoordinatorConfig{Table: "public.wm_align", MemberTTL: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := runProgressShards(ctx, pool, c, "child", []int{1, 3, 5, 7}, span); err != nil {
		t.Fatal(err)
	}
}

const (
	normalStepX = 100 * time.Millisecond
	batchX      = 50
	batchSpanX  = batchX * normalStepX
	drift3      = 30 * time.Second
)

const progressSchema = `CREATE TABLE wm_progress (
	shard int PRIMARY KEY, wm bigint NOT NULL, events bigint NOT NULL, finished boolean NOT NULL)`

// runProgressShards runs shards ids (shard 0 and 1 dense) as one member and
// records each shard's watermark in wm_progress after each batch.
func runProgressShards(ctx context.Context, pool *pgxpool.Pool, c Coordinator, member string, ids []int, span time.Duration) error {
	tr, err := NewTracker(Strategy{IdleTimeout: time.Minute})
	if err != nil {
		return err
	}
	for _, id := range ids {
		if _, err := tr.AddShard(id, time.Time{}); err != nil {
			return err
		}
	}
	a, err := NewAligner(tr, AlignerConfig{Group: "xproc", Member: member, MaxDrift: drift3, UpdateInterval: 20 * time.Millisecond, Coordinator: c}, nil)
	if err != nil {
		return err
	}
	defer a.Close()
	// The group is formed before the shards start (see runSkewSimulation):
	// wait until this member's view shows the other process.
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for v, _ := a.View(); v.Members+v.Unanchored < 1; v, _ = a.View() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: the other member never joined: %w", member, ctx.Err())
		case <-tick.C:
		}
	}
	errs := make(chan error, len(ids))
	for _, id := range ids {
		go func() {
			step := normalStepX
			if id < 2 {
				step /= 10
			}
			sh := tr.Shard(id)
			events := 0
			for et := time.Duration(0); et < span; {
				if err := a.WaitShard(ctx, sh); err != nil {
					errs <- err
					return
				}
				for k := 0; k < batchX && et < span; k++ {
					sh.Observe(at(et))
					events++
					et += step
				}
				w, _ := sh.Watermark()
				if _, err := pool.Exec(ctx, `INSERT INTO wm_progress VALUES ($1, $2, $3, false)
					ON CONFLICT (shard) DO UPDATE SET wm = $2, events = $3`, id, w.UnixNano(), events); err != nil {
					errs <- err
					return
				}
			}
			if _, _, err := tr.FinishShard(id); err != nil {
				errs <- err
				return
			}
			_, err := pool.Exec(ctx, `UPDATE wm_progress SET finished = true WHERE shard = $1`, id)
			errs <- err
		}()
	}
	for range ids {
		if err := <-errs; err != nil {
			return err
		}
	}
	return nil
}

// When reports fail, Err says so, and the member stops counting the others once
// its view is older than MemberTTL (they stopped counting it too): a database
// outage does not block shards forever.
func TestPostgresCoordinatorFailingReportsExpireTheView(t *testing.T) {
	pool := newPool(t, testutil.PostgresURL(t))
	const ttl = 500 * time.Millisecond
	c := newPGCoordinator(t, pool, ttl)
	if _, err := c.Report(context.Background(), "g", "slow", MemberHolding, base); err != nil {
		t.Fatal(err)
	}
	tr := newTracker(t, time.Minute, 0)
	a, err := NewAligner(tr, AlignerConfig{Group: "g", Member: "a", MaxDrift: drift, UpdateInterval: 50 * time.Millisecond, Coordinator: c}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close() }) // its Leave fails: the pool is closed
	tr.Shard(0).Observe(at(5 * drift))
	awaitBlockedByGroup(t, a, 0)
	done := waitAsync(context.Background(), a, 0)
	expectBlocked(t, a, 1)
	pool.Close()
	expectReturn(t, done, nil)
	if a.Err() == nil {
		t.Fatal("Err is nil while reports fail")
	}
	t.Logf("report error: %v", a.Err())
}
