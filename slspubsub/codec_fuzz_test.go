package slspubsub

import (
	"bytes"
	"testing"
	"time"
)

// Run one target at a time, e.g.
//
//	go test -run '^$' -fuzz FuzzDecodeLogGroupList -fuzztime 60s ./slspubsub/
//
// Without -fuzz the seeds (and testdata/fuzz) run as ordinary tests.

// FuzzDecodeLogGroupList is a differential test against the SDK: decoding
// succeeds exactly when (*sls.LogGroupList).Unmarshal succeeds, and then
// every field equals the SDK's decoding.
func FuzzDecodeLogGroupList(f *testing.F) {
	for name, g := range codecCases() {
		if name == "many logs" || name == "large value" || name == "16384 byte value" {
			continue // keep seeds small so that mutations stay fast
		}
		f.Add(appendListEntry(nil, appendLogGroup(nil, &g)))
	}
	everything := codecCases()["everything"]
	two := appendListEntry(nil, appendLogGroup(nil, &everything))
	f.Add(appendListEntry(two, appendLogGroup(nil, &everything)))
	f.Add([]byte{0x0a, 0x05, 0x3b, 0x08, 0x01, 0x3c, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		compareWithSDK(t, b)
	})
}

// FuzzAppendLogGroup builds a group from the fuzzer's values and checks that
// it encodes to the bytes of the SDK's Marshal, that logGroupSize is exact,
// and that it decodes back equal.
func FuzzAppendLogGroup(f *testing.F) {
	f.Add("topic", "source", "", "", []byte("k\x00v\x00k2\x00"), uint32(1700000000), uint32(0), uint8(2), uint8(1))
	f.Add("", "", "uuid", "cat", []byte{}, uint32(0), uint32(999999999), uint8(1), uint8(0))
	f.Add("t", "s", "m", "c", []byte("\xff\xfe\x00\x00\x00"), uint32(1<<32-1), uint32(1), uint8(7), uint8(3))
	f.Fuzz(func(t *testing.T, topic, source, machine, category string, kvs []byte, sec, nsec uint32, nLogs, nTags uint8) {
		g := LogGroup{Topic: topic, Source: source, MachineUUID: machine, Category: category}
		parts := bytes.Split(kvs, []byte{0})
		pair := func(i int) Content {
			return Content{Key: string(parts[i%len(parts)]), Value: string(parts[(i+1)%len(parts)])}
		}
		for i := range int(nTags % 8) {
			g.Tags = append(g.Tags, pair(i))
		}
		for i := range int(nLogs % 16) {
			l := Log{Time: time.Unix(int64(sec)+int64(i)%2, int64(nsec%1e9))}
			for j := range i % 5 {
				l.Contents = append(l.Contents, pair(i+j))
			}
			g.Logs = append(g.Logs, l)
		}
		// Keep the time in SLS's uint32 range, where it round-trips.
		for i := range g.Logs {
			if g.Logs[i].Time.Unix() > 1<<32-1 {
				g.Logs[i].Time = time.Unix(1<<32-1, int64(nsec%1e9))
			}
		}

		want, err := toSDK(&g).Marshal()
		if err != nil {
			t.Fatalf("SDK Marshal: %v", err)
		}
		got := appendLogGroup(nil, &g)
		if !bytes.Equal(got, want) {
			t.Fatalf("encoding differs from the SDK's Marshal:\n got %x\nwant %x", head(got), head(want))
		}
		if n := logGroupSize(&g); n != len(got) {
			t.Fatalf("logGroupSize = %d, encoding has %d bytes", n, len(got))
		}
		back, err := decodeLogGroup(got)
		if err != nil {
			t.Fatalf("decodeLogGroup: %v", err)
		}
		if d := diffGroups(&g, &back); d != "" {
			t.Fatalf("round trip: %s", d)
		}
		compareWithSDK(t, appendListEntry(nil, got))
	})
}
