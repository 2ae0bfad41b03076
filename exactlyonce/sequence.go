package exactlyonce

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/watermill-sls/watermill-sls/slspubsub"
)

// A router runs each message in a goroutine of its own, so two messages of a partition that the subscriber
// released together (slspubsub MaxInFlight above 1) may reach a handler in either order. Were the later one
// committed first, the partition's position would pass the earlier one, which would then be skipped as
// applied: lost. Wrapping the subscriber with the handler's Subscriber method restores the order: the wrapper
// numbers each partition's messages as the subscriber delivers them, and the handler lets a message in only
// after every earlier message of its partition went in (BatchHandler: was queued for a batch; MessageHandler:
// was committed or rolled back) or was acked or nacked without reaching the handler.

// ticket is a message's place in its partition's delivery order. It is also the message's context: the
// message's own context with the ticket as the value of ticketKey (one allocation per message instead of two).
type ticket struct {
	context.Context // the message's context before the wrapper
	gate            *partitionGate
	seq             uint64
	pos             Position
	closed          <-chan struct{} // closed when the wrapper closes: waiting ends with ErrClosed
	msg             *message.Message
	handled         atomic.Bool // the handler took the message
	// counted: the gate counted the message as passed on the handler's side (BatchHandler: queued it;
	// MessageHandler: committed or rolled back), so the wrapper's watcher need not wait for its ack.
	counted atomic.Bool
}

type ticketKey struct{}

// Value returns t for ticketKey, and otherwise what the message's context holds.
func (t *ticket) Value(key any) any {
	if _, ok := key.(ticketKey); ok {
		return t
	}
	return t.Context.Value(key)
}

func ticketFrom(msg *message.Message) *ticket {
	t, _ := msg.Context().Value(ticketKey{}).(*ticket)
	return t
}

// partitionGate lets a partition's messages through in delivery order. A MessageHandler waits for its turn
// (wait, then pass when done); a BatchHandler submits a function that queues the message, which the gate runs
// in order, possibly on the goroutine whose pass or submit completes the sequence, so that no goroutine waits.
// Each waiting message has a channel of its own, closed when its turn comes, so that a pass wakes only the
// message it lets in.
type partitionGate struct {
	mu      sync.Mutex
	next    uint64                   // the next sequence number to hand out
	passed  uint64                   // every message numbered below passed
	ahead   []gateSlot               // ahead[i] is message passed+i: passed or submitted out of order
	waiters map[uint64]chan struct{} // closed when every message below the key passed
}

// gateSlot is a message that went through ahead of its turn: passed (req nil) or submitted (to be pushed to
// lane when its turn comes).
type gateSlot struct {
	done bool
	lane *lane
	req  *batchRequest
}

func newPartitionGate() *partitionGate {
	return &partitionGate{waiters: map[uint64]chan struct{}{}}
}

// wait returns when every message before seq passed, or with an error when ctx ends or closed or stop is
// closed (nil channels never are).
func (g *partitionGate) wait(ctx context.Context, closed, stop <-chan struct{}, seq uint64) error {
	g.mu.Lock()
	if g.passed >= seq {
		g.mu.Unlock()
		return nil
	}
	ch := g.waiters[seq]
	if ch == nil {
		ch = make(chan struct{})
		g.waiters[seq] = ch
	}
	g.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("exactlyonce: waiting for earlier messages of the partition: %w", ctx.Err())
	case <-closed:
		return ErrClosed
	case <-stop:
		return ErrClosed
	}
}

// pass records that message seq went through (idempotent).
func (g *partitionGate) pass(seq uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if seq < g.passed {
		return
	}
	if sl := g.slot(seq); !sl.done {
		sl.done = true
	}
	g.advance()
}

// submit pushes r to l once every message before seq passed, under the gate's lock (so that the queue sees
// the partition's messages in order), and then counts seq as passed. In the common case (seq is next) it
// pushes at once, on the caller's goroutine.
//
// queued reports that r was handed to l before submit returned, and open whether l took it (false: l had
// closed). When queued is false r waits in the gate, or was dropped because seq had passed already.
func (g *partitionGate) submit(seq uint64, l *lane, r *batchRequest) (queued, open bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if seq < g.passed {
		return false, false
	}
	if seq == g.passed {
		// Its turn: push it here, then let through what waited for it.
		open = l.push(r)
		if len(g.ahead) == 0 {
			g.passed++
			if len(g.waiters) > 0 {
				if ch, ok := g.waiters[g.passed]; ok {
					close(ch)
					delete(g.waiters, g.passed)
				}
			}
			return true, open
		}
		g.ahead[0] = gateSlot{done: true}
		g.advance()
		return true, open
	}
	*g.slot(seq) = gateSlot{done: true, lane: l, req: r}
	g.advance()
	return false, false
}

// slot returns the slot of seq (at or above passed), growing ahead to hold it.
func (g *partitionGate) slot(seq uint64) *gateSlot {
	i := int(seq - g.passed)
	for len(g.ahead) <= i {
		g.ahead = append(g.ahead, gateSlot{})
	}
	return &g.ahead[i]
}

// advance lets through the messages whose turn has come: each done slot at the front of ahead.
func (g *partitionGate) advance() {
	n := 0
	for n < len(g.ahead) && g.ahead[n].done {
		if sl := &g.ahead[n]; sl.req != nil {
			sl.lane.push(sl.req)
		}
		n++
		g.passed++
		if len(g.waiters) > 0 {
			if ch, ok := g.waiters[g.passed]; ok {
				close(ch)
				delete(g.waiters, g.passed)
			}
		}
	}
	if n > 0 {
		m := copy(g.ahead, g.ahead[n:])
		clear(g.ahead[m:])
		g.ahead = g.ahead[:m]
	}
}

// sequencedSubscriber numbers the messages of each partition as the wrapped subscriber delivers them.
type sequencedSubscriber struct {
	sub    message.Subscriber
	cfg    HandlerConfig
	blocks *blocks

	closing   chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
}

func newSequencedSubscriber(sub message.Subscriber, cfg HandlerConfig, b *blocks) *sequencedSubscriber {
	return &sequencedSubscriber{sub: sub, cfg: cfg, blocks: b, closing: make(chan struct{})}
}

// Subscribe implements message.Subscriber. A *slspubsub.Subscriber numbers
// its messages as it delivers them (SubscribeObserved), so its channel goes
// to the router as it is; any other subscriber's messages are numbered by a
// goroutine between its channel and the router's.
func (s *sequencedSubscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	select {
	case <-s.closing:
		return nil, ErrClosed
	default:
	}
	n := &numbering{s: s, topic: topic, parts: map[partitionKey]partition{}}
	if sls, ok := s.sub.(*slspubsub.Subscriber); ok {
		return sls.SubscribeObserved(ctx, topic, n)
	}
	in, err := s.sub.Subscribe(ctx, topic)
	if err != nil {
		return nil, err
	}
	out := make(chan *message.Message)
	s.wg.Add(1)
	go s.forward(ctx, n, in, out)
	return out, nil
}

// numbering numbers the messages of one subscription, per partition, in the
// order they are delivered; it implements slspubsub.DeliveryObserver.
// Observe calls for different partitions may run concurrently.
type numbering struct {
	s     *sequencedSubscriber
	topic string
	mu    sync.Mutex
	parts map[partitionKey]partition
}

type partition struct {
	gate    *partitionGate
	watcher *watcher
}

// Observe gives msg the next ticket of its partition. A message without a
// position goes on unnumbered; the handler fails it with the same error. The
// router gives SLSPosition and KafkaPosition the subscribed topic only later:
// fall back to it here.
func (n *numbering) Observe(msg *message.Message) {
	pos, err := n.s.cfg.positionOr(msg, n.topic)
	if err != nil {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	p, ok := n.parts[pos.key()]
	if !ok {
		p = partition{gate: newPartitionGate(), watcher: &watcher{wake: make(chan struct{}, 1)}}
		n.parts[pos.key()] = p
		n.s.wg.Add(1)
		go n.s.watch(p.watcher)
	}
	t := &ticket{Context: msg.Context(), gate: p.gate, seq: p.gate.next, pos: pos, closed: n.s.closing, msg: msg}
	p.gate.next++
	msg.SetContext(t)
	p.watcher.add(t)
}

// Ended lets the partitions' watchers end once they went through the tickets
// they hold: no message comes after.
func (n *numbering) Ended() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, p := range n.parts {
		p.watcher.end()
	}
}

func (s *sequencedSubscriber) forward(ctx context.Context, n *numbering, in <-chan *message.Message, out chan<- *message.Message) {
	defer s.wg.Done()
	defer close(out)
	defer n.Ended()
	for msg := range in {
		n.Observe(msg)
		select {
		case out <- msg: // the router is usually waiting: no need to watch ctx and closing
			continue
		default:
		}
		select {
		case out <- msg:
		case <-ctx.Done():
			msg.Nack()
			return
		case <-s.closing:
			msg.Nack()
			return
		}
	}
}

// watcher holds a partition's tickets, in delivery order, for the goroutine that lets the partition go on
// when a message is acked or nacked without reaching the handler (watch): one goroutine per partition, not
// per message.
type watcher struct {
	mu    sync.Mutex
	queue []*ticket
	ended bool          // no more tickets: the wrapped subscriber's channel closed
	wake  chan struct{} // capacity 1: queue became non-empty, or ended
}

func (w *watcher) add(t *ticket) {
	w.mu.Lock()
	w.queue = append(w.queue, t)
	signal := len(w.queue) == 1
	w.mu.Unlock()
	if signal {
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
}

func (w *watcher) end() {
	w.mu.Lock()
	w.ended = true
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// watch goes through the partition's messages in delivery order. A message the handler counted through the
// gate needs nothing; any other one passes the gate once it is acked or nacked (a middleware dropped or failed
// it, or the handler gave up on it). A nacked message not applied blocks its partition like a handler failure.
// Waiting for one message's ack before looking at the next delays only messages that never reach the
// handler, by at most the time until the earlier ones are acked: the handler's own messages pass the gate
// without the watcher.
func (s *sequencedSubscriber) watch(w *watcher) {
	defer s.wg.Done()
	var spare []*ticket
	for {
		w.mu.Lock()
		batch, ended := w.queue, w.ended
		if len(batch) > 0 {
			w.queue, spare = spare, nil
		}
		w.mu.Unlock()
		if len(batch) == 0 {
			if ended {
				return
			}
			select {
			case <-w.wake:
			case <-s.closing:
				return
			}
			continue
		}
		for i, t := range batch {
			if !t.counted.Load() {
				select {
				case <-t.msg.Acked():
				case <-t.msg.Nacked():
					if !t.handled.Load() {
						s.blocks.failed(t.pos)
					}
				case <-s.closing:
					return
				}
				t.gate.pass(t.seq)
			}
			batch[i] = nil
		}
		spare = batch[:0]
	}
}

// Close closes the wrapped subscriber and waits for the wrapper's goroutines.
func (s *sequencedSubscriber) Close() error {
	s.closeOnce.Do(func() { close(s.closing) })
	err := s.sub.Close()
	s.wg.Wait()
	if err != nil && !errors.Is(err, ErrClosed) {
		return err
	}
	return nil
}

// Subscriber wraps sub so that the MessageHandler sees the messages of each partition in the order sub
// delivers them; use it when sub may have several unacked messages of a partition (slspubsub MaxInFlight above
// 1), and pass the wrapper to the router instead of sub. Closing the wrapper closes sub.
func (h *MessageHandler) Subscriber(sub message.Subscriber) message.Subscriber {
	return newSequencedSubscriber(sub, h.cfg, &h.blocks)
}

// Subscriber wraps sub so that the BatchHandler sees the messages of each partition in the order sub delivers
// them; use it when sub may have several unacked messages of a partition (slspubsub MaxInFlight above 1), and
// pass the wrapper to the router instead of sub. Closing the wrapper closes sub.
func (h *BatchHandler) Subscriber(sub message.Subscriber) message.Subscriber {
	return newSequencedSubscriber(sub, h.cfg.HandlerConfig, &h.blocks)
}
