package slspubsub

import (
	"fmt"
	"testing"
	"time"

	sls "github.com/aliyun/aliyun-log-go-sdk"
)

// The payload of the codec benchmarks: about 1 MB of LogGroupList in groups
// of 100 logs of about 200 encoded bytes each, the shape of a PullLogs
// answer of an application log.
const (
	benchGroups       = 50
	benchLogsPerGroup = 100
	benchLogs         = benchGroups * benchLogsPerGroup
)

// benchGroup is one group of benchLogsPerGroup access-log-like logs.
func benchGroup(g int) LogGroup {
	grp := LogGroup{Topic: "access-log", Source: "10.0.3.17", Tags: []Content{{"__tag__:__hostname__", "web-07"}}}
	base := time.Unix(1700000000, 0)
	for i := range benchLogsPerGroup {
		n := g*benchLogsPerGroup + i
		grp.Logs = append(grp.Logs, Log{
			Time: base.Add(time.Duration(n) * time.Millisecond),
			Contents: []Content{
				{"ip", fmt.Sprintf("192.168.%d.%d", n%256, n/256%256)},
				{"method", "GET"},
				{"path", fmt.Sprintf("/api/v1/orders/%08d/items", n)},
				{"status", "200"},
				{"latency_ms", fmt.Sprint(n % 997)},
				{"user_agent", "Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0"},
				{"msg", fmt.Sprintf("served order %d in region cn-hangzhou", n)},
			},
		})
	}
	return grp
}

// benchPayload returns the encoded LogGroupList and its groups.
func benchPayload(b *testing.B) ([]byte, []LogGroup) {
	b.Helper()
	var list []byte
	groups := make([]LogGroup, benchGroups)
	for i := range groups {
		groups[i] = benchGroup(i)
		list = appendListEntry(list, appendLogGroup(nil, &groups[i]))
	}
	return list, groups
}

func reportLogs(b *testing.B, logsPerOp int) {
	b.ReportMetric(float64(logsPerOp)*float64(b.N)/b.Elapsed().Seconds(), "logs/s")
}

func benchDecodeOurs(b *testing.B) {
	data, _ := benchPayload(b)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		groups, err := decodeLogGroupList(data, nil)
		if err != nil || len(groups) != benchGroups {
			b.Fatal(err)
		}
	}
	reportLogs(b, benchLogs)
}

func benchDecodeSDK(b *testing.B) {
	data, _ := benchPayload(b)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		var list sls.LogGroupList
		if err := list.Unmarshal(data); err != nil || len(list.LogGroups) != benchGroups {
			b.Fatal(err)
		}
	}
	reportLogs(b, benchLogs)
}

// BenchmarkDecodeLogGroupList decodes the same ~1 MB PullLogs payload with
// decodeLogGroupList and with the SDK's generated Unmarshal.
func BenchmarkDecodeLogGroupList(b *testing.B) {
	b.Run("ours", benchDecodeOurs)
	b.Run("sdk", benchDecodeSDK)
}

func benchEncodeOurs(b *testing.B) {
	_, groups := benchPayload(b)
	size := 0
	for i := range groups {
		size += logGroupSize(&groups[i])
	}
	buf := make([]byte, 0, logGroupSize(&groups[0]))
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		for i := range groups {
			buf = appendLogGroup(buf[:0], &groups[i])
		}
	}
	reportLogs(b, benchLogs)
}

func benchEncodeSDK(b *testing.B) {
	_, groups := benchPayload(b)
	sdkGroups := make([]*sls.LogGroup, len(groups))
	size := 0
	for i := range groups {
		sdkGroups[i] = toSDK(&groups[i])
		size += sdkGroups[i].Size()
	}
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		for _, g := range sdkGroups {
			if _, err := g.Marshal(); err != nil {
				b.Fatal(err)
			}
		}
	}
	reportLogs(b, benchLogs)
}

// BenchmarkAppendLogGroup encodes the same ~1 MB of groups with
// appendLogGroup (into a reused buffer, as the Publisher does) and with the
// SDK's Marshal of prebuilt sls.LogGroups (not counting the cost of building
// them, which a Publisher on the SDK would also pay).
func BenchmarkAppendLogGroup(b *testing.B) {
	b.Run("ours", benchEncodeOurs)
	b.Run("sdk", benchEncodeSDK)
}

// BenchmarkCodecVsSDK interleaves, in every iteration, one decode and one
// encode of the payload by ours and by the SDK, so that both meet the same
// machine load, and reports the ratios (SDK time / our time) beside each
// side's logs/s and allocations. Its ns/op is the time of all four steps.
func BenchmarkCodecVsSDK(b *testing.B) {
	data, groups := benchPayload(b)
	sdkGroups := make([]*sls.LogGroup, len(groups))
	for i := range groups {
		sdkGroups[i] = toSDK(&groups[i])
	}
	buf := make([]byte, 0, len(data))
	decodeOurs := func() {
		if g, err := decodeLogGroupList(data, nil); err != nil || len(g) != benchGroups {
			b.Fatal(err)
		}
	}
	decodeSDK := func() {
		var list sls.LogGroupList
		if err := list.Unmarshal(data); err != nil {
			b.Fatal(err)
		}
	}
	encodeOurs := func() {
		for i := range groups {
			buf = appendLogGroup(buf[:0], &groups[i])
		}
	}
	encodeSDK := func() {
		for _, g := range sdkGroups {
			if _, err := g.Marshal(); err != nil {
				b.Fatal(err)
			}
		}
	}
	steps := []func(){decodeOurs, decodeSDK, encodeOurs, encodeSDK}
	var spent [4]time.Duration
	b.ResetTimer()
	for range b.N {
		for i, step := range steps {
			start := time.Now()
			step()
			spent[i] += time.Since(start)
		}
	}
	b.StopTimer()
	perSecond := func(d time.Duration) float64 { return float64(benchLogs) * float64(b.N) / d.Seconds() }
	b.ReportMetric(float64(spent[1])/float64(spent[0]), "decode-speedup")
	b.ReportMetric(float64(spent[3])/float64(spent[2]), "encode-speedup")
	b.ReportMetric(perSecond(spent[0]), "ours-decode-logs/s")
	b.ReportMetric(perSecond(spent[1]), "sdk-decode-logs/s")
	b.ReportMetric(testing.AllocsPerRun(3, decodeOurs), "ours-decode-allocs")
	b.ReportMetric(testing.AllocsPerRun(3, decodeSDK), "sdk-decode-allocs")
}
