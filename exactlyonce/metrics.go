package exactlyonce

import "time"

// Metrics receives the outcome of every transaction of a MessageHandler or BatchHandler, for monitoring
// (slsmetrics.NewHandlerMetrics implements it with Prometheus). It is called after the transaction ended
// (committed or rolled back), from the handler's goroutines, concurrently: it must be fast, must not block and
// must be safe for concurrent use. The default (HandlerConfig.Metrics nil) is NopMetrics.
type Metrics interface {
	Transaction(TransactionStats)
}

// TransactionStats describes one transaction of a handler.
type TransactionStats struct {
	// Consumer is HandlerConfig.Consumer.
	Consumer string
	// Messages is the number of messages the transaction handled (1 for a MessageHandler; the batch size for a
	// BatchHandler): Applied + Skipped + Failed.
	Messages int
	// Applied is the number of messages whose HandlerFunc ran and whose effects and position committed; 0 when
	// the transaction did not commit.
	Applied int
	// Skipped is the number of messages acked without running the HandlerFunc because their position was not
	// after the stored one (a redelivery of a message applied before, or a duplicate within the batch).
	Skipped int
	// Failed is the number of messages answered with an error (their HandlerFunc failed, their partition is
	// blocked by an earlier failure, or the whole transaction failed).
	Failed int
	// Duration is the time from BEGIN to the end of COMMIT or rollback, including the HandlerFunc calls (for a
	// BatchHandler, including a rerun with savepoints after a message failed).
	Duration time.Duration
	// Err is nil when the transaction committed, else why it did not.
	Err error
}

// NopMetrics discards everything.
type NopMetrics struct{}

// Transaction does nothing.
func (NopMetrics) Transaction(TransactionStats) {}

func (c HandlerConfig) metrics() Metrics {
	if c.Metrics == nil {
		return NopMetrics{}
	}
	return c.Metrics
}

// observer starts timing a MessageHandler transaction and returns the function that reports it (deferred by
// Handle: skipped and err are read when it runs).
func (h *MessageHandler) observer(skipped *bool, err *error) func() {
	start := time.Now()
	return func() { h.observe(start, *skipped, *err) }
}

func (h *MessageHandler) observe(start time.Time, skipped bool, err error) {
	st := TransactionStats{Consumer: h.cfg.Consumer, Messages: 1, Duration: time.Since(start), Err: err}
	switch {
	case err != nil:
		st.Failed = 1
	case skipped:
		st.Skipped = 1
	default:
		st.Applied = 1
	}
	h.cfg.metrics().Transaction(st)
}

// observe reports a BatchHandler transaction; results is nil when it failed as a whole (err).
func (h *BatchHandler) observe(start time.Time, batch []*batchRequest, results map[*batchRequest]error, err error) {
	st := TransactionStats{Consumer: h.cfg.Consumer, Messages: len(batch), Duration: time.Since(start), Err: err}
	for _, r := range batch {
		switch {
		case err != nil || results[r] != nil:
			st.Failed++
		case r.skipped:
			st.Skipped++
		default:
			st.Applied++
		}
	}
	h.cfg.metrics().Transaction(st)
}
