package slstest_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	sls "github.com/aliyun/aliyun-log-go-sdk"
	"github.com/gogo/protobuf/proto"
	"github.com/pierrec/lz4/v4"
	"github.com/watermill-sls/watermill-sls/slspubsub/slstest"
)

// benchGroup builds a LogGroup of n logs of about 200 raw bytes each.
func benchGroup(n int) *sls.LogGroup {
	g := &sls.LogGroup{Topic: proto.String("bench"), Source: proto.String("10.0.0.1")}
	for i := 0; i < n; i++ {
		g.Logs = append(g.Logs, &sls.Log{
			Time: proto.Uint32(1700000000 + uint32(i)),
			Contents: []*sls.LogContent{
				{Key: proto.String("ip"), Value: proto.String(fmt.Sprintf("10.1.%d.%d", i/256%256, i%256))},
				{Key: proto.String("method"), Value: proto.String("GET")},
				{Key: proto.String("path"), Value: proto.String(fmt.Sprintf("/api/v1/items/%d?expand=owner", i))},
				{Key: proto.String("status"), Value: proto.String("200")},
				{Key: proto.String("ua"), Value: proto.String("Mozilla/5.0 (X11; Linux x86_64) bench-agent/" + fmt.Sprint(i%7))},
				{Key: proto.String("latency_ms"), Value: proto.String(fmt.Sprint(i % 97))},
			},
		})
	}
	return g
}

func benchServer(b *testing.B) (*slstest.Server, *sls.Client) {
	srv, err := slstest.NewServer()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = srv.Close() })
	if err := srv.CreateLogStore("bench", "logs", 1); err != nil {
		b.Fatal(err)
	}
	c := &sls.Client{Endpoint: srv.Endpoint(), AccessKeyID: slstest.DefaultAccessKeyID,
		AccessKeySecret: slstest.DefaultAccessKeySecret, HTTPClient: srv.HTTPClient()}
	return srv, c
}

// BenchmarkPullLogs measures PullLogs throughput to one SDK client on
// loopback, in MB/s of raw (uncompressed) log bytes, for the emulator and
// for its peer: a static HTTP server replaying the emulator's own answer
// from memory, the ceiling loopback HTTP plus the SDK's decoding allow.
// The ratio emulator/static is the emulator's cost.
func BenchmarkPullLogs(b *testing.B) {
	const groups, logsPerGroup = 100, 100
	srv, c := benchServer(b)
	g := benchGroup(logsPerGroup)
	for i := 0; i < groups; i++ {
		if _, err := srv.AppendLogGroup("bench", "logs", 0, g); err != nil {
			b.Fatal(err)
		}
	}
	begin, err := c.GetCursor("bench", "logs", 0, "begin")
	if err != nil {
		b.Fatal(err)
	}
	// The static peer replays the emulator's answer: the same raw bytes,
	// lz4-compressed, with the same headers.
	rawBytes, next, err := c.GetLogsBytes("bench", "logs", 0, begin, "", groups)
	if err != nil {
		b.Fatal(err)
	}
	body := make([]byte, lz4.CompressBlockBound(len(rawBytes)))
	n, err := lz4.CompressBlock(rawBytes, body, nil)
	if err != nil || n == 0 {
		b.Fatalf("lz4: %v", err)
	}
	body = body[:n]
	raw := int64(len(rawBytes))

	run := func(b *testing.B, c *sls.Client) {
		b.SetBytes(raw)
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			gl, _, err := c.PullLogs("bench", "logs", 0, begin, "", groups)
			if err != nil {
				b.Fatal(err)
			}
			if len(gl.LogGroups) != groups {
				b.Fatalf("got %d groups", len(gl.LogGroups))
			}
		}
		b.ReportMetric(float64(b.N*groups*logsPerGroup)/b.Elapsed().Seconds(), "logs/s")
	}
	b.Run("emulator", func(b *testing.B) { run(b, c) })
	b.Run("static-http", func(b *testing.B) {
		static := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			h := w.Header()
			h.Set("x-log-cursor", next)
			h.Set("x-log-count", fmt.Sprint(groups))
			h.Set("x-log-bodyrawsize", fmt.Sprint(raw))
			h.Set("x-log-compresstype", "lz4")
			_, _ = w.Write(body)
		}))
		defer static.Close()
		sc := &sls.Client{Endpoint: strings.TrimPrefix(static.URL, "http://"), AccessKeyID: "x", AccessKeySecret: "y",
			HTTPClient: slstest.HTTPClientFor(strings.TrimPrefix(static.URL, "http://"))}
		run(b, sc)
	})
}

// BenchmarkPutLogs measures PostLogStoreLogs throughput from one SDK client
// (LogGroups of 100 logs, lz4) in MB/s of raw log bytes, against the
// emulator and against a static HTTP server that reads the body and answers
// 200 (the ceiling).
func BenchmarkPutLogs(b *testing.B) {
	g := benchGroup(100)
	raw := int64(g.Size())
	key := "7f000000000000000000000000000000"
	run := func(b *testing.B, c *sls.Client, project, logstore string) {
		b.SetBytes(raw)
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if err := c.PostLogStoreLogs(project, logstore, g, &key); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N*100)/b.Elapsed().Seconds(), "logs/s")
	}
	b.Run("emulator", func(b *testing.B) {
		_, c := benchServer(b)
		run(b, c, "bench", "logs")
	})
	b.Run("static-http", func(b *testing.B) {
		static := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
		}))
		defer static.Close()
		ep := strings.TrimPrefix(static.URL, "http://")
		run(b, &sls.Client{Endpoint: ep, AccessKeyID: "x", AccessKeySecret: "y", HTTPClient: slstest.HTTPClientFor(ep)}, "bench", "logs")
	})
}
