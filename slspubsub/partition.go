package slspubsub

import (
	"crypto/md5"
	"encoding/hex"
	"math/bits"
	"slices"
)

// maxHashBuckets is the largest PublisherConfig.HashBuckets, as in the SDK
// producer (AdjustShargHash accepts 1 to 256 buckets).
const maxHashBuckets = 256

// hashKey is a position in SLS's 128-bit hash space: the md5 of a
// partition key, possibly reduced to a bucket. A shard owns the hash keys in
// [inclusiveBeginKey, exclusiveEndKey), and SLS routes a write with a hash
// key to the shard that owns it.
type hashKey [md5.Size]byte

// hashKeyFor returns the hash key of a message's partition key: its md5,
// reduced to the top log2(buckets) bits when buckets > 0 (the remaining
// bits zero).
//
// The reduction is the SDK producer's AdjustHash (producer/adjusthash.go)
// and gives the same keys: all keys of a bucket share one hash key, hence
// one shard and one batch, so that group commit works with many distinct
// keys, while keys in different buckets still spread over the shards.
// Messages with the same partition key always get the same hash key.
func hashKeyFor(key string, buckets int) hashKey {
	h := hashKey(md5.Sum([]byte(key)))
	if buckets <= 0 {
		return h
	}
	keep := bits.TrailingZeros(uint(buckets)) // buckets is a power of two
	for i := range h {
		switch {
		case keep >= 8:
			keep -= 8
		case keep > 0:
			h[i] &= ^byte(0xff >> keep)
			keep = 0
		default:
			h[i] = 0
		}
	}
	return h
}

// String returns the key as SLS expects it: 32 lowercase hex digits.
func (h hashKey) String() string { return hex.EncodeToString(h[:]) }

// laneKey identifies a lane: the logstore and, when the Publisher has a
// HashKey function, the hash key. A lane has at most one PutLogs request in
// flight; see lane.
type laneKey struct {
	logstore string
	hash     hashKey
	keyed    bool
}

// sameGroup reports whether two records can share a LogGroup: SLS stores
// topic, source and tags once per group.
func sameGroup(a, b *Record) bool {
	return a.Topic == b.Topic && a.Source == b.Source && slices.Equal(a.Tags, b.Tags)
}

// groupHeaderSize is the encoded size of a LogGroup's fields other than its
// logs, as carried by rec.
func groupHeaderSize(rec *Record) int {
	return logGroupSize(&LogGroup{Topic: rec.Topic, Source: rec.Source, Tags: rec.Tags})
}

// logEntrySize is what one log adds to an encoded LogGroup: its field tag,
// length and body. A LogGroup's size is its header size plus the entry
// sizes of its logs.
func logEntrySize(l *Log) int {
	logs := [1]Log{*l}
	return logGroupSize(&LogGroup{Logs: logs[:]})
}
