package slsmetrics

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/watermill-sls/watermill-sls/slspubsub"
)

const publisherSubsystem = "publisher"

// PublisherMetrics is a slspubsub.PublisherMetrics that records PutLogs requests in Prometheus metrics (see
// the package documentation for the names). Set it as slspubsub.PublisherConfig.Metrics; one value may serve
// several Publishers (the logstore is a label). Safe for concurrent use.
type PublisherMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	logs     *prometheus.CounterVec
	batchLog *prometheus.HistogramVec
	batchB   *prometheus.HistogramVec
	retries  *prometheus.CounterVec
}

var _ slspubsub.PublisherMetrics = (*PublisherMetrics)(nil)

// NewPublisherMetrics creates the Publisher's metrics and registers them with reg. Called again with the same
// registry and options, it returns metrics that share the registered ones.
func NewPublisherMetrics(reg prometheus.Registerer, opts ...Option) (*PublisherMetrics, error) {
	o := newOptions(opts)
	m := &PublisherMetrics{
		requests: o.counter(publisherSubsystem, "put_logs_requests_total",
			"PutLogs attempts by outcome: code is ok, or the SLS error code or failure class.", "logstore", "code"),
		duration: o.histogram(publisherSubsystem, "put_logs_duration_seconds",
			"Time of one PutLogs attempt, from request to answer, in seconds.", durationBuckets, "logstore"),
		logs: o.counter(publisherSubsystem, "logs_total",
			"Logs in PutLogs requests SLS answered 200.", "logstore"),
		batchLog: o.histogram(publisherSubsystem, "batch_logs",
			"Logs per PutLogs request (first attempt of each batch).", countBuckets, "logstore"),
		batchB: o.histogram(publisherSubsystem, "batch_bytes",
			"Encoded LogGroup bytes per PutLogs request before compression (first attempt of each batch).", byteBuckets, "logstore"),
		retries: o.counter(publisherSubsystem, "retries_total",
			"PutLogs attempts that failed and are retried after a backoff, by the failed attempt's error code.", "logstore", "code"),
	}
	var errs []error
	var err error
	if m.requests, err = registerVec(reg, m.requests); err != nil {
		errs = append(errs, err)
	}
	if m.duration, err = registerVec(reg, m.duration); err != nil {
		errs = append(errs, err)
	}
	if m.logs, err = registerVec(reg, m.logs); err != nil {
		errs = append(errs, err)
	}
	if m.batchLog, err = registerVec(reg, m.batchLog); err != nil {
		errs = append(errs, err)
	}
	if m.batchB, err = registerVec(reg, m.batchB); err != nil {
		errs = append(errs, err)
	}
	if m.retries, err = registerVec(reg, m.retries); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return m, nil
}

// PutLogs records one attempt.
func (m *PublisherMetrics) PutLogs(s slspubsub.PutLogsStats) {
	m.requests.WithLabelValues(s.Logstore, slspubsub.ErrorCode(s.Err)).Inc()
	m.duration.WithLabelValues(s.Logstore).Observe(s.Duration.Seconds())
	if s.Attempt <= 1 {
		m.batchLog.WithLabelValues(s.Logstore).Observe(float64(s.Logs))
		m.batchB.WithLabelValues(s.Logstore).Observe(float64(s.Bytes))
	}
	if s.Err == nil {
		m.logs.WithLabelValues(s.Logstore).Add(float64(s.Logs))
	}
}

// PutLogsRetry records a retry.
func (m *PublisherMetrics) PutLogsRetry(logstore string, _ int, err error) {
	m.retries.WithLabelValues(logstore, slspubsub.ErrorCode(err)).Inc()
}
