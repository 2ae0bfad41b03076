package slspubsub

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	sls "github.com/aliyun/aliyun-log-go-sdk"
	"github.com/gogo/protobuf/proto"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
)

// toSDK converts g to the SDK's type with the mapping appendLogGroup
// documents: empty optional strings are absent, TimeNs only for a non-zero
// nanosecond part.
func toSDK(g *LogGroup) *sls.LogGroup {
	opt := func(s string) *string {
		if s == "" {
			return nil
		}
		return proto.String(s)
	}
	out := &sls.LogGroup{Category: opt(g.Category), Topic: opt(g.Topic), Source: opt(g.Source), MachineUUID: opt(g.MachineUUID)}
	for _, l := range g.Logs {
		sl := &sls.Log{Time: proto.Uint32(uint32(l.Time.Unix()))}
		if ns := l.Time.Nanosecond(); ns != 0 {
			sl.TimeNs = proto.Uint32(uint32(ns))
		}
		for _, c := range l.Contents {
			sl.Contents = append(sl.Contents, &sls.LogContent{Key: proto.String(c.Key), Value: proto.String(c.Value)})
		}
		out.Logs = append(out.Logs, sl)
	}
	for _, c := range g.Tags {
		out.LogTags = append(out.LogTags, &sls.LogTag{Key: proto.String(c.Key), Value: proto.String(c.Value)})
	}
	return out
}

// fromSDK converts an SDK group as decodeLogGroupList would decode its
// encoding.
func fromSDK(g *sls.LogGroup) LogGroup {
	out := LogGroup{Category: g.GetCategory(), Topic: g.GetTopic(), Source: g.GetSource(), MachineUUID: g.GetMachineUUID()}
	for _, l := range g.Logs {
		ol := Log{Time: time.Unix(int64(l.GetTime()), int64(l.GetTimeNs()))}
		for _, c := range l.Contents {
			ol.Contents = append(ol.Contents, Content{Key: c.GetKey(), Value: c.GetValue()})
		}
		out.Logs = append(out.Logs, ol)
	}
	for _, c := range g.LogTags {
		out.Tags = append(out.Tags, Content{Key: c.GetKey(), Value: c.GetValue()})
	}
	return out
}

// diffGroups describes the first difference between two groups, comparing
// times as instants; "" when they are equal.
func diffGroups(want, got *LogGroup) string {
	switch {
	case want.Topic != got.Topic, want.Source != got.Source, want.MachineUUID != got.MachineUUID, want.Category != got.Category:
		return fmt.Sprintf("header fields: want %q %q %q %q, got %q %q %q %q", want.Topic, want.Source, want.MachineUUID,
			want.Category, got.Topic, got.Source, got.MachineUUID, got.Category)
	case len(want.Logs) != len(got.Logs):
		return fmt.Sprintf("want %d logs, got %d", len(want.Logs), len(got.Logs))
	}
	if d := diffContents(want.Tags, got.Tags); d != "" {
		return "tags: " + d
	}
	for i := range want.Logs {
		w, g := &want.Logs[i], &got.Logs[i]
		if !w.Time.Equal(g.Time) {
			return fmt.Sprintf("log %d: want time %v, got %v", i, w.Time, g.Time)
		}
		if d := diffContents(w.Contents, g.Contents); d != "" {
			return fmt.Sprintf("log %d contents: %s", i, d)
		}
	}
	return ""
}

func diffContents(want, got []Content) string {
	if len(want) != len(got) {
		return fmt.Sprintf("want %d entries, got %d", len(want), len(got))
	}
	for i := range want {
		if want[i] != got[i] {
			return fmt.Sprintf("entry %d: want %q, got %q", i, want[i], got[i])
		}
	}
	return ""
}

// appendListEntry appends an encoded LogGroup as one LogGroupList entry.
func appendListEntry(list, group []byte) []byte {
	list = append(list, keyLogGroupEntry)
	list = binary.AppendUvarint(list, uint64(len(group)))
	return append(list, group...)
}

func allBytes() string {
	b := make([]byte, 256)
	for i := range b {
		b[i] = byte(i)
	}
	return string(b)
}

// codecCases are groups covering every field and every varint length class.
func codecCases() map[string]LogGroup {
	t0 := time.Unix(1700000000, 0)
	tns := time.Unix(1700000000, 123456789)
	return map[string]LogGroup{
		"empty":            {},
		"header only":      {Topic: "t", Source: "10.0.0.1", MachineUUID: "uuid", Category: "cat"},
		"log without kv":   {Logs: []Log{{Time: t0}}},
		"time with nanos":  {Logs: []Log{{Time: tns, Contents: []Content{{"k", "v"}}}}},
		"nanos 1":          {Logs: []Log{{Time: time.Unix(5, 1)}}},
		"epoch":            {Logs: []Log{{Time: time.Unix(0, 0)}}},
		"max uint32 time":  {Logs: []Log{{Time: time.Unix(1<<32-1, 999999999)}}},
		"empty key value":  {Logs: []Log{{Time: t0, Contents: []Content{{"", ""}, {"k", ""}, {"", "v"}}}}},
		"binary values":    {Logs: []Log{{Time: t0, Contents: []Content{{allBytes(), "\xff\xfe\x00"}, {"bin", allBytes()}}}}},
		"utf8":             {Topic: "主题", Logs: []Log{{Time: t0, Contents: []Content{{"键", "值 ✓"}}}}},
		"127 byte value":   {Logs: []Log{{Time: t0, Contents: []Content{{"k", strings.Repeat("a", 127)}}}}},
		"128 byte value":   {Logs: []Log{{Time: t0, Contents: []Content{{"k", strings.Repeat("a", 128)}}}}},
		"16384 byte value": {Logs: []Log{{Time: t0, Contents: []Content{{"k", strings.Repeat("b", 16384)}}}}},
		"large value":      {Logs: []Log{{Time: t0, Contents: []Content{{"k", strings.Repeat("c", 3<<20)}}}}},
		"tags":             {Tags: []Content{{"__tag__:a", "1"}, {"", ""}}, Logs: []Log{{Time: t0}}},
		"everything": {
			Topic: "topic", Source: "src", MachineUUID: "m", Category: "c",
			Tags: []Content{{"tk", "tv"}},
			Logs: []Log{
				{Time: tns, Contents: []Content{{"a", "1"}, {"b", "2"}}},
				{Time: t0, Contents: []Content{{"c", "3"}}},
			},
		},
		"many logs": manyLogs(500, 7),
	}
}

func manyLogs(n, contents int) LogGroup {
	g := LogGroup{Topic: "many", Source: "127.0.0.1", Tags: []Content{{"__tag__:host", "h1"}}}
	base := time.Unix(1700000000, 0)
	for i := range n {
		l := Log{Time: base.Add(time.Duration(i) * 1234567 * time.Nanosecond)}
		for j := range contents {
			l.Contents = append(l.Contents, Content{Key: fmt.Sprintf("key%d", j), Value: fmt.Sprintf("value-%d-%d", i, j)})
		}
		g.Logs = append(g.Logs, l)
	}
	return g
}

func TestAppendLogGroupMatchesSDKMarshal(t *testing.T) {
	for name, g := range codecCases() {
		t.Run(name, func(t *testing.T) {
			want, err := toSDK(&g).Marshal()
			if err != nil {
				t.Fatalf("SDK Marshal: %v", err)
			}
			got := appendLogGroup(nil, &g)
			if !bytes.Equal(got, want) {
				t.Fatalf("appendLogGroup differs from the SDK's Marshal:\n got %x\nwant %x", head(got), head(want))
			}
			if n := logGroupSize(&g); n != len(got) {
				t.Errorf("logGroupSize = %d, encoding has %d bytes", n, len(got))
			}
			// Appending keeps what dst already holds.
			prefixed := appendLogGroup([]byte("prefix"), &g)
			if !bytes.HasPrefix(prefixed, []byte("prefix")) || !bytes.Equal(prefixed[6:], want) {
				t.Errorf("appendLogGroup onto a non-empty dst is wrong")
			}
		})
	}
}

func head(b []byte) []byte {
	if len(b) > 64 {
		return b[:64]
	}
	return b
}

func TestDecodeLogGroupListMatchesSDK(t *testing.T) {
	cases := codecCases()
	var list []byte
	var want []LogGroup
	sdkList := &sls.LogGroupList{}
	for _, name := range []string{"empty", "everything", "binary values", "time with nanos", "tags", "many logs", "header only", "empty key value"} {
		g := cases[name]
		list = appendListEntry(list, appendLogGroup(nil, &g))
		want = append(want, g)
		sdkList.LogGroups = append(sdkList.LogGroups, toSDK(&g))
	}
	sdkBytes, err := sdkList.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(sdkBytes, list) {
		t.Fatal("the list built entry by entry differs from the SDK's LogGroupList.Marshal")
	}
	prefix := []LogGroup{{Topic: "kept"}}
	got, err := decodeLogGroupList(list, prefix)
	if err != nil {
		t.Fatalf("decodeLogGroupList: %v", err)
	}
	if len(got) != 1+len(want) || got[0].Topic != "kept" {
		t.Fatalf("decodeLogGroupList did not append to dst: got %d groups", len(got))
	}
	var sdkDecoded sls.LogGroupList
	if err := sdkDecoded.Unmarshal(list); err != nil {
		t.Fatal(err)
	}
	for i := range want {
		if d := diffGroups(&want[i], &got[i+1]); d != "" {
			t.Errorf("group %d vs original: %s", i, d)
		}
		fromSDKGroup := fromSDK(sdkDecoded.LogGroups[i])
		if d := diffGroups(&fromSDKGroup, &got[i+1]); d != "" {
			t.Errorf("group %d vs the SDK's decoding: %s", i, d)
		}
	}
}

func TestDecodeLogGroup(t *testing.T) {
	for name, g := range codecCases() {
		t.Run(name, func(t *testing.T) {
			got, err := decodeLogGroup(appendLogGroup(nil, &g))
			if err != nil {
				t.Fatal(err)
			}
			if d := diffGroups(&g, &got); d != "" {
				t.Fatal(d)
			}
		})
	}
}

func TestDecodeLogGroupListIsolatesSlices(t *testing.T) {
	g := LogGroup{Tags: []Content{{"t1", "v"}}, Logs: []Log{
		{Time: time.Unix(1, 0), Contents: []Content{{"a", "1"}}},
		{Time: time.Unix(2, 0), Contents: []Content{{"b", "2"}}},
	}}
	var list []byte
	list = appendListEntry(list, appendLogGroup(nil, &g))
	list = appendListEntry(list, appendLogGroup(nil, &g))
	got, err := decodeLogGroupList(list, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Appending to one slice must not overwrite its neighbour in the shared
	// backing array.
	_ = append(got[0].Logs[0].Contents, Content{"x", "x"})
	_ = append(got[0].Logs, Log{})
	_ = append(got[0].Tags, Content{"y", "y"})
	for i := range got {
		if d := diffGroups(&g, &got[i]); d != "" {
			t.Fatalf("group %d changed: %s", i, d)
		}
	}
}

func TestDecodeLogGroupListAllocations(t *testing.T) {
	var list []byte
	for range 20 {
		g := manyLogs(100, 6)
		list = appendListEntry(list, appendLogGroup(nil, &g))
	}
	dst := make([]LogGroup, 0, 20)
	allocs := testing.AllocsPerRun(20, func() {
		var err error
		if dst, err = decodeLogGroupList(list, dst[:0]); err != nil {
			t.Fatal(err)
		}
	})
	// One []Log and one []Content for 2 000 logs and 12 000 contents.
	if allocs > 2 {
		t.Errorf("decodeLogGroupList of 2000 logs allocates %.0f times, want at most 2", allocs)
	}
}

func TestAppendLogGroupAllocations(t *testing.T) {
	g := manyLogs(100, 6)
	buf := make([]byte, 0, logGroupSize(&g))
	allocs := testing.AllocsPerRun(20, func() { buf = appendLogGroup(buf[:0], &g) })
	if allocs != 0 {
		t.Errorf("appendLogGroup into a large enough buffer allocates %.0f times, want 0", allocs)
	}
}

// TestDecodeRejectsWhatSDKRejects checks hand-made malformed inputs: each
// must fail with decodeLogGroupList exactly when it fails with the SDK.
func TestDecodeRejectsWhatSDKRejects(t *testing.T) {
	kv := func(fields ...byte) []byte { return fields }
	entry := func(group []byte) []byte { return appendListEntry(nil, group) }
	logMsg := func(body ...byte) []byte { return append([]byte{0x0a, byte(len(body))}, body...) }
	cases := map[string][]byte{
		"empty list":                 {},
		"truncated key":              {0x80},
		"truncated length":           {0x0a},
		"length past end":            {0x0a, 0x05, 0x00},
		"group wrong wire":           {0x08, 0x01},
		"log without time":           entry(logMsg(0x12, 0x06, 0x0a, 0x01, 'k', 0x12, 0x01, 'v')),
		"log time only":              entry(logMsg(0x08, 0x01)),
		"content missing value":      entry(logMsg(0x08, 0x01, 0x12, 0x03, 0x0a, 0x01, 'k')),
		"content missing key":        entry(logMsg(0x08, 0x01, 0x12, 0x03, 0x12, 0x01, 'v')),
		"time wrong wire":            entry(logMsg(0x0a, 0x00)),
		"timens wrong wire":          entry(logMsg(0x08, 0x01, 0x20, 0x01)),
		"timens truncated":           entry(logMsg(0x08, 0x01, 0x25, 0x01, 0x02)),
		"topic wrong wire":           entry(kv(0x18, 0x01)),
		"tag missing value":          entry(kv(0x32, 0x03, 0x0a, 0x01, 'k')),
		"unknown varint field":       entry(kv(0x38, 0x05)),
		"unknown fixed64 field":      entry(kv(0x39, 1, 2, 3, 4, 5, 6, 7, 8)),
		"unknown fixed64 truncated":  entry(kv(0x39, 1, 2, 3)),
		"unknown group":              entry(kv(0x3b, 0x08, 0x01, 0x3c)),
		"unterminated group":         entry(kv(0x3b, 0x08, 0x01)),
		"stray end group":            entry(kv(0x3c)),
		"field number zero":          {0x02, 0x00},
		"wire type 6":                {0x0e},
		"11 byte varint":             entry(logMsg(0x08, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01)),
		"10 byte varint time":        entry(logMsg(0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01)),
		"duplicate topic, last wins": entry(kv(0x1a, 0x01, 'a', 0x1a, 0x01, 'b')),
		"huge field number":          {0xf8, 0xff, 0xff, 0xff, 0x7f, 0x00},
		"int32-wrapped field 1":      {0x8a, 0x80, 0x80, 0x80, 0x80, 0x01, 0x00},
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			compareWithSDK(t, b)
		})
	}
}

// compareWithSDK decodes b with both decoders and fails unless they agree
// on success and, on success, on every field.
func compareWithSDK(t *testing.T, b []byte) {
	t.Helper()
	got, err := decodeLogGroupList(b, nil)
	var sdk sls.LogGroupList
	sdkErr := sdk.Unmarshal(b)
	if (err == nil) != (sdkErr == nil) {
		t.Fatalf("input %x: decodeLogGroupList error %v, SDK error %v", head(b), err, sdkErr)
	}
	if err != nil {
		return
	}
	if len(got) != len(sdk.LogGroups) {
		t.Fatalf("input %x: %d groups, the SDK decodes %d", head(b), len(got), len(sdk.LogGroups))
	}
	for i := range got {
		want := fromSDK(sdk.LogGroups[i])
		if d := diffGroups(&want, &got[i]); d != "" {
			t.Fatalf("input %x: group %d: %s", head(b), i, d)
		}
	}
}

func TestCodecRandomGroupsMatchSDK(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 300 {
		g := randomGroup(r)
		want, err := toSDK(&g).Marshal()
		if err != nil {
			t.Fatal(err)
		}
		got := appendLogGroup(nil, &g)
		if !bytes.Equal(got, want) {
			t.Fatalf("random group %d: encoding differs from the SDK's", i)
		}
		compareWithSDK(t, appendListEntry(nil, got))
	}
}

func randomString(r *rand.Rand, max int) string {
	b := make([]byte, r.IntN(max+1))
	for i := range b {
		b[i] = byte(r.IntN(256))
	}
	return string(b)
}

func randomGroup(r *rand.Rand) LogGroup {
	g := LogGroup{}
	if r.IntN(2) == 0 {
		g.Topic = randomString(r, 20)
	}
	if r.IntN(2) == 0 {
		g.Source = randomString(r, 20)
	}
	if r.IntN(4) == 0 {
		g.MachineUUID = randomString(r, 40)
	}
	if r.IntN(4) == 0 {
		g.Category = randomString(r, 10)
	}
	for range r.IntN(4) {
		g.Tags = append(g.Tags, Content{randomString(r, 10), randomString(r, 30)})
	}
	for range r.IntN(20) {
		ns := int64(0)
		if r.IntN(2) == 0 {
			ns = r.Int64N(1e9)
		}
		l := Log{Time: time.Unix(r.Int64N(1<<32), ns)}
		for range r.IntN(10) {
			l.Contents = append(l.Contents, Content{randomString(r, 15), randomString(r, 300)})
		}
		g.Logs = append(g.Logs, l)
	}
	return g
}

func TestCompressRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	random := make([]byte, 64<<10)
	for i := range random {
		random[i] = byte(r.Uint32())
	}
	g := manyLogs(300, 5)
	inputs := map[string][]byte{
		"one byte":   []byte("a"),
		"random":     random,
		"loggroup":   appendLogGroup(nil, &g),
		"repetitive": bytes.Repeat([]byte("abcdefgh"), 1<<17),
	}
	for _, c := range []Compression{CompressionLZ4, CompressionZstd, CompressionNone} {
		for name, in := range inputs {
			t.Run(c.String()+"/"+name, func(t *testing.T) {
				out, err := compress(c, []byte("keep"), in)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.HasPrefix(out, []byte("keep")) {
					t.Fatal("compress overwrote dst")
				}
				body := out[4:]
				if len(body) > compressBound(c, len(in)) {
					t.Fatalf("%d bytes exceed compressBound %d", len(body), compressBound(c, len(in)))
				}
				if c == CompressionNone {
					if !bytes.Equal(body, in) {
						t.Fatal("CompressionNone changed the data")
					}
					return
				}
				got, err := decompress(c.String(), body, len(in))
				if err != nil || !bytes.Equal(got, in) {
					t.Fatalf("decompress = %d bytes, %v", len(got), err)
				}
				if cap(got) != len(in) {
					t.Errorf("decompressed slice has capacity %d, want exactly %d", cap(got), len(in))
				}
			})
		}
	}
}

func TestCopyIncompressibleIsValidLZ4(t *testing.T) {
	for _, n := range []int{0, 1, 14, 15, 16, 269, 270, 271, 524, 525, 4096, 100000} {
		src := make([]byte, n)
		for i := range src {
			src[i] = byte(i * 7)
		}
		dst := make([]byte, lz4.CompressBlockBound(n))
		m := copyIncompressible(src, dst)
		out := make([]byte, n)
		got, err := lz4.UncompressBlock(dst[:m], out)
		if err != nil || got != n || !bytes.Equal(out, src) {
			t.Errorf("n=%d: the literal block decodes to %d bytes, %v", n, got, err)
		}
	}
}

func TestDecompressRejects(t *testing.T) {
	in := bytes.Repeat([]byte("0123456789"), 1000)
	lz, err := compress(CompressionLZ4, nil, in)
	if err != nil {
		t.Fatal(err)
	}
	zs, err := compress(CompressionZstd, nil, in)
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]struct {
		method string
		body   []byte
		raw    int
	}{
		"lz4 declared too small":  {"lz4", lz, len(in) - 1},
		"lz4 declared too large":  {"lz4", lz, len(in) + 1},
		"lz4 corrupt":             {"lz4", []byte{0xf0, 0xff}, 100},
		"zstd declared too small": {"zstd", zs, 10},
		"zstd declared too large": {"zstd", zs, len(in) + 1},
		"zstd corrupt":            {"zstd", []byte("not zstd"), 100},
		"unknown method":          {"gzip", lz, len(in)},
		"negative raw size":       {"lz4", lz, -1},
		"raw size beyond limit":   {"zstd", zs, maxRawSize + 1},
	}
	for name, tc := range cases {
		if out, err := decompress(tc.method, tc.body, tc.raw); err == nil {
			t.Errorf("%s: decompress = %d bytes, nil; want an error", name, len(out))
		}
	}
	// A zstd frame without a declared content size that expands past the
	// declared raw size stops at that size.
	var frame bytes.Buffer
	w, err := zstd.NewWriter(&frame, zstd.WithSingleSegment(false))
	if err != nil {
		t.Fatal(err)
	}
	_, _ = w.Write(bytes.Repeat([]byte{0}, 1<<20))
	_ = w.Close()
	if _, err := decompress("zstd", frame.Bytes(), 100); err == nil {
		t.Error("a zstd stream expanding to 1 MiB was accepted for a raw size of 100")
	}
}

func TestCompressAllocations(t *testing.T) {
	g := manyLogs(100, 5)
	in := appendLogGroup(nil, &g)
	for _, c := range []Compression{CompressionLZ4, CompressionZstd} {
		buf := make([]byte, 0, compressBound(c, len(in)))
		_, _ = compress(c, buf, in) // warm the pools
		allocs := testing.AllocsPerRun(20, func() {
			if _, err := compress(c, buf[:0], in); err != nil {
				t.Fatal(err)
			}
		})
		if allocs != 0 {
			t.Errorf("%v: compress into a large enough buffer allocates %.0f times", c, allocs)
		}
	}
}
