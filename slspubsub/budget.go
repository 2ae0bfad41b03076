package slspubsub

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
)

// budget is a weighted semaphore over bytes: the Publisher's bound on data
// accepted but not yet written (PublisherConfig.MaxBufferBytes).
//
// Waiters are served first come, first served, so that a large message is
// not starved by a stream of small ones; a caller arriving while others
// wait queues behind them. A request for more than the whole budget would
// wait forever: callers pass clamp(n), so that such a request is admitted
// alone once everything else has been released, and release what they
// acquired. After close, every waiter and every later acquire fails with
// the close error.
//
// It is golang.org/x/sync/semaphore's design, plus close, written out to
// keep the module's dependencies as they are, with a lock-free fast path:
// while nobody waits, acquire and release are one atomic operation, since
// every Publish call passes through here.
type budget struct {
	size    int64
	used    atomic.Int64
	waiting atomic.Int32 // len(waiters), read without mu by the fast paths
	closed  atomic.Bool

	mu      sync.Mutex
	waiters []*budgetWaiter // FIFO
	err     error           // set by close
}

type budgetWaiter struct {
	n     int64
	err   error         // set (before ready is closed) when the budget closes
	ready chan struct{} // closed when the waiter holds its bytes, or the budget closed
}

func newBudget(size int) *budget { return &budget{size: int64(size)} }

// clamp caps n at the budget's size. Acquire only clamped amounts.
func (b *budget) clamp(n int) int { return int(min(int64(n), b.size)) }

// tryAcquire takes n bytes if they are free and nobody is waiting; it never
// blocks.
func (b *budget) tryAcquire(n int) bool {
	if b.waiting.Load() != 0 || b.closed.Load() {
		return false
	}
	return b.take(int64(n))
}

// take adds n to the bytes in use if they fit.
func (b *budget) take(n int64) bool {
	for {
		u := b.used.Load()
		if u+n > b.size {
			return false
		}
		if b.used.CompareAndSwap(u, u+n) {
			return true
		}
	}
}

// acquire takes n bytes, waiting for them as long as ctx allows. It fails
// with ctx.Err() when ctx ends first, and with the close error when the
// budget closes first; in both cases it holds nothing.
func (b *budget) acquire(ctx context.Context, n int) error {
	if b.tryAcquire(n) {
		return nil
	}
	b.mu.Lock()
	if b.err != nil {
		err := b.err
		b.mu.Unlock()
		return err
	}
	// Count ourselves as waiting before the last look at the free bytes: a
	// release either frees them before that look, or sees us waiting and
	// serves us.
	b.waiting.Add(1)
	if len(b.waiters) == 0 && b.take(int64(n)) {
		b.waiting.Add(-1)
		b.mu.Unlock()
		return nil
	}
	w := &budgetWaiter{n: int64(n), ready: make(chan struct{})}
	b.waiters = append(b.waiters, w)
	b.mu.Unlock()

	select {
	case <-w.ready:
		return w.err
	case <-ctx.Done():
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	select {
	case <-w.ready:
		// Served or closed while ctx ended: give the bytes back.
		if w.err == nil {
			b.used.Add(-w.n)
			b.notify()
		}
	default:
		i := slices.Index(b.waiters, w)
		b.waiters = slices.Delete(b.waiters, i, i+1)
		b.waiting.Add(-1)
		if i == 0 {
			// The waiter behind may fit now that the head is gone.
			b.notify()
		}
	}
	return ctx.Err()
}

// release gives back n bytes taken with tryAcquire or acquire.
func (b *budget) release(n int) {
	if n == 0 {
		return
	}
	if b.used.Add(-int64(n)) < 0 {
		panic("slspubsub: budget released more than it acquired")
	}
	if b.waiting.Load() != 0 {
		b.mu.Lock()
		b.notify()
		b.mu.Unlock()
	}
}

// notify serves waiters in order while the head fits. Callers hold mu.
func (b *budget) notify() {
	served := 0
	for _, w := range b.waiters {
		if !b.take(w.n) {
			break
		}
		close(w.ready)
		served++
	}
	if served > 0 {
		n := copy(b.waiters, b.waiters[served:])
		clear(b.waiters[n:])
		b.waiters = b.waiters[:n]
		b.waiting.Add(-int32(served))
	}
}

// close fails every waiter, and every later acquire, with err. Bytes still
// held are released as usual.
func (b *budget) close(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil {
		return
	}
	b.err = err
	b.closed.Store(true)
	for _, w := range b.waiters {
		w.err = err
		close(w.ready)
	}
	b.waiting.Add(-int32(len(b.waiters)))
	clear(b.waiters)
	b.waiters = nil
}

// inUse reports the bytes currently held.
func (b *budget) inUse() int { return int(b.used.Load()) }
