package slstest_test

import (
	"errors"
	"strings"
	"testing"

	sls "github.com/aliyun/aliyun-log-go-sdk"
	"github.com/watermill-sls/watermill-sls/internal/testutil"
	"github.com/watermill-sls/watermill-sls/slspubsub/slstest"
)

// Consumer-group actions are authorized on the group's own resource,
// "<project>/<logstore>/consumergroup/<group>", as SLS checks them;
// ListConsumerGroup on "<project>/<logstore>/consumergroup/*".
func TestAuthorizeConsumerGroupResource(t *testing.T) {
	acc := slstest.Account{AccessKeyID: "cg", AccessKeySecret: "cg-secret", Policy: []slstest.Permission{
		{Action: "log:CreateConsumerGroup", Resource: "prj/lst/consumergroup/g1"},
		{Action: "log:ConsumerGroupHeartBeat", Resource: "prj/lst/consumergroup/g1"},
		{Action: "log:ListConsumerGroup", Resource: "prj/lst/consumergroup/*"},
	}}
	env := testutil.SLS(t, slstest.WithAccount(acc))
	env.LogStore(t, "prj", "lst", 2)
	c := &sls.Client{Endpoint: env.Endpoint, AccessKeyID: acc.AccessKeyID, AccessKeySecret: acc.AccessKeySecret, HTTPClient: env.HTTPClient}

	denied := func(err error, resource string) {
		t.Helper()
		var se *sls.Error
		if !errors.As(err, &se) || se.HTTPCode != 403 || se.Code != slstest.CodeUnauthorized || !strings.HasSuffix(se.Message, resource) {
			t.Fatalf("got %v; want 403 Unauthorized naming %s", err, resource)
		}
	}
	if err := c.CreateConsumerGroup("prj", "lst", sls.ConsumerGroup{ConsumerGroupName: "g1", Timeout: 10}); err != nil {
		t.Fatalf("CreateConsumerGroup g1: %v", err)
	}
	err := c.CreateConsumerGroup("prj", "lst", sls.ConsumerGroup{ConsumerGroupName: "g2", Timeout: 10})
	denied(err, "project/prj/logstore/lst/consumergroup/g2")
	if _, err := c.HeartBeat("prj", "lst", "g1", "c", nil); err != nil {
		t.Fatalf("HeartBeat g1: %v", err)
	}
	_, err = c.HeartBeat("prj", "lst", "g2", "c", nil)
	denied(err, "project/prj/logstore/lst/consumergroup/g2")
	if groups, err := c.ListConsumerGroup("prj", "lst"); err != nil || len(groups) != 1 {
		t.Fatalf("ListConsumerGroup = %v, %v", groups, err)
	}
	// A logstore-level grant does not cover its consumer groups.
	_, err = c.ListShards("prj", "lst")
	denied(err, "project/prj/logstore/lst")
}
