package slstest_test

import (
	"testing"

	sls "github.com/aliyun/aliyun-log-go-sdk"
	"github.com/gogo/protobuf/proto"
	"github.com/watermill-sls/watermill-sls/slspubsub/slstest"
)

func TestSmoke(t *testing.T) {
	srv, err := slstest.NewServer()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	c := &sls.Client{Endpoint: srv.Endpoint(), AccessKeyID: slstest.DefaultAccessKeyID, AccessKeySecret: slstest.DefaultAccessKeySecret, HTTPClient: srv.HTTPClient()}
	if _, err := c.CreateProject("proj", "d"); err != nil {
		t.Fatal(err)
	}
	if err := c.CreateLogStore("proj", "store", 1, 4, false, 0); err != nil {
		t.Fatal(err)
	}
	shards, err := c.ListShards("proj", "store")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d shards %+v", len(shards), shards[0])
	key := "3f000000000000000000000000000000"
	for i := 0; i < 3; i++ {
		lg := &sls.LogGroup{Logs: []*sls.Log{{Time: proto.Uint32(1), Contents: []*sls.LogContent{{Key: proto.String("k"), Value: proto.String("v")}}}}}
		if err := c.PostLogStoreLogs("proj", "store", lg, &key); err != nil {
			t.Fatal(err)
		}
	}
	cur, err := c.GetCursor("proj", "store", 0, "begin")
	if err != nil {
		t.Fatal(err)
	}
	gl, next, err := c.PullLogs("proj", "store", 0, cur, "", 10)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("pulled %d groups, next %s, first cursor %s", len(gl.LogGroups), next, gl.LogGroups[0].GetCursor())
	if len(gl.LogGroups) != 3 {
		t.Fatalf("got %d", len(gl.LogGroups))
	}
	gl, next2, err := c.PullLogs("proj", "store", 0, next, "", 10)
	if err != nil || len(gl.LogGroups) != 0 || next2 != next {
		t.Fatalf("end: %v %d %s %s", err, len(gl.LogGroups), next2, next)
	}
	if err := c.CreateConsumerGroup("proj", "store", sls.ConsumerGroup{ConsumerGroupName: "g", Timeout: 10, InOrder: true}); err != nil {
		t.Fatal(err)
	}
	got, err := c.HeartBeat("proj", "store", "g", "c1", nil)
	t.Logf("heartbeat: %v %v", got, err)
	if err := c.UpdateCheckpoint("proj", "store", "g", "c1", 0, next, false); err != nil {
		t.Fatal(err)
	}
	cps, err := c.GetCheckpoint("proj", "store", "g")
	t.Logf("cps %+v %v", cps[0], err)
	res, err := c.SplitShard("proj", "store", 0, "")
	t.Logf("split %+v %v", res, err)
	_, err = c.GetLogStore("proj", "nope")
	t.Logf("err: %v", err)
}
