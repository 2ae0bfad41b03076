package slspubsub

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
)

// ackResult is how a delivered message was settled.
type ackResult struct {
	msg   *message.Message
	pos   Position
	acked bool
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
// its end under drain.
func (d *delivery) deliverBatch(ctx, drain context.Context, b fetchedBatch) bool {
	s := d.sub.s
	shardText := strconv.Itoa(d.st.id)
	for gi := range b.groups {
		g := &b.groups[gi]
		cursor := b.first + int64(gi)
		pos := Position{Shard: d.st.id, Cursor: cursorFromInt64(cursor)}
		shared := newGroupShared(g, shardText, pos.Cursor)
		if ctx.Err() != nil {
			return false
		}
		for li := range g.Logs {
			if gi == 0 && li < b.skip {
				continue
			}
			pos.Index = li
			in := ReceivedLog{Project: s.cfg.Project, Logstore: d.sub.topic, Group: g, Log: &g.Logs[li], Position: pos, shared: shared}
			msg, err := s.cfg.Unmarshaler.Unmarshal(in)
			if err == nil && msg == nil {
				err = fmt.Errorf("slspubsub: %T returned no message for position %s", s.cfg.Unmarshaler, pos)
			}
			if err != nil {
				fields := d.sub.fields(d.st).Add(watermill.LogFields{"position": pos.String()})
				if s.cfg.OnUnmarshalError == UnmarshalErrorFail {
					s.fail("SLS log cannot be unmarshaled; shard stopped", err, fields)
					d.failed = true
					return false
				}
				s.logger.Error("SLS log cannot be unmarshaled; delivered raw", err, fields)
				msg = unmarshalForeign(in)
				msg.Metadata.Set(MetadataUnmarshalError, err.Error())
			}
			if d.wm != nil {
				d.wm.observe(d, msg, in.Log, pos)
			}
			if !d.send(drain, msg, pos) {
				return false
			}
		}
	}
	return true
}

// send delivers msg once fewer than MaxInFlight messages are in flight.
// With MaxInFlight 1 it waits for the ack itself (no goroutine per message)
// and sends a nacked message again at once; with more, a watcher goroutine
// per message reports to the delivery loop.
func (d *delivery) send(ctx context.Context, msg *message.Message, pos Position) bool {
	maxInFlight := d.sub.s.cfg.MaxInFlight
	for d.inFlight >= maxInFlight {
		if !d.settle(ctx) {
			return false
		}
	}
	for {
		// The message's context ends when it is acked or nacked, as in
		// watermill-kafka, or when the subscription ends.
		msgCtx := newMsgContext(ctx)
		cancel := msgCtx.end
		msg.SetContext(msgCtx)
		if d.wm != nil {
			d.wm.stamp(msg)
		}
	sending:
		for {
			select {
			case d.sub.out <- msg:
				break sending
			case <-ctx.Done():
				d.relieved()
				cancel()
				return false
			case <-d.tick:
				d.backPressure()
			}
		}
		d.relieved()
		if maxInFlight > 1 {
			d.inFlight++
			d.watchers.Add(1)
			go func() {
				defer d.watchers.Done()
				defer cancel()
				if settled, acked := d.await(ctx, msg, msgCtx, pos); settled {
					d.results <- ackResult{msg: msg, pos: pos, acked: acked}
				}
			}()
			return true
		}
		settled, acked := d.await(ctx, msg, msgCtx, pos)
		cancel()
		if !settled {
			return false
		}
		if acked {
			return true
		}
		msg = msg.Copy()
	}
}

// await waits until msg is acked or nacked (settled) or ctx (the drain
// context) ends. Acks are tracked here, so that none is lost when the
// shard's reading ends right after it.
func (d *delivery) await(ctx context.Context, msg *message.Message, msgCtx *msgContext, pos Position) (settled, acked bool) {
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
			d.ack(pos)
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
		d.ack(pos)
	default:
	}
	return false, false
}

func (d *delivery) ack(pos Position) {
	v, _ := pos.CursorValue()
	d.st.tracker.ack(v, pos.Index)
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
		return d.send(ctx, r.msg.Copy(), r.pos)
	}
	return true
}
