package slspubsub

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
)

// fetchedBatch is one PullLogs answer, decoded, on its way from a shard's
// fetch loop to its delivery loop.
type fetchedBatch struct {
	groups []LogGroup
	first  int64 // cursor value of groups[0]; group i has first+i
	skip   int   // logs of groups[0] to skip (resume after a stored position)
	size   int   // decoded bytes, charged to the prefetch budget
}

// prefetchBudget bounds a shard's decoded-but-undelivered bytes. It has one
// waiter, the shard's fetch loop.
type prefetchBudget struct {
	mu    sync.Mutex
	used  int
	limit int
	freed chan struct{}
}

func newPrefetchBudget(limit int) *prefetchBudget {
	return &prefetchBudget{limit: limit, freed: make(chan struct{}, 1)}
}

// acquire charges n bytes, waiting while that would exceed the limit; n is
// always admitted when nothing is charged, so an answer bigger than the
// limit cannot block forever.
func (b *prefetchBudget) acquire(ctx context.Context, n int) error {
	for {
		b.mu.Lock()
		if b.used == 0 || b.used+n <= b.limit {
			b.used += n
			b.mu.Unlock()
			return nil
		}
		b.mu.Unlock()
		select {
		case <-b.freed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (b *prefetchBudget) release(n int) {
	b.mu.Lock()
	b.used -= n
	b.mu.Unlock()
	select {
	case b.freed <- struct{}{}:
	default:
	}
}

// shardReader is the fetch loop of one shard: it pulls from cursor (to
// endCursor when bounded), decodes, tracks the groups in the ack tracker and
// hands batches to the delivery loop within the prefetch budget.
type shardReader struct {
	api      *apiClient
	cfg      *SubscriberConfig
	logger   watermill.LoggerAdapter
	logstore string
	shard    int

	cursor    int64  // where the next pull starts
	endCursor string // "" when unbounded
	skip      int    // logs of the first group to skip

	tracker *ackTracker
	budget  *prefetchBudget
	out     chan<- fetchedBatch
}

// errShardEnd reports that a bounded shard reached its stop position.
var errShardEnd = errors.New("slspubsub: shard reached its stop position")

// run pulls until ctx ends, the stop position is reached (errShardEnd) or a
// non-retryable error (returned). It closes out when it returns.
func (r *shardReader) run(ctx context.Context) error {
	defer close(r.out)
	fields := watermill.LogFields{"logstore": r.logstore, "shard": r.shard}
	pause := r.cfg.FetchInterval // the next pause; doubles while empty or failing
	failures := 0
	var lastLogged time.Time
	if end, ok := cursorToInt64(r.endCursor); ok && r.cursor >= end {
		return errShardEnd
	}
	for {
		res, err := r.api.pullLogs(ctx, r.logstore, r.shard, cursorFromInt64(r.cursor), r.endCursor,
			r.cfg.FetchCount, r.cfg.Compression)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if !IsRetryable(err) {
				return err
			}
			failures++
			if failures == 1 || time.Since(lastLogged) > 30*time.Second {
				r.logger.Info("SLS PullLogs failed, retrying", fields.Add(watermill.LogFields{"err": err, "failures": failures}))
				lastLogged = time.Now()
			} else {
				r.logger.Debug("SLS PullLogs failed, retrying", fields.Add(watermill.LogFields{"err": err}))
			}
			if !sleepCtx(ctx, jittered(pause)) {
				return nil
			}
			pause = min(pause*2, r.cfg.MaxFetchInterval)
			continue
		}
		failures = 0
		if res.Count == 0 {
			if r.endCursor != "" {
				return errShardEnd
			}
			if !sleepCtx(ctx, pause) {
				return nil
			}
			pause = min(pause*2, r.cfg.MaxFetchInterval)
			continue
		}
		pause = r.cfg.FetchInterval
		if err := r.deliver(ctx, res); err != nil {
			return err
		}
	}
}

// deliver decodes one answer and queues it for delivery.
func (r *shardReader) deliver(ctx context.Context, res pullResult) error {
	groups, err := decodeLogGroupList(res.Data, nil)
	if err != nil {
		return err
	}
	next, ok := cursorToInt64(res.NextCursor)
	if !ok {
		return &Error{Op: opPullLogs, Logstore: r.logstore, Code: CodeBadResponse, Message: "invalid next cursor " + res.NextCursor}
	}
	first := r.cursor
	if res.ReadLastCursor >= 0 {
		first = res.ReadLastCursor - int64(len(groups)) + 1
	}
	if first != r.cursor {
		r.skip = 0 // not the group the stored position named (it expired)
	}
	b := fetchedBatch{groups: groups, first: first, skip: r.skip, size: len(res.Data)}
	r.skip = 0
	if err := r.budget.acquire(ctx, b.size); err != nil {
		return nil
	}
	for i := range groups {
		pre := 0
		if i == 0 {
			pre = b.skip
		}
		r.tracker.add(first+int64(i), len(groups[i].Logs), pre)
	}
	r.tracker.fetched(next)
	r.cursor = next
	select {
	case r.out <- b:
		return nil
	case <-ctx.Done():
		r.budget.release(b.size)
		return nil
	}
}

// jittered returns d minus up to half of it, at random, so that many shards
// do not retry in step.
func jittered(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2+1)
}

// sleepCtx waits d, or less when ctx ends; it reports whether ctx is alive.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
