package slspubsub

import (
	"maps"
	"strconv"
	"sync"
	"time"
	"unsafe"

	"github.com/ThreeDotsLabs/watermill/message"
)

// groupShared is what the logs of one received LogGroup have in common,
// computed once per group by the Subscriber so that building each log's
// message does not repeat it: the metadata every message of the group gets
// (topic, source, machine UUID, tags, shard, cursor) and the last formatted
// log time (the logs of a group often share their time).
//
// It belongs to one delivery loop and is not safe for concurrent use; a
// ReceivedLog without one (built by a user) takes the general path.
type groupShared struct {
	base     message.Metadata
	lastTime time.Time
	lastText string
	arena    *arena // where payloads and UUIDs are cut from; nil for the heap
}

func newGroupShared(g *LogGroup, shard, cursor string, a *arena) *groupShared {
	// Room for the time and index too, so that a clone takes them without
	// growing.
	base := make(message.Metadata, slsFieldCount(g))
	setGroupFields(base, g)
	base[MetadataShard] = shard
	base[MetadataCursor] = cursor
	return &groupShared{base: base, arena: a}
}

// arenaChunk is the size of the chunks an arena cuts small buffers from.
const arenaChunk = 64 << 10

// arena cuts the payloads and UUIDs of the messages of a shard from shared
// chunks, so that building a message does not allocate them one by one.
// Every buffer it hands out is capped at its length (appending to one
// reallocates instead of overwriting a neighbour), and a chunk stays alive
// while any buffer cut from it is referenced: at most arenaChunk bytes per
// message kept. Owned by one goroutine (the shard's fetch loop).
type arena struct {
	chunk []byte // len: bytes handed out
}

// buf returns an empty buffer with room for at least n bytes, from the
// arena when n is small. Append to it, then pass the result to keep.
func (a *arena) buf(n int) []byte {
	if n > arenaChunk/4 {
		return make([]byte, 0, n)
	}
	if cap(a.chunk)-len(a.chunk) < n {
		a.chunk = make([]byte, 0, arenaChunk)
	}
	return a.chunk[len(a.chunk):len(a.chunk):cap(a.chunk)]
}

// keep takes b (the last buf, appended to) out of the arena's free space
// when it still lies there, and returns it capped at its length.
func (a *arena) keep(b []byte) []byte {
	if len(b) > 0 && len(a.chunk) < cap(a.chunk) && unsafe.SliceData(b) == unsafe.SliceData(a.chunk[len(a.chunk):cap(a.chunk)]) {
		a.chunk = a.chunk[:len(a.chunk)+len(b)]
	}
	return b[:len(b):len(b)]
}

// timeText returns formatMetadataTime(t), reusing the last result when t is
// the same instant.
func (gs *groupShared) timeText(t time.Time) string {
	if gs.lastText == "" || !t.Equal(gs.lastTime) {
		if a := gs.arena; a != nil {
			b := a.keep(appendMetadataTime(a.buf(len(time.RFC3339Nano)), t))
			gs.lastTime, gs.lastText = t, unsafe.String(unsafe.SliceData(b), len(b))
		} else {
			gs.lastTime, gs.lastText = t, formatMetadataTime(t)
		}
	}
	return gs.lastText
}

// metadata returns a new metadata map of the group's fields, with room for
// extra more keys, plus the log's time and index.
func (gs *groupShared) metadata(l *Log, index, extra int) message.Metadata {
	var md message.Metadata
	if extra == 0 {
		// A clone copies the map's memory as it is, much faster than
		// inserting the keys one by one.
		md = maps.Clone(gs.base)
	} else {
		md = make(message.Metadata, len(gs.base)+2+extra)
		maps.Copy(md, gs.base)
	}
	md[MetadataTime] = gs.timeText(l.Time)
	md[MetadataIndex] = indexText(index)
	return md
}

// indexTexts holds the decimal texts of the log indexes most LogGroups use.
var indexTexts = sync.OnceValue(func() []string {
	t := make([]string, 4096)
	for i := range t {
		t[i] = strconv.Itoa(i)
	}
	return t
})

// indexText is strconv.Itoa(i), without allocating for common indexes.
func indexText(i int) string {
	if t := indexTexts(); i >= 0 && i < len(t) {
		return t[i]
	}
	return strconv.Itoa(i)
}
