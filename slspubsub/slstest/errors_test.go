package slstest_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	sls "github.com/aliyun/aliyun-log-go-sdk"
	"github.com/gogo/protobuf/proto"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/watermill-sls/watermill-sls/internal/testutil"
	"github.com/watermill-sls/watermill-sls/slspubsub/slstest"
)

// rawCall is one raw HTTP request to the emulator.
type rawCall struct {
	method  string
	project string // first label of the Host; "" for the bare endpoint
	path    string
	query   url.Values
	header  map[string]string
	body    []byte
}

// rawAnswer is what the server answered.
type rawAnswer struct {
	status int
	header http.Header
	body   []byte
}

// doRaw sends c to env's server with a client that gives up after 10 s, so a
// hanging handler fails the test instead of blocking it.
func doRaw(t *testing.T, env *testutil.SLSEnv, c rawCall) rawAnswer {
	t.Helper()
	host := env.Endpoint
	if c.project != "" {
		host = c.project + "." + env.Endpoint
	}
	u := url.URL{Scheme: "http", Host: host, Path: c.path, RawQuery: c.query.Encode()}
	req, err := http.NewRequest(c.method, u.String(), bytes.NewReader(c.body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range c.header {
		req.Header.Set(k, v)
	}
	hc := *env.HTTPClient
	hc.Timeout = 10 * time.Second
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", c.method, u.String(), err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", c.method, u.String(), err)
	}
	return rawAnswer{resp.StatusCode, resp.Header, body}
}

var requestIDPattern = regexp.MustCompile(`^[0-9A-F]{24}$`)

// checkSLSError fails t unless a is the SLS error status / code: the JSON
// body {"errorCode","errorMessage"} and an x-log-requestid header.
func checkSLSError(t *testing.T, a rawAnswer, status int, code string) {
	t.Helper()
	if id := a.header.Get("x-log-requestid"); !requestIDPattern.MatchString(id) {
		t.Errorf("x-log-requestid %q is not an SLS request id", id)
	}
	if ct := a.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	var body map[string]any
	if err := json.Unmarshal(a.body, &body); err != nil {
		t.Fatalf("status %d, body %q is not JSON: %v", a.status, a.body, err)
	}
	gotCode, _ := body["errorCode"].(string)
	msg, _ := body["errorMessage"].(string)
	if a.status != status || gotCode != code || msg == "" || len(body) != 2 {
		t.Fatalf("answer %d %s, want %d with errorCode %q and an errorMessage", a.status, a.body, status, code)
	}
}

func lz4Block(t *testing.T, src []byte) []byte {
	t.Helper()
	dst := make([]byte, lz4.CompressBlockBound(len(src)))
	n, err := lz4.CompressBlock(src, dst, nil)
	if err != nil || n == 0 {
		t.Fatalf("lz4: %d, %v", n, err)
	}
	return dst[:n]
}

func zstdFrame(t *testing.T, src []byte) []byte {
	t.Helper()
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	return enc.EncodeAll(src, nil)
}

func marshal(t *testing.T, g *sls.LogGroup) []byte {
	t.Helper()
	b, err := g.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// putHeaders are the headers of a PutLogs request.
func putHeaders(compress string, rawSize int) map[string]string {
	h := map[string]string{"Content-Type": "application/x-protobuf", "x-log-bodyrawsize": strconv.Itoa(rawSize)}
	if compress != "" {
		h["x-log-compresstype"] = compress
	}
	return h
}

// cursorOffset is the cursor n groups after c.
func cursorOffset(t *testing.T, c string, n int64) string {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(c)
	if err != nil {
		t.Fatal(err)
	}
	v, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString([]byte(strconv.FormatInt(v+n, 10)))
}

// errorsEnv is a server without authentication holding "proj"/"store"
// with shard 0 [00.., 80..) holding three groups, readonly shard 1
// [80.., ff..] holding one and split into readwrite shards 2 and 3, and
// consumer group "cg".
func errorsEnv(t *testing.T) *testutil.SLSEnv {
	t.Helper()
	env := testutil.SLS(t, slstest.WithoutAuth(), slstest.WithLimits(slstest.Limits{MaxPutBytes: 4096, MaxPutLogs: 10}))
	env.LogStore(t, "proj", "store", 2)
	for i := range 3 {
		if _, err := env.Server.AppendLogGroup("proj", "store", 0, testGroup(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := env.Server.AppendLogGroup("proj", "store", 1, testGroup("one")); err != nil {
		t.Fatal(err)
	}
	if _, err := env.Server.SplitShard("proj", "store", 1, ""); err != nil {
		t.Fatal(err)
	}
	a := doRaw(t, env, rawCall{method: "POST", project: "proj", path: "/logstores/store/consumergroups",
		header: map[string]string{"Content-Type": "application/json", "x-log-bodyrawsize": "0"},
		body:   []byte(`{"consumerGroup":"cg","timeout":10,"order":false}`)})
	if a.status != 200 {
		t.Fatalf("create consumer group: %d %s", a.status, a.body)
	}
	return env
}

func TestErrorShapes(t *testing.T) {
	env := errorsEnv(t)
	begin0, end0, err := env.Server.Cursors("proj", "store", 0)
	if err != nil {
		t.Fatal(err)
	}
	begin2, _, err := env.Server.Cursors("proj", "store", 2)
	if err != nil {
		t.Fatal(err)
	}
	valid := marshal(t, testGroup("a", "b"))
	validLZ4 := lz4Block(t, valid)
	validZstd := zstdFrame(t, valid)
	big := marshal(t, testGroup(strings.Repeat("x", 5000)))
	tooMany := marshal(t, testGroup("1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11"))
	jsonHeader := map[string]string{"Content-Type": "application/json", "x-log-bodyrawsize": "0"}

	put := func(body []byte, h map[string]string) rawCall {
		return rawCall{method: "POST", project: "proj", path: "/logstores/store", header: h, body: body}
	}
	route := func(key, seqid string) rawCall {
		q := url.Values{"key": {key}}
		if seqid != "" {
			q.Set("seqid", seqid)
		}
		return rawCall{method: "POST", project: "proj", path: "/logstores/store/shards/route", query: q,
			header: putHeaders("lz4", len(valid)), body: validLZ4}
	}
	shardGet := func(shard string, q url.Values) rawCall {
		return rawCall{method: "GET", project: "proj", path: "/logstores/store/shards/" + shard, query: q}
	}
	pull := func(shard, cursor, count string) rawCall {
		return shardGet(shard, url.Values{"type": {"logs"}, "cursor": {cursor}, "count": {count}})
	}
	shardPost := func(shard string, q url.Values) rawCall {
		return rawCall{method: "POST", project: "proj", path: "/logstores/store/shards/" + shard, query: q}
	}
	cg := func(method, path string, q url.Values, body string) rawCall {
		return rawCall{method: method, project: "proj", path: "/logstores/store/consumergroups" + path, query: q,
			header: jsonHeader, body: []byte(body)}
	}
	heartbeat := url.Values{"type": {"heartbeat"}, "consumer": {"c1"}}
	checkpoint := url.Values{"type": {"checkpoint"}, "consumer": {"c1"}, "forceSuccess": {"true"}}

	cases := []struct {
		name   string
		call   rawCall
		status int
		code   string
	}{
		// PutLogs bodies and headers.
		{"malformed protobuf", put([]byte{0x0a, 0x05, 0x01}, putHeaders("", 3)), 400, slstest.CodePostBodyInvalid},
		{"log without time", put([]byte{0x0a, 0x00}, putHeaders("", 2)), 400, slstest.CodePostBodyInvalid},
		{"malformed protobuf in lz4", put(lz4Block(t, bytes.Repeat([]byte{0xff}, 64)), putHeaders("lz4", 64)), 400, slstest.CodePostBodyInvalid},
		{"bad lz4 body", put([]byte{0x00, 0x00, 0x00, 0x01}, putHeaders("lz4", len(valid))), 400, slstest.CodePostBodyUncompressError},
		{"lz4 shorter than rawsize", put(validLZ4, putHeaders("lz4", len(valid)+10)), 400, slstest.CodePostBodyUncompressError},
		{"lz4 longer than rawsize", put(validLZ4, putHeaders("lz4", len(valid)-1)), 400, slstest.CodePostBodyUncompressError},
		{"bad zstd body", put([]byte("not zstd at all"), putHeaders("zstd", len(valid))), 400, slstest.CodePostBodyUncompressError},
		{"zstd of another size", put(validZstd, putHeaders("zstd", len(valid)+1)), 400, slstest.CodePostBodyUncompressError},
		{"unknown compresstype", put(validLZ4, putHeaders("gzip", len(valid))), 400, slstest.CodeInvalidCompressType},
		{"missing bodyrawsize", put(validLZ4, map[string]string{"Content-Type": "application/x-protobuf", "x-log-compresstype": "lz4"}), 400, slstest.CodeMissingBodyRawSize},
		{"non-numeric bodyrawsize", put(validLZ4, map[string]string{"Content-Type": "application/x-protobuf", "x-log-compresstype": "lz4", "x-log-bodyrawsize": "ten"}), 400, slstest.CodeInvalidBodyRawSize},
		{"negative bodyrawsize", put(validLZ4, putHeaders("lz4", -1)), 400, slstest.CodeInvalidBodyRawSize},
		{"uncompressed body of another size", put(valid, putHeaders("", len(valid)+1)), 400, slstest.CodeInvalidBodyRawSize},
		{"wrong content type", put(validLZ4, map[string]string{"Content-Type": "application/json", "x-log-compresstype": "lz4", "x-log-bodyrawsize": strconv.Itoa(len(valid))}), 400, slstest.CodeInvalidContentType},
		{"missing content type", put(validLZ4, map[string]string{"x-log-compresstype": "lz4", "x-log-bodyrawsize": strconv.Itoa(len(valid))}), 400, slstest.CodeInvalidContentType},
		{"body over the limit", put(lz4Block(t, big), putHeaders("lz4", len(big))), 400, slstest.CodePostBodyTooLarge},
		{"rawsize over the limit", put(validLZ4, putHeaders("lz4", 1<<30)), 400, slstest.CodePostBodyTooLarge},
		{"too many logs", put(lz4Block(t, tooMany), putHeaders("lz4", len(tooMany))), 400, slstest.CodePostBodyTooLarge},
		{"route key not hex", route("xyz", ""), 400, slstest.CodeInvalidKey},
		{"route key too long", route(strings.Repeat("0", 33), ""), 400, slstest.CodeInvalidKey},
		{"route without key", route("", ""), 400, slstest.CodeInvalidKey},
		{"seqid not a number", route("00", "one"), 400, slstest.CodeParameterInvalid},
		{"negative seqid", route("00", "-1"), 400, slstest.CodeParameterInvalid},
		{"put to unknown logstore", rawCall{method: "POST", project: "proj", path: "/logstores/nope", header: putHeaders("lz4", len(valid)), body: validLZ4}, 404, slstest.CodeLogStoreNotExist},

		// Shards and cursors.
		{"unknown shard cursor", shardGet("99", url.Values{"type": {"cursor"}, "from": {"begin"}}), 404, slstest.CodeShardNotExist},
		{"unknown shard pull", pull("99", begin0, "10"), 404, slstest.CodeShardNotExist},
		{"shard id not a number", shardGet("abc", url.Values{"type": {"cursor"}, "from": {"begin"}}), 400, slstest.CodeParameterInvalid},
		{"negative shard id", shardGet("-1", url.Values{"type": {"cursor"}, "from": {"begin"}}), 400, slstest.CodeParameterInvalid},
		{"unknown shard GET type", shardGet("0", url.Values{"type": {"bogus"}}), 400, slstest.CodeParameterInvalid},
		{"cursor from nonsense", shardGet("0", url.Values{"type": {"cursor"}, "from": {"yesterday"}}), 400, slstest.CodeParameterInvalid},
		{"cursor from negative", shardGet("0", url.Values{"type": {"cursor"}, "from": {"-5"}}), 400, slstest.CodeParameterInvalid},
		{"cursor not base64", pull("0", "!!not base64!!", "10"), 400, slstest.CodeInvalidCursor},
		{"cursor not a number", pull("0", base64.StdEncoding.EncodeToString([]byte("abc")), "10"), 400, slstest.CodeInvalidCursor},
		{"cursor missing", pull("0", "", "10"), 400, slstest.CodeInvalidCursor},
		{"cursor of another shard", pull("0", begin2, "10"), 400, slstest.CodeInvalidCursor},
		{"cursor beyond end", pull("0", cursorOffset(t, end0, 1), "10"), 400, slstest.CodeInvalidCursor},
		{"cursor before begin", pull("0", cursorOffset(t, begin0, -1), "10"), 400, slstest.CodeInvalidCursor},
		{"end cursor of another shard", shardGet("0", url.Values{"type": {"logs"}, "cursor": {begin0}, "count": {"10"}, "end_cursor": {begin2}}), 400, slstest.CodeInvalidCursor},
		{"cursor time of a bad cursor", shardGet("0", url.Values{"type": {"cursor_time"}, "cursor": {begin2}}), 400, slstest.CodeInvalidCursor},
		{"count 0", pull("0", begin0, "0"), 400, slstest.CodeParameterInvalid},
		{"count 1001", pull("0", begin0, "1001"), 400, slstest.CodeParameterInvalid},
		{"count negative", pull("0", begin0, "-1"), 400, slstest.CodeParameterInvalid},
		{"count not a number", pull("0", begin0, "ten"), 400, slstest.CodeParameterInvalid},
		{"count missing", shardGet("0", url.Values{"type": {"logs"}, "cursor": {begin0}}), 400, slstest.CodeParameterInvalid},

		// Projects and logstores.
		{"unknown project", rawCall{method: "GET", project: "nope", path: "/logstores/store"}, 404, slstest.CodeProjectNotExist},
		{"unknown project pull", rawCall{method: "GET", project: "nope", path: "/logstores/store/shards/0", query: url.Values{"type": {"logs"}, "cursor": {begin0}, "count": {"1"}}}, 404, slstest.CodeProjectNotExist},
		{"no project in host", rawCall{method: "GET", path: "/logstores"}, 400, slstest.CodeProjectNotExist},
		{"unknown logstore", rawCall{method: "GET", project: "proj", path: "/logstores/nope"}, 404, slstest.CodeLogStoreNotExist},
		{"unknown logstore cursor", rawCall{method: "GET", project: "proj", path: "/logstores/nope/shards/0", query: url.Values{"type": {"cursor"}, "from": {"begin"}}}, 404, slstest.CodeLogStoreNotExist},
		{"create logstore bad JSON", rawCall{method: "POST", project: "proj", path: "/logstores", header: jsonHeader, body: []byte(`{"logstoreName":`)}, 400, slstest.CodePostBodyInvalid},
		{"create logstore bad name", rawCall{method: "POST", project: "proj", path: "/logstores", header: jsonHeader, body: []byte(`{"logstoreName":"Bad Name","shardCount":1}`)}, 400, slstest.CodeParameterInvalid},
		{"create logstore no shards", rawCall{method: "POST", project: "proj", path: "/logstores", header: jsonHeader, body: []byte(`{"logstoreName":"other","shardCount":0}`)}, 400, slstest.CodeParameterInvalid},
		{"create existing logstore", rawCall{method: "POST", project: "proj", path: "/logstores", header: jsonHeader, body: []byte(`{"logstoreName":"store","shardCount":1}`)}, 400, slstest.CodeLogStoreAlreadyExist},
		{"unsupported path", rawCall{method: "GET", project: "proj", path: "/machinegroups"}, 400, slstest.CodeParameterInvalid},
		{"unsupported method", rawCall{method: "PATCH", project: "proj", path: "/logstores/store"}, 400, slstest.CodeParameterInvalid},

		// Consumer groups.
		{"unknown consumer group checkpoints", cg("GET", "/nope", nil, ""), 404, slstest.CodeConsumerGroupNotExist},
		{"unknown consumer group heartbeat", cg("POST", "/nope", heartbeat, "[]"), 404, slstest.CodeConsumerGroupNotExist},
		{"unknown consumer group delete", cg("DELETE", "/nope", nil, ""), 404, slstest.CodeConsumerGroupNotExist},
		{"create consumer group bad JSON", cg("POST", "", nil, "{"), 400, slstest.CodePostBodyInvalid},
		{"create consumer group wrong types", cg("POST", "", nil, `{"consumerGroup":5,"timeout":"x"}`), 400, slstest.CodePostBodyInvalid},
		{"create consumer group without name", cg("POST", "", nil, `{"timeout":10}`), 400, slstest.CodeParameterInvalid},
		{"create consumer group without timeout", cg("POST", "", nil, `{"consumerGroup":"g2"}`), 400, slstest.CodeParameterInvalid},
		{"create existing consumer group", cg("POST", "", nil, `{"consumerGroup":"cg","timeout":10}`), 400, slstest.CodeConsumerGroupAlreadyExist},
		{"update consumer group bad JSON", cg("PUT", "/cg", nil, "not json"), 400, slstest.CodePostBodyInvalid},
		{"heartbeat body an object", cg("POST", "/cg", heartbeat, "{}"), 400, slstest.CodePostBodyInvalid},
		{"heartbeat body of strings", cg("POST", "/cg", heartbeat, `["a"]`), 400, slstest.CodePostBodyInvalid},
		{"heartbeat empty body", cg("POST", "/cg", heartbeat, ""), 400, slstest.CodePostBodyInvalid},
		{"heartbeat without consumer", cg("POST", "/cg", url.Values{"type": {"heartbeat"}}, "[]"), 400, slstest.CodeParameterInvalid},
		{"checkpoint bad JSON", cg("POST", "/cg", checkpoint, "["), 400, slstest.CodePostBodyInvalid},
		{"checkpoint without shard", cg("POST", "/cg", checkpoint, `{"checkpoint":"`+begin0+`"}`), 400, slstest.CodeParameterInvalid},
		{"checkpoint of another shard's cursor", cg("POST", "/cg", checkpoint, `{"checkpoint":"`+begin2+`","shard":0}`), 400, slstest.CodeInvalidCursor},
		{"consumer group POST of unknown type", cg("POST", "/cg", url.Values{"type": {"bogus"}}, "[]"), 400, slstest.CodeParameterInvalid},

		// Split and merge.
		{"split a readonly shard", shardPost("1", url.Values{"action": {"split"}}), 400, slstest.CodeShardReadOnly},
		{"split key above the range", shardPost("0", url.Values{"action": {"split"}, "key": {"90000000000000000000000000000000"}}), 400, slstest.CodeInvalidKey},
		{"split key at the range's begin", shardPost("0", url.Values{"action": {"split"}, "key": {"00000000000000000000000000000000"}}), 400, slstest.CodeInvalidKey},
		{"split key at the range's end", shardPost("0", url.Values{"action": {"split"}, "key": {"80000000000000000000000000000000"}}), 400, slstest.CodeInvalidKey},
		{"split key not hex", shardPost("0", url.Values{"action": {"split"}, "key": {"zz"}}), 400, slstest.CodeInvalidKey},
		{"split unknown shard", shardPost("99", url.Values{"action": {"split"}}), 404, slstest.CodeShardNotExist},
		{"split into 1", shardPost("0", url.Values{"action": {"split"}, "shardCount": {"1"}}), 400, slstest.CodeParameterInvalid},
		{"split into 65", shardPost("0", url.Values{"action": {"split"}, "shardCount": {"65"}}), 400, slstest.CodeParameterInvalid},
		{"split into nonsense", shardPost("0", url.Values{"action": {"split"}, "shardCount": {"two"}}), 400, slstest.CodeParameterInvalid},
		{"merge without right neighbour", shardPost("3", url.Values{"action": {"merge"}}), 400, slstest.CodeParameterInvalid},
		{"merge a readonly shard", shardPost("1", url.Values{"action": {"merge"}}), 400, slstest.CodeShardReadOnly},
		{"merge unknown shard", shardPost("99", url.Values{"action": {"merge"}}), 404, slstest.CodeShardNotExist},
		{"unknown shard action", shardPost("0", url.Values{"action": {"explode"}}), 400, slstest.CodeParameterInvalid},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			checkSLSError(t, doRaw(t, env, tc.call), tc.status, tc.code)
		})
	}

	// None of the refused writes or splits changed anything.
	shards, err := env.Server.Shards("proj", "store")
	if err != nil {
		t.Fatal(err)
	}
	if len(shards) != 4 {
		t.Fatalf("shards after the refused calls: %+v", shards)
	}
	for id, want := range map[int]int{0: 3, 1: 1, 2: 0, 3: 0} {
		if groups, _ := env.Server.LogGroups("proj", "store", id); len(groups) != want {
			t.Fatalf("shard %d holds %d groups after the refused writes, want %d", id, len(groups), want)
		}
	}
}

// At the end of a shard (or at end_cursor) PullLogs answers exactly as SLS:
// 200, the request cursor as next cursor, count 0, raw size 0, no body.
func TestPullLogsEndOfShardAnswer(t *testing.T) {
	env := errorsEnv(t)
	begin0, end0, err := env.Server.Cursors("proj", "store", 0)
	if err != nil {
		t.Fatal(err)
	}
	mid := cursorOffset(t, begin0, 1)
	_, end1, err := env.Server.Cursors("proj", "store", 1)
	if err != nil {
		t.Fatal(err)
	}
	begin3, _, err := env.Server.Cursors("proj", "store", 3)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, shard, cursor, endCursor string
	}{
		{"end of a shard", "0", end0, ""},
		{"end of a readonly shard", "1", end1, ""},
		{"empty shard", "3", begin3, ""},
		{"at end_cursor", "0", mid, mid},
		{"end_cursor before cursor", "0", end0, begin0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			q := url.Values{"type": {"logs"}, "cursor": {tc.cursor}, "count": {"100"}}
			if tc.endCursor != "" {
				q.Set("end_cursor", tc.endCursor)
			}
			a := doRaw(t, env, rawCall{method: "GET", project: "proj", path: "/logstores/store/shards/" + tc.shard, query: q,
				header: map[string]string{"Accept-Encoding": "lz4", "Accept": "application/x-protobuf"}})
			h := a.header
			if a.status != 200 || h.Get("x-log-cursor") != tc.cursor || h.Get("x-log-count") != "0" ||
				h.Get("x-log-bodyrawsize") != "0" || len(a.body) != 0 || h.Get("Content-Length") != "0" {
				t.Fatalf("answer %d, headers %v, %d-byte body; want 200, x-log-cursor %s, count 0, raw size 0, no body",
					a.status, h, len(a.body), tc.cursor)
			}
			if !requestIDPattern.MatchString(h.Get("x-log-requestid")) {
				t.Fatalf("x-log-requestid %q", h.Get("x-log-requestid"))
			}
		})
	}
	// The SDK reads it as an empty batch that leaves the cursor in place.
	gl, next, err := env.Client().PullLogs("proj", "store", 0, end0, "", 100)
	if err != nil || len(gl.LogGroups) != 0 || next != end0 {
		t.Fatalf("SDK at the end: %v groups, next %q, %v; want none, %q", gl, next, err, end0)
	}
}

func TestPullLogsCompression(t *testing.T) {
	env := errorsEnv(t)
	begin0, end0, err := env.Server.Cursors("proj", "store", 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		acceptEncoding, want string
		sdk                  int
	}{
		{"zstd", "zstd", sls.Compress_ZSTD},
		{"lz4", "lz4", sls.Compress_LZ4},
		{"", "lz4", -1},
	} {
		t.Run(tc.want+"/"+tc.acceptEncoding, func(t *testing.T) {
			h := map[string]string{"Accept": "application/x-protobuf"}
			if tc.acceptEncoding != "" {
				h["Accept-Encoding"] = tc.acceptEncoding
			}
			a := doRaw(t, env, rawCall{method: "GET", project: "proj", path: "/logstores/store/shards/0",
				query: url.Values{"type": {"logs"}, "cursor": {begin0}, "count": {"2"}}, header: h})
			if a.status != 200 || a.header.Get("x-log-compresstype") != tc.want || a.header.Get("x-log-count") != "2" {
				t.Fatalf("answer %d, headers %v", a.status, a.header)
			}
			rawSize, _ := strconv.Atoi(a.header.Get("x-log-bodyrawsize"))
			var raw []byte
			if tc.want == "zstd" {
				dec, err := zstd.NewReader(nil)
				if err != nil {
					t.Fatal(err)
				}
				defer dec.Close()
				raw, err = dec.DecodeAll(a.body, nil)
				if err != nil {
					t.Fatal(err)
				}
			} else {
				raw = make([]byte, rawSize)
				n, err := lz4.UncompressBlock(a.body, raw)
				if err != nil {
					t.Fatal(err)
				}
				raw = raw[:n]
			}
			var list sls.LogGroupList
			if len(raw) != rawSize || list.Unmarshal(raw) != nil || len(list.LogGroups) != 2 {
				t.Fatalf("body decodes to %d bytes (x-log-bodyrawsize %d) holding %d groups", len(raw), rawSize, len(list.LogGroups))
			}
			if next := a.header.Get("x-log-cursor"); next != cursorOffset(t, begin0, 2) {
				t.Fatalf("x-log-cursor %s, want two past the begin", next)
			}
			if tc.sdk < 0 {
				return
			}
			gl, plm, err := env.Client().PullLogsWithQuery(&sls.PullLogRequest{Project: "proj", Logstore: "store",
				ShardID: 0, Cursor: begin0, LogGroupMaxCount: 10, CompressType: tc.sdk})
			if err != nil {
				t.Fatal(err)
			}
			if len(gl.LogGroups) != 3 || plm.Count != 3 || plm.NextCursor != end0 || plm.RawSize <= 0 {
				t.Fatalf("SDK pulled %d groups, meta %+v", len(gl.LogGroups), plm)
			}
			for i, g := range gl.LogGroups {
				if got := g.Logs[0].Contents[0].GetValue(); got != strconv.Itoa(i) {
					t.Fatalf("group %d holds %q", i, got)
				}
				if g.GetCursor() != cursorOffset(t, begin0, int64(i)) {
					t.Fatalf("group %d has cursor %q", i, g.GetCursor())
				}
			}
		})
	}
}

// The SDK sees the same errors, as *sls.Error values, on a signed server.
func TestErrorShapesThroughSDK(t *testing.T) {
	env := testutil.SLS(t)
	env.LogStore(t, "proj", "store", 1)
	c := env.Client()
	_, err := c.GetLogStore("proj", "nope")
	if se := asSLSError(t, err); se.HTTPCode != 404 || se.Code != slstest.CodeLogStoreNotExist || se.RequestID == "" {
		t.Fatalf("GetLogStore: %+v", se)
	}
	_, err = c.GetLogStore("nope", "store")
	if se := asSLSError(t, err); se.HTTPCode != 404 || se.Code != slstest.CodeProjectNotExist {
		t.Fatalf("GetLogStore of unknown project: %+v", se)
	}
	_, _, err = c.PullLogs("proj", "store", 0, "bm90IGEgY3Vyc29y", "", 10)
	if se := asSLSError(t, err); se.HTTPCode != 400 || se.Code != slstest.CodeInvalidCursor {
		t.Fatalf("PullLogs with a bad cursor: %+v", se)
	}
	_, err = c.GetCursor("proj", "store", 7, "begin")
	if se := asSLSError(t, err); se.HTTPCode != 404 || se.Code != slstest.CodeShardNotExist {
		t.Fatalf("GetCursor of an unknown shard: %+v", se)
	}
	_, err = c.MergeShards("proj", "store", 0)
	if se := asSLSError(t, err); se.HTTPCode != 400 || se.Code != slstest.CodeParameterInvalid {
		t.Fatalf("MergeShards without a neighbour: %+v", se)
	}
	err = c.UpdateCheckpoint("proj", "store", "nope", "c", 0, "x", true)
	if se := asSLSError(t, err); se.HTTPCode != 404 || se.Code != slstest.CodeConsumerGroupNotExist {
		t.Fatalf("UpdateCheckpoint of an unknown group: %+v", se)
	}
	// An empty LogGroup is not sent at all; a proto-invalid one is refused by the SDK itself.
	if err := c.PutLogs("proj", "store", &sls.LogGroup{}); err != nil {
		t.Fatal(err)
	}
	if err := c.PutLogs("proj", "store", &sls.LogGroup{Logs: []*sls.Log{{Contents: []*sls.LogContent{{Key: proto.String("k")}}}}}); err == nil {
		t.Fatal("the SDK sent a LogGroup missing required fields")
	}
}

// A PutLogs body of deeply nested protobuf groups (10 MiB of start-group
// keys, 40 KiB once compressed) is refused like any malformed body; it used
// to overflow the goroutine stack of the LogGroup scanner and kill the
// process.
func TestPutLogsDeeplyNestedGroups(t *testing.T) {
	env := testutil.SLS(t, slstest.WithoutAuth())
	env.LogStore(t, "proj", "store", 1)
	raw := bytes.Repeat([]byte{0x3b}, slstest.DefaultLimits.MaxPutBytes) // field 7, start group
	a := doRaw(t, env, rawCall{method: "POST", project: "proj", path: "/logstores/store",
		header: putHeaders("lz4", len(raw)), body: lz4Block(t, raw)})
	checkSLSError(t, a, 400, slstest.CodePostBodyInvalid)
}
