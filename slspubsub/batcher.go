package slspubsub

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
)

// Group commit.
//
// Every accepted message becomes an entry in the queue of its lane: one
// lane per (logstore, hash key), or per logstore when the Publisher has no
// HashKey. When a lane is idle and an entry arrives it joins the ready
// queue; a worker takes it, cuts a batch from the head of its entries (the
// longest run of entries with the same topic, source and tags, within
// MaxBatchCount and MaxBatchBytes), sends it, and when it settles queues
// the lane again if entries arrived meanwhile. So a lone message is sent at
// once, and messages arriving during a request ride together in the next
// one.
//
// A lane of a hash key has at most one request in flight, so the order of
// its queue is the order SLS stores, retries included (a batch waiting to
// be retried blocks its lane). One lane per hash key rather than per
// LogGroup key (topic, source, tags, hash key) keeps order between messages
// of one key with different topics, and is required for idempotent writes:
// SLS keeps one sequence per hash key, and two requests of one hash key in
// flight at once could make a retry look like a duplicate.
//
// A lane without a hash key (SLS spreads its requests over the shards and
// promises no order) may have several requests in flight, up to
// MaxConcurrentRequests, but starts another one beside those in flight only
// when a full batch waits (MaxBatchCount logs or MaxBatchBytes bytes): as
// long as the next request can still grow, its messages wait for the one
// in flight, so each request carries as many messages as the callers
// provide. Measured with 64 callers against the in-process emulator, more
// requests in flight with smaller batches cost more CPU per message than
// they saved in waiting (see BenchmarkPublisherVsSDKProducer).
//
// Workers (at most MaxConcurrentRequests) exist only while lanes are ready:
// they are started when a lane becomes ready and exit when none is. A batch
// waiting to be retried holds no worker; a timer makes its lane ready again.
//
// The Publisher's mutex guards lanes, queues and the ready queue, and is
// held only for O(1) steps per call or batch (Publish calls append, a
// worker moves a whole queue at once); batches are cut, encoded, sent and
// completed outside it.

// entry is one message on its way to SLS.
type entry struct {
	rec   Record
	size  int // what its log adds to an encoded LogGroup
	hdr   int // encoded size of its LogGroup's header (topic, source, tags)
	hash  hashKey
	keyed bool
	seq   int64 // PublisherConfig.SequenceID's id, when it is set
	call  *call
	err   error // its outcome, set before call.finish
}

// call is one Publish call: its entries and the count of those not yet
// finished. Calls are pooled; a call is reused only after Publish has seen
// all its entries finish.
type call struct {
	entries   []entry
	remaining atomic.Int32
	done      chan struct{} // receives once, when remaining reaches 0
	seqErr    error         // set (under mu) when an entry was out of sequence: the rest of the call fails too
}

var callPool = sync.Pool{New: func() any { return &call{done: make(chan struct{}, 1)} }}

func getCall(n int) *call {
	c := callPool.Get().(*call)
	if cap(c.entries) < n {
		c.entries = make([]entry, n)
	}
	c.entries = c.entries[:n]
	c.remaining.Store(int32(n))
	c.seqErr = nil
	return c
}

// maxPooledCallEntries keeps one huge Publish from pinning its entry slice.
const maxPooledCallEntries = 4096

func putCall(c *call) {
	clear(c.entries)
	if cap(c.entries) > maxPooledCallEntries {
		c.entries = nil
	}
	callPool.Put(c)
}

// finish records err as e's outcome. The last entry of a call to finish
// wakes its caller, who may reuse the call at once: e must not be touched
// after finish.
func (e *entry) finish(err error) {
	c := e.call
	e.err = err
	if c.remaining.Add(-1) == 0 {
		c.done <- struct{}{}
	}
}

type laneState uint8

const (
	laneIdle    laneState = iota // nothing queued, nothing in flight: not in Publisher.lanes
	laneReady                    // in the ready queue
	laneHeld                     // a worker holds it (see lane)
	laneWaiting                  // batches in flight or waiting for a retry; not ready, not held
)

// lane is the unit of ordering and of group commit; see above.
//
// Its waiting entries are queue (appended by Publish under the
// Publisher's mutex) followed, in front, by carry[head:] (taken by the
// worker that holds the lane in one move, and cut into batches outside the
// mutex). Only the worker that holds the lane (laneHeld) touches carry
// outside the mutex, so that Publish callers never wait for a batch being
// cut.
//
// A lane with limit 1 (a hash key) is held from the moment a worker takes
// it until its batch settles, so its batches go one at a time. A lane with
// a larger limit (no hash key) is held only while a batch is cut; then it
// is let go, and another worker may cut and send its next batch while the
// first is in flight, up to limit batches.
type lane struct {
	key          laneKey
	hashKey      string // "" without HashKey: load-balanced writes
	queue        []*entry
	carry        []*entry
	head         int // carry[head:] wait, before queue
	state        laneState
	limit        int      // the most batches in flight at once
	inflight     int      // batches cut and not settled: being sent, or waiting for a retry
	pendingBytes int      // what the pending entries add to LogGroups (counted when limit > 1)
	lastSeq      int64    // caller sequence id of the entry enqueued last (PublisherConfig.SequenceID)
	backoff      []*batch // batches waiting for their retry timer
	due          []*batch // batches whose retry wait ended, sent before anything new is cut
}

func (l *lane) pending() int { return len(l.carry) - l.head + len(l.queue) }

// wantsWorker reports whether a lane no worker holds has a batch to send
// now: one whose retry is due, or a new one when the lane has room for
// another request and either nothing in flight (a lone message goes at
// once; when a batch settles, what arrived meanwhile follows) or a full
// batch waiting (MaxBatchCount logs or MaxBatchBytes bytes): more requests
// in flight only when group commit cannot make the next one any larger, so
// that each request carries as many messages as the callers provide.
// Callers hold mu.
func (p *Publisher) wantsWorker(l *lane) bool {
	if len(l.due) > 0 {
		return true
	}
	n := l.pending()
	if n == 0 || l.inflight >= l.limit {
		return false
	}
	return l.inflight == 0 || n >= p.config.MaxBatchCount || l.pendingBytes >= p.config.MaxBatchBytes
}

// takeQueue moves queue behind carry. Callers hold mu.
func (l *lane) takeQueue() {
	if l.head == len(l.carry) {
		l.carry, l.queue, l.head = l.queue, l.carry[:0], 0
		return
	}
	l.carry = append(l.carry, l.queue...)
	clear(l.queue)
	l.queue = l.queue[:0]
}

// drain removes and returns the lane's waiting entries, in order. Callers
// hold mu, and no worker holds l.
func (l *lane) drain(dst []*entry) []*entry {
	dst = append(dst, l.carry[l.head:]...)
	dst = append(dst, l.queue...)
	clear(l.carry)
	clear(l.queue)
	l.carry, l.queue, l.head = l.carry[:0], l.queue[:0], 0
	l.pendingBytes = 0
	return dst
}

// batch is one LogGroup on its way: its entries, their encoding, and its
// retry state. Batches are pooled with their buffers.
type batch struct {
	lane     *lane
	entries  []*entry
	bytes    int // encoded LogGroup size
	group    LogGroup
	raw      []byte
	seqID    int64 // IdempotentWrites: the sequence id, the same on every attempt
	attempts int
	lastErr  error           // the error of the last attempt, while waiting for a retry
	timedOut bool            // RetryTimeout ended its retries
	ctx      context.Context // ends at the batch's RetryTimeout, or when Close gives up
	cancel   context.CancelFunc
	timer    *time.Timer // its retry timer, while in its lane's backoff
}

var batchPool = sync.Pool{New: func() any { return new(batch) }}

func (b *batch) reset() {
	if b.cancel != nil {
		b.cancel()
	}
	clear(b.entries)
	clear(b.group.Logs)
	raw := b.raw[:0]
	if cap(raw) > putMaxBytes/2 {
		raw = nil // keep the pool from pinning the largest batches
	}
	*b = batch{entries: b.entries[:0], group: LogGroup{Logs: b.group.Logs[:0]}, raw: raw}
}

// encode builds the LogGroup of the batch's entries into its buffer.
func (b *batch) encode() {
	head := &b.entries[0].rec
	b.group.Topic, b.group.Source, b.group.Tags = head.Topic, head.Source, head.Tags
	logs := b.group.Logs[:0]
	for _, e := range b.entries {
		logs = append(logs, e.rec.Log)
	}
	b.group.Logs = logs
	b.raw = appendLogGroup(b.raw[:0], &b.group)
}

// seqClock hands out idempotent-write sequence ids; see nextSeqID.
var seqClock atomic.Int64

// nextSeqID returns a sequence id greater than every one handed out before
// in this process, and normally greater than every one handed out by an
// earlier process: it is max(last+1, wall clock in ns). The clock part
// carries the order across restarts; the +1 part keeps it strict when the
// clock is coarse or steps back while the process runs. It runs ahead of
// the clock only by the ids issued within one clock tick, so a restarted
// process, starting from its clock, begins above its predecessor's last id
// unless the wall clock stepped back across the restart by more than the
// downtime.
func nextSeqID() int64 {
	for {
		last := seqClock.Load()
		next := max(last+1, time.Now().UnixNano())
		if seqClock.CompareAndSwap(last, next) {
			return next
		}
	}
}

// enqueue appends accepted entries (of one call) to their lanes, making
// lanes ready and starting workers for them as wantsWorker says. It
// refuses (false) once the Publisher is closed. With caller sequence ids
// it returns the entries it refused (see outOfSequence), which the caller
// completes with their call's seqErr.
func (p *Publisher) enqueue(logstore string, entries []entry) (ok bool, refused []*entry) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false, nil
	}
	p.accepted.Add(int64(len(entries)))
	sequenced := p.config.SequenceID != nil
	var l *lane
	for i := range entries {
		e := &entries[i]
		if sequenced && e.call.seqErr != nil {
			refused = append(refused, e)
			continue
		}
		key := laneKey{logstore: logstore, hash: e.hash, keyed: e.keyed}
		if l == nil || l.key != key {
			l = p.lanes[key]
			if l == nil {
				l = &lane{key: key, limit: 1}
				if key.keyed {
					l.hashKey = key.hash.String()
				} else {
					l.limit = p.unkeyedLaneLimit()
				}
				p.lanes[key] = l
			}
		}
		if sequenced {
			if err := l.outOfSequence(e); err != nil {
				e.call.seqErr = err
				refused = append(refused, e)
				continue
			}
			l.lastSeq = e.seq
		}
		l.queue = append(l.queue, e)
		if l.limit > 1 {
			l.pendingBytes += e.size
		}
		switch l.state {
		case laneIdle:
			p.busyLanes++
			p.makeReady(l, true)
		case laneWaiting:
			if p.wantsWorker(l) {
				p.makeReady(l, true)
			}
		}
	}
	return true, refused
}

// outOfSequence reports, with caller sequence ids, an entry whose id is
// not greater than that of an entry of its lane that is queued or being
// written: two callers publishing one hash key at once, against the
// contract (see PublisherConfig.SequenceID). Sent, it could be refused as
// a duplicate and reported written without being written, so it fails
// instead. It cannot see an entry already settled: the contract is the
// caller's, this only catches the races it can. Callers hold mu.
func (l *lane) outOfSequence(e *entry) error {
	// A worker may touch carry outside mu only while it holds the lane,
	// and then inflight > 0, or carry is empty (a lane kept after its
	// batch settled).
	unsettled := l.inflight > 0 || len(l.queue) > 0 || (l.state != laneHeld && l.head < len(l.carry))
	if !unsettled || e.seq > l.lastSeq {
		return nil
	}
	return fmt.Errorf("%w: sequence id %d is not greater than %d, queued or being written for the same hash key",
		ErrSequenceOrder, e.seq, l.lastSeq)
}

// unkeyedLaneLimit is the most requests in flight at once for the
// messages of a logstore without a hash key: SLS promises no order between
// them, so several requests may carry them at once.
func (p *Publisher) unkeyedLaneLimit() int {
	return p.config.MaxConcurrentRequests
}

// makeReady queues l for a worker, starting one if spawn is set and the
// limit allows. A worker requeueing a lane after its own batch settled
// does not spawn: it takes the next ready lane itself. Callers hold mu.
func (p *Publisher) makeReady(l *lane, spawn bool) {
	l.state = laneReady
	p.ready = append(p.ready, l)
	if spawn && p.workers < p.config.MaxConcurrentRequests {
		p.workers++
		p.wg.Add(1)
		go p.worker()
	}
}

// worker sends batches of ready lanes until none is ready.
func (p *Publisher) worker() {
	defer p.wg.Done()
	var done []*entry
	for {
		p.mu.Lock()
		l := p.popReady()
		if l == nil {
			p.workers--
			p.mu.Unlock()
			return
		}
		var b *batch
		if len(l.due) > 0 {
			b = l.due[0]
			l.due = l.due[:copy(l.due, l.due[1:])]
		} else if l.pending() == 0 {
			// Close failed its entries while it waited in the ready queue.
			p.laneDone(l)
			p.mu.Unlock()
			continue
		} else {
			l.takeQueue()
			l.inflight++
		}
		l.state = laneHeld
		if b != nil && l.limit > 1 {
			p.letGo(l)
		}
		p.mu.Unlock()

		if b == nil {
			b = p.cutBatch(l)
			if l.limit > 1 {
				p.mu.Lock()
				l.pendingBytes -= b.bytes - b.entries[0].hdr
				p.letGo(l)
				p.mu.Unlock()
			}
			b.encode()
		}
		err := p.send(b)

		p.mu.Lock()
		var berr error
		var keep bool
		done, berr, keep = p.settle(l, b, err, done[:0])
		p.mu.Unlock()
		p.complete(done, berr)
		if len(done) > 1 {
			p.yieldToCallers(len(done))
		}
		if keep {
			p.mu.Lock()
			p.laneDone(l)
			p.mu.Unlock()
		}
		clear(done)
	}
}

// maxCallerYields bounds the scheduler passes of yieldToCallers.
// Measured with 64 callers (BenchmarkPublisherVsSDKProducer): one pass
// gave ~41 logs per request, up to 8 passes ~48, and ~10% less CPU per log.
const maxCallerYields = 8

// yieldToCallers lets the callers a worker just woke publish their next
// messages before the next batch is cut, so that they join it instead of
// waiting a whole request for the one after. No timer: passes of the
// scheduler, until as many messages arrived as callers were woken, or at
// most maxCallerYields passes. (One pass is not enough: an idle P takes the
// yielding worker from the global run queue at once, before the woken
// callers, queued on the worker's P, have run.)
func (p *Publisher) yieldToCallers(woken int) {
	start := p.accepted.Load()
	for range maxCallerYields {
		runtime.Gosched()
		if p.accepted.Load()-start >= int64(woken) {
			return
		}
	}
}

// letGo ends a worker's hold on a lane with limit > 1 once its batch is
// cut: the lane is ready again if it has another batch to send now, else
// waiting. Callers hold mu.
func (p *Publisher) letGo(l *lane) {
	if p.wantsWorker(l) {
		p.makeReady(l, true)
		return
	}
	l.state = laneWaiting
}

// popReady takes the lane at the head of the ready queue. Callers hold mu.
func (p *Publisher) popReady() *lane {
	if p.readyHead == len(p.ready) {
		return nil
	}
	l := p.ready[p.readyHead]
	p.ready[p.readyHead] = nil
	p.readyHead++
	if p.readyHead == len(p.ready) {
		p.ready, p.readyHead = p.ready[:0], 0
	}
	return l
}

// cutBatch takes the next batch off l's carry: the longest run of entries
// of one LogGroup (topic, source, tags) within the batch limits; at least
// one entry. Only the worker that holds l calls it, without mu.
func (p *Publisher) cutBatch(l *lane) *batch {
	b := batchPool.Get().(*batch)
	b.lane = l
	first := l.carry[l.head]
	b.bytes = first.hdr
	// With caller sequence ids a request carries one message: its seqid is
	// that message's id, so a refusal says exactly that it was written.
	limit := p.config.MaxBatchCount
	if p.config.SequenceID != nil {
		limit = 1
	}
	for l.head < len(l.carry) {
		e := l.carry[l.head]
		if len(b.entries) > 0 && (len(b.entries) == limit ||
			b.bytes+e.size > p.config.MaxBatchBytes || !sameGroup(&e.rec, &first.rec)) {
			break
		}
		b.entries = append(b.entries, e)
		b.bytes += e.size
		l.carry[l.head] = nil
		l.head++
	}
	if l.head == len(l.carry) {
		l.carry, l.head = l.carry[:0], 0
	}
	switch {
	case p.config.SequenceID != nil:
		b.seqID = first.seq
	case p.config.IdempotentWrites:
		b.seqID = nextSeqID()
	}
	b.ctx, b.cancel = context.WithTimeout(p.killCtx, p.config.RetryTimeout)
	return b
}

// send makes one attempt to write b.
func (p *Publisher) send(b *batch) error {
	b.attempts++
	seq := int64(-1)
	if p.config.IdempotentWrites {
		seq = b.seqID
	}
	return p.putLogs(b, seq)
}

// settle decides what an attempt's outcome means for b and its lane: done,
// failed, or to be retried after a backoff. It returns the entries to
// complete, and the error to complete them with (nil: written).
//
// When the batch leaves its lane with nothing queued or in flight, and the
// callers it wakes may publish again at once, settle keeps the lane held
// (keep) instead of letting it go idle; the worker lets go of it (laneDone)
// after its pass of the scheduler. Otherwise the first of those callers
// would find the lane idle and be sent alone, at once, and the others wait
// for that request: a request for one message, then one for the rest,
// instead of one for all. Callers hold mu.
func (p *Publisher) settle(l *lane, b *batch, err error, done []*entry) (_ []*entry, _ error, keep bool) {
	// A lane with limit 1 is held by the worker settling its batch; one
	// with a larger limit may be held by another worker, cutting.
	holder := l.limit == 1
	if err != nil && p.config.IdempotentWrites && isInvalidSequenceID(err) {
		switch {
		case p.config.SequenceID != nil:
			// The caller's sequence: this message, or one after it, was
			// written (by an earlier attempt, call or process), and the
			// contract says nothing after it is sent before it is written.
			p.logger.Debug("PutLogs answered InvalidSequenceId: the message was already written", p.batchFields(b, err))
			err = nil
		case b.attempts > 1:
			// An earlier attempt of this batch was written; its answer was lost.
			p.logger.Debug("PutLogs retry answered InvalidSequenceId: the batch was already written", p.batchFields(b, err))
			err = nil
		}
	}
	if err != nil {
		if wait, ok := p.retryAfter(b, err); ok {
			p.logger.Debug("PutLogs failed, retrying", p.batchFields(b, err).Add(watermill.LogFields{"backoff": wait}))
			p.config.Metrics.PutLogsRetry(b.lane.key.logstore, b.attempts, err)
			// The batch keeps its place in l.inflight: a lane with limit 1
			// sends nothing else before it.
			b.lastErr = err
			l.backoff = append(l.backoff, b)
			p.wg.Add(1)
			b.timer = time.AfterFunc(wait, func() { p.retryDue(l, b) })
			if holder {
				l.state = laneWaiting
			}
			return done, nil, false
		}
		err = p.batchError(b, err)
	}
	done = append(done, b.entries...)
	l.inflight--
	p.releaseBatch(b)
	if err != nil && (l.key.keyed || p.killed) && (holder || l.state != laneHeld) {
		// Keep the key's order: what was queued behind a failed batch
		// fails with it rather than being written after a gap the caller
		// would fill later, out of order. (After Close gave up, a lane
		// another worker holds is drained when that worker's batch fails.)
		queued := l.pending()
		done = l.drain(done)
		if queued > 0 {
			err = &fencedError{err: err, queued: queued}
		}
	}
	if p.killed && err != nil {
		p.lostOnClose += len(done)
	}
	if holder || l.state == laneWaiting {
		if len(done) > 1 && l.inflight == 0 && l.pending() == 0 && len(l.due) == 0 && !p.killed {
			l.state = laneHeld
			return done, err, true
		}
		p.laneDone(l)
	} // else another worker holds it and lets go of it later, or it is ready
	return done, err, false
}

// laneDone makes a lane that no worker holds any more ready if it has a
// batch to send, else waiting or, with nothing queued or in flight, idle.
// Only a worker, which goes on to take a ready lane, calls it when the lane
// may become ready. Callers hold mu.
func (p *Publisher) laneDone(l *lane) {
	if p.wantsWorker(l) {
		p.makeReady(l, false)
		return
	}
	if l.inflight > 0 || l.pending() > 0 {
		l.state = laneWaiting
		return
	}
	p.laneIdle(l)
}

// laneIdle retires a lane with nothing queued or in flight. Callers hold
// mu.
func (p *Publisher) laneIdle(l *lane) {
	l.state = laneIdle
	delete(p.lanes, l.key)
	p.busyLanes--
	if p.closed && p.busyLanes == 0 && !p.drainedClosed {
		p.drainedClosed = true
		close(p.drained)
	}
}

// releaseBatch returns b to the pool; its entries must have been copied
// out. Callers hold mu or own b.
func (p *Publisher) releaseBatch(b *batch) {
	b.reset()
	batchPool.Put(b)
}

// retryAfter reports whether b may be retried after err, and after how long.
// Callers hold mu.
func (p *Publisher) retryAfter(b *batch, err error) (time.Duration, bool) {
	if p.killed || b.ctx.Err() != nil || !IsRetryable(err) || b.attempts > max(p.config.MaxRetries, 0) {
		return 0, false
	}
	bound := p.config.RetryInitialBackoff << min(b.attempts-1, 30)
	if bound <= 0 || bound > p.config.RetryMaxBackoff {
		bound = p.config.RetryMaxBackoff
	}
	wait := time.Duration(rand.Int64N(int64(bound) + 1))
	if deadline, _ := b.ctx.Deadline(); time.Now().Add(wait).After(deadline) {
		b.timedOut = true
		return 0, false
	}
	return wait, true
}

// retryDue moves a batch whose retry timer fired from its lane's backoff to
// its due batches, and makes the lane ready if no worker holds it.
func (p *Publisher) retryDue(l *lane, b *batch) {
	defer p.wg.Done()
	p.mu.Lock()
	defer p.mu.Unlock()
	i := slices.Index(l.backoff, b)
	if i < 0 {
		return // Close failed the batch meanwhile
	}
	l.backoff = slices.Delete(l.backoff, i, i+1)
	b.timer = nil
	l.due = append(l.due, b)
	if l.state == laneWaiting {
		p.makeReady(l, true)
	} // else a worker holds it and lets go of it later, or it is ready
}

// batchError is the error a failed batch's messages report.
func (p *Publisher) batchError(b *batch, err error) error {
	switch {
	case p.killed:
		return fmt.Errorf("%w: not written within CloseTimeout (%v): %w", ErrPublisherClosed, p.config.CloseTimeout, err)
	case b.timedOut || errors.Is(b.ctx.Err(), context.DeadlineExceeded):
		return fmt.Errorf("RetryTimeout (%v) exceeded after %d attempts: %w", p.config.RetryTimeout, b.attempts, err)
	case b.attempts > 1:
		return fmt.Errorf("gave up after %d attempts: %w", b.attempts, err)
	case err != nil && p.config.IdempotentWrites && isInvalidSequenceID(err):
		return &firstAttemptSeqError{err: err}
	}
	return err
}

// complete finishes entries with err and releases their buffer space.
func (p *Publisher) complete(entries []*entry, err error) {
	if len(entries) == 0 {
		return
	}
	n := 0
	for _, e := range entries {
		n += p.budget.clamp(e.size)
	}
	p.budget.release(n)
	for _, e := range entries {
		e.finish(err)
	}
}

// kill fails everything still queued or waiting for a retry and aborts the
// requests in flight (their workers then fail them). Close calls it when
// CloseTimeout has passed.
func (p *Publisher) kill() {
	p.mu.Lock()
	p.killed = true
	p.abort() // in-flight requests end with a context error
	err := fmt.Errorf("%w: not written within CloseTimeout (%v)", ErrPublisherClosed, p.config.CloseTimeout)
	var failed []*entry
	var lost []abandonedBatch
	abandon := func(l *lane, b *batch) {
		// Its callers learn why it was still unwritten.
		berr := fmt.Errorf("%w after %d attempts: %w", err, b.attempts, b.lastErr)
		p.lostOnClose += len(b.entries)
		lost = append(lost, abandonedBatch{append([]*entry(nil), b.entries...), berr})
		l.inflight--
		p.releaseBatch(b)
	}
	for _, l := range p.lanes {
		for _, b := range l.backoff {
			if b.timer.Stop() {
				p.wg.Done() // the timer's callback will not run
			}
			abandon(l, b)
		}
		for _, b := range l.due {
			abandon(l, b)
		}
		clear(l.backoff)
		clear(l.due)
		l.backoff, l.due = l.backoff[:0], l.due[:0]
		if l.state == laneHeld {
			continue // its worker fails its batch, and what is queued behind it
		}
		failed = l.drain(failed)
		if l.inflight > 0 {
			l.state = laneWaiting // the workers sending its batches settle it
		} else {
			p.laneIdle(l)
		}
	}
	clear(p.ready)
	p.ready, p.readyHead = p.ready[:0], 0
	p.lostOnClose += len(failed)
	p.mu.Unlock()
	for _, k := range lost {
		p.complete(k.entries, k.err)
	}
	p.complete(failed, err)
}

// abandonedBatch is a batch Close gave up on, and the error its messages get.
type abandonedBatch struct {
	entries []*entry
	err     error
}

// batchFields describe a batch in log lines.
func (p *Publisher) batchFields(b *batch, err error) watermill.LogFields {
	return watermill.LogFields{
		"logstore": b.lane.key.logstore,
		"hash_key": b.lane.hashKey,
		"logs":     len(b.entries),
		"bytes":    b.bytes,
		"attempt":  b.attempts,
		"err":      err,
	}
}

func isInvalidSequenceID(err error) bool {
	var se *Error
	return errors.As(err, &se) && se.Code == CodeInvalidSequenceID
}

// fencedError is the error of a failed batch given also to the messages
// queued behind it on the same hash key, which were failed unsent to keep
// the key's order.
type fencedError struct {
	err    error
	queued int
}

func (e *fencedError) Error() string {
	return fmt.Sprintf("%v (%d messages queued behind the failed batch on the same hash key were failed unsent, to keep the key's order)", e.err, e.queued)
}

func (e *fencedError) Unwrap() error { return e.err }

// firstAttemptSeqError explains an InvalidSequenceId answer to a batch's
// first attempt: SLS already holds a sequence id at least as high for the
// hash key, which this Publisher did not send.
type firstAttemptSeqError struct{ err error }

func (e *firstAttemptSeqError) Error() string {
	return fmt.Sprintf("%v; the batch was NOT written: SLS holds a higher sequence id for this hash key than this "+
		"Publisher issued, so another writer uses the key with idempotent writes, or the clock stepped back since "+
		"an earlier process wrote it", e.err)
}

func (e *firstAttemptSeqError) Unwrap() error { return e.err }
