package slstest_test

import (
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	sls "github.com/aliyun/aliyun-log-go-sdk"
	"github.com/watermill-sls/watermill-sls/internal/testutil"
	"github.com/watermill-sls/watermill-sls/slspubsub/slstest"
)

const (
	keyMin = "00000000000000000000000000000000"
	keyMax = "ffffffffffffffffffffffffffffffff"
	keyMid = "80000000000000000000000000000000"
)

// shardRange is what the tests compare of a shard.
type shardRange struct {
	id            int
	status        string
	begin, end    string
	createTimeSet bool
}

func rangesOf(shards []*sls.Shard) []shardRange {
	out := make([]shardRange, len(shards))
	for i, s := range shards {
		out[i] = shardRange{s.ShardID, s.Status, s.InclusiveBeginKey, s.ExclusiveBeginKey, s.CreateTime > 0}
	}
	return out
}

func rw(id int, begin, end string) shardRange { return shardRange{id, "readwrite", begin, end, true} }
func ro(id int, begin, end string) shardRange { return shardRange{id, "readonly", begin, end, true} }

func checkRanges(t *testing.T, what string, got []*sls.Shard, want []shardRange) {
	t.Helper()
	g := rangesOf(got)
	if fmt.Sprint(g) != fmt.Sprint(want) {
		t.Fatalf("%s:\n got %v\nwant %v", what, g, want)
	}
}

// checkPartition fails t unless the readwrite shards cover the hash space
// contiguously, without overlap.
func checkPartition(t *testing.T, shards []*sls.Shard) {
	t.Helper()
	next := keyMin
	var rws []*sls.Shard
	for _, s := range shards {
		if s.Status == "readwrite" {
			rws = append(rws, s)
		}
	}
	for len(rws) > 0 {
		found := false
		for i, s := range rws {
			if s.InclusiveBeginKey == next {
				if s.ExclusiveBeginKey <= s.InclusiveBeginKey {
					t.Fatalf("shard %d has the empty range [%s, %s)", s.ShardID, s.InclusiveBeginKey, s.ExclusiveBeginKey)
				}
				next = s.ExclusiveBeginKey
				rws = append(rws[:i], rws[i+1:]...)
				found = true
				break
			}
		}
		if !found {
			t.Fatalf("no readwrite shard begins at %s; shards %v", next, rangesOf(shards))
		}
	}
	if next != keyMax {
		t.Fatalf("readwrite shards end at %s, want %s", next, keyMax)
	}
}

// bigKey is the hash key i*2^128/n, as 32 hex digits.
func bigKey(i, n int64) string {
	v := new(big.Int).Lsh(big.NewInt(i), 128)
	v.Div(v, big.NewInt(n))
	s := v.Text(16)
	return strings.Repeat("0", 32-len(s)) + s
}

func TestInitialShardRanges(t *testing.T) {
	env := testutil.SLS(t)
	c := env.Client()
	if _, err := c.CreateProject("proj", ""); err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{1, 2, 3, 4, 5, 8, 16, 64, 256} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			name := fmt.Sprintf("store-%d", n)
			if err := c.CreateLogStore("proj", name, 1, n, false, 0); err != nil {
				t.Fatal(err)
			}
			shards, err := c.ListShards("proj", name)
			if err != nil {
				t.Fatal(err)
			}
			if len(shards) != n {
				t.Fatalf("%d shards, want %d", len(shards), n)
			}
			for i, s := range shards {
				if s.ShardID != i || s.Status != "readwrite" || s.CreateTime <= 0 {
					t.Fatalf("shard %d: %+v", i, s)
				}
				for _, k := range []string{s.InclusiveBeginKey, s.ExclusiveBeginKey} {
					if len(k) != 32 || strings.Trim(k, "0123456789abcdef") != "" {
						t.Fatalf("shard %d key %q is not 32 lowercase hex digits", i, k)
					}
				}
				// Even ranges: shard i begins at i/n of the space.
				if want := bigKey(int64(i), int64(n)); s.InclusiveBeginKey != want {
					t.Fatalf("shard %d begins at %s, want %s", i, s.InclusiveBeginKey, want)
				}
			}
			checkPartition(t, shards)
		})
	}
	// The logstore reports its readwrite shard count.
	ls, err := c.GetLogStore("proj", "store-8")
	if err != nil || ls.ShardCount != 8 {
		t.Fatalf("GetLogStore: %+v, %v", ls, err)
	}
}

func TestSplitAndMergeShards(t *testing.T) {
	const q1, q3 = "40000000000000000000000000000000", "c0000000000000000000000000000000"
	cases := []struct {
		name   string
		shards int
		do     func(c *sls.Client) ([]*sls.Shard, error)
		result []shardRange // what the call answers
		after  []shardRange // what ListShards then answers
	}{
		{"split at the midpoint", 1,
			func(c *sls.Client) ([]*sls.Shard, error) { return c.SplitShard("proj", "store", 0, "") },
			[]shardRange{ro(0, keyMin, keyMax), rw(1, keyMin, keyMid), rw(2, keyMid, keyMax)},
			[]shardRange{ro(0, keyMin, keyMax), rw(1, keyMin, keyMid), rw(2, keyMid, keyMax)}},
		{"split at a key", 2,
			func(c *sls.Client) ([]*sls.Shard, error) { return c.SplitShard("proj", "store", 0, q1) },
			[]shardRange{ro(0, keyMin, keyMid), rw(2, keyMin, q1), rw(3, q1, keyMid)},
			[]shardRange{ro(0, keyMin, keyMid), rw(1, keyMid, keyMax), rw(2, keyMin, q1), rw(3, q1, keyMid)}},
		{"split at a short key", 2,
			func(c *sls.Client) ([]*sls.Shard, error) { return c.SplitShard("proj", "store", 1, "C") },
			[]shardRange{ro(1, keyMid, keyMax), rw(2, keyMid, q3), rw(3, q3, keyMax)},
			[]shardRange{rw(0, keyMin, keyMid), ro(1, keyMid, keyMax), rw(2, keyMid, q3), rw(3, q3, keyMax)}},
		{"split into three", 1,
			func(c *sls.Client) ([]*sls.Shard, error) { return c.SplitNumShard("proj", "store", 0, 3) },
			[]shardRange{ro(0, keyMin, keyMax), rw(1, keyMin, bigKey(1, 3)), rw(2, bigKey(1, 3), bigKey(2, 3)), rw(3, bigKey(2, 3), keyMax)},
			[]shardRange{ro(0, keyMin, keyMax), rw(1, keyMin, bigKey(1, 3)), rw(2, bigKey(1, 3), bigKey(2, 3)), rw(3, bigKey(2, 3), keyMax)}},
		{"merge", 2,
			func(c *sls.Client) ([]*sls.Shard, error) { return c.MergeShards("proj", "store", 0) },
			[]shardRange{rw(2, keyMin, keyMax), ro(0, keyMin, keyMid), ro(1, keyMid, keyMax)},
			[]shardRange{ro(0, keyMin, keyMid), ro(1, keyMid, keyMax), rw(2, keyMin, keyMax)}},
		{"merge split children", 1,
			func(c *sls.Client) ([]*sls.Shard, error) {
				if _, err := c.SplitShard("proj", "store", 0, q1); err != nil {
					return nil, err
				}
				return c.MergeShards("proj", "store", 1)
			},
			[]shardRange{rw(3, keyMin, keyMax), ro(1, keyMin, q1), ro(2, q1, keyMax)},
			[]shardRange{ro(0, keyMin, keyMax), ro(1, keyMin, q1), ro(2, q1, keyMax), rw(3, keyMin, keyMax)}},
		{"merge the middle pair of four", 4,
			func(c *sls.Client) ([]*sls.Shard, error) { return c.MergeShards("proj", "store", 1) },
			[]shardRange{rw(4, q1, q3), ro(1, q1, keyMid), ro(2, keyMid, q3)},
			[]shardRange{rw(0, keyMin, q1), ro(1, q1, keyMid), ro(2, keyMid, q3), rw(3, q3, keyMax), rw(4, q1, q3)}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env := testutil.SLS(t)
			env.LogStore(t, "proj", "store", tc.shards)
			c := env.Client()
			result, err := tc.do(c)
			if err != nil {
				t.Fatal(err)
			}
			checkRanges(t, "answer", result, tc.result)
			shards, err := c.ListShards("proj", "store")
			if err != nil {
				t.Fatal(err)
			}
			checkRanges(t, "ListShards", shards, tc.after)
			checkPartition(t, shards)
		})
	}
}

// routeStore is a logstore reshaped by splits and merges:
//
//	0 [00, 80) readonly, split into 3 → 4 [00, 1/6), 5 [1/6, 2/6), 6 [2/6, 80)
//	1 [80, ff] readonly, split at c0 → 2 [80, c0), 3 [c0, ff]
//	5 and 6 readonly, merged → 7 [1/6, 80)
//
// Before reshaping, shard 0 and 1 received one write each ("before-0",
// "before-1").
func routeStore(t *testing.T) (*testutil.SLSEnv, *sls.Client) {
	t.Helper()
	env := testutil.SLS(t)
	env.LogStore(t, "proj", "store", 2)
	c := env.Client()
	for i, k := range []string{keyMin, keyMid} {
		if err := c.PostLogStoreLogs("proj", "store", testGroup(fmt.Sprintf("before-%d", i)), &k); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.SplitShard("proj", "store", 1, "c0000000000000000000000000000000"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SplitNumShard("proj", "store", 0, 3); err != nil {
		t.Fatal(err)
	}
	if _, err := c.MergeShards("proj", "store", 5); err != nil {
		t.Fatal(err)
	}
	return env, c
}

func TestRouteKeysAfterSplitAndMerge(t *testing.T) {
	env, c := routeStore(t)
	shards, err := c.ListShards("proj", "store")
	if err != nil {
		t.Fatal(err)
	}
	checkPartition(t, shards)
	sixth := bigKey(1, 6)
	below := func(k string) string {
		v, _ := new(big.Int).SetString(k, 16)
		s := v.Sub(v, big.NewInt(1)).Text(16)
		return strings.Repeat("0", 32-len(s)) + s
	}
	cases := []struct {
		key   string
		shard int
	}{
		{keyMin, 4},
		{keyMax, 3},
		{"fffffffffffffffffffffffffffffffe", 3},
		{keyMid, 2},
		{below(keyMid), 7},
		{"c0000000000000000000000000000000", 3},
		{"bfffffffffffffffffffffffffffffff", 2},
		{sixth, 7},
		{below(sixth), 4},
		{"7f", 7},   // 7f000...
		{"8", 2},    // 80000...
		{"C", 3},    // c0000..., upper case
		{"0", 4},    // 00000...
		{"bf", 2},   // bf000...
		{"F", 3},    // f0000...
		{"2aa", 4},  // 2aa00... lies below 1/6 = 2aaa...
		{"2aab", 7}, // 2aab0... lies above
	}
	for i, tc := range cases {
		key := tc.key
		if err := c.PostLogStoreLogs("proj", "store", testGroup(fmt.Sprintf("case-%d", i)), &key); err != nil {
			t.Fatalf("key %s: %v", key, err)
		}
	}
	vals := storedValues(t, env.Server, "proj", "store")
	where := map[string]int{}
	for shard, vs := range vals {
		for _, v := range vs {
			where[v] = shard
		}
	}
	for i, tc := range cases {
		if got := where[fmt.Sprintf("case-%d", i)]; got != tc.shard {
			t.Errorf("key %s landed in shard %d, want %d", tc.key, got, tc.shard)
		}
	}
	for shard, want := range map[int]string{0: "before-0", 1: "before-1", 5: "", 6: ""} {
		if got := strings.Join(vals[shard], ","); got != want {
			t.Errorf("readonly shard %d holds %q, want %q", shard, got, want)
		}
	}
}

// Random keys and load-balanced writes go to readwrite shards only, and a
// key goes to the shard whose range holds it.
func TestWritesNeverLandInReadonlyShards(t *testing.T) {
	env, c := routeStore(t)
	shards, err := c.ListShards("proj", "store")
	if err != nil {
		t.Fatal(err)
	}
	owner := func(key string) int {
		for _, s := range shards {
			if s.Status == "readwrite" && key >= s.InclusiveBeginKey && (key < s.ExclusiveBeginKey || s.ExclusiveBeginKey == keyMax) {
				return s.ShardID
			}
		}
		return -1
	}
	want := map[string]int{}
	for i := range 100 {
		sum := md5.Sum([]byte(strconv.Itoa(i)))
		key := hex.EncodeToString(sum[:])
		v := "key-" + key
		if err := c.PostLogStoreLogs("proj", "store", testGroup(v), &key); err != nil {
			t.Fatal(err)
		}
		want[v] = owner(key)
	}
	for i := range 50 {
		if err := c.PutLogs("proj", "store", testGroup(fmt.Sprintf("lb-%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	vals := storedValues(t, env.Server, "proj", "store")
	for shard, vs := range vals {
		for _, v := range vs {
			switch {
			case strings.HasPrefix(v, "key-") && want[v] != shard:
				t.Errorf("%s landed in shard %d, want %d", v, shard, want[v])
			case strings.HasPrefix(v, "lb-") && (shard == 0 || shard == 1 || shard == 5 || shard == 6):
				t.Errorf("load-balanced %s landed in readonly shard %d", v, shard)
			}
		}
	}
	if n := countStored(vals); n != 2+100+50 {
		t.Fatalf("%d logs stored, want %d", n, 152)
	}
}

func TestAppendLogGroupToReadonlyShard(t *testing.T) {
	env, _ := routeStore(t)
	_, err := env.Server.AppendLogGroup("proj", "store", 0, testGroup("late"))
	var se *slstest.Error
	if !errors.As(err, &se) || se.Code != slstest.CodeShardReadOnly || se.Status != http.StatusBadRequest {
		t.Fatalf("AppendLogGroup to a readonly shard: %v, want ShardReadOnly", err)
	}
	_, err = env.Server.AppendLogGroup("proj", "store", 42, testGroup("nowhere"))
	if !errors.As(err, &se) || se.Code != slstest.CodeShardNotExist {
		t.Fatalf("AppendLogGroup to an unknown shard: %v, want ShardNotExist", err)
	}
	if groups, _ := env.Server.LogGroups("proj", "store", 0); len(groups) != 1 {
		t.Fatalf("readonly shard 0 holds %d groups, want the 1 written before the split", len(groups))
	}
	// The readonly shard is still readable to its end.
	begin, end, err := env.Server.Cursors("proj", "store", 0)
	if err != nil {
		t.Fatal(err)
	}
	gl, next, err := env.Client().PullLogs("proj", "store", 0, begin, "", 10)
	if err != nil || len(gl.LogGroups) != 1 || next != end {
		t.Fatalf("pull of readonly shard: %v, %q, %v", gl, next, err)
	}
}

func TestGetCursorByTime(t *testing.T) {
	clock := newManualClock()
	env := testutil.SLS(t, slstest.WithClock(clock.Now))
	env.LogStore(t, "proj", "store", 2)
	c := env.Client()
	t0 := clock.Now()
	// Groups received at t0, t0+10s and t0+20s (two at t0+20s).
	for i, v := range []string{"g0", "g1", "g2", "g3"} {
		if i > 0 && i < 3 {
			clock.Advance(10 * time.Second)
		}
		key := keyMin
		if err := c.PostLogStoreLogs("proj", "store", testGroup(v), &key); err != nil {
			t.Fatal(err)
		}
	}
	stored, err := env.Server.LogGroups("proj", "store", 0)
	if err != nil || len(stored) != 4 {
		t.Fatalf("stored %d groups, %v", len(stored), err)
	}
	_, end, err := env.Server.Cursors("proj", "store", 0)
	if err != nil {
		t.Fatal(err)
	}
	at := func(i int) string { return stored[i].Cursor }
	unix := func(d time.Duration) string { return strconv.FormatInt(t0.Add(d).Unix(), 10) }
	cases := []struct {
		from, want string
	}{
		{"begin", at(0)},
		{"end", end},
		{"0", at(0)},
		{unix(-time.Hour), at(0)},
		{unix(0), at(0)},
		{unix(time.Second), at(1)},
		{unix(10 * time.Second), at(1)},
		{unix(15 * time.Second), at(2)},
		{unix(20 * time.Second), at(2)},
		{unix(21 * time.Second), end},
		{unix(24 * 365 * time.Hour), end},
		{"99999999999", end}, // the year 5138
		{strconv.FormatInt(1<<62, 10), end},
	}
	for _, tc := range cases {
		got, err := c.GetCursor("proj", "store", 0, tc.from)
		if err != nil || got != tc.want {
			t.Errorf("GetCursor(from=%s) = %q, %v; want %q", tc.from, got, err, tc.want)
		}
	}
	// GetCursorTime answers the receive time of the group at a cursor; at the
	// end cursor, the last group's.
	for i, want := range []time.Duration{0, 10 * time.Second, 20 * time.Second, 20 * time.Second} {
		got, err := c.GetCursorTime("proj", "store", 0, at(i))
		if err != nil || !got.Equal(t0.Add(want)) {
			t.Errorf("GetCursorTime(group %d) = %v, %v; want %v", i, got, err, t0.Add(want))
		}
	}
	if got, err := c.GetCursorTime("proj", "store", 0, end); err != nil || !got.Equal(t0.Add(20*time.Second)) {
		t.Errorf("GetCursorTime(end) = %v, %v; want the last group's time", got, err)
	}
	// An empty shard answers its creation time.
	begin1, _, err := env.Server.Cursors("proj", "store", 1)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := c.GetCursorTime("proj", "store", 1, begin1); err != nil || !got.Equal(t0) {
		t.Errorf("GetCursorTime of an empty shard = %v, %v; want its creation time %v", got, err, t0)
	}
	if got, err := c.GetCursor("proj", "store", 1, unix(0)); err != nil || got != begin1 {
		t.Errorf("GetCursor by time on an empty shard = %q, %v; want its begin (= end) %q", got, err, begin1)
	}
}

func TestCursorOfAnotherShardRejected(t *testing.T) {
	env, c := routeStore(t)
	env.LogStore(t, "proj", "other", 2)
	cursor := func(project, logstore string, shard int) string {
		b, _, err := env.Server.Cursors(project, logstore, shard)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	cases := []struct {
		name     string
		logstore string
		shard    int
		cursor   string
	}{
		{"sibling shard", "store", 1, cursor("proj", "store", 0)},
		{"child on parent", "store", 0, cursor("proj", "store", 4)},
		{"parent on child", "store", 4, cursor("proj", "store", 0)},
		{"same shard id of another logstore", "store", 0, cursor("proj", "other", 0)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := c.PullLogs("proj", tc.logstore, tc.shard, tc.cursor, "", 10)
			if se := asSLSError(t, err); se.HTTPCode != 400 || se.Code != slstest.CodeInvalidCursor {
				t.Fatalf("PullLogs: %+v, want 400 InvalidCursor", se)
			}
			_, err = c.GetCursorTime("proj", tc.logstore, tc.shard, tc.cursor)
			if se := asSLSError(t, err); se.HTTPCode != 400 || se.Code != slstest.CodeInvalidCursor {
				t.Fatalf("GetCursorTime: %+v, want 400 InvalidCursor", se)
			}
		})
	}
}

// seqWriter sends PostLogStoreLogs with a seqid through the SDK's signed
// RawRequest (the Go SDK has no field for seqid).
type seqWriter struct {
	t    *testing.T
	proj *sls.LogProject
}

func newSeqWriter(t *testing.T, c *sls.Client) *seqWriter {
	t.Helper()
	p, err := c.GetProject("proj")
	if err != nil {
		t.Fatal(err)
	}
	return &seqWriter{t: t, proj: p}
}

// write sends one log with value v; seqid < 0 sends none.
func (w *seqWriter) write(key string, seqid int64, v string) error {
	w.t.Helper()
	body := marshal(w.t, testGroup(v))
	uri := "/logstores/store/shards/route?key=" + key
	if seqid >= 0 {
		uri += "&seqid=" + strconv.FormatInt(seqid, 10)
	}
	h := map[string]string{"x-log-bodyrawsize": strconv.Itoa(len(body)), "Content-Type": "application/x-protobuf"}
	resp, err := w.proj.RawRequest(http.MethodPost, uri, h, body)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return nil
}

func TestSeqIDIdempotency(t *testing.T) {
	env := testutil.SLS(t)
	env.LogStore(t, "proj", "store", 2)
	w := newSeqWriter(t, env.Client())
	const a, b = "10000000000000000000000000000000", "90000000000000000000000000000000"
	steps := []struct {
		key   string
		seqid int64
		value string
		dup   bool // refused with InvalidSequenceId
	}{
		{a, 1, "a1", false},
		{a, 1, "a1-again", true},
		{a, 2, "a2", false},
		{a, 1, "a1-late", true},
		{a, 2, "a2-again", true},
		{b, 1, "b1", false}, // another key has its own sequence
		{b, 2, "b2", false},
		{a, 10, "a10", false}, // gaps are fine
		{a, -1, "a-unsequenced", false},
		{a, 9, "a9", true},
		{"1", 10, "a10-short-key", true}, // "1" pads to a's key
		{"10000000000000000000000000000001", 1, "near-a", false},
		{b, 0, "b0", true},
	}
	for i, s := range steps {
		err := w.write(s.key, s.seqid, s.value)
		switch {
		case s.dup:
			if se := asSLSError(t, err); se.HTTPCode != 400 || se.Code != slstest.CodeInvalidSequenceID || se.RequestID == "" {
				t.Fatalf("step %d (%s seqid %d): %+v, want 400 InvalidSequenceId", i, s.key, s.seqid, se)
			}
		case err != nil:
			t.Fatalf("step %d (%s seqid %d): %v", i, s.key, s.seqid, err)
		}
	}
	vals := storedValues(t, env.Server, "proj", "store")
	if got := strings.Join(vals[0], ","); got != "a1,a2,a10,a-unsequenced,near-a" {
		t.Errorf("shard 0 holds %s", got)
	}
	if got := strings.Join(vals[1], ","); got != "b1,b2" {
		t.Errorf("shard 1 holds %s", got)
	}
}

// A write refused for another reason does not use up its seqid.
func TestSeqIDNotConsumedByRefusedWrite(t *testing.T) {
	clock := newManualClock()
	env := testutil.SLS(t, slstest.WithClock(clock.Now), slstest.WithShardQuota(slstest.ShardQuota{WritesPerSecond: 1}))
	env.LogStore(t, "proj", "store", 1)
	w := newSeqWriter(t, env.Client())
	const key = "20000000000000000000000000000000"
	if err := w.write(key, 1, "s1"); err != nil {
		t.Fatal(err)
	}
	if se := asSLSError(t, w.write(key, 2, "s2")); se.Code != slstest.CodeShardWriteQuotaExceed {
		t.Fatalf("second write in the second: %+v, want ShardWriteQuotaExceed", se)
	}
	clock.Advance(time.Second)
	if err := w.write(key, 2, "s2"); err != nil {
		t.Fatalf("retried seqid 2 after the quota refusal: %v", err)
	}
	remove := env.Server.InjectFault(slstest.ErrorFault(slstest.OpPostLogStoreLogs, 500, slstest.CodeInternalServerError))
	clock.Advance(time.Second)
	if se := asSLSError(t, w.write(key, 3, "s3")); se.HTTPCode != 500 {
		t.Fatalf("write under a 500 fault: %+v", se)
	}
	remove()
	if err := w.write(key, 3, "s3"); err != nil {
		t.Fatalf("retried seqid 3 after a 500: %v", err)
	}
	if got := strings.Join(storedValues(t, env.Server, "proj", "store")[0], ","); got != "s1,s2,s3" {
		t.Fatalf("stored %s, want s1,s2,s3", got)
	}
}
