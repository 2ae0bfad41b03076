package slspubsub

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"time"
)

// PublisherMetrics receives what a Publisher does, for monitoring (package
// slsmetrics implements it with Prometheus). Methods are called from the
// Publisher's workers, concurrently, on the hot path: they must be fast, must
// not block and must be safe for concurrent use. The default is
// NopPublisherMetrics.
type PublisherMetrics interface {
	// PutLogs is called after every PutLogs attempt (a retried batch is
	// reported once per attempt).
	PutLogs(PutLogsStats)
	// PutLogsRetry is called when a failed attempt will be retried after a
	// backoff; err is the attempt's error (see ErrorCode).
	PutLogsRetry(logstore string, attempt int, err error)
}

// PutLogsStats describes one PutLogs attempt.
type PutLogsStats struct {
	// Logstore is the logstore written to.
	Logstore string
	// Logs is the number of logs in the request's LogGroup.
	Logs int
	// Bytes is the size of the encoded LogGroup, before compression.
	Bytes int
	// Attempt counts the attempts of this batch from 1.
	Attempt int
	// Duration is the time from sending the request to its answer (or
	// failure).
	Duration time.Duration
	// Err is nil when SLS answered 200; otherwise the attempt's error, as the
	// Publisher saw it (an InvalidSequenceId answer the Publisher then counts
	// as written, see IdempotentWrites, is reported as an error here).
	Err error
}

// SubscriberMetrics receives what a Subscriber's fetch loops do, for
// monitoring (package slsmetrics implements it with Prometheus). Methods are
// called from the fetch loops of all shards, concurrently: they must be fast,
// must not block and must be safe for concurrent use. The default is
// NopSubscriberMetrics. Values that are read rather than pushed (lag,
// watermarks, alignment state) come from Subscriber.ShardLag,
// Subscriber.ShardWatermarkStatus and Subscriber.AlignmentStats.
type SubscriberMetrics interface {
	// PullLogs is called after every PullLogs request that was not ended by
	// the subscription's own cancellation.
	PullLogs(PullLogsStats)
	// LogsFetched is called for every non-empty PullLogs answer once it is
	// decoded: logs is the number of logs in its LogGroups.
	LogsFetched(logstore string, shard, logs int)
	// AlignmentWait is called before every fetch of a shard whose
	// subscription aligns watermarks (WatermarkConfig.Alignment), with the
	// time the shard waited for alignment before it could fetch (near zero
	// when it was not held back).
	AlignmentWait(logstore string, shard int, d time.Duration)
}

// PullLogsStats describes one PullLogs request.
type PullLogsStats struct {
	// Logstore and Shard name the shard read.
	Logstore string
	Shard    int
	// LogGroups is the number of LogGroups answered (x-log-count); 0 at the
	// end of the shard.
	LogGroups int
	// RawBytes is the size of the answer once decompressed; WireBytes its
	// size as received.
	RawBytes, WireBytes int
	// Duration is the time from sending the request to the end of reading
	// its answer.
	Duration time.Duration
	// Err is nil on success. A failed request whose error is retryable (see
	// IsRetryable) is retried by the fetch loop; Retried says so.
	Err     error
	Retried bool
}

// NopPublisherMetrics discards everything.
type NopPublisherMetrics struct{}

// PutLogs does nothing.
func (NopPublisherMetrics) PutLogs(PutLogsStats) {}

// PutLogsRetry does nothing.
func (NopPublisherMetrics) PutLogsRetry(string, int, error) {}

// NopSubscriberMetrics discards everything.
type NopSubscriberMetrics struct{}

// PullLogs does nothing.
func (NopSubscriberMetrics) PullLogs(PullLogsStats) {}

// LogsFetched does nothing.
func (NopSubscriberMetrics) LogsFetched(string, int, int) {}

// AlignmentWait does nothing.
func (NopSubscriberMetrics) AlignmentWait(string, int, time.Duration) {}

// ErrorCode returns a short, bounded label for a failed SLS call: SLS's
// errorCode for an *Error (e.g. "ShardWriteQuotaExceed", "BadResponse"; an
// HTTP status "http_<status>" when the answer had no code), "timeout" for a
// request that exceeded ClientConfig.RequestTimeout or a network timeout,
// "canceled" for the caller's cancellation or deadline, "network" for other
// transport failures, and "ok" for nil. It never contains a credential or an
// address.
func ErrorCode(err error) string {
	if err == nil {
		return "ok"
	}
	var se *Error
	if errors.As(err, &se) {
		if se.Code == "" {
			return fmt.Sprintf("http_%d", se.HTTPStatus)
		}
		return boundedCode(se.Code)
	}
	var te *requestTimeoutError
	if errors.As(err, &te) {
		return "timeout"
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return "canceled"
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timeout"
	}
	return "network"
}

// boundedCode keeps a server-sent code usable as a label: at most 64 bytes
// of letters, digits, '_', '-' and '.'; anything else is "invalid_code".
func boundedCode(code string) string {
	if len(code) > 64 {
		return "invalid_code"
	}
	for i := 0; i < len(code); i++ {
		c := code[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.' || c == ' ') {
			return "invalid_code"
		}
	}
	return code
}

// putLogs is one PutLogs attempt of b, reported to Metrics.
func (p *Publisher) putLogs(b *batch, seq int64) error {
	start := time.Now()
	err := p.api.putLogs(b.ctx, b.lane.key.logstore, b.lane.hashKey, seq, b.raw, p.config.Compression)
	p.config.Metrics.PutLogs(PutLogsStats{Logstore: b.lane.key.logstore, Logs: len(b.entries), Bytes: len(b.raw),
		Attempt: b.attempts, Duration: time.Since(start), Err: err})
	return err
}

// pull is one PullLogs request of the fetch loop, reported to Metrics.
func (r *shardReader) pull(ctx context.Context, free int) (pullResult, error) {
	start := time.Now()
	res, err := r.api.pullLogs(ctx, r.logstore, r.shard, cursorFromInt64(r.cursor), r.endCursor,
		r.pullCount(free), r.cfg.Compression)
	if ctx.Err() == nil {
		r.cfg.Metrics.PullLogs(PullLogsStats{Logstore: r.logstore, Shard: r.shard, LogGroups: res.Count,
			RawBytes: res.RawSize, WireBytes: res.WireBytes, Duration: time.Since(start), Err: err, Retried: IsRetryable(err)})
	}
	return res, err
}

// awaitFetch is the watermark's awaitFetch, its wait reported to Metrics.
func (r *shardReader) awaitFetch(ctx context.Context) error {
	if r.wm.w.aligner == nil {
		return nil
	}
	start := time.Now()
	err := r.wm.awaitFetch(ctx, r.budget)
	r.cfg.Metrics.AlignmentWait(r.logstore, r.shard, time.Since(start))
	return err
}

// fetchedLogs reports a decoded answer's logs to Metrics.
func (r *shardReader) fetchedLogs(groups []LogGroup) {
	n := 0
	for i := range groups {
		n += len(groups[i].Logs)
	}
	r.cfg.Metrics.LogsFetched(r.logstore, r.shard, n)
}

// ShardLag is how far one shard's reading is behind the shard's end, as
// Subscriber.ShardLag measures it.
type ShardLag struct {
	// Shard is the shard id.
	Shard int
	// Committed is the cursor value of the first LogGroup with a log not
	// yet acked (the position a checkpoint would store); End is the shard's
	// end cursor value (where the next written LogGroup goes).
	Committed, End int64
	// LogGroups is End - Committed: the LogGroups written to the shard and
	// not yet fully acked. SLS cursors count LogGroups, not logs, so the lag
	// in logs cannot be known without reading them; a LogGroup holds one to
	// thousands of logs.
	LogGroups int64
	// CursorTime is the time SLS received the LogGroup at Committed (whole
	// seconds); zero when LogGroups is 0. time.Since(CursorTime) is the lag
	// in time.
	CursorTime time.Time
}

// shardLagConcurrency bounds the requests ShardLag has in flight.
const shardLagConcurrency = 8

// ShardLag measures the lag of every shard the running subscriptions to
// logstore topic read: for each it asks SLS for the shard's end cursor and,
// when the shard is behind, for the receive time of its first unacked
// LogGroup (GetCursor and GetCursorTime: two requests per shard behind, one
// per shard caught up, at most 8 in flight). Shards are ordered by id; a
// shard read by several subscriptions appears once per subscription. It
// returns the shards it could measure and the errors of those it could not,
// joined. Safe for concurrent use; meant for monitoring at scrape intervals,
// not for hot paths.
func (s *Subscriber) ShardLag(ctx context.Context, topic string) ([]ShardLag, error) {
	type shard struct {
		id int
		tr *ackTracker
	}
	s.mu.Lock()
	subs := slices.Clone(s.subs[topic])
	s.mu.Unlock()
	var shards []shard
	for _, sub := range subs { // s.mu is not held: no lock order with sub.mu to keep
		sub.mu.Lock()
		for id, w := range sub.workers {
			if st := w.st.Load(); st != nil {
				shards = append(shards, shard{id: id, tr: st.tracker})
			}
		}
		sub.mu.Unlock()
	}

	out := make([]ShardLag, len(shards))
	errs := make([]error, len(shards))
	ok := make([]bool, len(shards))
	sem := make(chan struct{}, shardLagConcurrency)
	var wg sync.WaitGroup
	for i, sh := range shards {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			out[i], errs[i] = s.shardLag(ctx, topic, sh.id, sh.tr)
			ok[i] = errs[i] == nil
		}()
	}
	wg.Wait()
	res := out[:0]
	for i := range out {
		if ok[i] {
			res = append(res, out[i])
		}
	}
	slices.SortStableFunc(res, func(a, b ShardLag) int { return cmp.Compare(a.Shard, b.Shard) })
	return res, errors.Join(errs...)
}

// shardLag measures one shard.
func (s *Subscriber) shardLag(ctx context.Context, topic string, id int, tr *ackTracker) (ShardLag, error) {
	committed := tr.committed()
	end, err := s.api.cursorValue(ctx, topic, id, "end")
	if err != nil {
		return ShardLag{}, fmt.Errorf("slspubsub: lag of %s shard %d: %w", topic, id, err)
	}
	l := ShardLag{Shard: id, Committed: committed, End: end, LogGroups: max(end-committed, 0)}
	if l.LogGroups == 0 {
		return l, nil
	}
	t, err := s.api.getCursorTime(ctx, topic, id, cursorFromInt64(committed))
	if err != nil {
		return ShardLag{}, fmt.Errorf("slspubsub: lag of %s shard %d: %w", topic, id, err)
	}
	l.CursorTime = t
	return l, nil
}
