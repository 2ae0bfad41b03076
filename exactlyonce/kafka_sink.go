package exactlyonce

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/twmb/franz-go/pkg/kgo"
)

// ErrKafkaSinkClosed is returned by the Handler of a KafkaSink that is closed or closing.
var ErrKafkaSinkClosed = errors.New("exactlyonce: Kafka sink closed")

// ErrKafkaSinkFenced marks the failure of a sink whose producer was fenced: another producer with the same
// transactional id started (a newer instance), so this one can no longer commit. The sink stops; errors.Is finds
// it in the errors its Handler and Err return.
var ErrKafkaSinkFenced = errors.New("exactlyonce: Kafka sink fenced by a newer producer with the same transactional id")

// ErrPartitionConcurrency marks the failure of a sink that saw two messages of one source partition in flight at
// once, which the sink cannot make exactly-once (see KafkaSink). The sink stops.
var ErrPartitionConcurrency = errors.New("exactlyonce: two messages of one source partition in flight at once")

// KafkaSink writes the outputs of a Watermill handler to Kafka exactly once. Each Kafka transaction carries the
// output records of a batch of consumed messages and, in the positions topic, the position of the last of those
// messages per source partition; both become visible to read_committed readers together or not at all. On start
// the sink reads the committed positions; the source resumes right after them (PositionStore for SLS,
// KafkaResumeOffsets for Kafka) and the Handler acks, without producing, every message at or before them.
//
// Messages of different partitions, from any number of router goroutines, handlers and subscribers, are grouped
// into shared transactions (group commit). Within a source partition the sink needs to know the delivery order,
// or a failed message could be overtaken by a later one whose committed position then hides it. Two ways:
//   - Strict mode (the default): at most one message per source partition is in the Handler at a time, as with
//     slspubsub's default MaxInFlight of 1 and watermill-kafka's subscriber. The sink detects an overlap when it
//     sees one and stops with ErrPartitionConcurrency rather than risk a loss.
//   - Delivery-order mode: the subscriber is wrapped with SubscriberDecorator, which records positions in
//     delivery order; then many messages per partition may be in flight (slspubsub MaxInFlight above 1), and a
//     message commits only after every message delivered before it in its partition. Batches get larger.
//
// A transaction that fails is aborted and every message of its batch fails (nack, then redelivery); nothing of
// it is visible to read_committed readers, so the redelivery produces no duplicate. When a commit's outcome is
// unknown (the EndTxn answer was lost), the sink finds out: it starts a new producer session, which makes the
// broker complete the transaction either way, and reads the positions back; the batch is acked if they show it
// committed. After every failure the sink re-reads the committed positions, so it never works from stale ones.
// When the producer is fenced (ErrKafkaSinkFenced) or cannot start a new session, the sink stops: the Handler
// fails every message and Err returns the cause; create a new sink to go on.
//
// KafkaSink is safe for concurrent use. Close it when done; no goroutine outlives Close.
type KafkaSink struct {
	config   KafkaSinkConfig
	logger   watermill.LoggerAdapter
	producer *kgo.Client // the current transactional session; only the batch loop (and Close after it) uses it

	requests chan *sinkRequest
	closing  chan struct{}
	done     chan struct{}
	close    sync.Once

	transactions, messages, aborted atomic.Int64

	mu        sync.Mutex
	committed map[partitionKey]Position
	inFlight  map[partitionKey]Position // strict mode: the one message of a partition in the Handler
	orders    map[partitionKey]*partitionOrder
	wake      chan struct{} // capacity 1: a handler's failure may let deferred requests go
	failure   error         // set once; the sink stops
	closeErr  error
}

// sinkRequest is one consumed message ready to be committed: its position and its output records.
type sinkRequest struct {
	pos     Position
	records []*kgo.Record
	ordered bool       // delivered through the SubscriberDecorator
	result  chan error // buffered: the batch loop never blocks on it
}

// NewKafkaSink connects the transactional producer (fencing any earlier producer with the same transactional
// id and aborting its open transaction), then reads the committed positions of config.Consumer. A nil logger
// becomes watermill.NopLogger.
func NewKafkaSink(config KafkaSinkConfig, logger watermill.LoggerAdapter) (*KafkaSink, error) {
	config.setDefaults()
	if err := config.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = watermill.NopLogger{}
	}
	ctx, cancel := context.WithTimeout(context.Background(), config.LoadTimeout)
	defer cancel()
	producer, err := newProducerSession(ctx, config)
	if err != nil {
		return nil, fmt.Errorf("exactlyonce: Kafka sink: %w", err)
	}
	committed, err := loadPositions(ctx, config)
	if err != nil {
		producer.Close()
		return nil, fmt.Errorf("exactlyonce: Kafka sink: load positions of %q: %w", config.Consumer, err)
	}
	s := &KafkaSink{
		config:    config,
		logger:    logger.With(watermill.LogFields{"consumer": config.Consumer, "transactional_id": config.TransactionalID}),
		producer:  producer,
		requests:  make(chan *sinkRequest),
		closing:   make(chan struct{}),
		done:      make(chan struct{}),
		committed: committed,
		inFlight:  make(map[partitionKey]Position),
		orders:    make(map[partitionKey]*partitionOrder),
		wake:      make(chan struct{}, 1),
	}
	go s.run()
	return s, nil
}

// Handler returns a Watermill handler (for message.Router.AddConsumerHandler, or called directly) that
// commits each message exactly once: it extracts the message's position with position; a message at or before
// the committed position of its partition is acked (nil) without calling process; otherwise process turns it
// into output messages, which are marshaled and committed with the position in a shared transaction. The
// handler returns nil only after that transaction committed; it returns an error (so the message is nacked) when
// process, marshaling or the transaction fails, when the sink is closed or stopped, or when the message's
// context ends before the message joined a batch (once it joined, the handler waits for the transaction).
//
// process must not publish anything itself, and may return no outputs (the position still commits).
func (s *KafkaSink) Handler(process message.HandlerFunc, position PositionFunc) message.NoPublishHandlerFunc {
	return func(msg *message.Message) error {
		pos, err := position(msg)
		if err != nil {
			return fmt.Errorf("exactlyonce: position of message %s: %w", msg.UUID, err)
		}
		key := partitionKey{pos.Stream, pos.Partition}
		mode, err := s.enter(key, pos)
		if err != nil || mode == modeSkip {
			return err
		}
		req, err := s.prepare(msg, pos, mode, process)
		if err == nil {
			err = s.submit(msg, req)
		}
		if mode == modeStrict {
			s.leave(key)
		}
		return err
	}
}

// The ways the Handler treats a message.
type handleMode int

const (
	modeSkip    handleMode = iota // committed already: ack
	modeStrict                    // the only message of its partition in flight
	modeOrdered                   // delivered through the SubscriberDecorator: commits in delivery order
)

// prepare runs process and marshals the outputs. An ordered message that fails here becomes a hole.
func (s *KafkaSink) prepare(msg *message.Message, pos Position, mode handleMode, process message.HandlerFunc) (*sinkRequest, error) {
	outs, err := process(msg)
	if err == nil {
		var records []*kgo.Record
		if records, err = s.marshal(outs); err == nil {
			return &sinkRequest{pos: pos, records: records, ordered: mode == modeOrdered, result: make(chan error, 1)}, nil
		}
		err = fmt.Errorf("exactlyonce: outputs of message %s: %w", msg.UUID, err)
	}
	if mode == modeOrdered {
		s.orderedFailed(pos)
	}
	return nil, err
}

// submit hands req to the batch loop and waits for its transaction.
func (s *KafkaSink) submit(msg *message.Message, req *sinkRequest) error {
	ctx := msg.Context()
	var err error
	select {
	case s.requests <- req:
		// Once the batch loop holds the request, wait for its transaction whatever the context says: the
		// partition must stay in flight until the outcome is known, or a redelivery could commit it twice.
		return <-req.result
	case <-s.closing:
		err = ErrKafkaSinkClosed
	case <-ctx.Done():
		err = fmt.Errorf("exactlyonce: message %s: %w", msg.UUID, ctx.Err())
	}
	if req.ordered {
		s.orderedFailed(req.pos)
	}
	return err
}

// enter decides how the Handler treats a message: skip it when pos is at or before the committed position,
// commit it in delivery order when the SubscriberDecorator recorded it, or else as the only message of its
// partition in flight (registered here). It fails when the sink is stopped or the partition's contract is broken.
func (s *KafkaSink) enter(key partitionKey, pos Position) (handleMode, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.committed[key]; ok && !pos.After(c) {
		if po := s.orders[key]; po != nil {
			po.delivered, _ = removePosition(po.delivered, pos)
			s.wakeLoop() // requests behind it may go
		}
		return modeSkip, nil
	}
	ordered, err := s.enterOrderedLocked(key, pos)
	if err == nil && s.failure != nil {
		err = s.failure
	}
	if err != nil {
		if ordered {
			s.orderedFailedLocked(pos)
			s.wakeLoop()
		}
		if s.failure == nil {
			s.failure = err
			s.logger.Error("Kafka sink stopped", err, nil)
		}
		return modeSkip, err
	}
	if ordered {
		return modeOrdered, nil
	}
	if other, ok := s.inFlight[key]; ok {
		s.failure = fmt.Errorf("%w: %s/%d at %d/%d and %d/%d", ErrPartitionConcurrency, pos.Stream, pos.Partition,
			other.Offset, other.Index, pos.Offset, pos.Index)
		s.logger.Error("Kafka sink stopped", s.failure, nil)
		return modeSkip, s.failure
	}
	s.inFlight[key] = pos
	return modeStrict, nil
}

func (s *KafkaSink) leave(key partitionKey) {
	s.mu.Lock()
	delete(s.inFlight, key)
	s.mu.Unlock()
}

func (s *KafkaSink) marshal(outs []*message.Message) ([]*kgo.Record, error) {
	records := make([]*kgo.Record, 0, len(outs))
	for _, out := range outs {
		topic := s.config.OutputTopic
		if s.config.TopicFunc != nil {
			var err error
			if topic, err = s.config.TopicFunc(out); err != nil {
				return nil, fmt.Errorf("topic of output %s: %w", out.UUID, err)
			}
		}
		if topic == "" || topic == s.config.PositionsTopic {
			return nil, fmt.Errorf("output %s: invalid topic %q", out.UUID, topic)
		}
		pm, err := s.config.Marshaler.Marshal(topic, out)
		if err != nil {
			return nil, fmt.Errorf("marshal output %s: %w", out.UUID, err)
		}
		rec, err := toRecord(pm)
		if err != nil {
			return nil, fmt.Errorf("marshal output %s: %w", out.UUID, err)
		}
		records = append(records, rec)
	}
	return records, nil
}

// KafkaSinkStats counts what a KafkaSink did since it was created.
type KafkaSinkStats struct {
	// Transactions is the number of committed transactions.
	Transactions int64
	// Messages is the number of consumed messages whose outputs and positions were committed (skipped
	// redeliveries not included). Messages / Transactions is the mean batch size.
	Messages int64
	// Aborted is the number of transactions that failed (and were aborted, or stopped the sink).
	Aborted int64
}

// Stats returns the sink's counters. Safe for concurrent use.
func (s *KafkaSink) Stats() KafkaSinkStats {
	return KafkaSinkStats{Transactions: s.transactions.Load(), Messages: s.messages.Load(), Aborted: s.aborted.Load()}
}

// Err returns why the sink stopped (wrapping ErrKafkaSinkFenced, ErrPartitionConcurrency or the producer's
// fatal error), or nil while it works.
func (s *KafkaSink) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.failure
}

// Close stops accepting messages, lets a transaction being committed finish (its handlers get its result), and
// closes the producer; a transaction left open is aborted by the broker when the next session with the same
// transactional id starts, or when it times out. Handlers waiting to join a batch, or waiting behind an earlier
// message of their partition, return ErrKafkaSinkClosed. Close is idempotent.
func (s *KafkaSink) Close() error {
	s.close.Do(func() {
		close(s.closing)
		<-s.done
		if s.producer != nil {
			ctx, cancel := context.WithTimeout(context.Background(), s.config.CommitTimeout)
			defer cancel()
			if err := s.producer.AbortBufferedRecords(ctx); err != nil {
				s.closeErr = fmt.Errorf("exactlyonce: Kafka sink: abort buffered records: %w", err)
			} else if err := s.producer.EndTransaction(ctx, kgo.TryAbort); err != nil && !isFenced(err) {
				s.closeErr = fmt.Errorf("exactlyonce: Kafka sink: abort open transaction: %w", err)
			}
			s.producer.Close()
		}
	})
	return s.closeErr
}
