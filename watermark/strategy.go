package watermark

import (
	"errors"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

// DefaultIdleTimeout is the Strategy.IdleTimeout used when the field is zero.
const DefaultIdleTimeout = 30 * time.Second

// EventTimeFunc returns the event time of a message. It must be safe for
// concurrent use. An error means the message has no usable event time; the
// caller decides what to do with such a message (the Tracker does not advance).
type EventTimeFunc func(*message.Message) (time.Time, error)

// Strategy says how a stream gets its watermarks: where a message's event time
// comes from, how far out of order events may arrive, and when a shard that
// delivers nothing stops holding the others back.
type Strategy struct {
	// EventTime extracts a message's event time. Optional here: a Tracker fed
	// with Observe (event times the caller extracted) does not need it;
	// Tracker.ObserveMessage does. The slspubsub Subscriber supplies the SLS
	// log time (with nanoseconds) when it is nil.
	EventTime EventTimeFunc

	// MaxOutOfOrderness is the bound on how much older than the newest event
	// of its shard an event may be and still be on time. A shard's watermark
	// is its newest event time minus this bound. Zero (the default) means
	// events of a shard arrive in event-time order. Must not be negative.
	MaxOutOfOrderness time.Duration

	// IdleTimeout is how long a shard may deliver no event, counting only time
	// it was not paused (by alignment or back-pressure), before it is idle:
	// an idle shard no longer holds the tracker's watermark back. It becomes
	// active again with its next event (or when it is paused or resumed).
	// Default DefaultIdleTimeout; must be positive: a shard that can never be
	// idle can hold a whole group back forever.
	IdleTimeout time.Duration
}

func (s *Strategy) setDefaults() {
	if s.IdleTimeout == 0 {
		s.IdleTimeout = DefaultIdleTimeout
	}
}

// Validate reports every invalid field of the strategy, after defaults are
// applied to zero fields (on a copy: the receiver is not changed).
func (s Strategy) Validate() error {
	s.setDefaults()
	var errs []error
	if s.MaxOutOfOrderness < 0 {
		errs = append(errs, fmt.Errorf("MaxOutOfOrderness %v is negative", s.MaxOutOfOrderness))
	}
	if s.IdleTimeout < 0 {
		errs = append(errs, fmt.Errorf("IdleTimeout %v is negative", s.IdleTimeout))
	}
	if len(errs) > 0 {
		return fmt.Errorf("watermark: invalid Strategy: %w", errors.Join(errs...))
	}
	return nil
}
