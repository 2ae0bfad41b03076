package slstest

import (
	"net/http"
	"sort"
	"sync"
	"time"
)

// Shard statuses as ListShards reports them.
const (
	ShardReadWrite = "readwrite"
	ShardReadOnly  = "readonly"
)

// ShardInfo describes a shard in the wire shape of ListShards.
type ShardInfo struct {
	ShardID           int    `json:"shardID"`
	Status            string `json:"status"` // ShardReadWrite or ShardReadOnly
	InclusiveBeginKey string `json:"inclusiveBeginKey"`
	ExclusiveEndKey   string `json:"exclusiveEndKey"`
	CreateTime        int64  `json:"createTime"` // unix seconds
}

// project is one SLS project: a namespace of logstores.
type project struct {
	name        string
	description string
	created     time.Time

	mu        sync.RWMutex
	logstores map[string]*logstore
}

// LogStoreConfig holds the logstore attributes SLS reports and accepts.
// The emulator keeps them but does not act on TTL or AutoSplit: stored data
// never expires and shards split only when asked.
type LogStoreConfig struct {
	TTL           int    `json:"ttl"`
	ShardCount    int    `json:"shardCount"`
	AutoSplit     bool   `json:"autoSplit"`
	MaxSplitShard int    `json:"maxSplitShard"`
	AppendMeta    bool   `json:"appendMeta"`
	TelemetryType string `json:"telemetryType"`
	Mode          string `json:"mode,omitempty"`
}

// logstore holds the shards, consumer groups and idempotent-write state of
// one logstore. mu guards the shard list and everything else in it; the
// data of each shard has its own lock so that appends and reads of different
// shards never contend. Writes hold mu for reading while they route and
// append, so a split or merge (which takes mu for writing) never races with
// a write to the shard it turns readonly.
type logstore struct {
	project string
	name    string
	created time.Time

	mu       sync.RWMutex
	config   LogStoreConfig
	modified time.Time
	shards   []*shard // every shard, readonly ones included, by id
	nextID   int
	groups   map[string]*consumerGroup
	seqIDs   map[string]int64 // idempotent writes: hash key -> last accepted seqid
}

// storedGroup is one LogGroup as received, ready to be copied into a
// PullLogs response without re-encoding.
type storedGroup struct {
	data     []byte // protobuf-encoded sls.LogGroup, decompressed
	received int64  // server receive time, unix nanoseconds
	logs     int32
}

// shard is an append-only sequence of LogGroups. The cursor of group i is
// base+i; the end cursor is base+len(groups).
type shard struct {
	id         int
	begin, end string // hash range [begin, end)
	created    time.Time
	parents    []int
	base       int64
	quota      *shardQuota

	mu       sync.RWMutex
	readOnly bool
	groups   []storedGroup
	bytes    int64 // raw bytes stored
}

func (sh *shard) info() ShardInfo {
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	status := ShardReadWrite
	if sh.readOnly {
		status = ShardReadOnly
	}
	return ShardInfo{
		ShardID:           sh.id,
		Status:            status,
		InclusiveBeginKey: sh.begin,
		ExclusiveEndKey:   sh.end,
		CreateTime:        sh.created.Unix(),
	}
}

// bounds returns the shard's begin and end cursor values and whether it is
// readonly, consistently.
func (sh *shard) bounds() (begin, end int64, readOnly bool) {
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	return sh.base, sh.base + int64(len(sh.groups)), sh.readOnly
}

// appendGroup stores g unless the shard has become readonly and returns the
// cursor of the stored group.
func (sh *shard) appendGroup(g storedGroup) (int64, *Error) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.readOnly {
		return 0, errorf(http.StatusBadRequest, CodeShardReadOnly, "shard %d is readonly", sh.id)
	}
	sh.groups = append(sh.groups, g)
	sh.bytes += int64(len(g.data))
	return sh.base + int64(len(sh.groups)) - 1, nil
}

// read returns up to count groups starting at cursor value from, stopping
// before cursor value stop (exclusive) and once maxBytes of encoded
// LogGroupList would be exceeded (at least one group is always returned).
// The returned slice shares the immutable stored groups.
func (sh *shard) read(from, stop int64, count, maxBytes int) []storedGroup {
	sh.mu.RLock()
	all := sh.groups
	sh.mu.RUnlock()
	lo := int(from - sh.base)
	hi := int(min(stop-sh.base, int64(len(all))))
	if hi > lo+count {
		hi = lo + count
	}
	if hi <= lo {
		return nil
	}
	out := all[lo:hi:hi]
	size := 0
	for i, g := range out {
		size += listEntrySize(g.data)
		if size > maxBytes && i > 0 {
			return out[:i]
		}
	}
	return out
}

// cursorAt returns the cursor value of the first group received at or after
// t (unix nanoseconds), or the end cursor when there is none.
func (sh *shard) cursorAt(t int64) int64 {
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	i := sort.Search(len(sh.groups), func(i int) bool { return sh.groups[i].received >= t })
	return sh.base + int64(i)
}

// receiveTime returns the receive time of the group at cursor value c; at
// the end cursor it is the last group's time (or the shard's creation time
// when the shard is empty).
func (sh *shard) receiveTime(c int64) time.Time {
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	i := int(c - sh.base)
	switch {
	case i < len(sh.groups):
		return time.Unix(0, sh.groups[i].received)
	case len(sh.groups) > 0:
		return time.Unix(0, sh.groups[len(sh.groups)-1].received)
	default:
		return sh.created
	}
}

func (ls *logstore) shardByID(id int) *shard {
	i := sort.Search(len(ls.shards), func(i int) bool { return ls.shards[i].id >= id })
	if i < len(ls.shards) && ls.shards[i].id == id {
		return ls.shards[i]
	}
	return nil
}

// route returns the readwrite shard whose hash range holds key. Caller
// holds ls.mu.
func (ls *logstore) route(key string) *shard {
	for _, sh := range ls.shards {
		sh.mu.RLock()
		ok := !sh.readOnly && inRange(key, sh.begin, sh.end)
		sh.mu.RUnlock()
		if ok {
			return sh
		}
	}
	return nil
}

// readWriteShards returns the shards that accept writes. Caller holds ls.mu.
func (ls *logstore) readWriteShards() []*shard {
	var out []*shard
	for _, sh := range ls.shards {
		sh.mu.RLock()
		if !sh.readOnly {
			out = append(out, sh)
		}
		sh.mu.RUnlock()
	}
	return out
}

func (ls *logstore) shardInfos() []ShardInfo {
	out := make([]ShardInfo, len(ls.shards))
	for i, sh := range ls.shards {
		out[i] = sh.info()
	}
	return out
}

// cgView is the consumer-group state machine's view of the shards. Caller
// holds ls.mu.
func (ls *logstore) cgShards() []cgShard {
	out := make([]cgShard, len(ls.shards))
	for i, sh := range ls.shards {
		_, end, ro := sh.bounds()
		out[i] = cgShard{ID: sh.id, ReadOnly: ro, EndCursor: encodeCursor(end), Parents: sh.parents}
	}
	return out
}
