package slstest

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	sls "github.com/aliyun/aliyun-log-go-sdk"
	"github.com/gogo/protobuf/proto"
)

// Run one target at a time, e.g.
//
//	go test -run '^$' -fuzz FuzzScanLogGroup -fuzztime 30s ./slspubsub/slstest/
//
// Without -fuzz the seed corpus (and testdata/fuzz) runs as ordinary tests.

// FuzzScanLogGroup checks that scanLogGroup, the emulator's only parse of a
// PutLogs body, accepts exactly what the SDK's generated Unmarshal accepts
// and counts the same logs.
func FuzzScanLogGroup(f *testing.F) {
	for name, g := range sdkGroups() {
		if name == "many logs" || name == "large value" {
			continue // keep seeds small so mutations stay fast
		}
		b, err := g.Marshal()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, c := range handMadeEncodings() {
		if len(c.b) < 4096 {
			f.Add(c.b)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		checkAgainstSDK(t, b)
	})
}

// fuzzServer starts a server without authentication holding project "proj",
// logstore "store" with two shards, one of them split (so that readonly
// shards exist), and a few stored groups.
func fuzzServer(f *testing.F, opts ...Option) *Server {
	f.Helper()
	s, err := NewServer(append([]Option{WithoutAuth()}, opts...)...)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = s.Close() })
	if err := s.CreateLogStore("proj", "store", 2); err != nil {
		f.Fatal(err)
	}
	g := &sls.LogGroup{Topic: proto.String("t"), Logs: []*sls.Log{{Time: proto.Uint32(1), Contents: []*sls.LogContent{{Key: proto.String("k"), Value: proto.String("v")}}}}}
	for shard := range 2 {
		for range 3 {
			if _, err := s.AppendLogGroup("proj", "store", shard, g); err != nil {
				f.Fatal(err)
			}
		}
	}
	if _, err := s.SplitShard("proj", "store", 1, ""); err != nil {
		f.Fatal(err)
	}
	return s
}

// serveFuzz serves r on s in process and checks the answer is a 200 or an
// SLS-shaped error: a 4xx/5xx status, a JSON body with a non-empty
// errorCode, and a request id.
func serveFuzz(t *testing.T, s *Server, r *http.Request) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, r)
	if rec.Header().Get("x-log-requestid") == "" {
		t.Fatalf("status %d without x-log-requestid", rec.Code)
	}
	if rec.Code == http.StatusOK {
		return rec
	}
	if rec.Code < 400 || rec.Code > 599 {
		t.Fatalf("status %d is neither 200 nor an error", rec.Code)
	}
	var body struct {
		ErrorCode    *string `json:"errorCode"`
		ErrorMessage *string `json:"errorMessage"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || body.ErrorCode == nil || *body.ErrorCode == "" || body.ErrorMessage == nil {
		t.Fatalf("status %d with body %q: not an SLS error (%v)", rec.Code, rec.Body.String(), err)
	}
	return rec
}

// FuzzPutLogsRequest serves PutLogs / PostLogStoreLogs requests built from
// fuzzed body, headers, route key and seqid.
func FuzzPutLogsRequest(f *testing.F) {
	s := fuzzServer(f, WithLimits(Limits{MaxPutBytes: 1 << 20, MaxPutLogs: 64}))
	valid, err := sdkGroups()["envelope"].Marshal()
	if err != nil {
		f.Fatal(err)
	}
	lz, err := s.codec.compress("lz4", nil, valid)
	if err != nil {
		f.Fatal(err)
	}
	zs, err := s.codec.compress("zstd", nil, valid)
	if err != nil {
		f.Fatal(err)
	}
	raw := strconv.Itoa(len(valid))
	const pb = "application/x-protobuf"
	f.Add(lz, "lz4", raw, "", "", pb)
	f.Add(zs, "zstd", raw, "", "", pb)
	f.Add(valid, "", raw, "", "", pb)
	f.Add(lz, "lz4", raw, "7f000000000000000000000000000000", "", pb)
	f.Add(lz, "lz4", raw, "ffffffffffffffffffffffffffffffff", "1", pb)
	f.Add(lz, "lz4", raw, "8", "18446744073709551616", pb)
	f.Add(lz, "LZ4", strconv.Itoa(len(valid)+1), "abc", "-1", pb)
	f.Add(lz, "lz4", "-1", "", "", pb)
	f.Add(lz, "deflate", raw, "", "", pb)
	f.Add([]byte{0, 0, 0}, "lz4", "10", "", "", pb)
	f.Add(valid, "", raw, "", "", "application/json")
	f.Add(valid, "", "", "zz", "x", "")
	f.Add([]byte{}, "", "0", "", "", pb)
	f.Add(zs[:len(zs)/2], "zstd", raw, "", "", pb)

	calls := 0
	f.Fuzz(func(t *testing.T, body []byte, compressType, rawSize, key, seqid, contentType string) {
		if calls++; calls%4096 == 0 {
			// Accepted groups pile up; start over now and then.
			if err := s.DeleteLogStore("proj", "store"); err != nil {
				t.Fatal(err)
			}
			if err := s.CreateLogStore("proj", "store", 2); err != nil {
				t.Fatal(err)
			}
		}
		path, q := "/logstores/store", url.Values{}
		if key != "" || seqid != "" {
			path += "/shards/route"
			q.Set("key", key)
			if seqid != "" {
				q.Set("seqid", seqid)
			}
		}
		r := httptest.NewRequest(http.MethodPost, "http://proj."+s.Endpoint()+"/", bytes.NewReader(body))
		r.URL.Path, r.URL.RawQuery = path, q.Encode()
		for name, v := range map[string]string{"x-log-compresstype": compressType, "x-log-bodyrawsize": rawSize, "Content-Type": contentType} {
			if v != "" {
				r.Header.Set(name, v)
			}
		}
		serveFuzz(t, s, r)
	})
}

// FuzzPullLogsQuery serves shard GET requests (PullLogs, GetCursor,
// GetCursorTime) with fuzzed query parameters; a 200 PullLogs answer must
// be one the SDK can decode.
func FuzzPullLogsQuery(f *testing.F) {
	var lastOp atomic.Value // the operation the server saw last
	s := fuzzServer(f, WithLimits(Limits{MaxPullBytes: 256}), WithRequestObserver(func(ri RequestInfo) { lastOp.Store(ri.Op) }))
	begin, end, err := s.Cursors("proj", "store", 0)
	if err != nil {
		f.Fatal(err)
	}
	begin1, _, err := s.Cursors("proj", "store", 1)
	if err != nil {
		f.Fatal(err)
	}
	mid := encodeCursor(mustDecodeCursor(f, begin) + 1)
	f.Add("0", "logs", begin, "10", "", "", "lz4")
	f.Add("0", "logs", begin, "1000", end, "", "zstd")
	f.Add("0", "logs", mid, "1", mid, "", "lz4")
	f.Add("0", "logs", end, "1", begin, "", "")
	f.Add("0", "logs", begin1, "1", "", "", "lz4")
	f.Add("1", "logs", begin1, "100", "", "", "zstd, lz4")
	f.Add("3", "logs", "", "0", "", "", "")
	f.Add("0", "logs", "!!", "1001", "x", "", "lz4")
	f.Add("0", "logs", "MTIz", "-1", "", "", "lz4")
	f.Add("0", "cursor", "", "", "", "begin", "")
	f.Add("0", "cursor", "", "", "", "end", "")
	f.Add("0", "cursor", "", "", "", "1700000000", "")
	f.Add("0", "cursor", "", "", "", "99999999999999", "")
	f.Add("0", "cursor_time", end, "", "", "", "")
	f.Add("0", "cursor_time", mid, "", "", "", "")
	f.Add("-1", "logs", begin, "1", "", "", "")
	f.Add("99999999999999999999", "bogus", begin, "1", "", "", "")
	f.Fuzz(func(t *testing.T, shard, typ, cursor, count, endCursor, from, acceptEncoding string) {
		q := url.Values{}
		for name, v := range map[string]string{"type": typ, "cursor": cursor, "count": count, "end_cursor": endCursor, "from": from} {
			if v != "" {
				q.Set(name, v)
			}
		}
		r := httptest.NewRequest(http.MethodGet, "http://proj."+s.Endpoint()+"/", nil)
		r.URL.Path, r.URL.RawQuery = "/logstores/store/shards/"+shard, q.Encode()
		if acceptEncoding != "" {
			r.Header.Set("Accept-Encoding", acceptEncoding)
		}
		rec := serveFuzz(t, s, r)
		if rec.Code == http.StatusOK && lastOp.Load() == OpPullLogs {
			checkPullAnswer(t, s, rec)
		}
	})
}

func mustDecodeCursor(t testing.TB, c string) int64 {
	t.Helper()
	v, ok := decodeCursor(c)
	if !ok {
		t.Fatalf("cursor %q does not decode", c)
	}
	return v
}

// checkPullAnswer checks a 200 PullLogs answer as the SDK reads it.
func checkPullAnswer(t *testing.T, s *Server, rec *httptest.ResponseRecorder) {
	t.Helper()
	h := rec.Header()
	if _, ok := decodeCursor(h.Get("x-log-cursor")); !ok {
		t.Fatalf("x-log-cursor %q is not a cursor", h.Get("x-log-cursor"))
	}
	count, err1 := strconv.Atoi(h.Get("x-log-count"))
	rawSize, err2 := strconv.Atoi(h.Get("x-log-bodyrawsize"))
	if err1 != nil || err2 != nil || count < 0 || rawSize < 0 {
		t.Fatalf("x-log-count %q, x-log-bodyrawsize %q", h.Get("x-log-count"), h.Get("x-log-bodyrawsize"))
	}
	if count == 0 {
		if rawSize != 0 || rec.Body.Len() != 0 {
			t.Fatalf("no groups, but raw size %d and a %d-byte body", rawSize, rec.Body.Len())
		}
		return
	}
	raw, err := s.codec.decompress(h.Get("x-log-compresstype"), rec.Body.Bytes(), rawSize)
	if err != nil {
		t.Fatalf("body does not decompress: %v", err)
	}
	var list sls.LogGroupList
	if err := list.Unmarshal(raw); err != nil || len(list.LogGroups) != count {
		t.Fatalf("body holds %d groups (%v), x-log-count says %d", len(list.LogGroups), err, count)
	}
}

// FuzzHashKey checks normalizeHashKey and that every key it accepts routes
// to exactly the readwrite shard whose range holds it.
func FuzzHashKey(f *testing.F) {
	s := fuzzServer(f)
	// Give the logstore uneven ranges: split at a key, into three, merge.
	for _, step := range []func() error{
		func() error { _, err := s.SplitShard("proj", "store", 2, ""); return err },
		func() error { _, err := s.splitShard("proj", "store", 0, "", 3); return mustNil(err) },
		func() error {
			_, err := s.SplitShard("proj", "store", 3, "c0000000000000000000000000000001")
			return err
		},
		func() error { _, err := s.MergeShards("proj", "store", 5); return err },
	} {
		if err := step(); err != nil {
			f.Fatal(err)
		}
	}
	ls, e := s.getLogStore("proj", "store")
	if e != nil {
		f.Fatal(e)
	}
	for _, k := range []string{minHashKey, maxHashKey, "8", "7f", "c0000000000000000000000000000001", "c0000000000000000000000000000000", "AbC", "", "g", "0123456789abcdef0123456789abcdef0"} {
		f.Add(k)
	}
	ls.mu.RLock()
	for _, info := range ls.shardInfos() {
		f.Add(info.InclusiveBeginKey)
		f.Add(info.ExclusiveEndKey)
	}
	ls.mu.RUnlock()
	f.Fuzz(func(t *testing.T, key string) {
		norm, err := normalizeHashKey(key)
		hexOK := len(key) >= 1 && len(key) <= 32 && strings.Trim(strings.ToLower(key), "0123456789abcdef") == ""
		if (err == nil) != hexOK {
			t.Fatalf("normalizeHashKey(%q) error %v, want an error: %v", key, err, !hexOK)
		}
		if err != nil {
			return
		}
		if len(norm) != 32 || !strings.HasPrefix(norm, strings.ToLower(key)) || strings.Trim(norm[len(key):], "0") != "" {
			t.Fatalf("normalizeHashKey(%q) = %q", key, norm)
		}
		if again, err := normalizeHashKey(norm); err != nil || again != norm {
			t.Fatalf("normalizeHashKey is not idempotent on %q: %q, %v", norm, again, err)
		}
		checkRoute(t, ls, norm)
	})
}

// mustNil turns a typed nil *Error into an untyped nil error.
func mustNil(e *Error) error {
	if e == nil {
		return nil
	}
	return e
}
