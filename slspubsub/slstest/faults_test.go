package slstest_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	sls "github.com/aliyun/aliyun-log-go-sdk"
	"github.com/gogo/protobuf/proto"
	"github.com/watermill-sls/watermill-sls/internal/testutil"
	"github.com/watermill-sls/watermill-sls/slspubsub/slstest"
)

// seenRequests records every request a server answered, through
// WithRequestObserver.
type seenRequests struct {
	mu    sync.Mutex
	infos []slstest.RequestInfo
}

func (s *seenRequests) observe(ri slstest.RequestInfo) {
	s.mu.Lock()
	s.infos = append(s.infos, ri)
	s.mu.Unlock()
}

// of returns the requests of operation op, in the order they were answered.
func (s *seenRequests) of(op slstest.Operation) []slstest.RequestInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []slstest.RequestInfo
	for _, ri := range s.infos {
		if ri.Op == op {
			out = append(out, ri)
		}
	}
	return out
}

// statuses lists the HTTP statuses of op's requests (0 for a reset).
func (s *seenRequests) statuses(op slstest.Operation) []int {
	var out []int
	for _, ri := range s.of(op) {
		out = append(out, ri.Status)
	}
	return out
}

// observedEnv starts an emulator that records its requests, with logstore
// "proj"/"store" of two shards.
func observedEnv(t *testing.T, opts ...slstest.Option) (*testutil.SLSEnv, *seenRequests) {
	t.Helper()
	seen := &seenRequests{}
	env := testutil.SLS(t, append(opts, slstest.WithRequestObserver(seen.observe))...)
	env.LogStore(t, "proj", "store", 2)
	return env, seen
}

// testGroup is a LogGroup with one log per value.
func testGroup(values ...string) *sls.LogGroup {
	g := &sls.LogGroup{Topic: proto.String("test")}
	for _, v := range values {
		g.Logs = append(g.Logs, &sls.Log{Time: proto.Uint32(uint32(time.Now().Unix())),
			Contents: []*sls.LogContent{{Key: proto.String("v"), Value: proto.String(v)}}})
	}
	return g
}

// storedValues returns the values of every log stored in the logstore's
// shards, shard by shard.
func storedValues(t *testing.T, srv *slstest.Server, project, logstore string) map[int][]string {
	t.Helper()
	shards, err := srv.Shards(project, logstore)
	if err != nil {
		t.Fatal(err)
	}
	out := map[int][]string{}
	for _, sh := range shards {
		groups, err := srv.LogGroups(project, logstore, sh.ShardID)
		if err != nil {
			t.Fatal(err)
		}
		for _, g := range groups {
			for _, l := range g.Group.Logs {
				out[sh.ShardID] = append(out[sh.ShardID], l.Contents[0].GetValue())
			}
		}
	}
	return out
}

func countStored(vals map[int][]string) int {
	n := 0
	for _, v := range vals {
		n += len(v)
	}
	return n
}

// asSLSError returns err as an *sls.Error, failing t when it is not one.
func asSLSError(t *testing.T, err error) *sls.Error {
	t.Helper()
	var se *sls.Error
	if !errors.As(err, &se) {
		t.Fatalf("error %T %v is not an *sls.Error", err, err)
	}
	return se
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestFaultServerBusyPullLogsRetried(t *testing.T) {
	env, seen := observedEnv(t)
	c := env.Client()
	if _, err := env.Server.AppendLogGroup("proj", "store", 0, testGroup("a", "b")); err != nil {
		t.Fatal(err)
	}
	begin, _, err := env.Server.Cursors("proj", "store", 0)
	if err != nil {
		t.Fatal(err)
	}
	f := slstest.ErrorFault(slstest.OpPullLogs, http.StatusServiceUnavailable, slstest.CodeServerBusy)
	f.Times = 2
	t.Cleanup(env.Server.InjectFault(f))

	gl, _, err := c.PullLogs("proj", "store", 0, begin, "", 10)
	if err != nil {
		t.Fatalf("PullLogs after two 503s: %v", err)
	}
	if len(gl.LogGroups) != 1 || len(gl.LogGroups[0].Logs) != 2 {
		t.Fatalf("pulled %v, want the one stored group", gl)
	}
	if got, want := seen.statuses(slstest.OpPullLogs), []int{503, 503, 200}; !equalInts(got, want) {
		t.Fatalf("server answered PullLogs with %v, want %v", got, want)
	}
	for _, ri := range seen.of(slstest.OpPullLogs)[:2] {
		if ri.ErrorCode != slstest.CodeServerBusy || ri.Shard != 0 {
			t.Fatalf("injected answer recorded as %+v", ri)
		}
	}
}

// A GET that keeps failing with 5xx is retried until the SDK's retry timeout;
// the SDK then returns its context error, quoting the last SLS error in the
// message. Calls that bypass the SDK's retry loop return the *sls.Error.
func TestFaultServerBusyAlways(t *testing.T) {
	env, seen := observedEnv(t)
	c := env.Client()
	c.SetRetryTimeout(1500 * time.Millisecond)
	begin, _, err := env.Server.Cursors("proj", "store", 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(env.Server.InjectFault(slstest.ErrorFault(slstest.OpPullLogs, 503, slstest.CodeServerBusy)))
	t.Cleanup(env.Server.InjectFault(slstest.ErrorFault(slstest.OpGetCursorTime, 503, slstest.CodeServerBusy)))

	_, _, err = c.PullLogs("proj", "store", 0, begin, "", 10)
	if err == nil {
		t.Fatal("PullLogs succeeded against a server that always answers 503")
	}
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), slstest.CodeServerBusy) {
		t.Fatalf("PullLogs error %T %v: want the SDK's retry deadline quoting ServerBusy", err, err)
	}
	pulls := seen.statuses(slstest.OpPullLogs)
	if len(pulls) < 2 {
		t.Fatalf("server saw %d PullLogs requests, want the SDK to retry", len(pulls))
	}
	for _, s := range pulls {
		if s != 503 {
			t.Fatalf("PullLogs statuses %v, want only 503", pulls)
		}
	}

	_, err = c.GetCursorTime("proj", "store", 0, begin)
	se := asSLSError(t, err)
	reqs := seen.of(slstest.OpGetCursorTime)
	if len(reqs) != 1 {
		t.Fatalf("GetCursorTime sent %d requests, want 1 (no retry on this path)", len(reqs))
	}
	if se.HTTPCode != 503 || se.Code != slstest.CodeServerBusy || se.Message != "injected by slstest" || se.RequestID != reqs[0].RequestID {
		t.Fatalf("GetCursorTime error %+v, want 503 ServerBusy with request id %s", se, reqs[0].RequestID)
	}
}

// PullLogs hands a non-retried SLS error back as the *sls.Error the
// request layer built (its own "%v:%v" wrapping is never reached).
func TestFaultPullLogsErrorShape(t *testing.T) {
	env, seen := observedEnv(t)
	begin, _, err := env.Server.Cursors("proj", "store", 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(env.Server.InjectFault(slstest.ErrorFault(slstest.OpPullLogs, 403, slstest.CodeShardReadQuotaExceed)))
	_, _, err = env.Client().PullLogs("proj", "store", 1, begin, "", 10)
	se := asSLSError(t, err)
	reqs := seen.of(slstest.OpPullLogs)
	if len(reqs) != 1 || se.HTTPCode != 403 || se.Code != slstest.CodeShardReadQuotaExceed || se.RequestID != reqs[0].RequestID {
		t.Fatalf("error %+v after %d requests, want one 403 ReadQuotaExceed", se, len(reqs))
	}
}

func TestFaultQuotaErrorNotRetried(t *testing.T) {
	key := "20000000000000000000000000000000"
	cases := []struct {
		name string
		op   slstest.Operation
		code string
		call func(c *sls.Client) error
	}{
		{"PostLogStoreLogs", slstest.OpPostLogStoreLogs, slstest.CodeShardWriteQuotaExceed, func(c *sls.Client) error {
			return c.PostLogStoreLogs("proj", "store", testGroup("x"), &key)
		}},
		{"PutLogs", slstest.OpPutLogs, slstest.CodeShardWriteQuotaExceed, func(c *sls.Client) error {
			return c.PutLogs("proj", "store", testGroup("x"))
		}},
		{"PutLogs QPS", slstest.OpPutLogs, "Write QPS Exceed", func(c *sls.Client) error {
			return c.PutLogs("proj", "store", testGroup("x"))
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env, seen := observedEnv(t)
			t.Cleanup(env.Server.InjectFault(slstest.ErrorFault(tc.op, http.StatusForbidden, tc.code)))
			se := asSLSError(t, tc.call(env.Client()))
			reqs := seen.of(tc.op)
			if len(reqs) != 1 {
				t.Fatalf("server saw %d %s requests, want exactly 1 (403 is not retried)", len(reqs), tc.op)
			}
			if se.HTTPCode != 403 || se.Code != tc.code || se.RequestID != reqs[0].RequestID {
				t.Fatalf("error %+v, want 403 %s with request id %s", se, tc.code, reqs[0].RequestID)
			}
			if n := countStored(storedValues(t, env.Server, "proj", "store")); n != 0 {
				t.Fatalf("%d logs stored by a refused write", n)
			}
		})
	}
}

func TestFaultPutLogsServerErrorRetriedOnce(t *testing.T) {
	for _, status := range []int{500, 502, 503} {
		t.Run(http.StatusText(status), func(t *testing.T) {
			env, seen := observedEnv(t)
			f := slstest.ErrorFault(slstest.OpPutLogs, status, slstest.CodeInternalServerError)
			f.Times = 1
			t.Cleanup(env.Server.InjectFault(f))
			if err := env.Client().PutLogs("proj", "store", testGroup("once")); err != nil {
				t.Fatalf("PutLogs after one %d: %v", status, err)
			}
			if got, want := seen.statuses(slstest.OpPutLogs), []int{status, 200}; !equalInts(got, want) {
				t.Fatalf("server answered PutLogs with %v, want %v", got, want)
			}
			vals := storedValues(t, env.Server, "proj", "store")
			if countStored(vals) != 1 {
				t.Fatalf("stored %v, want the log exactly once", vals)
			}
		})
	}
}

func TestFaultLatency(t *testing.T) {
	env, seen := observedEnv(t)
	const latency = 200 * time.Millisecond
	t.Cleanup(env.Server.InjectFault(slstest.Fault{Op: slstest.OpGetCursor, Latency: latency}))

	start := time.Now()
	if _, err := env.Client().GetCursor("proj", "store", 0, "begin"); err != nil {
		t.Fatal(err)
	}
	if elapsed := time.Since(start); elapsed < latency {
		t.Fatalf("GetCursor took %v, want at least the injected %v", elapsed, latency)
	}
	if d := seen.of(slstest.OpGetCursor)[0].Duration; d < latency {
		t.Fatalf("observer reports %v, want at least %v", d, latency)
	}

	// A client that gives up sooner sees a timeout.
	t.Cleanup(env.Server.InjectFault(slstest.Fault{Op: slstest.OpGetCursorTime, Latency: 5 * time.Second}))
	t.Cleanup(env.Server.InjectFault(slstest.Fault{Op: slstest.OpPutLogs, Latency: 5 * time.Second}))
	impatient := env.Client()
	impatient.HTTPClient = env.Server.HTTPClient()
	impatient.HTTPClient.Timeout = 50 * time.Millisecond
	begin, _, err := env.Server.Cursors("proj", "store", 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = impatient.GetCursorTime("proj", "store", 0, begin)
	var ue *url.Error
	if !errors.As(err, &ue) || !ue.Timeout() {
		t.Fatalf("GetCursorTime error %T %v, want a *url.Error timeout", err, err)
	}
	// Writes wrap transport errors into an *sls.Error "ClientError".
	err = impatient.PutLogs("proj", "store", testGroup("late"))
	if se := asSLSError(t, err); se.HTTPCode != -1 || se.Code != "ClientError" || !strings.Contains(se.Message, "Timeout") {
		t.Fatalf("PutLogs error %+v, want the SDK's ClientError for a timeout", se)
	}
}

func TestFaultReset(t *testing.T) {
	env, seen := observedEnv(t)
	c := env.Client()
	t.Cleanup(env.Server.InjectFault(slstest.Fault{Op: slstest.OpPutLogs, Reset: true}))
	t.Cleanup(env.Server.InjectFault(slstest.Fault{Op: slstest.OpSplitShard, Reset: true}))

	// PutLogs does not retry transport errors and wraps them.
	err := c.PutLogs("proj", "store", testGroup("lost"))
	se := asSLSError(t, err)
	if se.HTTPCode != -1 || se.Code != "ClientError" {
		t.Fatalf("PutLogs error %+v, want the SDK's ClientError", se)
	}
	if got := seen.statuses(slstest.OpPutLogs); !equalInts(got, []int{0}) {
		t.Fatalf("server saw PutLogs %v, want one reset request", got)
	}
	if n := countStored(storedValues(t, env.Server, "proj", "store")); n != 0 {
		t.Fatalf("%d logs stored by a reset write", n)
	}

	// SplitShard goes through the client's unwrapped request path.
	_, err = c.SplitShard("proj", "store", 0, "")
	var ue *url.Error
	if !errors.As(err, &ue) {
		t.Fatalf("SplitShard error %T %v, want a *url.Error", err, err)
	}
	if shards, _ := env.Server.Shards("proj", "store"); len(shards) != 2 {
		t.Fatalf("a reset split changed the shards: %+v", shards)
	}

	// A GET reset once is retried and succeeds.
	f := slstest.Fault{Op: slstest.OpGetCursor, Reset: true, Times: 1}
	t.Cleanup(env.Server.InjectFault(f))
	if _, err := c.GetCursor("proj", "store", 1, "end"); err != nil {
		t.Fatalf("GetCursor after one reset: %v", err)
	}
	if got := seen.statuses(slstest.OpGetCursor); !equalInts(got, []int{0, 200}) {
		t.Fatalf("server saw GetCursor %v, want a reset then a success", got)
	}
}

func TestFaultTruncate(t *testing.T) {
	env, seen := observedEnv(t)
	c := env.Client()
	for i := range 5 {
		if _, err := env.Server.AppendLogGroup("proj", "store", 0, testGroup(strings.Repeat("x", 100*i), "y")); err != nil {
			t.Fatal(err)
		}
	}
	begin, _, err := env.Server.Cursors("proj", "store", 0)
	if err != nil {
		t.Fatal(err)
	}
	remove := env.Server.InjectFault(slstest.Fault{Op: slstest.OpPullLogs, Truncate: true})
	_, _, err = c.PullLogs("proj", "store", 0, begin, "", 100)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("PullLogs of a truncated body: %T %v, want io.ErrUnexpectedEOF", err, err)
	}
	if got := seen.statuses(slstest.OpPullLogs); len(got) != 1 {
		t.Fatalf("server saw PullLogs %v, want one request (the SDK does not retry body reads)", got)
	}
	remove()
	gl, _, err := c.PullLogs("proj", "store", 0, begin, "", 100)
	if err != nil || len(gl.LogGroups) != 5 {
		t.Fatalf("PullLogs after removing the fault: %v, %v", gl, err)
	}
}

// selectorCall is one SDK call of the selector tests.
type selectorCall struct {
	project, logstore string
	op                slstest.Operation // OpGetCursor or OpListShards
	shard             int
	hit               bool // whether the fault should hit it
}

func TestFaultSelectors(t *testing.T) {
	gc := func(project, logstore string, shard int, hit bool) selectorCall {
		return selectorCall{project, logstore, slstest.OpGetCursor, shard, hit}
	}
	ls := func(project, logstore string, hit bool) selectorCall {
		return selectorCall{project, logstore, slstest.OpListShards, -1, hit}
	}
	const a, b, sa, sb = "proj-a", "proj-b", "store-a", "store-b"
	cases := []struct {
		name  string
		fault slstest.Fault
		calls []selectorCall
	}{
		{"no selector hits everything", slstest.Fault{},
			[]selectorCall{gc(a, sa, 0, true), ls(b, sb, true)}},
		{"op", slstest.Fault{Op: slstest.OpGetCursor},
			[]selectorCall{gc(a, sa, 0, true), ls(a, sa, false), gc(b, sb, 1, true)}},
		{"project", slstest.Fault{Project: b},
			[]selectorCall{gc(a, sa, 0, false), gc(b, sa, 0, true), ls(b, sb, true), ls(a, sb, false)}},
		{"logstore", slstest.Fault{Logstore: sb},
			[]selectorCall{gc(a, sa, 0, false), gc(a, sb, 1, true), gc(b, sb, 0, true), ls(b, sa, false)}},
		{"shards", slstest.Fault{Shards: []int{1}},
			[]selectorCall{gc(a, sa, 0, false), gc(a, sa, 1, true), gc(b, sb, 1, true), ls(a, sa, false)}},
		{"all selectors", slstest.Fault{Op: slstest.OpGetCursor, Project: b, Logstore: sa, Shards: []int{0}},
			[]selectorCall{gc(b, sa, 0, true), gc(b, sa, 1, false), gc(b, sb, 0, false), gc(a, sa, 0, false), ls(b, sa, false)}},
		{"skip", slstest.Fault{Op: slstest.OpGetCursor, Skip: 2},
			[]selectorCall{gc(a, sa, 0, false), ls(a, sa, false), gc(a, sa, 0, false), gc(a, sa, 0, true), gc(a, sa, 1, true)}},
		{"times", slstest.Fault{Op: slstest.OpGetCursor, Times: 2},
			[]selectorCall{gc(a, sa, 0, true), gc(a, sa, 0, true), gc(a, sa, 0, false), gc(a, sa, 1, false)}},
		{"skip then times", slstest.Fault{Op: slstest.OpGetCursor, Skip: 1, Times: 2},
			[]selectorCall{gc(a, sa, 0, false), gc(a, sa, 0, true), gc(a, sa, 0, true), gc(a, sa, 0, false)}},
		{"only matching requests count toward skip", slstest.Fault{Shards: []int{1}, Skip: 1},
			[]selectorCall{gc(a, sa, 0, false), gc(a, sa, 1, false), gc(a, sa, 0, false), gc(a, sa, 1, true)}},
		{"probability 1 hits every one", slstest.Fault{Op: slstest.OpGetCursor, Probability: 1},
			[]selectorCall{gc(a, sa, 0, true), gc(a, sa, 0, true), gc(a, sa, 0, true)}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env := testutil.SLS(t)
			for _, p := range []string{a, b} {
				for _, l := range []string{sa, sb} {
					env.LogStore(t, p, l, 2)
				}
			}
			f := tc.fault
			f.Status, f.Code, f.Message = http.StatusBadRequest, "InjectedFault", "selector test"
			t.Cleanup(env.Server.InjectFault(f))
			c := env.Client()
			for i, call := range tc.calls {
				var err error
				if call.op == slstest.OpGetCursor {
					_, err = c.GetCursor(call.project, call.logstore, call.shard, "begin")
				} else {
					_, err = c.ListShards(call.project, call.logstore)
				}
				var se *sls.Error
				hit := errors.As(err, &se) && se.Code == "InjectedFault" && se.Message == "selector test"
				if err != nil && !hit {
					t.Fatalf("call %d (%+v): unexpected error %v", i, call, err)
				}
				if hit != call.hit {
					t.Fatalf("call %d (%+v): hit = %v, want %v", i, call, hit, call.hit)
				}
			}
		})
	}
}

// probabilityHits sends n GetCursor calls to a fresh server seeded with seed
// carrying a fault of probability p and returns the indices it hit.
func probabilityHits(t *testing.T, seed int64, p float64, n int) []int {
	t.Helper()
	env := testutil.SLS(t, slstest.WithSeed(seed))
	env.LogStore(t, "proj", "store", 2)
	t.Cleanup(env.Server.InjectFault(slstest.Fault{Op: slstest.OpGetCursor, Probability: p, Status: 400, Code: "InjectedFault"}))
	c := env.Client()
	var hits []int
	for i := range n {
		_, err := c.GetCursor("proj", "store", i%2, "begin")
		switch {
		case err == nil:
		case strings.Contains(err.Error(), "InjectedFault"):
			hits = append(hits, i)
		default:
			t.Fatalf("call %d: %v", i, err)
		}
	}
	return hits
}

func TestFaultProbabilityDeterministic(t *testing.T) {
	const n, p = 200, 0.3
	first := probabilityHits(t, 42, p, n)
	second := probabilityHits(t, 42, p, n)
	if !equalInts(first, second) {
		t.Fatalf("same seed, same requests, different faults:\n%v\n%v", first, second)
	}
	// 200 draws at 0.3 hit about 60 times; these bounds are many standard
	// deviations wide.
	if len(first) < 20 || len(first) > 110 {
		t.Fatalf("%d of %d requests hit with probability %v", len(first), n, p)
	}
	if other := probabilityHits(t, 43, p, n); equalInts(first, other) {
		t.Fatalf("seeds 42 and 43 injected faults at the same %d indices", len(first))
	}
}

func TestFaultRemoveAndClear(t *testing.T) {
	env, _ := observedEnv(t)
	c := env.Client()
	code := func(err error) string {
		if err == nil {
			return ""
		}
		return asSLSError(t, err).Code
	}
	getCursor := func() string { _, err := c.GetCursor("proj", "store", 0, "end"); return code(err) }
	listShards := func() string { _, err := c.ListShards("proj", "store"); return code(err) }

	removeFirst := env.Server.InjectFault(slstest.ErrorFault(slstest.OpGetCursor, 400, "First"))
	env.Server.InjectFault(slstest.ErrorFault(slstest.OpGetCursor, 400, "Second"))
	env.Server.InjectFault(slstest.ErrorFault(slstest.OpListShards, 400, "Third"))
	if got := getCursor(); got != "First" {
		t.Fatalf("GetCursor answered %q, want the first matching fault", got)
	}
	removeFirst()
	removeFirst() // removing twice is harmless
	if got := getCursor(); got != "Second" {
		t.Fatalf("GetCursor answered %q after removing the first fault, want Second", got)
	}
	if got := listShards(); got != "Third" {
		t.Fatalf("ListShards answered %q, want Third", got)
	}
	env.Server.ClearFaults()
	if got, got2 := getCursor(), listShards(); got != "" || got2 != "" {
		t.Fatalf("after ClearFaults: GetCursor %q, ListShards %q, want successes", got, got2)
	}
}

// Fault.Shards selects routed writes by the shard their key routes to, so a
// test can make one shard's writes fail.
func TestFaultShardsSelectRoutedWrites(t *testing.T) {
	env, seen := observedEnv(t)
	c := env.Client()
	f := slstest.ErrorFault(slstest.OpPostLogStoreLogs, http.StatusForbidden, slstest.CodeShardWriteQuotaExceed)
	f.Shards = []int{1}
	t.Cleanup(env.Server.InjectFault(f))
	if err := c.PostLogStoreLogs("proj", "store", testGroup("to-0"), &keyShard0); err != nil {
		t.Fatalf("write to shard 0: %v", err)
	}
	err := c.PostLogStoreLogs("proj", "store", testGroup("to-1"), &keyShard1)
	if se := asSLSError(t, err); se.HTTPCode != 403 || se.Code != slstest.CodeShardWriteQuotaExceed {
		t.Fatalf("write to shard 1: %+v, want the injected 403", se)
	}
	var shards []int
	for _, ri := range seen.of(slstest.OpPostLogStoreLogs) {
		shards = append(shards, ri.Shard)
	}
	if !equalInts(shards, []int{0, 1}) {
		t.Fatalf("observer reports shards %v, want [0 1]", shards)
	}
	// After a split the children are selected by their own ids.
	if _, err := c.SplitShard("proj", "store", 1, ""); err != nil {
		t.Fatal(err)
	}
	if err := c.PostLogStoreLogs("proj", "store", testGroup("to-2"), &keyShard1); err != nil {
		t.Fatalf("write to shard 2, a child of shard 1: %v", err)
	}
	if got := storedValues(t, env.Server, "proj", "store"); strings.Join(got[0], ",") != "to-0" || strings.Join(got[2], ",") != "to-2" || len(got[1]) != 0 {
		t.Fatalf("stored %v", got)
	}
}
