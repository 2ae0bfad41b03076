package slsmetrics

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/watermill-sls/watermill-sls/exactlyonce"
)

const exactlyonceSubsystem = "exactlyonce"

// HandlerMetrics is an exactlyonce.Metrics that records the transactions of MessageHandlers and
// BatchHandlers in Prometheus metrics (see the package documentation for the names). Set it as
// exactlyonce.HandlerConfig.Metrics (BatchConfig embeds it); one value may serve several handlers (the
// consumer is a label). Safe for concurrent use.
type HandlerMetrics struct {
	transactions *prometheus.CounterVec
	messages     *prometheus.CounterVec
	duration     *prometheus.HistogramVec
	batch        *prometheus.HistogramVec
}

var _ exactlyonce.Metrics = (*HandlerMetrics)(nil)

// NewHandlerMetrics creates the handlers' metrics and registers them with reg. Called again with the same
// registry and options, it returns metrics that share the registered ones.
func NewHandlerMetrics(reg prometheus.Registerer, opts ...Option) (*HandlerMetrics, error) {
	o := newOptions(opts)
	m := &HandlerMetrics{
		transactions: o.counter(exactlyonceSubsystem, "transactions_total",
			"Handler transactions by outcome: committed or rolled_back.", "consumer", "outcome"),
		messages: o.counter(exactlyonceSubsystem, "messages_total",
			"Messages handled, by result: applied (effects and position committed), skipped (already applied: a duplicate), failed.",
			"consumer", "result"),
		duration: o.histogram(exactlyonceSubsystem, "transaction_duration_seconds",
			"Time of one handler transaction, BEGIN to COMMIT or rollback, in seconds.", durationBuckets, "consumer"),
		batch: o.histogram(exactlyonceSubsystem, "transaction_messages",
			"Messages per handler transaction (the batch size of a BatchHandler).", batchBuckets, "consumer"),
	}
	var errs []error
	var err error
	if m.transactions, err = registerVec(reg, m.transactions); err != nil {
		errs = append(errs, err)
	}
	if m.messages, err = registerVec(reg, m.messages); err != nil {
		errs = append(errs, err)
	}
	if m.duration, err = registerVec(reg, m.duration); err != nil {
		errs = append(errs, err)
	}
	if m.batch, err = registerVec(reg, m.batch); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return m, nil
}

// Transaction records one transaction.
func (m *HandlerMetrics) Transaction(s exactlyonce.TransactionStats) {
	outcome := "committed"
	if s.Err != nil {
		outcome = "rolled_back"
	}
	m.transactions.WithLabelValues(s.Consumer, outcome).Inc()
	if s.Applied > 0 {
		m.messages.WithLabelValues(s.Consumer, "applied").Add(float64(s.Applied))
	}
	if s.Skipped > 0 {
		m.messages.WithLabelValues(s.Consumer, "skipped").Add(float64(s.Skipped))
	}
	if s.Failed > 0 {
		m.messages.WithLabelValues(s.Consumer, "failed").Add(float64(s.Failed))
	}
	m.duration.WithLabelValues(s.Consumer).Observe(s.Duration.Seconds())
	m.batch.WithLabelValues(s.Consumer).Observe(float64(s.Messages))
}
