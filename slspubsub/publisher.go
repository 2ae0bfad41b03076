package slspubsub

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
)

var _ message.Publisher = (*Publisher)(nil)

// ErrPublisherClosed is returned by Publish after Close, and is the cause of
// the failure of messages Close could not write in time.
var ErrPublisherClosed = errors.New("slspubsub: publisher closed")

// ErrSequenceOrder is the cause of the failure of a message whose caller
// sequence id (PublisherConfig.SequenceID) is not greater than that of a
// message of the same hash key published before it and not yet written:
// the messages of a key must be published one after another. The rest of
// its Publish call fails with it, unsent.
var ErrSequenceOrder = errors.New("slspubsub: sequence ids out of order")

// Publisher writes Watermill messages to SLS logstores: the topic of
// Publish is the logstore name; the project, endpoint and credentials come
// from the config. Its Marshaler turns each message into a log
// (DefaultMarshaler maps the MetadataTopic, MetadataSource, MetadataTime
// and MetadataTagPrefix keys to the LogGroup's topic, source, tags and the
// log time, and keeps UUID, payload and other metadata as contents).
//
// # Durability
//
// Publish is synchronous: it returns nil only after SLS answered 200 to a
// PutLogs request carrying every one of its messages. Otherwise it returns
// an error (a *PublishError naming the messages not written and why);
// nothing is dropped silently. A message that failed may nevertheless have
// been written, when a request reached SLS but its answer was lost: retry
// such failures, and expect duplicates, or use IdempotentWrites.
//
// # Group commit
//
// Concurrent Publish calls share PutLogs requests. Messages are grouped by
// logstore and hash key (see PublisherConfig.HashKey) into lanes. A
// message arriving at an idle lane is sent at once (there is no linger
// time); messages arriving while a request of their lane is in flight are
// sent together in the next request, up to MaxBatchCount logs and
// MaxBatchBytes bytes (a request carries one LogGroup, so messages with
// different topic, source or tags metadata go in different requests).
// Lanes proceed in parallel, up to MaxConcurrentRequests requests in
// flight. The more callers, the larger the requests: throughput grows with
// concurrency instead of with a linger delay.
//
// With a HashKey, each distinct hash key is a lane with at most one request
// in flight, which keeps the key's order: use HashBuckets to let one
// request carry many keys. Without a HashKey, a logstore's messages form
// one lane, SLS spreads its requests over the shards, and no order is
// kept: when a full batch (MaxBatchCount or MaxBatchBytes) waits while
// requests are in flight, another request starts at once, up to
// MaxConcurrentRequests; otherwise waiting messages join the next request
// when one settles.
//
// # Order
//
// Messages of one hash key are written in the order they were accepted:
// those of one Publish call in call order, those of concurrent calls in
// order of arrival. A lane retries a failed request before sending
// anything after it, so retries do not reorder. When a batch fails for
// good, the messages queued behind it on the same hash key fail too,
// unsent, so that a caller who publishes them again does not find them
// written after later ones. Without a HashKey no order is promised (SLS
// writes the requests to different shards), and a retried batch does not
// hold back the others.
//
// # Retries
//
// Network failures, HTTP 5xx answers and 403 quota errors are retried with
// exponential backoff and full jitter (MaxRetries, RetryInitialBackoff,
// RetryMaxBackoff, RetryTimeout). Other errors (authentication, 400, 404
// LogStoreNotExist ...) fail the batch at once; the error carries SLS's code
// and request id, and errors.As finds the *Error.
//
// # Idempotent writes
//
// A retry after a request that SLS executed but whose answer was lost (a
// reset connection, a timeout) writes the batch twice: PutLogs has no other
// way to tell. With IdempotentWrites, every request carries a sequence id
// for its hash key (the seqid parameter of PostLogStoreLogs, SLS's
// idempotent-write feature); SLS refuses, with InvalidSequenceId, a seqid
// not greater than the last one it wrote for the key. A batch keeps its
// seqid on every attempt, so a retry refused that way was written by an
// earlier attempt and counts as success: each message is written once.
//
// Sequence ids are max(last+1, wall clock in nanoseconds): strictly
// increasing within the process and, through the clock, across restarts.
// The guarantee needs:
//   - one Publisher at a time writing a hash key of a logstore with
//     IdempotentWrites (one process: a second writer's sequence ids
//     interleave with ours, and a retry refused because of the other
//     writer's higher id would be taken for a duplicate);
//   - a wall clock that does not step back across a restart by more than
//     the downtime.
//
// With these clock-based ids, when a batch's first attempt is refused with
// InvalidSequenceId, SLS holds a higher seqid that this Publisher did not
// send, so one of these conditions is broken; the batch was not written
// and fails with an error that says so (treating it as a duplicate would
// lose it).
//
// # Caller sequence ids
//
// Clock-based ids recognise the retries of one Publisher, not a message
// that a restarted process sends again because it never learnt that the
// first send succeeded (an outbox relay killed between the write and
// marking the row). With PublisherConfig.SequenceID the caller supplies the
// ids: each message has its own, increasing along the order in which the
// messages of a hash key are to be written (outbox row ids, with the
// ordering key as the hash key: see package outbox, SequenceKey and
// SequenceID). Each request then carries exactly one message with its id as
// seqid, and a request refused with InvalidSequenceId, on any attempt,
// counts as written.
//
// That is exact (every message written once, none reported written that
// was not) when, for every hash key of a logstore:
//   - ids are assigned in write order and never reused for another
//     message: a message created later has a greater id;
//   - a message is sent only after every message of its key with a
//     smaller id was written (its Publish returned nil), or will never be
//     sent. One caller per key that publishes a key's messages one after
//     another and stops the key at its first failure does this, whatever
//     the number of processes taking turns, and even when a stale request
//     of a dead process arrives late (it is refused, or is the only copy);
//   - nothing else writes the key with sequence ids (no clock-based
//     IdempotentWrites Publisher: its ids, nanoseconds since 1970, are
//     above any row id, and would make every later message look written);
//   - SLS still holds the key's last sequence id when a message is sent
//     again.
//
// Then SLS's last id for a key is the id of a written message, and every
// message of the key with a smaller or equal id is written: a refused
// message was written, an accepted one was not written before. A message
// published out of order (a smaller id after a greater one was written)
// would be refused and reported written without being written: this is why
// the second condition matters, why ids that do not increase within a
// Publish call fail it before anything is sent, and why a message whose id
// is not greater than that of a message of its key still queued or in
// flight fails with ErrSequenceOrder (two callers racing on a key; a race
// whose first message is already written cannot be seen). Messages of one
// call and key go one request each, one after another; the first that
// fails for good fails the rest unsent (see Order).
//
// # Back-pressure and Close
//
// Messages accepted but not yet written are bounded by MaxBufferBytes; when
// it is full, Publish waits for room, as long as each waiting message's
// Context() allows. Once accepted, a message's outcome is bounded by
// RetryTimeout (and CloseTimeout). Close stops accepting messages, writes
// what was accepted within CloseTimeout, fails the rest, and returns when
// every goroutine of the Publisher has ended.
type Publisher struct {
	config PublisherConfig
	logger watermill.LoggerAdapter
	api    *apiClient
	budget *budget

	// killCtx parents every request; abort ends it when Close gives up.
	killCtx context.Context
	abort   context.CancelFunc

	closedFlag atomic.Bool // mirrors closed, read without mu
	closeOnce  sync.Once
	closeErr   error

	mu            sync.Mutex
	closed        bool
	killed        bool // Close gave up waiting: fail everything left
	lostOnClose   int  // messages failed because Close gave up
	lanes         map[laneKey]*lane
	ready         []*lane // lanes waiting for a worker, FIFO from readyHead
	readyHead     int
	workers       int
	busyLanes     int           // lanes not idle
	drained       chan struct{} // closed when closed and busyLanes == 0
	drainedClosed bool

	accepted atomic.Int64 // messages enqueued so far (see yieldToCallers)

	wg sync.WaitGroup // workers and pending retry timers
}

// NewPublisher creates a Publisher. It validates config (after filling in
// defaults) and fails naming every invalid field; it makes no request. A
// nil logger logs nothing.
func NewPublisher(config PublisherConfig, logger watermill.LoggerAdapter) (*Publisher, error) {
	config.setDefaults()
	if err := config.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = watermill.NopLogger{}
	}
	api, err := newAPIClient(config.ClientConfig)
	if err != nil {
		return nil, fmt.Errorf("slspubsub: NewPublisher: %w", err)
	}
	killCtx, abort := context.WithCancel(context.Background())
	return &Publisher{
		config:  config,
		logger:  logger.With(watermill.LogFields{"project": config.Project}),
		api:     api,
		budget:  newBudget(config.MaxBufferBytes),
		killCtx: killCtx,
		abort:   abort,
		lanes:   make(map[laneKey]*lane),
		drained: make(chan struct{}),
	}, nil
}

// Publish writes msgs to the logstore named topic and returns when SLS has
// written all of them (nil), or when it is known that some were not (a
// *PublishError). It is safe for concurrent use; see Publisher for
// batching, order, retries and back-pressure.
//
// Nothing is sent when a message cannot be marshaled, its HashKey fails, or
// its log alone exceeds MaxBatchBytes.
func (p *Publisher) Publish(topic string, msgs ...*message.Message) error {
	if p.closedFlag.Load() {
		return ErrPublisherClosed
	}
	if len(msgs) == 0 {
		return nil
	}
	if topic == "" {
		return errors.New("slspubsub: Publish: the topic (the logstore name) is empty")
	}
	c := getCall(len(msgs))
	defer putCall(c)
	total, err := p.prepare(topic, msgs, c)
	if err != nil {
		return newPublishError(topic, msgs, nil, err)
	}
	p.admit(topic, msgs, c, total)
	<-c.done
	return p.callError(topic, msgs, c)
}

// prepare marshals msgs into c's entries, computes their hash keys and
// sizes, and returns the buffer space they need.
func (p *Publisher) prepare(topic string, msgs []*message.Message, c *call) (int, error) {
	total := 0
	for i, msg := range msgs {
		e := &c.entries[i]
		e.call = c
		rec, err := p.config.Marshaler.Marshal(topic, msg)
		if err != nil {
			return 0, fmt.Errorf("slspubsub: marshal message %s: %w", msg.UUID, err)
		}
		e.rec = rec
		if p.config.HashKey != nil {
			key, err := p.config.HashKey(topic, msg)
			if err != nil {
				return 0, fmt.Errorf("slspubsub: HashKey of message %s: %w", msg.UUID, err)
			}
			e.hash, e.keyed = hashKeyFor(key, p.config.HashBuckets), true
		}
		e.size = logEntrySize(&e.rec.Log)
		if i > 0 && sameGroup(&e.rec, &c.entries[i-1].rec) {
			e.hdr = c.entries[i-1].hdr
		} else {
			e.hdr = groupHeaderSize(&e.rec)
		}
		if e.hdr+e.size > p.config.MaxBatchBytes {
			return 0, fmt.Errorf("slspubsub: message %s encodes to a LogGroup of %d bytes, more than MaxBatchBytes (%d)",
				msg.UUID, e.hdr+e.size, p.config.MaxBatchBytes)
		}
		total += p.budget.clamp(e.size)
	}
	if p.config.SequenceID != nil {
		if err := p.sequences(topic, msgs, c); err != nil {
			return 0, err
		}
	}
	return total, nil
}

// sequences sets the entries' caller sequence ids
// (PublisherConfig.SequenceID) and checks them: not negative, and
// strictly increasing among the call's messages of one hash key.
func (p *Publisher) sequences(topic string, msgs []*message.Message, c *call) error {
	var last map[hashKey]int // hash key -> index of its latest message, for calls of several
	if len(msgs) > 1 {
		last = make(map[hashKey]int)
	}
	for i, msg := range msgs {
		e := &c.entries[i]
		seq, err := p.config.SequenceID(topic, msg)
		if err != nil {
			return fmt.Errorf("slspubsub: SequenceID of message %s: %w", msg.UUID, err)
		}
		if seq < 0 {
			return fmt.Errorf("slspubsub: SequenceID of message %s is %d: sequence ids are not negative", msg.UUID, seq)
		}
		e.seq = seq
		if last == nil {
			continue
		}
		if j, ok := last[e.hash]; ok && c.entries[j].seq >= seq {
			return fmt.Errorf("slspubsub: SequenceID of message %s is %d, not greater than %d of message %s before it "+
				"in the call with the same hash key: SLS would take it for a duplicate", msg.UUID, seq, c.entries[j].seq, msgs[j].UUID)
		}
		last[e.hash] = i
	}
	return nil
}

// admit takes buffer space for c's entries and hands them to their lanes,
// in call order, waiting for space as long as each message's context
// allows. Entries it cannot accept it finishes with the reason.
func (p *Publisher) admit(topic string, msgs []*message.Message, c *call, total int) {
	entries := c.entries
	if p.budget.tryAcquire(total) {
		ok, refused := p.enqueue(topic, entries)
		if !ok {
			p.budget.release(total)
			p.reject(entries, ErrPublisherClosed)
		}
		p.complete(refused, c.seqErr)
		return
	}
	for i := 0; i < len(entries); {
		held, j := 0, i
		for j < len(entries) && p.budget.tryAcquire(p.budget.clamp(entries[j].size)) {
			held += p.budget.clamp(entries[j].size)
			j++
		}
		if j == i {
			n := p.budget.clamp(entries[i].size)
			if err := p.budget.acquire(msgs[i].Context(), n); err != nil {
				if !errors.Is(err, ErrPublisherClosed) {
					err = fmt.Errorf("slspubsub: waiting for buffer space (MaxBufferBytes): %w", err)
				}
				p.reject(entries[i:], err)
				return
			}
			held, j = n, i+1
		}
		ok, refused := p.enqueue(topic, entries[i:j])
		if !ok {
			p.budget.release(held)
			p.reject(entries[i:], ErrPublisherClosed)
			return
		}
		p.complete(refused, c.seqErr)
		i = j
	}
}

// reject finishes entries that were not accepted.
func (p *Publisher) reject(entries []entry, err error) {
	for i := range entries {
		entries[i].finish(err)
	}
}

// callError gathers the outcome of a finished call.
func (p *Publisher) callError(topic string, msgs []*message.Message, c *call) error {
	var failed []int
	for i := range c.entries {
		if c.entries[i].err != nil {
			failed = append(failed, i)
		}
	}
	if len(failed) == 0 {
		return nil
	}
	var causes []error
	for _, i := range failed {
		err := c.entries[i].err
		dup := false
		for _, x := range causes {
			dup = dup || x == err
		}
		if !dup {
			causes = append(causes, err)
		}
	}
	return newPublishError(topic, msgs, failed, causes...)
}

// Close stops accepting messages (Publish then fails with
// ErrPublisherClosed), fails the Publish calls waiting for buffer space,
// and waits up to CloseTimeout for the accepted messages to be written.
// Messages still unwritten then fail (their Publish calls return), and
// Close reports how many. It returns when every goroutine of the Publisher
// has ended. It is idempotent: later calls wait for the first and return
// its result.
func (p *Publisher) Close() error {
	p.closeOnce.Do(func() { p.closeErr = p.close() })
	return p.closeErr
}

func (p *Publisher) close() error {
	p.mu.Lock()
	p.closed = true
	p.closedFlag.Store(true)
	if p.busyLanes == 0 {
		p.drainedClosed = true
		close(p.drained)
	}
	p.mu.Unlock()
	p.budget.close(ErrPublisherClosed)

	timer := time.NewTimer(p.config.CloseTimeout)
	select {
	case <-p.drained:
	case <-timer.C:
		p.logger.Info("Close timed out; failing the messages not yet written", watermill.LogFields{"close_timeout": p.config.CloseTimeout})
		p.kill()
	}
	timer.Stop()
	p.wg.Wait()
	p.abort()
	p.api.close()

	p.mu.Lock()
	lost := p.lostOnClose
	p.mu.Unlock()
	if lost > 0 {
		return fmt.Errorf("slspubsub: Close: %d messages were not written within CloseTimeout (%v); their Publish calls failed",
			lost, p.config.CloseTimeout)
	}
	return nil
}

// PublishError reports the messages of a Publish call that were not
// written. errors.Is and errors.As see its causes: an *Error with SLS's
// code and request id, ErrPublisherClosed, a context error, ...
type PublishError struct {
	// Logstore is the Publish topic.
	Logstore string
	// Total is the number of messages of the call.
	Total int
	// Failed holds the UUIDs of the messages not known to be written, in
	// call order. The others were written. A failed message may have been
	// written all the same when a request's answer was lost.
	Failed []string
	// Errs are the distinct causes, in the order the failed messages
	// appear.
	Errs []error
}

// newPublishError builds the error of a call; failed nil means all msgs.
func newPublishError(logstore string, msgs []*message.Message, failed []int, causes ...error) *PublishError {
	e := &PublishError{Logstore: logstore, Total: len(msgs), Errs: causes}
	if failed == nil {
		e.Failed = make([]string, len(msgs))
		for i, m := range msgs {
			e.Failed[i] = m.UUID
		}
		return e
	}
	e.Failed = make([]string, len(failed))
	for j, i := range failed {
		e.Failed[j] = msgs[i].UUID
	}
	return e
}

// maxListedUUIDs bounds the UUIDs PublishError.Error lists.
const maxListedUUIDs = 5

// Error says how many messages failed, lists the first UUIDs and gives the
// first cause.
func (e *PublishError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "slspubsub: publish to logstore %q: %d of %d messages not written (", e.Logstore, len(e.Failed), e.Total)
	for i, id := range e.Failed {
		if i == maxListedUUIDs {
			fmt.Fprintf(&b, ", ... %d more", len(e.Failed)-i)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(id)
	}
	b.WriteString(")")
	if len(e.Errs) > 0 {
		b.WriteString(": ")
		b.WriteString(e.Errs[0].Error())
	}
	if len(e.Errs) > 1 {
		fmt.Fprintf(&b, " (and %d other errors)", len(e.Errs)-1)
	}
	return b.String()
}

// Unwrap returns the causes, for errors.Is and errors.As.
func (e *PublishError) Unwrap() []error { return e.Errs }
