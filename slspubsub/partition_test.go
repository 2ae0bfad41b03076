package slspubsub

import (
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"testing"
	"time"

	"github.com/aliyun/aliyun-log-go-sdk/producer"
)

// TestHashKeyForMatchesSDKAdjustHash: bucketed hash keys are the SDK
// producer's AdjustHash, so a logstore written by both maps keys alike.
func TestHashKeyForMatchesSDKAdjustHash(t *testing.T) {
	for buckets := 1; buckets <= maxHashBuckets; buckets *= 2 {
		for i := range 500 {
			key := fmt.Sprintf("user-%d", i)
			want, err := producer.AdjustHash(key, buckets)
			if err != nil {
				t.Fatal(err)
			}
			if got := hashKeyFor(key, buckets).String(); got != want {
				t.Fatalf("hashKeyFor(%q, %d) = %s, SDK AdjustHash = %s", key, buckets, got, want)
			}
		}
	}
}

func TestHashKeyForWithoutBuckets(t *testing.T) {
	for _, key := range []string{"", "a", "user-42", string(make([]byte, 1000))} {
		sum := md5.Sum([]byte(key))
		if got, want := hashKeyFor(key, 0).String(), hex.EncodeToString(sum[:]); got != want {
			t.Fatalf("hashKeyFor(%q, 0) = %s, want the md5 %s", key, got, want)
		}
	}
}

func TestHashKeyForBucketCount(t *testing.T) {
	for _, buckets := range []int{1, 2, 4, 64, 256} {
		seen := map[hashKey]bool{}
		for i := range 5000 {
			seen[hashKeyFor(fmt.Sprint(i), buckets)] = true
		}
		if len(seen) != buckets {
			t.Errorf("%d buckets: 5000 keys map to %d hash keys", buckets, len(seen))
		}
	}
}

// TestSizesAddUp: a LogGroup's encoded size is its header size plus its
// logs' entry sizes, which is what batches are cut by.
func TestSizesAddUp(t *testing.T) {
	rec := Record{Topic: "topic", Source: "10.1.2.3", Tags: []Content{{"a", "1"}, {"b", "2"}}}
	g := LogGroup{Topic: rec.Topic, Source: rec.Source, Tags: rec.Tags}
	want := groupHeaderSize(&rec)
	for i := range 300 {
		l := Log{Time: time.Unix(int64(1e9+i), int64(i)), Contents: []Content{{"k", string(make([]byte, i))}}}
		g.Logs = append(g.Logs, l)
		want += logEntrySize(&l)
		if got := len(appendLogGroup(nil, &g)); got != want {
			t.Fatalf("%d logs: encoded %d bytes, sizes add up to %d", i+1, got, want)
		}
	}
}

func TestSameGroup(t *testing.T) {
	base := Record{Topic: "t", Source: "s", Tags: []Content{{"a", "1"}}}
	cases := []struct {
		name string
		rec  Record
		same bool
	}{
		{"equal", Record{Topic: "t", Source: "s", Tags: []Content{{"a", "1"}}}, true},
		{"topic", Record{Topic: "u", Source: "s", Tags: []Content{{"a", "1"}}}, false},
		{"source", Record{Topic: "t", Source: "x", Tags: []Content{{"a", "1"}}}, false},
		{"tag value", Record{Topic: "t", Source: "s", Tags: []Content{{"a", "2"}}}, false},
		{"no tags", Record{Topic: "t", Source: "s"}, false},
	}
	for _, tc := range cases {
		if got := sameGroup(&base, &tc.rec); got != tc.same {
			t.Errorf("%s: sameGroup = %v", tc.name, got)
		}
	}
}
