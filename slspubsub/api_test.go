package slspubsub

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	sls "github.com/aliyun/aliyun-log-go-sdk"
	"github.com/pierrec/lz4/v4"
	"github.com/watermill-sls/watermill-sls/internal/testutil"
	"github.com/watermill-sls/watermill-sls/slspubsub/slstest"
)

const (
	testProject  = "test-proj"
	testLogstore = "logs"
	// Shard 0 of two covers [00.., 80..), shard 1 [80.., ff..].
	keyShard0 = "10000000000000000000000000000000"
	keyShard1 = "c0000000000000000000000000000000"
)

// testConfig is a config reaching env with its default account.
func testConfig(env *testutil.SLSEnv) ClientConfig {
	return ClientConfig{
		Endpoint:        env.Endpoint,
		Project:         testProject,
		AccessKeyID:     env.AccessKeyID,
		AccessKeySecret: env.AccessKeySecret,
		HTTPClient:      env.HTTPClient,
	}
}

func newTestClient(t testing.TB, cfg ClientConfig) *apiClient {
	t.Helper()
	c, err := newAPIClient(cfg)
	if err != nil {
		t.Fatalf("newAPIClient: %v", err)
	}
	t.Cleanup(c.close)
	return c
}

// testGroup is a group using every field, with n logs.
func testGroup(n int, tag string) LogGroup {
	g := LogGroup{Topic: "topic-" + tag, Source: "10.0.0.1", MachineUUID: "machine", Tags: []Content{{"__tag__:k", tag}}}
	base := time.Unix(1700000000, 0)
	for i := range n {
		g.Logs = append(g.Logs, Log{
			Time: base.Add(time.Duration(i)*time.Second + 123*time.Nanosecond),
			Contents: []Content{
				{"i", strconv.Itoa(i)},
				{"tag", tag},
				{"bin", "\x00\xff" + strings.Repeat("x", i%300)},
				{"empty", ""},
			},
		})
	}
	return g
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// pullAll reads a shard from its beginning to its end with our client.
func pullAll(t *testing.T, c *apiClient, shard int, compression Compression) []LogGroup {
	t.Helper()
	ctx := ctxT(t)
	cursor, err := c.getCursor(ctx, testLogstore, shard, "begin")
	if err != nil {
		t.Fatalf("getCursor: %v", err)
	}
	var groups []LogGroup
	for {
		res, err := c.pullLogs(ctx, testLogstore, shard, cursor, "", 2, compression)
		if err != nil {
			t.Fatalf("pullLogs: %v", err)
		}
		if res.Count == 0 {
			if res.NextCursor != cursor || res.Data != nil || res.RawSize != 0 {
				t.Fatalf("end of shard: next %q (want %q), %d bytes, raw size %d", res.NextCursor, cursor, len(res.Data), res.RawSize)
			}
			return groups
		}
		if len(res.Data) != res.RawSize || res.WireBytes == 0 {
			t.Fatalf("pull result: %d bytes, raw size %d, wire %d", len(res.Data), res.RawSize, res.WireBytes)
		}
		n := len(groups)
		if groups, err = decodeLogGroupList(res.Data, groups); err != nil {
			t.Fatalf("decode: %v", err)
		}
		if len(groups)-n != res.Count {
			t.Fatalf("x-log-count %d, decoded %d groups", res.Count, len(groups)-n)
		}
		if res.ReadLastCursor < 0 || encodeTestCursor(res.ReadLastCursor+1) != res.NextCursor {
			t.Fatalf("read-last-cursor %d does not precede next cursor %q", res.ReadLastCursor, res.NextCursor)
		}
		if got := res.groupCursor(0); got != cursor {
			t.Fatalf("the first group's cursor is %q, want the request cursor %q", got, cursor)
		}
		if got, want := res.groupCursor(res.Count-1), encodeTestCursor(res.ReadLastCursor); got != want {
			t.Fatalf("the last group's cursor is %q, want %q", got, want)
		}
		cursor = res.NextCursor
	}
}

// encodeTestCursor encodes a cursor as SLS does: base64 of the decimal.
func encodeTestCursor(v int64) string {
	return base64.StdEncoding.EncodeToString([]byte(strconv.FormatInt(v, 10)))
}

func TestAPIPutPullRoundTrip(t *testing.T) {
	for _, comp := range []Compression{CompressionLZ4, CompressionZstd, CompressionNone} {
		t.Run(comp.String(), func(t *testing.T) {
			env := testutil.SLS(t)
			env.LogStore(t, testProject, testLogstore, 2)
			c := newTestClient(t, testConfig(env))
			ctx := ctxT(t)
			var want []LogGroup
			for i := range 5 {
				g := testGroup(1+i*40, fmt.Sprint(i))
				if err := c.putLogs(ctx, testLogstore, keyShard1, -1, appendLogGroup(nil, &g), comp); err != nil {
					t.Fatalf("putLogs: %v", err)
				}
				want = append(want, g)
			}
			got := pullAll(t, c, 1, comp)
			if len(got) != len(want) {
				t.Fatalf("read %d groups back, wrote %d", len(got), len(want))
			}
			for i := range want {
				if d := diffGroups(&want[i], &got[i]); d != "" {
					t.Fatalf("group %d: %s", i, d)
				}
			}
			if n := len(pullAll(t, c, 0, comp)); n != 0 {
				t.Fatalf("shard 0 holds %d groups; the hash key routes to shard 1", n)
			}
			// Without a hash key SLS picks a shard (PutLogs).
			g := testGroup(3, "lb")
			if err := c.putLogs(ctx, testLogstore, "", -1, appendLogGroup(nil, &g), comp); err != nil {
				t.Fatalf("putLogs without hash key: %v", err)
			}
			if n := len(pullAll(t, c, 0, comp)) + len(pullAll(t, c, 1, comp)); n != len(want)+1 {
				t.Fatalf("%d groups stored, want %d", n, len(want)+1)
			}
			// An empty body sends nothing.
			if err := c.putLogs(ctx, testLogstore, "", -1, nil, comp); err != nil {
				t.Fatalf("putLogs of nothing: %v", err)
			}
		})
	}
}

func TestAPIPullWithEndCursor(t *testing.T) {
	env := testutil.SLS(t)
	env.LogStore(t, testProject, testLogstore, 1)
	c := newTestClient(t, testConfig(env))
	ctx := ctxT(t)
	for i := range 4 {
		g := testGroup(2, fmt.Sprint(i))
		if err := c.putLogs(ctx, testLogstore, "", -1, appendLogGroup(nil, &g), CompressionLZ4); err != nil {
			t.Fatal(err)
		}
	}
	begin, err := c.getCursor(ctx, testLogstore, 0, "begin")
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.pullLogs(ctx, testLogstore, 0, begin, "", 1, CompressionLZ4)
	if err != nil {
		t.Fatal(err)
	}
	second := res.NextCursor
	res, err = c.pullLogs(ctx, testLogstore, 0, second, "", 10, CompressionLZ4)
	if err != nil {
		t.Fatal(err)
	}
	third, err := func() (string, error) {
		r, err := c.pullLogs(ctx, testLogstore, 0, second, "", 1, CompressionLZ4)
		return r.NextCursor, err
	}()
	if err != nil || res.Count != 3 {
		t.Fatalf("pull from the second group: %d groups, %v", res.Count, err)
	}
	bounded, err := c.pullLogs(ctx, testLogstore, 0, begin, third, 10, CompressionZstd)
	if err != nil || bounded.Count != 2 || bounded.NextCursor != third {
		t.Fatalf("pull [begin, third) = %d groups, next %q, %v; want 2, %q", bounded.Count, bounded.NextCursor, err, third)
	}
}

func TestAPIInteropWithSDK(t *testing.T) {
	env := testutil.SLS(t)
	env.LogStore(t, testProject, testLogstore, 2)
	c := newTestClient(t, testConfig(env))
	sdk := env.Client()
	ctx := ctxT(t)

	// Ours writes, the SDK reads.
	ours := testGroup(50, "ours")
	if err := c.putLogs(ctx, testLogstore, keyShard0, -1, appendLogGroup(nil, &ours), CompressionLZ4); err != nil {
		t.Fatal(err)
	}
	cursor, err := sdk.GetCursor(testProject, testLogstore, 0, "begin")
	if err != nil {
		t.Fatal(err)
	}
	gl, _, err := sdk.PullLogs(testProject, testLogstore, 0, cursor, "", 10)
	if err != nil || len(gl.LogGroups) != 1 {
		t.Fatalf("SDK PullLogs: %d groups, %v", len(gl.GetLogGroups()), err)
	}
	back := fromSDK(gl.LogGroups[0])
	if d := diffGroups(&ours, &back); d != "" {
		t.Fatalf("the SDK reads our write differently: %s", d)
	}
	res, err := c.pullLogs(ctx, testLogstore, 0, cursor, "", 10, CompressionLZ4)
	if err != nil || res.groupCursor(0) != gl.LogGroups[0].GetCursor() {
		t.Fatalf("our cursor of the group %q (%v), the SDK's %q", res.groupCursor(0), err, gl.LogGroups[0].GetCursor())
	}

	// The SDK writes (TimeNs, tags, binary values), ours reads, with both
	// response compressions.
	key := keyShard1
	sdkGroup := toSDK(&LogGroup{Topic: "sdk", Source: "s", Category: "c", Tags: []Content{{"a", "b"}}, Logs: []Log{
		{Time: time.Unix(1700000001, 5), Contents: []Content{{"k", "v"}, {"bin", "\x00\x01\xff"}}},
		{Time: time.Unix(1700000002, 0), Contents: []Content{{"", ""}}},
	}})
	if err := sdk.PostLogStoreLogs(testProject, testLogstore, sdkGroup, &key); err != nil {
		t.Fatal(err)
	}
	want := fromSDK(sdkGroup)
	for _, comp := range []Compression{CompressionLZ4, CompressionZstd} {
		got := pullAll(t, c, 1, comp)
		if len(got) != 1 {
			t.Fatalf("%v: read %d groups, want 1", comp, len(got))
		}
		if d := diffGroups(&want, &got[0]); d != "" {
			t.Fatalf("%v: our read of the SDK's write: %s", comp, d)
		}
	}
}

// funcProvider is a CredentialsProvider counting its calls.
type funcProvider struct {
	calls atomic.Int64
	cred  sls.Credentials
}

func (p *funcProvider) GetCredentials() (sls.Credentials, error) {
	p.calls.Add(1)
	return p.cred, nil
}

func TestAPIAuthVariants(t *testing.T) {
	plain := slstest.Account{AccessKeyID: "plain-id", AccessKeySecret: "plain-secret-value"}
	sts := slstest.Account{AccessKeyID: "sts-id", AccessKeySecret: "sts-secret-value", SecurityToken: "sts-token-value",
		Expiration: time.Now().Add(time.Hour)}
	env := testutil.SLS(t, slstest.WithAccount(plain), slstest.WithAccount(sts))
	env.LogStore(t, testProject, testLogstore, 2)
	counting := &funcProvider{cred: sls.Credentials{AccessKeyID: sts.AccessKeyID, AccessKeySecret: sts.AccessKeySecret, SecurityToken: sts.SecurityToken}}

	base := ClientConfig{Endpoint: env.Endpoint, Project: testProject, HTTPClient: env.HTTPClient,
		AccessKeyID: plain.AccessKeyID, AccessKeySecret: plain.AccessKeySecret}
	cases := map[string]func(c *ClientConfig){
		"v1":                  func(c *ClientConfig) {},
		"v1 explicit":         func(c *ClientConfig) { c.AuthVersion = sls.AuthV1 },
		"v4":                  func(c *ClientConfig) { c.AuthVersion, c.Region = sls.AuthV4, "cn-hangzhou" },
		"endpoint http://":    func(c *ClientConfig) { c.Endpoint = "http://" + env.Endpoint },
		"endpoint trailing /": func(c *ClientConfig) { c.Endpoint = "http://" + env.Endpoint + "/" },
		"sts v1": func(c *ClientConfig) {
			c.AccessKeyID, c.AccessKeySecret, c.SecurityToken = sts.AccessKeyID, sts.AccessKeySecret, sts.SecurityToken
		},
		"sts v4": func(c *ClientConfig) {
			c.AccessKeyID, c.AccessKeySecret, c.SecurityToken = sts.AccessKeyID, sts.AccessKeySecret, sts.SecurityToken
			c.AuthVersion, c.Region = sls.AuthV4, "cn-shanghai"
		},
		"static provider": func(c *ClientConfig) {
			c.AccessKeyID, c.AccessKeySecret = "", ""
			c.CredentialsProvider = sls.NewStaticCredentialsProvider(plain.AccessKeyID, plain.AccessKeySecret, "")
		},
		"sts provider v4": func(c *ClientConfig) {
			c.AccessKeyID, c.AccessKeySecret = "", ""
			c.CredentialsProvider = counting
			c.AuthVersion, c.Region = sls.AuthV4, "cn-beijing"
		},
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			cfg := base
			mutate(&cfg)
			c := newTestClient(t, cfg)
			ctx := ctxT(t)
			shards, err := c.listShards(ctx, testLogstore)
			if err != nil || len(shards) != 2 {
				t.Fatalf("listShards = %v, %v", shards, err)
			}
			g := testGroup(3, name)
			if err := c.putLogs(ctx, testLogstore, keyShard0, -1, appendLogGroup(nil, &g), CompressionZstd); err != nil {
				t.Fatalf("putLogs: %v", err)
			}
			cursor, err := c.getCursor(ctx, testLogstore, 0, "end")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.pullLogs(ctx, testLogstore, 0, cursor, "", 10, CompressionLZ4); err != nil {
				t.Fatalf("pullLogs: %v", err)
			}
		})
	}
	if counting.calls.Load() < 4 {
		t.Errorf("the credentials provider was asked %d times for 4 requests; want once per request", counting.calls.Load())
	}
}

// checkError asserts err is an *Error with the given status and code, a
// request id, and the expected retryability.
func checkError(t *testing.T, err error, status int, code string, retryable bool) *Error {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not an *Error", err, err)
	}
	if e.HTTPStatus != status || e.Code != code {
		t.Fatalf("error %v: status %d code %q, want %d %q", err, e.HTTPStatus, e.Code, status, code)
	}
	if e.RequestID == "" || !strings.Contains(err.Error(), e.RequestID) {
		t.Errorf("error %q lacks its request id %q", err, e.RequestID)
	}
	if e.Project != testProject || e.Op == "" {
		t.Errorf("error %q: project %q op %q", err, e.Project, e.Op)
	}
	if got := IsRetryable(err); got != retryable {
		t.Errorf("IsRetryable(%v) = %v, want %v", err, got, retryable)
	}
	return e
}

func TestAPIErrors(t *testing.T) {
	env := testutil.SLS(t)
	env.LogStore(t, testProject, testLogstore, 2)
	c := newTestClient(t, testConfig(env))
	raw := appendLogGroup(nil, &LogGroup{Logs: []Log{{Time: time.Unix(1700000000, 0)}}})
	put := func(ctx context.Context, c *apiClient) error {
		return c.putLogs(ctx, testLogstore, keyShard0, -1, raw, CompressionLZ4)
	}
	pull := func(ctx context.Context, c *apiClient) error {
		_, err := c.pullLogs(ctx, testLogstore, 0, encodeTestCursor(0), "", 10, CompressionLZ4)
		return err
	}
	cases := []struct {
		name      string
		fault     *slstest.Fault
		call      func(context.Context, *apiClient) error
		status    int
		code      string
		retryable bool
	}{
		{name: "missing logstore", call: func(ctx context.Context, c *apiClient) error { return c.getLogStore(ctx, "nope") },
			status: 404, code: CodeLogStoreNotExist},
		{name: "put to missing logstore", call: func(ctx context.Context, c *apiClient) error {
			return c.putLogs(ctx, "nope", "", -1, raw, CompressionLZ4)
		}, status: 404, code: CodeLogStoreNotExist},
		{name: "503 ServerBusy", fault: ptr(slstest.ErrorFault(slstest.OpPostLogStoreLogs, 503, "ServerBusy")),
			call: put, status: 503, code: "ServerBusy", retryable: true},
		{name: "500 on pull", fault: ptr(slstest.ErrorFault(slstest.OpPullLogs, 500, "InternalServerError")),
			call: pull, status: 500, code: "InternalServerError", retryable: true},
		{name: "403 write quota", fault: ptr(slstest.ErrorFault(slstest.OpPostLogStoreLogs, 403, CodeShardWriteQuotaExceed)),
			call: put, status: 403, code: CodeShardWriteQuotaExceed, retryable: true},
		{name: "403 read quota", fault: ptr(slstest.ErrorFault(slstest.OpPullLogs, 403, CodeShardReadQuotaExceed)),
			call: pull, status: 403, code: CodeShardReadQuotaExceed, retryable: true},
		{name: "403 Write QPS Exceed", fault: ptr(slstest.ErrorFault(slstest.OpPostLogStoreLogs, 403, "Write QPS Exceed")),
			call: put, status: 403, code: "Write QPS Exceed", retryable: true},
		{name: "403 Unauthorized", fault: ptr(slstest.ErrorFault(slstest.OpPostLogStoreLogs, 403, CodeUnauthorized)),
			call: put, status: 403, code: CodeUnauthorized},
		{name: "401 Unauthorized", fault: ptr(slstest.ErrorFault(slstest.OpPullLogs, 401, CodeUnauthorized)),
			call: pull, status: 401, code: CodeUnauthorized},
		{name: "400 on pull", fault: ptr(slstest.ErrorFault(slstest.OpPullLogs, 400, "ParameterInvalid")),
			call: pull, status: 400, code: "ParameterInvalid"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.fault != nil {
				remove := env.Server.InjectFault(*tc.fault)
				t.Cleanup(remove)
			}
			checkError(t, tc.call(ctxT(t), c), tc.status, tc.code, tc.retryable)
		})
	}
}

func ptr[T any](v T) *T { return &v }

func TestAPIWrongSecret(t *testing.T) {
	env := testutil.SLS(t)
	env.LogStore(t, testProject, testLogstore, 1)
	for _, v4 := range []bool{false, true} {
		t.Run(fmt.Sprintf("v4=%v", v4), func(t *testing.T) {
			cfg := testConfig(env)
			cfg.AccessKeySecret = "the-wrong-secret-42"
			cfg.SecurityToken = ""
			if v4 {
				cfg.AuthVersion, cfg.Region = sls.AuthV4, "cn-hangzhou"
			}
			c := newTestClient(t, cfg)
			_, err := c.listShards(ctxT(t), testLogstore)
			checkError(t, err, 401, CodeSignatureNotMatch, false)
			if strings.Contains(err.Error(), cfg.AccessKeySecret) || strings.Contains(fmt.Sprintf("%+v %#v", err, err), cfg.AccessKeySecret) {
				t.Fatalf("the error shows the secret: %v", err)
			}
		})
	}
	// A token with an account that is not STS is refused too, without
	// showing the token.
	cfg := testConfig(env)
	cfg.SecurityToken = "a-token-that-must-not-leak"
	c := newTestClient(t, cfg)
	_, err := c.listShards(ctxT(t), testLogstore)
	if err == nil || IsRetryable(err) || strings.Contains(err.Error(), cfg.SecurityToken) {
		t.Fatalf("listShards with a stray token = %v", err)
	}
}

func TestAPISequenceID(t *testing.T) {
	env := testutil.SLS(t)
	env.LogStore(t, testProject, testLogstore, 2)
	c := newTestClient(t, testConfig(env))
	ctx := ctxT(t)
	g := testGroup(2, "seq")
	raw := appendLogGroup(nil, &g)
	if err := c.putLogs(ctx, testLogstore, keyShard1, 1, raw, CompressionLZ4); err != nil {
		t.Fatalf("first write with seqid 1: %v", err)
	}
	err := c.putLogs(ctx, testLogstore, keyShard1, 1, raw, CompressionLZ4)
	e := checkError(t, err, 400, CodeInvalidSequenceID, false)
	if e.Op != opPostLogStoreLogs || e.Logstore != testLogstore {
		t.Errorf("error names op %q logstore %q", e.Op, e.Logstore)
	}
	if err := c.putLogs(ctx, testLogstore, keyShard1, 2, raw, CompressionZstd); err != nil {
		t.Fatalf("write with seqid 2: %v", err)
	}
	if n := len(pullAll(t, c, 1, CompressionLZ4)); n != 2 {
		t.Fatalf("%d groups stored, want 2 (the duplicate is not written)", n)
	}
	if err := c.putLogs(ctx, testLogstore, "", 3, raw, CompressionLZ4); err == nil {
		t.Fatal("a seqid without a hash key was accepted")
	}
}

func TestAPIControlPlane(t *testing.T) {
	env := testutil.SLS(t)
	if err := env.Server.CreateProject(testProject, ""); err != nil {
		t.Fatal(err)
	}
	c := newTestClient(t, testConfig(env))
	ctx := ctxT(t)

	checkError(t, c.getLogStore(ctx, testLogstore), 404, CodeLogStoreNotExist, false)
	if err := c.createLogStore(ctx, testLogstore, 7, 3); err != nil {
		t.Fatalf("createLogStore: %v", err)
	}
	if err := c.getLogStore(ctx, testLogstore); err != nil {
		t.Fatalf("getLogStore: %v", err)
	}
	e := checkError(t, c.createLogStore(ctx, testLogstore, 7, 3), 400, CodeLogStoreAlreadyExist, false)
	if e.Logstore != testLogstore {
		t.Errorf("the error of createLogStore names logstore %q", e.Logstore)
	}
	ls, err := env.Client().GetLogStore(testProject, testLogstore)
	if err != nil || ls.TTL != 7 || ls.ShardCount != 3 || ls.AutoSplit {
		t.Fatalf("the SDK sees %+v, %v; want ttl 7, 3 shards", ls, err)
	}

	shards, err := c.listShards(ctx, testLogstore)
	if err != nil || len(shards) != 3 {
		t.Fatalf("listShards = %v, %v", shards, err)
	}
	for i, s := range shards {
		if s.ShardID != i || s.Status != "readwrite" || len(s.InclusiveBeginKey) != 32 || len(s.ExclusiveBeginKey) != 32 {
			t.Errorf("shard %d = %+v", i, s)
		}
	}

	// Cursors: begin, end, by time, and the time of a cursor.
	before := time.Now().Add(-time.Second).Truncate(time.Second)
	g := testGroup(1, "cursor")
	if err := c.putLogs(ctx, testLogstore, keyShard0, -1, appendLogGroup(nil, &g), CompressionLZ4); err != nil {
		t.Fatal(err)
	}
	begin, err := c.getCursor(ctx, testLogstore, 0, "begin")
	if err != nil {
		t.Fatal(err)
	}
	end, err := c.getCursor(ctx, testLogstore, 0, "end")
	if err != nil || end == begin {
		t.Fatalf("end cursor %q (%v) equals begin %q after a write", end, err, begin)
	}
	byTime, err := c.getCursor(ctx, testLogstore, 0, strconv.FormatInt(before.Unix(), 10))
	if err != nil || byTime != begin {
		t.Fatalf("cursor at %v = %q (%v), want begin %q", before, byTime, err, begin)
	}
	sdkBegin, err := env.Client().GetCursor(testProject, testLogstore, 0, "begin")
	if err != nil || sdkBegin != begin {
		t.Fatalf("the SDK's begin cursor %q (%v), ours %q", sdkBegin, err, begin)
	}
	at, err := c.getCursorTime(ctx, testLogstore, 0, begin)
	if err != nil || at.Before(before) || at.After(time.Now().Add(time.Second)) {
		t.Fatalf("getCursorTime = %v, %v; want about now", at, err)
	}
	if _, err := c.getCursor(ctx, testLogstore, 9, "begin"); err == nil {
		t.Fatal("getCursor of a missing shard succeeded")
	}

	// Consumer groups.
	cg := sls.ConsumerGroup{ConsumerGroupName: "group", Timeout: 30, InOrder: false}
	if err := c.createConsumerGroup(ctx, testLogstore, cg); err != nil {
		t.Fatalf("createConsumerGroup: %v", err)
	}
	checkError(t, c.createConsumerGroup(ctx, testLogstore, cg), 400, CodeConsumerGroupAlreadyExist, false)
	if err := c.updateConsumerGroup(ctx, testLogstore, sls.ConsumerGroup{ConsumerGroupName: "group", Timeout: 60, InOrder: true}); err != nil {
		t.Fatalf("updateConsumerGroup: %v", err)
	}
	groups, err := c.listConsumerGroups(ctx, testLogstore)
	if err != nil || len(groups) != 1 || groups[0] != (sls.ConsumerGroup{ConsumerGroupName: "group", Timeout: 60, InOrder: true}) {
		t.Fatalf("listConsumerGroups = %+v, %v", groups, err)
	}
	assigned, err := c.heartbeat(ctx, testLogstore, "group", "consumer-1", nil)
	if err != nil || len(assigned) != 3 {
		t.Fatalf("heartbeat = %v, %v; want all 3 shards", assigned, err)
	}
	if assigned, err = c.heartbeat(ctx, testLogstore, "group", "consumer-1", assigned); err != nil || len(assigned) != 3 {
		t.Fatalf("second heartbeat = %v, %v", assigned, err)
	}
	if err := c.updateCheckpoint(ctx, testLogstore, "group", "consumer-1", 0, end, false); err != nil {
		t.Fatalf("updateCheckpoint: %v", err)
	}
	begin1, err := c.getCursor(ctx, testLogstore, 1, "begin")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.updateCheckpoint(ctx, testLogstore, "group", "someone-else", 1, begin1, true); err != nil {
		t.Fatalf("forced updateCheckpoint: %v", err)
	}
	cps, err := c.getCheckpoints(ctx, testLogstore, "group")
	if err != nil {
		t.Fatalf("getCheckpoints: %v", err)
	}
	found := false
	for _, cp := range cps {
		if cp.ShardID == 0 {
			found = cp.CheckPoint == end && cp.Consumer == "consumer-1"
		}
	}
	if !found {
		t.Fatalf("getCheckpoints = %+v; want shard 0 at %q by consumer-1", cps, end)
	}
	sdkCps, err := env.Client().GetCheckpoint(testProject, testLogstore, "group")
	if err != nil || len(sdkCps) != len(cps) {
		t.Fatalf("the SDK sees %d checkpoints (%v), we see %d", len(sdkCps), err, len(cps))
	}
	_, err = c.heartbeat(ctx, testLogstore, "missing", "consumer-1", nil)
	checkError(t, err, 404, CodeConsumerGroupNotExist, false)
}

func TestAPICancellation(t *testing.T) {
	env := testutil.SLS(t)
	env.LogStore(t, testProject, testLogstore, 1)
	const latency = time.Minute
	env.Server.InjectFault(slstest.Fault{Op: slstest.OpPullLogs, Latency: latency})
	env.Server.InjectFault(slstest.Fault{Op: slstest.OpPutLogs, Latency: latency})
	raw := appendLogGroup(nil, &LogGroup{Logs: []Log{{Time: time.Unix(1700000000, 0)}}})

	t.Run("caller cancels", func(t *testing.T) {
		c := newTestClient(t, testConfig(env))
		ctx, cancel := context.WithCancel(context.Background())
		timer := time.AfterFunc(50*time.Millisecond, cancel)
		t.Cleanup(func() { timer.Stop() })
		start := time.Now()
		_, err := c.pullLogs(ctx, testLogstore, 0, encodeTestCursor(0), "", 10, CompressionLZ4)
		if !errors.Is(err, context.Canceled) || IsRetryable(err) {
			t.Fatalf("pullLogs after cancel = %v (retryable %v), want context.Canceled, not retryable", err, IsRetryable(err))
		}
		if time.Since(start) >= latency/2 {
			t.Fatalf("pullLogs waited for the server instead of returning on cancel")
		}
	})
	t.Run("caller deadline", func(t *testing.T) {
		c := newTestClient(t, testConfig(env))
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		err := c.putLogs(ctx, testLogstore, "", -1, raw, CompressionLZ4)
		if !errors.Is(err, context.DeadlineExceeded) || IsRetryable(err) {
			t.Fatalf("putLogs past the deadline = %v, want context.DeadlineExceeded, not retryable", err)
		}
		if !strings.Contains(err.Error(), opPutLogs) {
			t.Errorf("error %q does not name the operation", err)
		}
	})
	t.Run("request timeout", func(t *testing.T) {
		cfg := testConfig(env)
		cfg.RequestTimeout = 50 * time.Millisecond
		c := newTestClient(t, cfg)
		err := c.putLogs(ctxT(t), testLogstore, "", -1, raw, CompressionLZ4)
		if err == nil || !IsRetryable(err) || errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("putLogs past RequestTimeout = %v (retryable %v); want a retryable timeout that is not the caller's deadline",
				err, IsRetryable(err))
		}
		if !strings.Contains(err.Error(), "timed out") || !strings.Contains(err.Error(), opPutLogs) {
			t.Errorf("error %q does not say what timed out", err)
		}
	})
}

func TestAPINetworkFaults(t *testing.T) {
	env := testutil.SLS(t)
	env.LogStore(t, testProject, testLogstore, 1)
	c := newTestClient(t, testConfig(env))
	ctx := ctxT(t)
	g := testGroup(200, "net")
	if err := c.putLogs(ctx, testLogstore, "", -1, appendLogGroup(nil, &g), CompressionLZ4); err != nil {
		t.Fatal(err)
	}
	begin, err := c.getCursor(ctx, testLogstore, 0, "begin")
	if err != nil {
		t.Fatal(err)
	}
	// Every matching request meets the fault: net/http itself retries a GET
	// once when a reused connection breaks before any answer.
	for name, f := range map[string]slstest.Fault{
		"reset":    {Op: slstest.OpPullLogs, Reset: true},
		"truncate": {Op: slstest.OpPullLogs, Truncate: true},
	} {
		t.Run(name, func(t *testing.T) {
			remove := env.Server.InjectFault(f)
			_, err := c.pullLogs(ctx, testLogstore, 0, begin, "", 10, CompressionLZ4)
			remove()
			if err == nil || !IsRetryable(err) {
				t.Fatalf("pullLogs with a %s = %v (retryable %v), want a retryable error", name, err, IsRetryable(err))
			}
			if !strings.Contains(err.Error(), opPullLogs) {
				t.Errorf("error %q does not name the operation", err)
			}
			// The next request works.
			res, err := c.pullLogs(ctx, testLogstore, 0, begin, "", 10, CompressionLZ4)
			if err != nil || res.Count != 1 {
				t.Fatalf("pullLogs after the fault = %d groups, %v", res.Count, err)
			}
		})
	}
}

// TestAPIBadResponses covers answers SLS should never send (a proxy's HTML
// error page, missing or inconsistent headers), from a plain HTTP server.
func TestAPIBadResponses(t *testing.T) {
	raw := []byte(strings.Repeat("\x0a\x00", 50)) // a LogGroupList of 50 empty groups
	lz := make([]byte, lz4.CompressBlockBound(len(raw)))
	n, err := lz4.CompressBlock(raw, lz, nil)
	if err != nil {
		t.Fatal(err)
	}
	lz = lz[:n]
	pullOK := func(h http.Header) {
		h.Set("x-log-cursor", "MTA=")
		h.Set("x-log-count", "50")
		h.Set("x-log-bodyrawsize", strconv.Itoa(len(raw)))
		h.Set("x-log-compresstype", "lz4")
	}
	cases := []struct {
		name      string
		status    int
		headers   func(http.Header)
		body      []byte
		retryable bool
		wantCode  string
	}{
		{name: "html 502", status: 502, body: []byte("<html><body>Bad Gateway</body></html>"), retryable: true},
		{name: "html 404", status: 404, body: []byte("<html>not found</html>")},
		{name: "json without code", status: 500, body: []byte(`{"message":"x"}`), retryable: true},
		{name: "no cursor", status: 200, headers: func(h http.Header) { pullOK(h); h.Del("x-log-cursor") }, body: lz},
		{name: "bad count", status: 200, headers: func(h http.Header) { pullOK(h); h.Set("x-log-count", "x") }, body: lz},
		{name: "no raw size", status: 200, headers: func(h http.Header) { pullOK(h); h.Del("x-log-bodyrawsize") }, body: lz},
		{name: "huge raw size", status: 200, headers: func(h http.Header) { pullOK(h); h.Set("x-log-bodyrawsize", "99999999999") }, body: lz},
		{name: "raw size too small", status: 200, headers: func(h http.Header) { pullOK(h); h.Set("x-log-bodyrawsize", "10") }, body: lz},
		{name: "raw size too large", status: 200, headers: func(h http.Header) { pullOK(h); h.Set("x-log-bodyrawsize", "1000") }, body: lz},
		{name: "unknown compression", status: 200, headers: func(h http.Header) { pullOK(h); h.Set("x-log-compresstype", "deflate") }, body: lz},
		{name: "corrupt lz4", status: 200, headers: pullOK, body: []byte{0xff, 0xff, 0xff}},
		{name: "zstd too large", status: 200, headers: func(h http.Header) {
			pullOK(h)
			h.Set("x-log-compresstype", "zstd")
			h.Set("x-log-bodyrawsize", "10")
		}, body: zstdEncoder().EncodeAll(raw, nil)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("x-log-requestid", "REQ1")
				if tc.headers != nil {
					tc.headers(w.Header())
				}
				w.WriteHeader(tc.status)
				_, _ = w.Write(tc.body)
			}))
			t.Cleanup(srv.Close)
			c := newTestClient(t, ClientConfig{Endpoint: srv.Listener.Addr().String(), Project: testProject,
				AccessKeyID: "id", AccessKeySecret: "secret", HTTPClient: slstest.HTTPClientFor(srv.Listener.Addr().String())})
			_, err := c.pullLogs(ctxT(t), testLogstore, 0, "MA==", "", 10, CompressionLZ4)
			e := checkError(t, err, tc.status, CodeBadResponse, tc.retryable)
			if e.Logstore != testLogstore || e.Op != opPullLogs {
				t.Errorf("error names %q %q", e.Op, e.Logstore)
			}
		})
	}
	// The well-formed answer of the same server decodes.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		pullOK(w.Header())
		_, _ = w.Write(lz)
	}))
	t.Cleanup(srv.Close)
	c := newTestClient(t, ClientConfig{Endpoint: srv.Listener.Addr().String(), Project: testProject,
		AccessKeyID: "id", AccessKeySecret: "secret", HTTPClient: slstest.HTTPClientFor(srv.Listener.Addr().String())})
	res, err := c.pullLogs(ctxT(t), testLogstore, 0, "MA==", "", 10, CompressionLZ4)
	if err != nil || res.Count != 50 || string(res.Data) != string(raw) || res.ReadLastCursor != -1 {
		t.Fatalf("pullLogs = %+v, %v", res, err)
	}
}

// capturedRequest is what the wire-compatibility test compares.
type capturedRequest struct {
	method, uri string
	headers     map[string]string
	body        string
}

// captureServer records every request and answers with a 200 and an
// answer good enough for the SDK to stop there.
func captureServer(t *testing.T) (*httptest.Server, func() []capturedRequest) {
	var mu sync.Mutex
	var got []capturedRequest
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		h := map[string]string{}
		for k := range r.Header {
			h[strings.ToLower(k)] = r.Header.Get(k)
		}
		mu.Lock()
		got = append(got, capturedRequest{r.Method, r.URL.RequestURI(), h, string(body)})
		mu.Unlock()
		w.Header().Set("x-log-cursor", "MQ==")
		w.Header().Set("x-log-count", "0")
		w.Header().Set("x-log-bodyrawsize", "0")
		switch {
		case strings.Contains(r.URL.RawQuery, "type=heartbeat"):
			_, _ = w.Write([]byte("[]"))
		case strings.Contains(r.URL.RawQuery, "type=cursor"):
			_, _ = w.Write([]byte(`{"cursor":"MQ==","cursor_time":1}`))
		case r.Method == http.MethodGet && !strings.Contains(r.URL.RawQuery, "type=logs"):
			_, _ = w.Write([]byte("[]"))
		}
	}))
	t.Cleanup(srv.Close)
	return srv, func() []capturedRequest {
		mu.Lock()
		defer mu.Unlock()
		out := got
		got = nil
		return out
	}
}

// TestAPIWireMatchesSDK sends each call through the SDK and through our
// client to a recording server and compares method, URI, headers and body.
// Only the values that depend on the time (Date, x-log-date, the
// signature) may differ.
func TestAPIWireMatchesSDK(t *testing.T) {
	srv, take := captureServer(t)
	addr := srv.Listener.Addr().String()
	for _, v4 := range []bool{false, true} {
		t.Run(fmt.Sprintf("v4=%v", v4), func(t *testing.T) {
			cfg := ClientConfig{Endpoint: addr, Project: testProject, AccessKeyID: "ak", AccessKeySecret: "sk",
				SecurityToken: "token", HTTPClient: slstest.HTTPClientFor(addr), UserAgent: sls.DefaultLogUserAgent}
			sdk := &sls.Client{Endpoint: addr, AccessKeyID: "ak", AccessKeySecret: "sk", SecurityToken: "token",
				HTTPClient: slstest.HTTPClientFor(addr)}
			if v4 {
				cfg.AuthVersion, cfg.Region = sls.AuthV4, "cn-hangzhou"
				sdk.AuthVersion, sdk.Region = sls.AuthV4, "cn-hangzhou"
			}
			sdk.SetRetryTimeout(time.Second)
			c := newTestClient(t, cfg)
			ctx := ctxT(t)
			g := testGroup(20, "wire")
			key := keyShard1
			cursor := "MTU1NTU1NTU1NTU1NQ=="
			calls := []struct {
				name string
				sdk  func()
				ours func()
			}{
				{"PostLogStoreLogs", func() { _ = sdk.PostLogStoreLogs(testProject, testLogstore, toSDK(&g), &key) },
					func() { _ = c.putLogs(ctx, testLogstore, key, -1, appendLogGroup(nil, &g), CompressionLZ4) }},
				{"PutLogs", func() { _ = sdk.PutLogs(testProject, testLogstore, toSDK(&g)) },
					func() { _ = c.putLogs(ctx, testLogstore, "", -1, appendLogGroup(nil, &g), CompressionLZ4) }},
				{"PullLogs", func() { _, _, _ = sdk.PullLogs(testProject, testLogstore, 1, cursor, "", 100) },
					func() { _, _ = c.pullLogs(ctx, testLogstore, 1, cursor, "", 100, CompressionLZ4) }},
				{"PullLogs end cursor", func() { _, _, _ = sdk.PullLogs(testProject, testLogstore, 1, cursor, "MTAw", 100) },
					func() { _, _ = c.pullLogs(ctx, testLogstore, 1, cursor, "MTAw", 100, CompressionLZ4) }},
				{"ListShards", func() { _, _ = sdk.ListShards(testProject, testLogstore) },
					func() { _, _ = c.listShards(ctx, testLogstore) }},
				{"GetCursor", func() { _, _ = sdk.GetCursor(testProject, testLogstore, 2, "begin") },
					func() { _, _ = c.getCursor(ctx, testLogstore, 2, "begin") }},
				{"GetCursorTime", func() { _, _ = sdk.GetCursorTime(testProject, testLogstore, 2, cursor) },
					func() { _, _ = c.getCursorTime(ctx, testLogstore, 2, cursor) }},
				{"CreateLogStore", func() { _ = sdk.CreateLogStore(testProject, testLogstore, 7, 2, false, 0) },
					func() { _ = c.createLogStore(ctx, testLogstore, 7, 2) }},
				{"GetLogStore", func() { _, _ = sdk.GetLogStore(testProject, testLogstore) },
					func() { _ = c.getLogStore(ctx, testLogstore) }},
				{"CreateConsumerGroup", func() {
					_ = sdk.CreateConsumerGroup(testProject, testLogstore, sls.ConsumerGroup{ConsumerGroupName: "g", Timeout: 20, InOrder: true})
				}, func() {
					_ = c.createConsumerGroup(ctx, testLogstore, sls.ConsumerGroup{ConsumerGroupName: "g", Timeout: 20, InOrder: true})
				}},
				{"UpdateConsumerGroup", func() {
					_ = sdk.UpdateConsumerGroup(testProject, testLogstore, sls.ConsumerGroup{ConsumerGroupName: "g", Timeout: 20})
				}, func() {
					_ = c.updateConsumerGroup(ctx, testLogstore, sls.ConsumerGroup{ConsumerGroupName: "g", Timeout: 20})
				}},
				{"ListConsumerGroup", func() { _, _ = sdk.ListConsumerGroup(testProject, testLogstore) },
					func() { _, _ = c.listConsumerGroups(ctx, testLogstore) }},
				{"HeartBeat", func() { _, _ = sdk.HeartBeat(testProject, testLogstore, "g", "c 1", []int{0, 2}) },
					func() { _, _ = c.heartbeat(ctx, testLogstore, "g", "c 1", []int{0, 2}) }},
				{"HeartBeat nil", func() { _, _ = sdk.HeartBeat(testProject, testLogstore, "g", "c", nil) },
					func() { _, _ = c.heartbeat(ctx, testLogstore, "g", "c", nil) }},
				{"UpdateCheckpoint", func() { _ = sdk.UpdateCheckpoint(testProject, testLogstore, "g", "c", 3, cursor, true) },
					func() { _ = c.updateCheckpoint(ctx, testLogstore, "g", "c", 3, cursor, true) }},
				{"GetCheckpoint", func() { _, _ = sdk.GetCheckpoint(testProject, testLogstore, "g") },
					func() { _, _ = c.getCheckpoints(ctx, testLogstore, "g") }},
			}
			for _, call := range calls {
				call.sdk()
				want := take()
				call.ours()
				got := take()
				if len(want) != 1 || len(got) != 1 {
					t.Fatalf("%s: the SDK sent %d requests, ours %d; want 1 each", call.name, len(want), len(got))
				}
				compareCaptured(t, call.name, want[0], got[0])
			}
		})
	}
}

func compareCaptured(t *testing.T, name string, want, got capturedRequest) {
	t.Helper()
	if want.method != got.method || want.uri != got.uri {
		t.Errorf("%s: SDK sent %s %s, ours %s %s", name, want.method, want.uri, got.method, got.uri)
	}
	if want.body != got.body {
		t.Errorf("%s: bodies differ:\n SDK %q\nours %q", name, head([]byte(want.body)), head([]byte(got.body)))
	}
	// Values that depend on the clock.
	timeDependent := map[string]bool{"date": true, "x-log-date": true, "authorization": true}
	for k, v := range want.headers {
		g, ok := got.headers[k]
		switch {
		case !ok:
			t.Errorf("%s: header %s (%q) missing from our request", name, k, v)
		case !timeDependent[k] && g != v:
			t.Errorf("%s: header %s: SDK %q, ours %q", name, k, v, g)
		}
	}
	for k, v := range got.headers {
		if _, ok := want.headers[k]; !ok {
			t.Errorf("%s: our request has header %s (%q) the SDK does not send", name, k, v)
		}
	}
}

func TestAPIClientDefaultsAndClose(t *testing.T) {
	env := testutil.SLS(t)
	env.LogStore(t, testProject, testLogstore, 1)
	cfg := testConfig(env)
	cfg.HTTPClient = nil
	c, err := newAPIClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if c.transport == nil || c.client.Transport != c.transport || c.timeout != DefaultRequestTimeout || c.userAgent != DefaultUserAgent {
		t.Fatalf("defaults not applied: %+v", c)
	}
	c.close()
	c.close() // idempotent

	own := testConfig(env)
	c2 := newTestClient(t, own)
	if c2.transport != nil || c2.client != env.HTTPClient {
		t.Fatal("a caller's HTTP client must be used as is")
	}
	if _, err := newAPIClient(ClientConfig{}); err == nil {
		t.Fatal("newAPIClient accepted an empty config")
	}
}

// TestClientConfigValidate checks that every bad field is named, all in one
// error, and that no secret appears.
func TestClientConfigValidate(t *testing.T) {
	const secret, token = "s3cr3t-value", "t0k3n-value"
	valid := ClientConfig{Endpoint: "cn-hangzhou.log.aliyuncs.com", Project: "my-project", AccessKeyID: "id", AccessKeySecret: secret}
	cases := []struct {
		name   string
		mutate func(*ClientConfig)
		want   []string // substrings, each naming a field
	}{
		{"valid", func(c *ClientConfig) {}, nil},
		{"valid https v4", func(c *ClientConfig) {
			c.Endpoint, c.AuthVersion, c.Region = "https://cn-hangzhou.log.aliyuncs.com", sls.AuthV4, "cn-hangzhou"
		}, nil},
		{"valid provider", func(c *ClientConfig) {
			c.AccessKeyID, c.AccessKeySecret = "", ""
			c.CredentialsProvider = sls.NewStaticCredentialsProvider("a", secret, token)
		}, nil},
		{"valid sts", func(c *ClientConfig) { c.SecurityToken = token }, nil},
		{"everything wrong", func(c *ClientConfig) {
			*c = ClientConfig{AuthVersion: sls.AuthV4, RequestTimeout: -time.Second}
		}, []string{"Endpoint", "Project", "credentials", "Region", "RequestTimeout"}},
		{"bad project", func(c *ClientConfig) { c.Project = "My_Project" }, []string{"Project"}},
		{"short project", func(c *ClientConfig) { c.Project = "ab" }, []string{"Project"}},
		{"project ends with hyphen", func(c *ClientConfig) { c.Project = "abc-" }, []string{"Project"}},
		{"endpoint with path", func(c *ClientConfig) { c.Endpoint = "http://host/path" }, []string{"Endpoint"}},
		{"endpoint ftp", func(c *ClientConfig) { c.Endpoint = "ftp://host" }, []string{"Endpoint"}},
		{"endpoint only scheme", func(c *ClientConfig) { c.Endpoint = "https://" }, []string{"Endpoint"}},
		{"endpoint with password", func(c *ClientConfig) { c.Endpoint = "http://user:" + secret + "@host" }, []string{"Endpoint"}},
		{"both credentials", func(c *ClientConfig) {
			c.CredentialsProvider = sls.NewStaticCredentialsProvider("a", secret, "")
		}, []string{"credentials"}},
		{"token and provider", func(c *ClientConfig) {
			c.AccessKeyID, c.AccessKeySecret, c.SecurityToken = "", "", token
			c.CredentialsProvider = sls.NewStaticCredentialsProvider("a", secret, "")
		}, []string{"credentials"}},
		{"only id", func(c *ClientConfig) { c.AccessKeySecret = "" }, []string{"AccessKeySecret"}},
		{"only secret", func(c *ClientConfig) { c.AccessKeyID = "" }, []string{"AccessKeyID"}},
		{"only token", func(c *ClientConfig) { c.AccessKeyID, c.AccessKeySecret, c.SecurityToken = "", "", token },
			[]string{"AccessKeyID", "AccessKeySecret"}},
		{"v4 without region", func(c *ClientConfig) { c.AuthVersion = sls.AuthV4 }, []string{"Region"}},
		{"v0", func(c *ClientConfig) { c.AuthVersion = sls.AuthV0 }, []string{"AuthVersion"}},
		{"unknown auth", func(c *ClientConfig) { c.AuthVersion = "v9" }, []string{"AuthVersion"}},
		{"negative timeout", func(c *ClientConfig) { c.RequestTimeout = -1 }, []string{"RequestTimeout"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := valid
			tc.mutate(&cfg)
			err := cfg.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want an error naming %v", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %q; it does not name %s", err, w)
				}
			}
			if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), token) {
				t.Errorf("Validate() = %q shows a secret", err)
			}
		})
	}
}

func TestClientConfigNeverPrintsSecrets(t *testing.T) {
	const secret, token = "s3cr3t-value", "t0k3n-value"
	cfgs := []ClientConfig{
		{Endpoint: "e", Project: "p", AccessKeyID: "id", AccessKeySecret: secret, SecurityToken: token},
		{Endpoint: "e", Project: "p", CredentialsProvider: sls.NewStaticCredentialsProvider("id", secret, token)},
	}
	for _, cfg := range cfgs {
		ptrCfg := &cfg
		type wrapper struct {
			ClientConfig
			Other int
		}
		for _, s := range []string{
			fmt.Sprintf("%v", cfg), fmt.Sprintf("%+v", cfg), fmt.Sprintf("%#v", cfg), fmt.Sprintf("%s", cfg),
			fmt.Sprintf("%v", ptrCfg), fmt.Sprintf("%+v", ptrCfg), fmt.Sprintf("%#v", ptrCfg),
			fmt.Sprintf("%v", wrapper{ClientConfig: cfg}), fmt.Sprintf("%+v", []ClientConfig{cfg}),
			fmt.Sprintf("%#v", map[string]ClientConfig{"a": cfg}), fmt.Sprint(cfg),
		} {
			if strings.Contains(s, secret) || strings.Contains(s, token) {
				t.Errorf("a printed config shows a secret: %s", s)
			}
			if !strings.Contains(s, "ClientConfig") {
				t.Errorf("printed config %q does not look like one", s)
			}
		}
		if cfg.AccessKeySecret != "" && !strings.Contains(cfg.String(), "AccessKeySecret:[redacted]") {
			t.Errorf("String() = %q; want the secret shown as [redacted]", cfg.String())
		}
	}
}

// BenchmarkPutLogs writes the same ~100 KB LogGroup through our client and
// through the SDK's PostRawLogWithCompressType (no marshaling on either
// side) to the emulator, to compare the client-side cost per request.
func BenchmarkPutLogs(b *testing.B) {
	env := testutil.SLS(b)
	env.LogStore(b, testProject, testLogstore, 1)
	g := manyLogs(500, 7)
	raw := appendLogGroup(nil, &g)
	key := keyShard0
	b.Run("ours", func(b *testing.B) {
		cfg := testConfig(env)
		c := newTestClient(b, cfg)
		ctx := context.Background()
		b.SetBytes(int64(len(raw)))
		b.ReportAllocs()
		for range b.N {
			if err := c.putLogs(ctx, testLogstore, key, -1, raw, CompressionLZ4); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("sdk", func(b *testing.B) {
		sdk := env.Client()
		b.SetBytes(int64(len(raw)))
		b.ReportAllocs()
		for range b.N {
			if err := sdk.PostRawLogWithCompressType(testProject, testLogstore, raw, sls.Compress_LZ4, &key); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkPullLogs reads the same 100 groups of 100 logs through our
// client (pullLogs and decodeLogGroupList) and through the SDK's PullLogs.
func BenchmarkPullLogs(b *testing.B) {
	env := testutil.SLS(b)
	env.LogStore(b, testProject, testLogstore, 1)
	c := newTestClient(b, testConfig(env))
	ctx := context.Background()
	for i := range 100 {
		g := benchGroup(i)
		if err := c.putLogs(ctx, testLogstore, "", -1, appendLogGroup(nil, &g), CompressionLZ4); err != nil {
			b.Fatal(err)
		}
	}
	begin, err := c.getCursor(ctx, testLogstore, 0, "begin")
	if err != nil {
		b.Fatal(err)
	}
	const logs = 100 * benchLogsPerGroup
	b.Run("ours", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			res, err := c.pullLogs(ctx, testLogstore, 0, begin, "", 100, CompressionLZ4)
			if err != nil {
				b.Fatal(err)
			}
			if groups, err := decodeLogGroupList(res.Data, nil); err != nil || len(groups) != 100 {
				b.Fatal(err)
			}
		}
		reportLogs(b, logs)
	})
	b.Run("sdk", func(b *testing.B) {
		sdk := env.Client()
		b.ReportAllocs()
		for range b.N {
			gl, _, err := sdk.PullLogs(testProject, testLogstore, 0, begin, "", 100)
			if err != nil || len(gl.LogGroups) != 100 {
				b.Fatal(err)
			}
		}
		reportLogs(b, logs)
	})
}

// TestAPIHTTPSEndpoint checks that an https:// endpoint is reached over TLS
// with the project in the host name.
func TestAPIHTTPSEndpoint(t *testing.T) {
	var host atomic.Value
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host.Store(r.Host)
		_, _ = w.Write([]byte(`[{"shardID":0,"status":"readwrite","inclusiveBeginKey":"00000000000000000000000000000000","exclusiveEndKey":"ffffffffffffffffffffffffffffffff","createTime":1}]`))
	}))
	t.Cleanup(srv.Close)
	addr := srv.Listener.Addr().String()
	tr := srv.Client().Transport.(*http.Transport).Clone()
	tr.TLSClientConfig.ServerName = "example.com" // the name httptest's certificate holds
	dial := tr.DialContext
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	tr.DialContext = func(ctx context.Context, network, _ string) (net.Conn, error) { return dial(ctx, network, addr) }
	t.Cleanup(tr.CloseIdleConnections)
	c := newTestClient(t, ClientConfig{Endpoint: "https://" + addr, Project: testProject, AccessKeyID: "id",
		AccessKeySecret: "secret", HTTPClient: &http.Client{Transport: tr}})
	shards, err := c.listShards(ctxT(t), testLogstore)
	if err != nil || len(shards) != 1 {
		t.Fatalf("listShards over https = %v, %v", shards, err)
	}
	if got := host.Load(); got != testProject+"."+addr {
		t.Fatalf("Host %q, want %q", got, testProject+"."+addr)
	}
}

// failingProvider is a CredentialsProvider that cannot fetch credentials.
type failingProvider struct{}

func (failingProvider) GetCredentials() (sls.Credentials, error) {
	return sls.Credentials{}, errors.New("metadata service unreachable")
}

func TestAPICredentialsProviderError(t *testing.T) {
	env := testutil.SLS(t)
	env.LogStore(t, testProject, testLogstore, 1)
	cfg := testConfig(env)
	cfg.AccessKeyID, cfg.AccessKeySecret, cfg.CredentialsProvider = "", "", failingProvider{}
	c := newTestClient(t, cfg)
	_, err := c.listShards(ctxT(t), testLogstore)
	if err == nil || !strings.Contains(err.Error(), "metadata service unreachable") || !strings.Contains(err.Error(), opListShards) {
		t.Fatalf("listShards with a failing provider = %v", err)
	}
}

// TestSignV1MatchesSDK: signV1 produces the SDK signer's headers byte for
// byte for the requests the Publisher sends, and for random headers and
// URIs it either does too or leaves the headers alone (the caller then
// signs with the SDK).
func TestSignV1MatchesSDK(t *testing.T) {
	const keyID, secret = "LTAI-key-id", "secret/with+chars="
	base := func() map[string]string {
		return map[string]string{
			"Host": "proj.cn-hangzhou.log.aliyuncs.com", "x-log-apiversion": "0.6.0",
			"User-Agent": sls.DefaultLogUserAgent, "x-log-bodyrawsize": "1234",
			"Content-Type": "application/x-protobuf", "x-log-compresstype": "lz4",
			"Date": "Mon, 02 Jan 2006 15:04:05 GMT",
		}
	}
	var signed, declined int
	check := func(t *testing.T, name, method, uri string, headers map[string]string, body []byte, wantFast bool) {
		t.Helper()
		sdk := maps.Clone(headers)
		sdkErr := sls.NewSignerV1(keyID, secret).Sign(method, uri, sdk, body)
		ours := maps.Clone(headers)
		fast := signV1(method, uri, ours, body, keyID, secret)
		if !fast {
			declined++
			if wantFast {
				t.Fatalf("%s: signV1 declined a request the Publisher sends", name)
			}
			if !maps.Equal(ours, headers) {
				t.Fatalf("%s: signV1 declined but changed the headers", name)
			}
			return
		}
		signed++
		if sdkErr != nil {
			t.Fatalf("%s: signV1 signed a request the SDK refuses: %v", name, sdkErr)
		}
		if !maps.Equal(ours, sdk) {
			t.Fatalf("%s: headers differ\n SDK %v\nours %v", name, sdk, ours)
		}
	}
	body := []byte("some compressed body \x00\xff")
	for _, uri := range []string{
		"/logstores/app-log",
		"/logstores/app_log.2/shards/route?key=" + keyShard1,
		"/logstores/app-log/shards/route?key=" + keyShard0 + "&seqid=1763712000123456789",
		"/logstores/x/shards/route?seqid=5&key=" + keyShard0,
	} {
		for _, token := range []string{"", "sts-token "} {
			h := base()
			if token != "" {
				h["x-acs-security-token"] = token
			}
			check(t, uri+" "+token, http.MethodPost, uri, h, body, true)
			check(t, uri+" "+token+" empty body", http.MethodPost, uri, base(), []byte{}, true)
		}
	}
	check(t, "no Date", http.MethodPost, "/logstores/x", map[string]string{"x-log-apiversion": "0.6.0"}, body, false)

	// Random shapes: odd header names and values, escaped or repeated
	// query parameters, bodies or none.
	rng := rand.New(rand.NewPCG(1, 2))
	pick := func(xs ...string) string { return xs[rng.IntN(len(xs))] }
	for i := range 3000 {
		h := base()
		for range rng.IntN(4) {
			h[pick("X-Log-Extra", " x-log-sp", "x-acs-z", "X-ACS-Y", "x-log-signaturemethod", "X-Log-SignatureMethod",
				"x-logged", "x-log-é", "Content-Type", "x-log-bodyrawsize ", "Accept")] = pick("v", " spaced ", "", "a\tb", "ünï")
		}
		uri := pick("/logstores/a", "/logstores/a b", "/logstores/%61", "/logstores/a/shards/route", "logstores/rel", "")
		if rng.IntN(2) == 0 {
			uri += "?" + pick("key=ab", "key=a%20b", "key=1&seqid=2", "b=1&a=2", "a=1&a=2", "k", "k=", "&k=1", "k=1;j=2", "")
		}
		var b []byte
		if rng.IntN(3) > 0 {
			b = body[:rng.IntN(len(body)+1)]
		}
		check(t, fmt.Sprintf("random %d: %s %v", i, uri, h), pick(http.MethodPost, http.MethodGet), uri, h, b, false)
	}
	t.Logf("signed %d requests like the SDK, declined %d", signed, declined)
	if signed < 1000 || declined < 500 {
		t.Fatalf("signed %d, declined %d: the random shapes do not exercise both paths", signed, declined)
	}
}

// BenchmarkSignV1 compares signV1 with the SDK's signer on a PutLogs
// request with a hash key and sequence id.
func BenchmarkSignV1(b *testing.B) {
	uri := "/logstores/app-log/shards/route?key=" + keyShard0 + "&seqid=1763712000123456789"
	body := make([]byte, 8<<10)
	headers := map[string]string{
		"Host": "proj.cn-hangzhou.log.aliyuncs.com", "x-log-apiversion": "0.6.0", "User-Agent": sls.DefaultLogUserAgent,
		"x-log-bodyrawsize": "40000", "Content-Type": "application/x-protobuf", "x-log-compresstype": "lz4",
		"Date": "Mon, 02 Jan 2006 15:04:05 GMT",
	}
	b.Run("sdk", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := sls.NewSignerV1("id", "secret").Sign(http.MethodPost, uri, headers, body); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("signV1", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if !signV1(http.MethodPost, uri, headers, body, "id", "secret") {
				b.Fatal("declined")
			}
		}
	})
}
