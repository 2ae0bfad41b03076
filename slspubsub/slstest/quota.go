package slstest

import (
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// ShardQuota limits each shard's traffic as SLS does. A request over a
// limit fails with HTTP 403: writes with ShardWriteQuotaExceed, reads with
// ReadQuotaExceed. Limits are counted in one-second windows; a zero field
// means no limit. SLS's own limits are about 5 MB/s and 500 writes/s, 10 MB/s
// and 100 reads/s per shard (see SLSShardQuota).
type ShardQuota struct {
	WriteBytesPerSecond int // uncompressed bytes written
	WritesPerSecond     int // PutLogs requests
	ReadBytesPerSecond  int // uncompressed bytes returned by PullLogs
	ReadsPerSecond      int // PullLogs requests
}

// SLSShardQuota is the per-shard quota SLS documents.
var SLSShardQuota = ShardQuota{
	WriteBytesPerSecond: 5 << 20,
	WritesPerSecond:     500,
	ReadBytesPerSecond:  10 << 20,
	ReadsPerSecond:      100,
}

// WithShardQuota enforces q on every shard (default: no quota).
func WithShardQuota(q ShardQuota) Option {
	return func(o *options) { o.quota = q }
}

// SetShardQuota changes the quota of every shard from now on.
func (s *Server) SetShardQuota(q ShardQuota) { s.quota.Store(&q) }

// shardQuota counts one shard's traffic in the current one-second window.
type shardQuota struct {
	limits *atomic.Pointer[ShardQuota]

	mu             sync.Mutex
	window         int64 // unix second
	writes, reads  int
	wBytes, rBytes int
}

func newShardQuota(limits *atomic.Pointer[ShardQuota]) *shardQuota {
	return &shardQuota{limits: limits}
}

func (q *shardQuota) roll(now time.Time) {
	if sec := now.Unix(); sec != q.window {
		q.window, q.writes, q.reads, q.wBytes, q.rBytes = sec, 0, 0, 0, 0
	}
}

// admitWrite counts a write of n bytes, or refuses it when the shard's write
// quota for this second is used up.
func (q *shardQuota) admitWrite(now time.Time, n int) *Error {
	l := q.limits.Load()
	if l == nil || (l.WritesPerSecond == 0 && l.WriteBytesPerSecond == 0) {
		return nil
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	q.roll(now)
	if (l.WritesPerSecond > 0 && q.writes >= l.WritesPerSecond) ||
		(l.WriteBytesPerSecond > 0 && q.wBytes >= l.WriteBytesPerSecond) {
		return errorf(http.StatusForbidden, CodeShardWriteQuotaExceed, "shard write quota exceed")
	}
	q.writes++
	q.wBytes += n
	return nil
}

// admitRead counts a read returning n bytes, or refuses it when the shard's
// read quota for this second is used up.
func (q *shardQuota) admitRead(now time.Time, n int) *Error {
	l := q.limits.Load()
	if l == nil || (l.ReadsPerSecond == 0 && l.ReadBytesPerSecond == 0) {
		return nil
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	q.roll(now)
	if (l.ReadsPerSecond > 0 && q.reads >= l.ReadsPerSecond) ||
		(l.ReadBytesPerSecond > 0 && q.rBytes >= l.ReadBytesPerSecond) {
		return errorf(http.StatusForbidden, CodeShardReadQuotaExceed, "shard read quota exceed")
	}
	q.reads++
	q.rBytes += n
	return nil
}
