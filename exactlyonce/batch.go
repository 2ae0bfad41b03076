package exactlyonce

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
)

// BatchHandler defaults.
const (
	DefaultMaxBatch     = 500
	DefaultMaxWait      = 5 * time.Millisecond
	DefaultBatchTimeout = 30 * time.Second
)

// BatchConfig configures a BatchHandler.
type BatchConfig struct {
	HandlerConfig

	// MaxBatch is the largest number of messages applied in one transaction. Default 500.
	MaxBatch int
	// MaxWait is how long the first message of a batch waits for others to join before the batch is applied.
	// It is added latency for each message; messages that arrive while a batch commits join the next one
	// without waiting. Default 5 ms.
	MaxWait time.Duration
	// Timeout bounds one batch's transaction, from BEGIN to COMMIT. Default 30 s.
	Timeout time.Duration
	// Parallel is how many batches are applied at the same time, each in a transaction of its own on a
	// connection of its own. The partitions are spread over Parallel lanes (by stream and partition number),
	// each lane collecting and committing its own batches one after the other, so a partition's messages still
	// commit in order. It pays off when the round trips of a commit, not the database's work, bound the
	// throughput; the function then runs on several goroutines at once (it must be safe for that) and the pool
	// needs Parallel connections for the handler. Default 1.
	Parallel int
}

func (c *BatchConfig) setDefaults() {
	if c.MaxBatch == 0 {
		c.MaxBatch = DefaultMaxBatch
	}
	if c.MaxWait == 0 {
		c.MaxWait = DefaultMaxWait
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultBatchTimeout
	}
	if c.Parallel == 0 {
		c.Parallel = 1
	}
}

// Validate reports every invalid field in one error, before or after defaults are applied.
func (c BatchConfig) Validate() error {
	var errs []error
	if err := c.HandlerConfig.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.MaxBatch < 0 {
		errs = append(errs, fmt.Errorf("MaxBatch %d: must not be negative", c.MaxBatch))
	}
	if c.MaxWait < 0 {
		errs = append(errs, fmt.Errorf("MaxWait %v: must not be negative", c.MaxWait))
	}
	if c.Timeout < 0 {
		errs = append(errs, fmt.Errorf("Timeout %v: must not be negative", c.Timeout))
	}
	if c.Parallel < 0 {
		errs = append(errs, fmt.Errorf("Parallel %d: must not be negative", c.Parallel))
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("exactlyonce: invalid BatchConfig: %w", errors.Join(errs...))
}

// BatchHandler applies the messages of many router goroutines in shared transactions (group commit): each
// Handle call joins the open batch and waits; the batch is applied when it holds MaxBatch messages or MaxWait
// after its first message arrived, and every Handle call returns (the router acks) only after the batch's
// commit.
//
// In a batch, the messages of each partition are applied in position order. A batch first runs without
// savepoints; when a message fails, its transaction is rolled back and the batch runs again with each message
// inside a savepoint (so a HandlerFunc may run more than once for a message; only one run ever commits). A message
// at or before the stored position (or a duplicate in the batch) is skipped: acked without calling the
// HandlerFunc. When the HandlerFunc fails for a message, its savepoint is rolled back and its Handle call
// returns the error; every later message of the same partition in the batch fails with ErrPartitionBlocked
// (the partition's position stays before the failed message), while other partitions commit. A failed commit,
// or any database error outside a message's savepoint, fails every message of the batch.
//
// A batch holds at most as many messages as the subscriber releases before the first ack: batching pays off
// with many partitions (SLS shards, Kafka partitions) or with slspubsub.SubscriberConfig.MaxInFlight above 1.
// With one unacked message in total it only adds MaxWait of latency; use MessageHandler there.
//
// Order within a partition is as for MessageHandler: a message whose earlier message of the partition failed
// is refused with ErrPartitionBlocked until the failed message is redelivered and applied. With MaxInFlight
// above 1, wrap the subscriber with Subscriber so that each partition's messages join batches in delivery
// order (see the package documentation).
//
// The HandlerFunc (or BulkFunc, see NewBulkHandler) runs on the goroutine that applies the batch, with a
// context that ends with the batch's Timeout; with BatchConfig.Parallel above 1 several batches of different
// partitions are applied at once. Close ends the handler; it is safe for concurrent use.
type BatchHandler struct {
	store *Store
	cfg   BatchConfig
	fn    HandlerFunc // or bulk: exactly one is set
	bulk  BulkFunc

	lanes     []*lane // a partition's requests always go to the same lane (laneOf)
	closing   chan struct{}
	closed    atomic.Bool // set with closing, for Handle's common path
	running   sync.WaitGroup
	closeOnce sync.Once

	blocks blocks

	knownMu sync.Mutex
	known   map[partitionKey]storedPosition // stored positions as of this handler's last batch of each partition
}

type batchRequest struct {
	msg   *message.Message
	pos   Position
	state atomic.Int32 // requestPending, then requestTaken by a lane or requestAbandoned by Handle
	res   chan error   // buffered 1; a lane answers every request it took exactly once

	skipped bool // applied before, or a duplicate in the batch (for Metrics)
}

// requests recycles batchRequests (and their answer channels): one per message otherwise.
var requests = sync.Pool{New: func() any { return &batchRequest{res: make(chan error, 1)} }}

func newBatchRequest(msg *message.Message, pos Position) *batchRequest {
	r := requests.Get().(*batchRequest)
	r.msg, r.pos = msg, pos
	return r
}

// release returns r to the pool; only once its answer was received, and only when nothing else refers to it.
func (r *batchRequest) release() {
	r.msg, r.pos, r.skipped = nil, Position{}, false
	r.state.Store(requestPending)
	requests.Put(r)
}

// States of a batchRequest.
const (
	requestPending int32 = iota
	requestTaken
	requestAbandoned
)

// NewBatchHandler returns a BatchHandler applying fn with positions in store, and starts its goroutine; Close
// stops it.
func NewBatchHandler(store *Store, cfg BatchConfig, fn HandlerFunc) (*BatchHandler, error) {
	if store == nil || fn == nil {
		return nil, errors.New("exactlyonce: NewBatchHandler: nil store or handler function")
	}
	return newBatchHandler(store, cfg, fn, nil)
}

func newBatchHandler(store *Store, cfg BatchConfig, fn HandlerFunc, bulk BulkFunc) (*BatchHandler, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	h := &BatchHandler{
		store:   store,
		cfg:     cfg,
		fn:      fn,
		bulk:    bulk,
		lanes:   make([]*lane, cfg.Parallel),
		closing: make(chan struct{}),
	}
	for i := range h.lanes {
		h.lanes[i] = &lane{max: cfg.MaxBatch, wake: make(chan struct{}, 1)}
		h.running.Add(1)
		go h.loop(h.lanes[i])
	}
	return h, nil
}

// Handle has the shape of message.NoPublishHandlerFunc: pass it to Router.AddConsumerHandler. It returns nil
// once the message is applied and committed, or was applied before; an error otherwise. After Close it returns
// ErrClosed.
//
// A message queued for a batch is applied (or fails) with its batch (each bounded by Timeout),
// also when its context ends meanwhile or the handler closes (Close applies what is queued). A message still
// waiting for an earlier message of its partition (through the Subscriber wrapper) stops waiting when its
// context ends, or the handler or the wrapper closes, and blocks its partition as a failed message does.
func (h *BatchHandler) Handle(msg *message.Message) error {
	// The common path is kept short and its frame small: a router runs each message on a goroutine of its
	// own, whose stack would otherwise have to grow (be copied) for every message.
	if h.closed.Load() {
		return ErrClosed
	}
	t := ticketFrom(msg)
	if t == nil {
		return h.handleUnordered(msg)
	}
	// The position was extracted by the Subscriber wrapper with the same HandlerConfig. The request joins its
	// lane once every earlier message of the partition did (or was settled without reaching the handler): at
	// once, or from the goroutine that completes the sequence.
	r := newBatchRequest(msg, t.pos)
	l := h.lanes[h.laneOf(&r.pos)]
	t.handled.Store(true)
	queued, open := t.gate.submit(t.seq, l, r)
	t.counted.Store(true)
	if queued {
		return h.answer(r, open)
	}
	return h.awaitGated(r, t.closed)
}

// handleUnordered handles a message that did not come through the Subscriber wrapper.
//
//go:noinline
func (h *BatchHandler) handleUnordered(msg *message.Message) error {
	pos, err := h.cfg.position(msg)
	if err != nil {
		return err
	}
	r := newBatchRequest(msg, pos)
	return h.answer(r, h.lanes[h.laneOf(&pos)].push(r))
}

// awaitGated waits for the answer to r, which waits in its partition's gate for earlier messages of the
// partition: it may wait for ever (an earlier message never comes back), so the wait ends also when the
// handler or the wrapper closes (closed) or the message's context ends.
//
//go:noinline
func (h *BatchHandler) awaitGated(r *batchRequest, closed <-chan struct{}) error {
	msg, pos := r.msg, r.pos
	var stop error
	select {
	case err := <-r.res:
		return err
	case <-h.closing:
		stop = ErrClosed
	case <-closed:
		stop = ErrClosed
	case <-msg.Context().Done():
		stop = fmt.Errorf("exactlyonce: message at %s: %w", pos, msg.Context().Err())
	}
	// Blocked first: should a lane take the request after all, applying it lifts the block; should none,
	// nothing after it in the partition may commit before it is applied.
	h.blocks.failed(pos)
	if r.state.CompareAndSwap(requestPending, requestAbandoned) {
		return stop
	}
	// A lane took it: it answers, also when closing, within its batch Timeout.
	return <-r.res
}

// answer waits for the answer to a request its lane queued (open) or refused because it closed (!open). A
// queued request is always answered: the lane applies it in a batch, on close too (drain), within the batch's
// Timeout, so the wait needs no other way out; this keeps the common path to one channel receive.
func (h *BatchHandler) answer(r *batchRequest, open bool) error {
	if !open {
		h.blocks.failed(r.pos)
		return ErrClosed
	}
	err := <-r.res
	// The lane is done with r once it answered (it sends each answer last), and nothing else holds a
	// request queued straight to its lane: it can serve another message.
	r.release()
	return err
}

// Close stops taking messages, applies the requests its lanes hold, answers every waiting Handle call, and
// returns when the handler's goroutines have ended. Close the router (which waits for its handlers) before or
// while closing the BatchHandler: later Handle calls return ErrClosed. It is idempotent.
func (h *BatchHandler) Close() error {
	h.closeOnce.Do(func() {
		h.closed.Store(true)
		close(h.closing)
	})
	h.running.Wait()
	return nil
}

// laneOf returns the lane of pos's partition: consecutive partitions of a stream go to consecutive lanes.
func (h *BatchHandler) laneOf(pos *Position) int {
	if len(h.lanes) == 1 {
		return 0
	}
	hash := uint32(2166136261) // FNV-1a of the stream
	for i := 0; i < len(pos.Stream); i++ {
		hash = (hash ^ uint32(pos.Stream[i])) * 16777619
	}
	return int((hash + uint32(pos.Partition)) % uint32(len(h.lanes)))
}

// lane is a queue of requests that one goroutine applies in batches, one batch after the other. A
// partition's requests are queued in order: the ordering gate pushes them in sequence.
type lane struct {
	max     int // MaxBatch
	mu      sync.Mutex
	queue   []*batchRequest
	firstAt time.Time     // when the oldest request in queue arrived
	wake    chan struct{} // capacity 1: the queue became non-empty, or full
	closed  bool          // drained for the last time: push refuses
}

// push queues r, or returns false when the lane closed (drained for the last time): then nothing answers r.
func (l *lane) push(r *batchRequest) bool {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return false
	}
	if len(l.queue) == 0 {
		l.firstAt = time.Now()
	}
	l.queue = append(l.queue, r)
	// Only the pushes that change what the loop waits for wake it: the first (it starts the MaxWait clock)
	// and the one that fills a batch.
	signal := len(l.queue) == 1 || len(l.queue) == l.max
	l.mu.Unlock()
	if signal {
		select {
		case l.wake <- struct{}{}:
		default:
		}
	}
	return true
}

// shut closes the lane when its queue is empty: later pushes are refused. It returns false when requests
// are still queued (to be drained first).
func (l *lane) shut() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.queue) > 0 {
		return false
	}
	l.closed = true
	return true
}

// take removes up to max requests from the front of the queue and returns those not abandoned, marked
// taken, and how many requests the queue still holds.
func (l *lane) take(max int) ([]*batchRequest, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := min(max, len(l.queue))
	batch := make([]*batchRequest, 0, n)
	for _, r := range l.queue[:n] {
		if r.state.CompareAndSwap(requestPending, requestTaken) {
			batch = append(batch, r)
		}
	}
	rest := copy(l.queue, l.queue[n:])
	clear(l.queue[rest:])
	l.queue = l.queue[:rest]
	if rest > 0 {
		// The rest queued while the batch before them was being collected or applied: they are due.
		l.firstAt = time.Time{}
	}
	return batch, rest
}

// ready returns how many requests are queued and when the oldest arrived.
func (l *lane) ready() (int, time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.queue), l.firstAt
}

// loop applies the lane's requests in batches, one after the other: a batch is cut when MaxBatch requests
// are queued or the oldest waited MaxWait. Requests keep queuing while a batch is applied, so the next batch
// fills meanwhile. On close it applies what is queued and returns.
func (h *BatchHandler) loop(l *lane) {
	defer h.running.Done()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		n, firstAt := l.ready()
		if n < h.cfg.MaxBatch && (n == 0 || time.Since(firstAt) < h.cfg.MaxWait) {
			var expire <-chan time.Time
			if n > 0 {
				timer.Reset(h.cfg.MaxWait - time.Since(firstAt))
				expire = timer.C
			}
			select {
			case <-l.wake:
			case <-expire:
			case <-h.closing:
				h.drain(l)
				return
			}
			timer.Stop()
			continue
		}
		if batch, _ := l.take(h.cfg.MaxBatch); len(batch) > 0 {
			h.apply(batch)
		}
	}
}

// drain applies what the lane holds when the handler closes; requests pushed later are abandoned by their
// Handle calls.
func (h *BatchHandler) drain(l *lane) {
	for {
		batch, rest := l.take(h.cfg.MaxBatch)
		if len(batch) > 0 {
			h.apply(batch)
		}
		if rest == 0 && l.shut() {
			return
		}
	}
}

// apply runs one batch's transaction and answers its requests.
func (h *BatchHandler) apply(batch []*batchRequest) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), h.cfg.Timeout)
	defer cancel()
	parts := groupByPartition(batch)
	results := make(map[*batchRequest]error, len(batch))
	// First without savepoints (one round trip less per message); when a message fails, the transaction is
	// rolled back and the batch runs again with a savepoint around each message.
	stored, err := h.run(ctx, parts, results, false)
	if errors.Is(err, errUseSavepoints) {
		clear(results)
		stored, err = h.run(ctx, parts, results, true)
	}
	h.remember(parts, stored)
	if err != nil {
		// Nothing of the batch committed: every message fails, and each partition is blocked at its first
		// message of the batch until that one is applied.
		for _, p := range parts {
			h.blocks.failed(p[0].pos)
		}
		h.observe(start, batch, nil, err)
		for _, r := range batch {
			r.res <- err
		}
		return
	}
	for _, p := range parts {
		for _, r := range p {
			if e := results[r]; e != nil {
				h.blocks.failed(r.pos)
			} else {
				h.blocks.settled(r.pos)
			}
		}
	}
	h.observe(start, batch, results, nil)
	for _, r := range batch {
		r.res <- results[r]
	}
}

// groupByPartition returns the requests per partition, each sorted by position, partitions sorted by key so
// that concurrent batches lock position rows in one order.
func groupByPartition(batch []*batchRequest) [][]*batchRequest {
	m := map[partitionKey][]*batchRequest{}
	for _, r := range batch {
		m[r.pos.key()] = append(m[r.pos.key()], r)
	}
	out := make([][]*batchRequest, 0, len(m))
	for _, rs := range m {
		slices.SortStableFunc(rs, func(a, b *batchRequest) int { return a.pos.Compare(b.pos) })
		out = append(out, rs)
	}
	slices.SortFunc(out, func(a, b []*batchRequest) int {
		ka, kb := a[0].pos.key(), b[0].pos.key()
		return cmp.Or(cmp.Compare(ka.stream, kb.stream), cmp.Compare(ka.partition, kb.partition))
	})
	return out
}

// errUseSavepoints rolls back a batch run without savepoints in which a message failed.
var errUseSavepoints = errors.New("exactlyonce: a message failed; run the batch with savepoints")

// partitionRun is one partition's part of a batch run: the messages to apply (in position order) and how far
// the run got.
type partitionRun struct {
	reqs     []*batchRequest
	failed   *Position // the message of reqs that failed; nothing after it in the partition commits
	last     Position  // the last message of reqs applied, when nApplied > 0
	nApplied int
}

// refuse answers r with ErrPartitionBlocked behind the failed message of its partition.
func (p *partitionRun) refuse(r *batchRequest, results map[*batchRequest]error) {
	results[r] = fmt.Errorf("message at %s: %w (failed at %s in the same batch)", r.pos, ErrPartitionBlocked, *p.failed)
}

// run applies the batch in one transaction. It returns an error when the batch as a whole failed (nothing
// committed); otherwise results holds each message's own outcome. Without savepoints, a failing message fails
// the run with errUseSavepoints.
//
// Round trips to PostgreSQL per batch: BEGIN, the function's own statements (per message for a HandlerFunc,
// per call for a BulkFunc), one statement that stores the positions of every partition, COMMIT; and, for
// partitions whose stored position the handler does not know yet (its first batch of them, or after a failed
// batch), one statement before the function that reads and locks them.
func (h *BatchHandler) run(ctx context.Context, parts [][]*batchRequest, results map[*batchRequest]error, savepoints bool) (map[partitionKey]storedPosition, error) {
	tx, err := h.store.pool.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("exactlyonce: begin batch: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // after Commit it is a no-op
	stored, err := h.storedPositions(ctx, tx, parts)
	if err != nil {
		return nil, err
	}
	runs := make([]*partitionRun, 0, len(parts))
	for _, p := range parts {
		if reqs := h.plan(p, stored, results); len(reqs) > 0 {
			runs = append(runs, &partitionRun{reqs: reqs})
		}
	}
	if h.bulk != nil {
		err = h.runBulk(ctx, tx, runs, results, savepoints)
	} else {
		err = h.runEach(ctx, tx, runs, results, savepoints)
	}
	if err != nil {
		return nil, err
	}
	var advance []advanceStep
	for _, p := range runs {
		if p.nApplied > 0 {
			k := p.reqs[0].pos.key()
			advance = append(advance, advanceStep{from: stored[k], first: p.reqs[0].pos, last: p.last})
			stored[k] = storedPosition{pos: p.last, ok: true}
		}
	}
	if len(advance) > 0 {
		moved, err := h.store.advanceFrom(ctx, tx, h.cfg.Consumer, advance)
		if err != nil {
			return nil, err
		}
		if moved != len(advance) {
			return nil, fmt.Errorf("batch: %w", ErrPositionConflict)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("exactlyonce: commit batch: %w", err)
	}
	return stored, nil
}

// storedPosition is what the handler knows of a partition's stored position: the position, or (ok=false)
// that none is stored.
type storedPosition struct {
	pos Position
	ok  bool
}

// storedPositions returns the stored positions of the batch's partitions. A partition this handler committed
// or read before comes from its memory, without a round trip: the stored position is at or after the
// remembered one, because positions only move forward, and it is equal unless another consumer applied the
// partition meanwhile, which advanceFrom detects (the batch then fails with ErrPositionConflict, the partition
// is forgotten, and the redelivered messages are planned against a fresh read). The other partitions are read
// and locked in tx with one statement.
func (h *BatchHandler) storedPositions(ctx context.Context, tx pgx.Tx, parts [][]*batchRequest) (map[partitionKey]storedPosition, error) {
	out := make(map[partitionKey]storedPosition, len(parts))
	var missing []partitionKey
	h.knownMu.Lock()
	for _, p := range parts {
		k := p[0].pos.key()
		if sp, ok := h.known[k]; ok {
			out[k] = sp
		} else {
			missing = append(missing, k)
		}
	}
	h.knownMu.Unlock()
	if len(missing) == 0 {
		return out, nil
	}
	read, err := h.store.lockAll(ctx, tx, h.cfg.Consumer, missing)
	if err != nil {
		return nil, err
	}
	for _, k := range missing {
		pos, ok := read[k]
		out[k] = storedPosition{pos: pos, ok: ok}
	}
	return out, nil
}

// remember records the stored positions a committed batch left (nil after a failed batch: its partitions are
// forgotten and read again next time).
func (h *BatchHandler) remember(parts [][]*batchRequest, stored map[partitionKey]storedPosition) {
	h.knownMu.Lock()
	defer h.knownMu.Unlock()
	if h.known == nil {
		h.known = map[partitionKey]storedPosition{}
	}
	for _, p := range parts {
		k := p[0].pos.key()
		if sp, ok := stored[k]; ok {
			h.known[k] = sp
		} else {
			delete(h.known, k)
		}
	}
}

// plan returns the requests of one partition (sorted by position) that are to be applied, in position order,
// and answers the others in results: a message at or before the stored position, or a duplicate in the batch,
// is skipped (nil: acked); a message behind a message that failed in an earlier batch and is not applied yet
// (nor in this batch before it) is refused with ErrPartitionBlocked, and so is everything after it.
func (h *BatchHandler) plan(p []*batchRequest, storedPositions map[partitionKey]storedPosition, results map[*batchRequest]error) []*batchRequest {
	sp := storedPositions[p[0].pos.key()]
	stored, hasStored := sp.pos, sp.ok
	block, blocked := h.blocks.get(p[0].pos.key())
	if blocked && hasStored && !block.After(stored) {
		blocked = false // the failed message was applied since (by another consumer): the block is void
	}
	var (
		out     []*batchRequest
		refused *Position
	)
	for _, r := range p {
		switch {
		case refused != nil:
			results[r] = fmt.Errorf("message at %s: %w (failed at %s)", r.pos, ErrPartitionBlocked, block)
			continue
		case hasStored && !r.pos.After(stored), len(out) > 0 && !r.pos.After(out[len(out)-1].pos):
			r.skipped = true
			continue // applied before, or a duplicate in the batch: skip
		}
		// A message after the block goes only behind a message of this batch at or after the block (the
		// failed message, redelivered): applied first, it lifts the block; failing, it stops the rest.
		if blocked && r.pos.After(block) && (len(out) == 0 || block.After(out[len(out)-1].pos)) {
			results[r] = fmt.Errorf("message at %s: %w (failed at %s)", r.pos, ErrPartitionBlocked, block)
			refused = &r.pos
			continue
		}
		out = append(out, r)
	}
	return out
}

// runEach applies the planned messages one HandlerFunc call each. A returned error fails the whole batch.
func (h *BatchHandler) runEach(ctx context.Context, tx pgx.Tx, runs []*partitionRun, results map[*batchRequest]error, savepoints bool) error {
	for _, p := range runs {
		for _, r := range p.reqs {
			if p.failed != nil {
				p.refuse(r, results)
				continue
			}
			if !savepoints {
				if err := h.fn(ctx, tx, r.msg); err != nil {
					return errUseSavepoints
				}
				p.last, p.nApplied = r.pos, p.nApplied+1
				continue
			}
			herr, err := h.applyOne(ctx, tx, r)
			if err != nil {
				return err
			}
			if herr != nil {
				results[r] = herr
				p.failed = &r.pos
				continue
			}
			p.last, p.nApplied = r.pos, p.nApplied+1
		}
	}
	return nil
}

// applyOne runs the HandlerFunc for r inside a savepoint. herr is the HandlerFunc's error (its savepoint rolled
// back); err is a database error that leaves the transaction unusable.
func (h *BatchHandler) applyOne(ctx context.Context, tx pgx.Tx, r *batchRequest) (herr, err error) {
	return inSavepoint(ctx, tx, func() error { return h.fn(ctx, tx, r.msg) })
}

// inSavepoint runs fn inside a savepoint. herr is fn's error (the savepoint rolled back); err is a database
// error that leaves the transaction unusable.
//
// Savepoints are not released: a successful call's savepoint simply stays below the next one (ROLLBACK TO
// goes to the most recent savepoint of the name), which saves a round trip per call.
func inSavepoint(ctx context.Context, tx pgx.Tx, fn func() error) (herr, err error) {
	if _, err := tx.Exec(ctx, "SAVEPOINT exactlyonce_msg"); err != nil {
		return nil, fmt.Errorf("exactlyonce: savepoint: %w", err)
	}
	if herr = fn(); herr == nil {
		return nil, nil
	}
	if _, err := tx.Exec(ctx, "ROLLBACK TO SAVEPOINT exactlyonce_msg"); err != nil {
		return nil, fmt.Errorf("exactlyonce: roll back to savepoint: %w (handler error: %w)", err, herr)
	}
	return herr, nil
}
