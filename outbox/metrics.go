package outbox

import "time"

// Metrics receives what a Relay does. Methods are called from the relay's goroutines, concurrently for the
// rows of one batch, and must be fast and safe for concurrent use (increment a counter, observe a histogram).
type Metrics interface {
	// Relayed is called for each row published and marked delivered. lag is the time from the row's insert
	// (its transaction's clock) to the mark.
	Relayed(topic string, lag time.Duration)
	// Failed is called for each failed publish attempt of a row; attempt counts from 1.
	Failed(topic string, attempt int, err error)
	// Parked is called when a row reaches MaxAttempts and is parked.
	Parked(topic string, id int64, err error)
	// Error is called for a relay-level error the relay retries by itself: a database error, a lost LISTEN
	// connection, a failed recovery. The relay also logs it.
	Error(err error)
}

// NopMetrics discards everything.
type NopMetrics struct{}

// Relayed does nothing.
func (NopMetrics) Relayed(string, time.Duration) {}

// Failed does nothing.
func (NopMetrics) Failed(string, int, error) {}

// Parked does nothing.
func (NopMetrics) Parked(string, int64, error) {}

// Error does nothing.
func (NopMetrics) Error(error) {}
