package slspubsub

import (
	"context"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
)

// ackResult is how a delivered message was settled.
type ackResult struct {
	msg    *message.Message
	pos    Position
	cursor int64 // pos.Cursor's value
	acked  bool
}

// delivery is the delivery loop of one shard.
type delivery struct {
	sub      *subscription
	st       *shardState
	results  chan ackResult // capacity MaxInFlight: watchers never block
	inFlight int
	watchers sync.WaitGroup  // one per in-flight message
	failed   bool            // stopped on a log it could not unmarshal
	wm       *shardWatermark // nil without WatermarkConfig
	// tick (with watermarks) fires a few times per IdleTimeout: a wait
	// for the consumer (a send or an ack) that sees it pauses the shard,
	// so that a slow handler is back-pressure, never idleness.
	tick   <-chan time.Time
	paused bool

	ctxSlab []msgContext // where the next messages' contexts are cut from
}

// backPressure pauses the shard (once) while the delivery loop waits for
// the consumer.
func (d *delivery) backPressure() {
	if !d.paused {
		d.paused = true
		d.wm.sh.Pause()
	}
}

// relieved ends backPressure's pause.
func (d *delivery) relieved() {
	if d.paused {
		d.paused = false
		d.wm.sh.Resume()
	}
}

// run delivers batches in order until they end (and every message is
// settled) or ctx ends. While waiting for data it still handles acks and
// nacks, so a nacked message is redelivered at once.
func (d *delivery) run(ctx context.Context, batches <-chan fetchedBatch) {
	drain, stopDrain := d.drainContext(ctx)
	defer stopDrain()
	for batches != nil {
		select {
		case b, ok := <-batches:
			if !ok {
				batches = nil
				break
			}
			done := d.deliverBatch(ctx, drain, b)
			d.st.reader.budget.release(b.size)
			if !done {
				return
			}
		case r := <-d.results:
			if !d.handle(drain, r) {
				return
			}
		case <-ctx.Done():
			return
		}
	}
	for d.inFlight > 0 {
		if !d.settle(drain) {
			return
		}
	}
}

// drainContext returns the context messages are delivered and awaited
// under: it ends CloseTimeout after ctx ends (at once with a negative
// CloseTimeout). Between the two, the LogGroup being delivered is finished
// and acks are still counted, so that a stopped shard's checkpoint lands
// on a group boundary and its next reader redelivers nothing that was
// handled.
func (d *delivery) drainContext(ctx context.Context) (context.Context, func()) {
	drain, cancel := context.WithCancel(context.WithoutCancel(ctx))
	grace := d.sub.s.cfg.CloseTimeout
	var mu sync.Mutex
	var timer *time.Timer
	stop := context.AfterFunc(ctx, func() {
		if grace <= 0 {
			cancel()
			return
		}
		mu.Lock()
		timer = time.AfterFunc(grace, cancel)
		mu.Unlock()
	})
	return drain, func() {
		stop()
		mu.Lock()
		if timer != nil {
			timer.Stop()
		}
		mu.Unlock()
		cancel()
	}
}

// deliverBatch delivers every log of b; false means stop the shard. A new
// LogGroup is started only while ctx lives; one started is delivered to
// its end under drain. The messages were built by the fetch loop.
func (d *delivery) deliverBatch(ctx, drain context.Context, b fetchedBatch) bool {
	k := 0
	for gi := range b.groups {
		g := &b.groups[gi]
		if ctx.Err() != nil {
			return false
		}
		cursor := b.first + int64(gi)
		pos := Position{Shard: d.st.id, Cursor: b.cursors[gi]}
		start := 0
		if gi == 0 {
			start = min(b.skip, len(g.Logs))
		}
		for li := start; li < len(g.Logs); li++ {
			pos.Index = li
			msg := b.msgs[k]
			if err, bad := b.failed[k]; bad && !d.unmarshalFailed(err, pos) {
				return false
			}
			k++
			if d.wm != nil {
				d.wm.observe(d, msg, &g.Logs[li], pos)
			}
			if !d.send(drain, msg, pos, cursor) {
				return false
			}
		}
	}
	return true
}

// unmarshalFailed applies the OnUnmarshalError policy to a log the
// Unmarshaler rejected with err; false means stop the shard.
func (d *delivery) unmarshalFailed(err error, pos Position) bool {
	s := d.sub.s
	fields := d.sub.fields(d.st).Add(watermill.LogFields{"position": pos.String()})
	if s.cfg.OnUnmarshalError == UnmarshalErrorFail {
		s.fail("SLS log cannot be unmarshaled; shard stopped", err, fields)
		d.failed = true
		return false
	}
	s.logger.Error("SLS log cannot be unmarshaled; delivered raw", err, fields)
	return true
}

// send delivers msg once fewer than MaxInFlight messages are in flight.
// With MaxInFlight 1 it waits for the ack itself (no goroutine per message)
// and sends a nacked message again at once; with more, a watcher goroutine
// per message reports to the delivery loop.
func (d *delivery) send(ctx context.Context, msg *message.Message, pos Position, cursor int64) bool {
	maxInFlight := d.sub.s.cfg.MaxInFlight
	for d.inFlight >= maxInFlight {
		if !d.settle(ctx) {
			return false
		}
	}
	for {
		// The message's context ends when it is acked or nacked, as in
		// watermill-kafka, or when the subscription ends.
		msgCtx := d.newMsgContext(ctx)
		msg.SetContext(msgCtx)
		if d.wm != nil {
			d.wm.stamp(msg)
		}
		if o := d.sub.observer; o != nil {
			o.Observe(msg)
		}
		if !d.handOver(ctx, msg) {
			msgCtx.end()
			return false
		}
		if maxInFlight > 1 {
			d.watch(ctx, msg, msgCtx, pos, cursor)
			return true
		}
		settled, acked := d.await(ctx, msg, msgCtx, cursor, pos.Index)
		msgCtx.end()
		if !settled {
			return false
		}
		if acked {
			return true
		}
		msg = msg.Copy()
	}
}

// handOver sends msg to the subscription's channel; false means ctx ended
// first.
func (d *delivery) handOver(ctx context.Context, msg *message.Message) bool {
	select {
	case d.sub.out <- msg: // the handler was waiting: no full select
		d.relieved()
		return true
	default:
	}
	for {
		select {
		case d.sub.out <- msg:
			d.relieved()
			return true
		case <-ctx.Done():
			d.relieved()
			return false
		case <-d.tick:
			d.backPressure()
		}
	}
}

// watch starts the watcher goroutine of a message sent with MaxInFlight
// above 1: it reports the message's ack or nack to the delivery loop.
func (d *delivery) watch(ctx context.Context, msg *message.Message, msgCtx *msgContext, pos Position, cursor int64) {
	d.inFlight++
	d.watchers.Add(1)
	go func() {
		defer d.watchers.Done()
		defer msgCtx.end()
		if settled, acked := d.await(ctx, msg, msgCtx, cursor, pos.Index); settled {
			d.results <- ackResult{msg: msg, pos: pos, cursor: cursor, acked: acked}
		}
	}()
}

// msgContextSlab is how many message contexts are allocated at once.
const msgContextSlab = 64

// newMsgContext returns a new context for a message, under parent. They
// are cut from slabs: one allocation per msgContextSlab messages (a
// context still referenced keeps its slab alive, a few KiB).
func (d *delivery) newMsgContext(parent context.Context) *msgContext {
	if len(d.ctxSlab) == 0 {
		d.ctxSlab = make([]msgContext, msgContextSlab)
	}
	c := &d.ctxSlab[0]
	d.ctxSlab = d.ctxSlab[1:]
	c.Context = parent
	return c
}

// await waits until msg is acked or nacked (settled) or ctx (the drain
// context) ends. Acks are tracked here, so that none is lost when the
// shard's reading ends right after it.
func (d *delivery) await(ctx context.Context, msg *message.Message, msgCtx *msgContext, cursor int64, index int) (settled, acked bool) {
	if d.tick != nil && d.sub.s.cfg.MaxInFlight == 1 {
		// Waiting for the handler is back-pressure (with more in flight,
		// settle waits for the handlers instead).
		defer d.relieved()
	}
	tick := d.tick
	if d.sub.s.cfg.MaxInFlight > 1 {
		tick = nil // a watcher goroutine: the delivery loop's state is not ours
	}
waiting:
	for {
		select {
		case <-msg.Acked():
			d.st.tracker.ack(cursor, index)
			return true, true
		case <-msg.Nacked():
			return true, false
		case <-ctx.Done():
			break waiting
		case <-tick:
			d.backPressure()
		}
	}
	msgCtx.end()
	select {
	case <-msg.Acked():
		d.st.tracker.ack(cursor, index)
	default:
	}
	return false, false
}

// settle waits for one in-flight message to be acked or nacked; a nacked one
// is sent again.
func (d *delivery) settle(ctx context.Context) bool {
	for {
		select {
		case r := <-d.results:
			d.relieved()
			return d.handle(ctx, r)
		case <-ctx.Done():
			d.relieved()
			return false
		case <-d.tick:
			d.backPressure()
		}
	}
}

// handle accounts for a settled message, sending a nacked one again.
func (d *delivery) handle(ctx context.Context, r ackResult) bool {
	d.inFlight--
	if !r.acked {
		return d.send(ctx, r.msg.Copy(), r.pos, r.cursor)
	}
	return true
}
