package exactlyonce

import (
	"fmt"
	"slices"

	"github.com/ThreeDotsLabs/watermill/message"
)

// partitionOrder is what the sink knows of the messages of one source partition in delivery-order mode.
type partitionOrder struct {
	// delivered holds the positions of messages the subscriber delivered that are neither committed nor failed.
	delivered []Position
	// holes holds the positions of messages that failed and were not delivered again yet. Nothing after a hole
	// may commit: its redelivery would be skipped.
	holes []Position
}

func removePosition(ps []Position, p Position) ([]Position, bool) {
	i := slices.Index(ps, p)
	if i < 0 {
		return ps, false
	}
	return slices.Delete(ps, i, i+1), true
}

// SubscriberDecorator returns a decorator that lets the Handler take several messages of one source partition
// at once (slspubsub's MaxInFlight above 1) and stay exactly-once. It records each message's position as the
// subscriber delivers it, in delivery order; the Handler then commits a message only after every message
// delivered before it in its partition has committed (in the same or an earlier transaction), holds later ones
// back while an earlier one failed and waits for its redelivery, and never moves a committed position past a
// message that was not applied.
//
// Apply it to the subscriber whose messages go to the Handler, with the same position function:
//
//	router.AddSubscriberDecorators(sink.SubscriberDecorator(position))
//
// or wrap the subscriber itself. Every delivered message must reach the Handler: a middleware or filter that
// acks a message without calling the Handler leaves it pending, and the messages after it in its partition wait
// (until Close). A failed message must come back: nacked (by the Handler, or by a middleware that did not call
// it) and redelivered, or retried through the same Handler (watermill's Retry middleware). A middleware that
// acks a failed message instead (PoisonQueue) leaves a hole that blocks the rest of its partition; use
// PoisonQueue only without this decorator, where at most one message per partition may be in flight.
func (s *KafkaSink) SubscriberDecorator(position PositionFunc) message.SubscriberDecorator {
	return message.MessageTransformSubscriberDecorator(func(msg *message.Message) {
		pos, err := position(msg)
		if err != nil {
			return // the Handler fails the message with this error
		}
		s.deliver(pos)
	})
}

// deliver records a delivered message. One that is already committed is left out: the Handler skips it. One
// recorded already (its earlier delivery was nacked without reaching the Handler, for example by a middleware)
// is recorded once: a second record would stay behind when the message commits and hold back the partition.
func (s *KafkaSink) deliver(pos Position) {
	key := partitionKey{pos.Stream, pos.Partition}
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.committed[key]; ok && !pos.After(c) {
		return
	}
	po := s.orders[key]
	if po == nil {
		po = &partitionOrder{}
		s.orders[key] = po
	}
	po.holes, _ = removePosition(po.holes, pos)
	if !slices.Contains(po.delivered, pos) {
		po.delivered = append(po.delivered, pos)
	}
}

// orderedFailed records that an ordered message failed before it committed: it becomes a hole. Callers hold
// s.mu.
func (s *KafkaSink) orderedFailedLocked(pos Position) {
	po := s.orders[partitionKey{pos.Stream, pos.Partition}]
	if po == nil {
		return
	}
	var ok bool
	if po.delivered, ok = removePosition(po.delivered, pos); ok {
		po.holes = append(po.holes, pos)
	}
}

// orderedFailed is orderedFailedLocked for a handler, which also wakes the batch loop: requests waiting behind
// the failed message are evaluated again.
func (s *KafkaSink) orderedFailed(pos Position) {
	s.mu.Lock()
	s.orderedFailedLocked(pos)
	s.mu.Unlock()
	s.wakeLoop()
}

func (s *KafkaSink) wakeLoop() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// order splits candidates into the requests that may commit now and those that must wait for an earlier message
// of their partition (deferred). Requests of strict mode are always ready.
func (s *KafkaSink) order(candidates []*sinkRequest) (ready, deferred []*sinkRequest) {
	byKey := make(map[partitionKey][]*sinkRequest)
	for _, r := range candidates {
		if !r.ordered {
			ready = append(ready, r)
			continue
		}
		key := partitionKey{r.pos.Stream, r.pos.Partition}
		byKey[key] = append(byKey[key], r)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for key, rs := range byKey {
		po := s.orders[key]
		if po == nil { // nothing recorded for the partition any more: no earlier message to wait for
			ready = append(ready, rs...)
			continue
		}
		delivered := slices.Clone(po.delivered)
		slices.SortFunc(delivered, Position.Compare)
		var firstHole *Position
		for i := range po.holes {
			if firstHole == nil || firstHole.After(po.holes[i]) {
				firstHole = &po.holes[i]
			}
		}
		slices.SortFunc(rs, func(a, b *sinkRequest) int { return a.pos.Compare(b.pos) })
		// Walk the delivered messages in position order: each request is ready while every message before it
		// is a ready request too, and no hole comes before it.
		i := 0
		for _, d := range delivered {
			if i == len(rs) || rs[i].pos != d || (firstHole != nil && d.After(*firstHole)) {
				break
			}
			ready = append(ready, rs[i])
			i++
		}
		deferred = append(deferred, rs[i:]...)
	}
	return ready, deferred
}

// settleOrdered records the outcome of a transaction for its ordered requests. Callers must not hold s.mu.
func (s *KafkaSink) settleOrdered(batch []*sinkRequest, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range batch {
		if !r.ordered {
			continue
		}
		if err != nil {
			s.orderedFailedLocked(r.pos)
			continue
		}
		key := partitionKey{r.pos.Stream, r.pos.Partition}
		if po := s.orders[key]; po != nil {
			po.delivered, _ = removePosition(po.delivered, r.pos)
			if len(po.delivered) == 0 && len(po.holes) == 0 {
				delete(s.orders, key)
			}
		}
	}
}

// enterOrdered decides for a message of a partition in delivery-order mode; callers hold s.mu. ok is false when
// the partition has no delivery record of pos (strict mode applies).
func (s *KafkaSink) enterOrderedLocked(key partitionKey, pos Position) (ok bool, err error) {
	po := s.orders[key]
	if po == nil {
		return false, nil
	}
	if slices.Contains(po.delivered, pos) {
		return true, nil
	}
	// A message that failed and is tried again without a new delivery (watermill's Retry middleware).
	var wasHole bool
	if po.holes, wasHole = removePosition(po.holes, pos); wasHole {
		po.delivered = append(po.delivered, pos)
		return true, nil
	}
	if len(po.delivered) > 0 {
		return false, fmt.Errorf("%w: %s/%d at %d/%d arrived without passing the SubscriberDecorator while others did",
			ErrPartitionConcurrency, pos.Stream, pos.Partition, pos.Offset, pos.Index)
	}
	return false, nil
}
