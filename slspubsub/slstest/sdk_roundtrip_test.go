package slstest_test

import (
	"errors"
	"testing"

	sls "github.com/aliyun/aliyun-log-go-sdk"
	"github.com/gogo/protobuf/proto"
	"github.com/watermill-sls/watermill-sls/internal/testutil"
	"github.com/watermill-sls/watermill-sls/slspubsub/slstest"
)

// TestSDKRoundTrip drives the management and data calls of the SDK client
// through one lifecycle and checks what comes back.
func TestSDKRoundTrip(t *testing.T) {
	env := testutil.SLS(t)
	c := env.Client()
	if _, err := c.CreateProject("proj", "a project"); err != nil {
		t.Fatalf("CreateProject: %v", err)
	}
	if err := c.CreateLogStore("proj", "store", 7, 4, false, 0); err != nil {
		t.Fatalf("CreateLogStore: %v", err)
	}
	ls, err := c.GetLogStore("proj", "store")
	if err != nil || ls.TTL != 7 || ls.ShardCount != 4 {
		t.Fatalf("GetLogStore = %+v, %v; want ttl 7, 4 shards", ls, err)
	}
	names, err := c.ListLogStore("proj")
	if err != nil || len(names) != 1 || names[0] != "store" {
		t.Fatalf("ListLogStore = %v, %v", names, err)
	}
	shards, err := c.ListShards("proj", "store")
	if err != nil || len(shards) != 4 {
		t.Fatalf("ListShards = %v, %v", shards, err)
	}

	// Three groups with one key land in one shard, in order.
	key := "3f000000000000000000000000000000" // shard 0: [00.., 40..)
	for i := 0; i < 3; i++ {
		lg := &sls.LogGroup{Topic: proto.String("t"), Logs: []*sls.Log{{
			Time:     proto.Uint32(uint32(1700000000 + i)),
			Contents: []*sls.LogContent{{Key: proto.String("i"), Value: proto.String(string(rune('a' + i)))}},
		}}}
		if err := c.PostLogStoreLogs("proj", "store", lg, &key); err != nil {
			t.Fatalf("PostLogStoreLogs: %v", err)
		}
	}
	begin, err := c.GetCursor("proj", "store", 0, "begin")
	if err != nil {
		t.Fatal(err)
	}
	gl, next, err := c.PullLogs("proj", "store", 0, begin, "", 10)
	if err != nil || len(gl.LogGroups) != 3 {
		t.Fatalf("PullLogs = %v groups, %v", len(gl.GetLogGroups()), err)
	}
	for i, g := range gl.LogGroups {
		if got := g.Logs[0].Contents[0].GetValue(); got != string(rune('a'+i)) || g.GetTopic() != "t" {
			t.Errorf("group %d: value %q topic %q", i, got, g.GetTopic())
		}
	}
	if gl.LogGroups[0].GetCursor() != begin {
		t.Errorf("first group's cursor %q, want the begin cursor %q", gl.LogGroups[0].GetCursor(), begin)
	}
	end, err := c.GetCursor("proj", "store", 0, "end")
	if err != nil || end != next {
		t.Fatalf("end cursor %q (%v), want the next cursor %q", end, err, next)
	}
	// At the end of the shard: no groups, the same cursor back.
	gl, again, err := c.PullLogs("proj", "store", 0, next, "", 10)
	if err != nil || len(gl.LogGroups) != 0 || again != next {
		t.Fatalf("PullLogs at end = %d groups, next %q, %v; want 0, %q", len(gl.GetLogGroups()), again, err, next)
	}
	// end_cursor bounds a read.
	second := gl0Cursor(t, c, begin, 1)
	gl, stop, err := c.PullLogs("proj", "store", 0, begin, second, 10)
	if err != nil || len(gl.LogGroups) != 1 || stop != second {
		t.Fatalf("PullLogs with end_cursor = %d groups, next %q, %v", len(gl.GetLogGroups()), stop, err)
	}

	// Errors carry SLS's codes.
	_, err = c.GetLogStore("proj", "nope")
	var slsErr *sls.Error
	if !errors.As(err, &slsErr) || slsErr.Code != slstest.CodeLogStoreNotExist || slsErr.HTTPCode != 404 || slsErr.RequestID == "" {
		t.Fatalf("GetLogStore(nope) = %v; want 404 LogStoreNotExist with a request id", err)
	}
	if ok, err := c.CheckProjectExist("nope"); ok || err != nil {
		t.Fatalf("CheckProjectExist(nope) = %v, %v", ok, err)
	}
	if err := c.DeleteLogStore("proj", "store"); err != nil {
		t.Fatal(err)
	}
	if ok, err := c.CheckLogstoreExist("proj", "store"); ok || err != nil {
		t.Fatalf("CheckLogstoreExist after delete = %v, %v", ok, err)
	}
}

// gl0Cursor returns the cursor n groups after begin in shard 0.
func gl0Cursor(t *testing.T, c *sls.Client, begin string, n int) string {
	t.Helper()
	_, next, err := c.PullLogs("proj", "store", 0, begin, "", n)
	if err != nil {
		t.Fatal(err)
	}
	return next
}
