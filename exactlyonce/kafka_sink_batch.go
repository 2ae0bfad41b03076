package exactlyonce

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/twmb/franz-go/pkg/kgo"
)

// run forms batches (group commit) and commits them, one transaction at a time, until Close. Ordered requests
// that must wait for an earlier message of their partition are kept (deferred) and looked at again with every
// new request and whenever a handler reports a failure (wake).
func (s *KafkaSink) run() {
	defer close(s.done)
	var deferred []*sinkRequest
	defer func() {
		for _, r := range deferred {
			r.result <- ErrKafkaSinkClosed
		}
	}()
	for {
		select {
		case <-s.closing:
			return
		default:
		}
		var first []*sinkRequest
		select {
		case r := <-s.requests:
			first = append(first, r)
		case <-s.wake:
		case <-s.closing:
			return
		}
		batch := s.gather(first)
		if err := s.Err(); err != nil {
			for _, r := range append(deferred, batch...) {
				r.result <- err
			}
			deferred = nil
			continue
		}
		var ready []*sinkRequest
		ready, deferred = s.order(append(deferred, batch...))
		if len(ready) == 0 {
			continue
		}
		err := s.commit(ready)
		s.settleOrdered(ready, err)
		for _, r := range ready {
			r.result <- err
		}
	}
}

// gather adds to batch the requests already waiting, and those arriving within MaxBatchDelay, up to
// MaxBatchMessages.
func (s *KafkaSink) gather(batch []*sinkRequest) []*sinkRequest {
	var timeout <-chan time.Time
	if s.config.MaxBatchDelay > 0 && len(batch) > 0 {
		t := time.NewTimer(s.config.MaxBatchDelay)
		defer t.Stop()
		timeout = t.C
	}
	for len(batch) < s.config.MaxBatchMessages {
		if timeout == nil {
			select {
			case r := <-s.requests:
				batch = append(batch, r)
			default:
				return batch
			}
			continue
		}
		select {
		case r := <-s.requests:
			batch = append(batch, r)
		case <-timeout:
			return batch
		case <-s.closing:
			return batch
		}
	}
	return batch
}

// commit produces the batch's outputs and positions in one transaction. It returns nil only when the
// transaction committed.
func (s *KafkaSink) commit(batch []*sinkRequest) error {
	if err := s.Err(); err != nil {
		return err
	}
	last := make(map[partitionKey]Position, len(batch))
	n := 0
	for _, r := range batch {
		key := partitionKey{r.pos.Stream, r.pos.Partition}
		if p, ok := last[key]; !ok || r.pos.After(p) {
			last[key] = r.pos
		}
		n += len(r.records)
	}
	records := make([]*kgo.Record, 0, n+len(last))
	for _, r := range batch {
		records = append(records, r.records...)
	}
	for _, p := range last {
		records = append(records, positionRecord(s.config.PositionsTopic, s.config.Consumer, p))
	}

	ctx, cancel := context.WithTimeout(context.Background(), s.config.CommitTimeout)
	defer cancel()
	if err := s.producer.BeginTransaction(); err != nil {
		return s.failed(ctx, "begin transaction", err, nil)
	}
	if err := s.producer.ProduceSync(ctx, records...).FirstErr(); err != nil {
		return s.failed(ctx, "produce", err, nil)
	}
	if err := s.producer.EndTransaction(ctx, kgo.TryCommit); err != nil {
		if err := s.failed(ctx, "commit transaction", err, last); err != nil {
			return err
		}
	}
	s.transactions.Add(1)
	s.messages.Add(int64(len(batch)))
	s.advance(last)
	return nil
}

// advance moves the committed positions forward to the ones of positions that are after them.
func (s *KafkaSink) advance(positions map[partitionKey]Position) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for key, p := range positions {
		if c, ok := s.committed[key]; !ok || p.After(c) {
			s.committed[key] = p
		}
	}
}

// failed handles a transaction that failed with err during op, and returns nil if it committed after all.
//
// It aborts what it can, then replaces the producer session: initializing the transactional id again makes the
// broker complete the old transaction (abort, or finish a commit it had accepted) and resets sequence numbers.
// It then reads the committed positions back, so the sink never works from stale ones (a paused instance may
// have been replaced meanwhile). When the commit's outcome was unknown (unsure holds the batch's positions), those
// positions decide: all committed means the batch committed. A fenced producer, or a session or read that
// fails, stops the sink.
func (s *KafkaSink) failed(ctx context.Context, op string, err error, unsure map[partitionKey]Position) error {
	s.aborted.Add(1)
	err = fmt.Errorf("exactlyonce: Kafka sink: %s: %w", op, err)
	if isFenced(err) {
		return s.stop(fmt.Errorf("%w: %w", ErrKafkaSinkFenced, err))
	}
	if unsure == nil {
		if abortErr := s.producer.AbortBufferedRecords(ctx); abortErr == nil {
			_ = s.producer.EndTransaction(ctx, kgo.TryAbort) // the new session aborts it anyway
		}
	}
	s.producer.Close()
	s.producer = nil
	producer, perr := newProducerSession(ctx, s.config)
	if perr != nil {
		return s.stop(errors.Join(err, fmt.Errorf("exactlyonce: Kafka sink: new producer session: %w", perr)))
	}
	s.producer = producer
	loaded, lerr := loadPositions(ctx, s.config)
	if lerr != nil {
		return s.stop(errors.Join(err, fmt.Errorf("exactlyonce: Kafka sink: reload positions: %w", lerr)))
	}
	s.advance(loaded)
	if unsure == nil {
		return err
	}
	committed := 0
	for key, p := range unsure {
		if l, ok := loaded[key]; ok && !p.After(l) {
			committed++
		}
	}
	switch committed {
	case 0:
		return err
	case len(unsure):
		s.logger.Info("Kafka sink: a transaction whose commit failed had committed", watermill.LogFields{"error": err.Error()})
		s.aborted.Add(-1)
		return nil
	}
	return s.stop(fmt.Errorf("%w (and %d of its %d positions are committed, which cannot be)", err, committed, len(unsure)))
}

// stop records err as the reason the sink stopped and returns it.
func (s *KafkaSink) stop(err error) error {
	s.mu.Lock()
	if s.failure == nil {
		s.failure = err
	}
	s.mu.Unlock()
	s.logger.Error("Kafka sink stopped", err, nil)
	return err
}
