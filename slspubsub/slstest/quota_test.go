package slstest_test

import (
	"strings"
	"sync"
	"testing"
	"time"

	sls "github.com/aliyun/aliyun-log-go-sdk"
	"github.com/watermill-sls/watermill-sls/internal/testutil"
	"github.com/watermill-sls/watermill-sls/slspubsub/slstest"
)

// manualClock is a clock tests move by hand (WithClock). It starts at the
// beginning of the current second, close enough to real time for request
// signatures to stay valid.
type manualClock struct {
	mu  sync.Mutex
	now time.Time
}

func newManualClock() *manualClock {
	return &manualClock{now: time.Now().Truncate(time.Second)}
}

func (c *manualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *manualClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// Keys routed to shard 0 and shard 1 of a two-shard logstore.
var (
	keyShard0 = "10000000000000000000000000000000"
	keyShard1 = "90000000000000000000000000000000"
)

// quotaEnv starts an emulator with clock and q, and logstore "proj"/"store"
// of two shards.
func quotaEnv(t *testing.T, clock *manualClock, q slstest.ShardQuota) (*testutil.SLSEnv, *seenRequests, *sls.Client) {
	t.Helper()
	env, seen := observedEnv(t, slstest.WithClock(clock.Now), slstest.WithShardQuota(q))
	return env, seen, env.Client()
}

// checkQuotaError fails t unless err is the SDK's *sls.Error for a 403 with
// code.
func checkQuotaError(t *testing.T, err error, code string) {
	t.Helper()
	if err == nil {
		t.Fatalf("call succeeded, want 403 %s", code)
	}
	if se := asSLSError(t, err); se.HTTPCode != 403 || se.Code != code || se.RequestID == "" {
		t.Fatalf("error %+v, want 403 %s", se, code)
	}
}

func TestQuotaWritesPerSecond(t *testing.T) {
	clock := newManualClock()
	env, seen, c := quotaEnv(t, clock, slstest.ShardQuota{WritesPerSecond: 3})
	write := func(key, v string) error { return c.PostLogStoreLogs("proj", "store", testGroup(v), &key) }
	for i := range 3 {
		if err := write(keyShard0, "ok"); err != nil {
			t.Fatalf("write %d within the quota: %v", i, err)
		}
	}
	checkQuotaError(t, write(keyShard0, "refused"), slstest.CodeShardWriteQuotaExceed)
	if n := len(seen.of(slstest.OpPostLogStoreLogs)); n != 4 {
		t.Fatalf("server saw %d writes, want 4 (the SDK does not retry 403)", n)
	}
	// The other shard has a quota of its own.
	for i := range 3 {
		if err := write(keyShard1, "other"); err != nil {
			t.Fatalf("write %d to shard 1: %v", i, err)
		}
	}
	// Reads are counted apart from writes.
	begin, _, err := env.Server.Cursors("proj", "store", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.PullLogs("proj", "store", 0, begin, "", 10); err != nil {
		t.Fatalf("read from a shard out of write quota: %v", err)
	}
	clock.Advance(time.Second)
	if err := write(keyShard0, "next second"); err != nil {
		t.Fatalf("write in the next second: %v", err)
	}
	vals := storedValues(t, env.Server, "proj", "store")
	if got := strings.Join(vals[0], ","); got != "ok,ok,ok,next second" {
		t.Fatalf("shard 0 holds %s; the refused write must not be stored", got)
	}
}

func TestQuotaWriteBytesPerSecond(t *testing.T) {
	clock := newManualClock()
	const limit = 1000
	_, _, c := quotaEnv(t, clock, slstest.ShardQuota{WriteBytesPerSecond: limit})
	value := strings.Repeat("x", 550) // a LogGroup of a bit more than 550 bytes
	size := len(marshal(t, testGroup(value)))
	admitted := 0
	var err error
	for range 5 {
		if err = c.PostLogStoreLogs("proj", "store", testGroup(value), &keyShard0); err != nil {
			break
		}
		admitted += size
	}
	checkQuotaError(t, err, slstest.CodeShardWriteQuotaExceed)
	// Writes are admitted while the second's budget lasts.
	if admitted < limit || admitted >= limit+size {
		t.Fatalf("admitted %d bytes before refusing, want the %d-byte budget used up by at most one write", admitted, limit)
	}
	if err := c.PostLogStoreLogs("proj", "store", testGroup(value), &keyShard1); err != nil {
		t.Fatalf("write to shard 1: %v", err)
	}
	clock.Advance(time.Second)
	if err := c.PostLogStoreLogs("proj", "store", testGroup(value), &keyShard0); err != nil {
		t.Fatalf("write in the next second: %v", err)
	}
}

func TestQuotaReadsPerSecond(t *testing.T) {
	clock := newManualClock()
	env, seen, c := quotaEnv(t, clock, slstest.ShardQuota{ReadsPerSecond: 2})
	if err := c.PostLogStoreLogs("proj", "store", testGroup("a"), &keyShard0); err != nil {
		t.Fatal(err)
	}
	begin0, _, err := env.Server.Cursors("proj", "store", 0)
	if err != nil {
		t.Fatal(err)
	}
	begin1, _, err := env.Server.Cursors("proj", "store", 1)
	if err != nil {
		t.Fatal(err)
	}
	pull := func(shard int, cursor string) error {
		_, _, err := c.PullLogs("proj", "store", shard, cursor, "", 10)
		return err
	}
	for i := range 2 {
		if err := pull(0, begin0); err != nil {
			t.Fatalf("read %d within the quota: %v", i, err)
		}
	}
	checkQuotaError(t, pull(0, begin0), slstest.CodeShardReadQuotaExceed)
	if n := len(seen.of(slstest.OpPullLogs)); n != 3 {
		t.Fatalf("server saw %d reads, want 3 (the SDK does not retry 403)", n)
	}
	if err := pull(1, begin1); err != nil {
		t.Fatalf("read from shard 1: %v", err)
	}
	// Cursor calls and writes are not reads.
	if _, err := c.GetCursor("proj", "store", 0, "end"); err != nil {
		t.Fatalf("GetCursor on a shard out of read quota: %v", err)
	}
	if err := c.PostLogStoreLogs("proj", "store", testGroup("b"), &keyShard0); err != nil {
		t.Fatalf("write to a shard out of read quota: %v", err)
	}
	clock.Advance(time.Second)
	if err := pull(0, begin0); err != nil {
		t.Fatalf("read in the next second: %v", err)
	}
}

func TestQuotaReadBytesPerSecond(t *testing.T) {
	clock := newManualClock()
	const limit = 500
	env, _, c := quotaEnv(t, clock, slstest.ShardQuota{ReadBytesPerSecond: limit})
	for range 5 {
		if _, err := env.Server.AppendLogGroup("proj", "store", 0, testGroup(strings.Repeat("r", 300))); err != nil {
			t.Fatal(err)
		}
	}
	begin, _, err := env.Server.Cursors("proj", "store", 0)
	if err != nil {
		t.Fatal(err)
	}
	cursor, read, reads := begin, 0, 0
	for reads < 5 {
		gl, plm, err2 := c.PullLogsWithQuery(&sls.PullLogRequest{Project: "proj", Logstore: "store", ShardID: 0, Cursor: cursor, LogGroupMaxCount: 1})
		if err = err2; err != nil {
			break
		}
		if len(gl.LogGroups) != 1 {
			t.Fatalf("pulled %d groups", len(gl.LogGroups))
		}
		cursor, read, reads = plm.NextCursor, read+plm.RawSize, reads+1
	}
	checkQuotaError(t, err, slstest.CodeShardReadQuotaExceed)
	if read < limit || reads != 2 {
		t.Fatalf("read %d bytes in %d calls before refusing, want the %d-byte budget used up", read, reads, limit)
	}
	clock.Advance(time.Second)
	if gl, _, err := c.PullLogs("proj", "store", 0, cursor, "", 1); err != nil || len(gl.LogGroups) != 1 {
		t.Fatalf("read in the next second: %v, %v", gl, err)
	}
}

func TestSetShardQuota(t *testing.T) {
	clock := newManualClock()
	env, _, c := quotaEnv(t, clock, slstest.ShardQuota{})
	write := func() error { return c.PostLogStoreLogs("proj", "store", testGroup("w"), &keyShard0) }
	for i := range 20 {
		if err := write(); err != nil {
			t.Fatalf("write %d without a quota: %v", i, err)
		}
	}
	env.Server.SetShardQuota(slstest.ShardQuota{WritesPerSecond: 1})
	if err := write(); err != nil {
		t.Fatalf("first write under the new quota: %v", err)
	}
	checkQuotaError(t, write(), slstest.CodeShardWriteQuotaExceed)
	env.Server.SetShardQuota(slstest.ShardQuota{})
	if err := write(); err != nil {
		t.Fatalf("write after lifting the quota: %v", err)
	}
}

// SLS's documented read quota, 100 reads per second and shard, applies as is.
func TestSLSShardQuotaReads(t *testing.T) {
	clock := newManualClock()
	env, _, c := quotaEnv(t, clock, slstest.SLSShardQuota)
	begin, _, err := env.Server.Cursors("proj", "store", 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := range slstest.SLSShardQuota.ReadsPerSecond {
		if _, _, err := c.PullLogs("proj", "store", 0, begin, "", 1); err != nil {
			t.Fatalf("read %d: %v", i, err)
		}
	}
	_, _, err = c.PullLogs("proj", "store", 0, begin, "", 1)
	checkQuotaError(t, err, slstest.CodeShardReadQuotaExceed)
}
