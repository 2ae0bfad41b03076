package slspubsub

import (
	"context"
	"sync"
)

// msgContext is the Context of a delivered message: its values and deadline
// are those of the subscription's context, and it is done once the delivery
// loop ends it (when the message is acked or nacked, or the subscription
// ends).
//
// It replaces a context.WithCancel per message, which registers every
// message with the parent context and was a tenth of the delivery cost. The
// done channel is made only when somebody asks for it.
type msgContext struct {
	context.Context // the subscription's

	mu     sync.Mutex
	done   chan struct{} // nil until Done is called
	err    error         // set by end
	afters []*afterFunc  // registered by AfterFunc, run by end
}

type afterFunc struct {
	f       func()
	stopped bool // stopped, or started by end
}

// closedChan is the Done channel of a context that ended before anybody
// asked for it.
var closedChan = func() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}()

func newMsgContext(parent context.Context) *msgContext { return &msgContext{Context: parent} }

func (c *msgContext) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil {
		if c.err != nil {
			c.done = closedChan
		} else {
			c.done = make(chan struct{})
		}
	}
	return c.done
}

func (c *msgContext) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// end makes the context done: with the parent's error when the parent
// ended, else with context.Canceled. Later calls do nothing.
func (c *msgContext) end() {
	err := c.Context.Err()
	if err == nil {
		err = context.Canceled
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return
	}
	c.err = err
	if c.done != nil {
		close(c.done)
	}
	for _, a := range c.afters {
		if !a.stopped {
			a.stopped = true
			go a.f()
		}
	}
	c.afters = nil
}

// AfterFunc arranges for f to run in its own goroutine once c is done, as
// context.AfterFunc does. Implementing it spares contexts derived from a
// message's context (context.WithCancel, WithTimeout) a goroutine each to
// watch it.
func (c *msgContext) AfterFunc(f func()) (stop func() bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	a := &afterFunc{f: f}
	if c.err != nil {
		a.stopped = true
		go f()
	} else {
		c.afters = append(c.afters, a)
	}
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		if a.stopped {
			return false
		}
		a.stopped = true
		return true
	}
}

func (c *msgContext) String() string { return "slspubsub message context" }
