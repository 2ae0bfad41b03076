package slspubsub

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"
	"unsafe"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
)

// fetchedBatch is one PullLogs answer, decoded and unmarshaled, on its way
// from a shard's fetch loop to its delivery loop.
//
// The fetch loop builds the messages, so that unmarshaling (the larger part
// of a log's cost) runs beside the delivery loop's hand-over of the
// previous answer instead of between two hand-overs.
type fetchedBatch struct {
	groups  []LogGroup
	first   int64    // cursor value of groups[0]; group i has first+i
	cursors []string // cursor texts of the groups
	skip    int      // logs of groups[0] to skip (resume after a stored position)
	size    int      // decoded bytes and built messages, charged to the prefetch budget

	// msgs are the messages of the logs to deliver, in order (the skipped
	// logs of groups[0] left out). They end at the first log the
	// Unmarshaler rejects under UnmarshalErrorFail.
	msgs []*message.Message
	// failed holds the Unmarshaler's error by index in msgs (nil when
	// none): the message there is nil under UnmarshalErrorFail, else the
	// raw message that replaces the log.
	failed map[int]error
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

// room waits until fewer than limit bytes are charged and returns how many
// bytes are free. The fetch loop calls it before each pull and sizes the
// pull to fit, so the budget bounds what is fetched, not only what waits.
func (b *prefetchBudget) room(ctx context.Context) (int, error) {
	for {
		b.mu.Lock()
		if b.used < b.limit {
			free := b.limit - b.used
			b.mu.Unlock()
			return free, nil
		}
		b.mu.Unlock()
		select {
		case <-b.freed:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// charge adds n bytes: an answer fetched after room said there was space.
// It may take the budget past its limit by what the pull's size estimate
// missed; the next pull then waits.
func (b *prefetchBudget) charge(n int) {
	b.mu.Lock()
	b.used += n
	b.mu.Unlock()
}

// empty reports whether nothing is charged.
func (b *prefetchBudget) empty() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used <= 0
}

// full reports whether room would wait.
func (b *prefetchBudget) full() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used >= b.limit
}

// waitEmpty waits until nothing is charged: every fetched answer was
// delivered.
func (b *prefetchBudget) waitEmpty(ctx context.Context) error {
	for !b.empty() {
		select {
		case <-b.freed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
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
	// readOnly reports whether the shard is readonly as last listed: then
	// an empty answer at its end cursor means it is read to its end.
	readOnly func() bool
	end      int64 // the readonly shard's end cursor, once known
	endKnown bool
	// groupSize estimates the decoded bytes of one LogGroup of this shard
	// (0 until the first answer), to size pulls to the budget.
	groupSize float64
	out       chan<- fetchedBatch

	// wm is the shard's watermark state; nil without WatermarkConfig.
	wm *shardWatermark

	shardText string // the shard's id in decimal, for metadata
	arena     arena  // payloads and UUIDs of built messages
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
		free, err := r.room(ctx)
		if err != nil {
			return nil
		}
		if r.wm != nil {
			if err := r.awaitFetch(ctx); err != nil {
				return nil // ctx ended or the subscription's aligner closed
			}
		}
		res, err := r.pull(ctx, free)
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
			if r.readOnly != nil && r.readOnly() {
				end, err := r.shardEnd(ctx)
				if err == nil && r.cursor >= end {
					return errShardEnd
				}
				if err != nil && !IsRetryable(err) {
					return err
				}
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

// room is budget.room; with watermarks, a wait on a full budget
// (back-pressure) pauses the shard, so it is not taken for idleness.
func (r *shardReader) room(ctx context.Context) (int, error) {
	if r.wm == nil || !r.budget.full() {
		return r.budget.room(ctx)
	}
	r.wm.sh.Pause()
	defer r.wm.sh.Resume()
	return r.budget.room(ctx)
}

// shardEnd returns the end cursor of the (readonly) shard, asked for once.
func (r *shardReader) shardEnd(ctx context.Context) (int64, error) {
	if r.endKnown {
		return r.end, nil
	}
	v, err := r.api.cursorValue(ctx, r.logstore, r.shard, "end")
	if err != nil {
		return 0, err
	}
	r.end, r.endKnown = v, true
	return v, nil
}

// deliver decodes one answer and queues it for delivery.
func (r *shardReader) deliver(ctx context.Context, res pullResult) error {
	groups, err := decodeLogGroupList(res.Data, nil)
	if err != nil {
		return err
	}
	r.fetchedLogs(groups)
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
	b := fetchedBatch{groups: groups, first: first, skip: r.skip}
	r.skip = 0
	b.size = decodedSize(res.Data, groups) + r.build(&b)
	r.learnGroupSize(b.size, len(groups))
	r.budget.charge(b.size)
	for i := range groups {
		pre := 0
		if i == 0 {
			pre = b.skip
		}
		r.tracker.add(first+int64(i), len(groups[i].Logs), pre)
	}
	r.tracker.fetched(next)
	r.cursor = next
	if r.wm != nil {
		select {
		case r.out <- b:
			return nil
		default:
		}
		// The delivery loop is busy: a blocking hand-off is back-pressure.
		r.wm.sh.Pause()
		defer r.wm.sh.Resume()
	}
	select {
	case r.out <- b:
		return nil
	case <-ctx.Done():
		r.budget.release(b.size)
		return nil
	}
}

// build unmarshals the logs of b to deliver into b.msgs and returns the
// estimated memory of the messages. Under UnmarshalErrorFail it stops at
// the first log the Unmarshaler rejects: the delivery loop stops the shard
// there.
func (r *shardReader) build(b *fetchedBatch) int {
	n := 0
	for i := range b.groups {
		n += len(b.groups[i].Logs)
	}
	if len(b.groups) > 0 {
		n -= min(b.skip, len(b.groups[0].Logs))
	}
	b.msgs = make([]*message.Message, 0, n)
	b.cursors = make([]string, len(b.groups))
	if r.shardText == "" {
		r.shardText = strconv.Itoa(r.shard)
	}
	size := 0
	for gi := range b.groups {
		g := &b.groups[gi]
		pos := Position{Shard: r.shard, Cursor: cursorFromInt64(b.first + int64(gi))}
		b.cursors[gi] = pos.Cursor
		shared := newGroupShared(g, r.shardText, pos.Cursor, &r.arena)
		start := 0
		if gi == 0 {
			start = min(b.skip, len(g.Logs))
		}
		for li := start; li < len(g.Logs); li++ {
			pos.Index = li
			in := ReceivedLog{Project: r.cfg.Project, Logstore: r.logstore, Group: g, Log: &g.Logs[li], Position: pos, shared: shared}
			msg, err := r.cfg.Unmarshaler.Unmarshal(in)
			if err == nil && msg == nil {
				err = fmt.Errorf("slspubsub: %T returned no message for position %s", r.cfg.Unmarshaler, pos)
			}
			if err != nil {
				if b.failed == nil {
					b.failed = map[int]error{}
				}
				b.failed[len(b.msgs)] = err
				if r.cfg.OnUnmarshalError == UnmarshalErrorFail {
					b.msgs = append(b.msgs, nil)
					return size
				}
				msg = unmarshalForeign(in)
				msg.Metadata.Set(MetadataUnmarshalError, err.Error())
			}
			b.msgs = append(b.msgs, msg)
			size += messageSize(msg)
		}
	}
	return size
}

// Estimated heap bytes of a delivered message beyond its payload and
// metadata strings: the Message, its two acknowledgement channels, its UUID
// and context, and per metadata entry its share of the map.
const (
	messageOverhead    = 512
	metadataEntryBytes = 48
)

// messageSize estimates the heap a built message holds. Strings that alias
// the fetched data are counted with the answer, not here.
func messageSize(msg *message.Message) int {
	return messageOverhead + cap(msg.Payload) + metadataEntryBytes*len(msg.Metadata)
}

// probeCount is how many LogGroups a shard's first pull asks for, before it
// knows how large its groups are.
const probeCount = 8

// pullCount is how many LogGroups to ask for with free bytes of budget: as
// many as fit in half of it (or in what is free, if less) by the size of
// recent groups, so one answer never takes the whole budget and the next
// pull can overlap the delivery of this one. At least 1, at most
// FetchCount.
func (r *shardReader) pullCount(free int) int {
	if r.groupSize <= 0 {
		return min(r.cfg.FetchCount, probeCount)
	}
	n := int(float64(min(free, r.budget.limit/2)) / r.groupSize)
	return max(1, min(n, r.cfg.FetchCount))
}

// learnGroupSize updates the estimate of a decoded group's size: it follows
// growth at once and shrinkage slowly, so that pulls err on the small side.
func (r *shardReader) learnGroupSize(bytes, groups int) {
	if groups == 0 {
		return
	}
	g := float64(bytes) / float64(groups)
	if g >= r.groupSize {
		r.groupSize = g
	} else {
		r.groupSize = 0.75*r.groupSize + 0.25*g
	}
}

// decodedSize is what an answer holds in memory once decoded: its bytes
// (the decoded strings alias them) plus the LogGroup, Log and Content
// structures over them.
func decodedSize(data []byte, groups []LogGroup) int {
	n := len(data) + len(groups)*int(unsafe.Sizeof(LogGroup{}))
	for i := range groups {
		g := &groups[i]
		n += len(g.Tags)*int(unsafe.Sizeof(Content{})) + len(g.Logs)*int(unsafe.Sizeof(Log{}))
		for j := range g.Logs {
			n += len(g.Logs[j].Contents) * int(unsafe.Sizeof(Content{}))
		}
	}
	return n
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
