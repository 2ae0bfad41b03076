package slsmetrics

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// DefaultNamespace is the first part of every metric name unless WithNamespace changes it.
const DefaultNamespace = "watermill_sls"

// DefaultScrapeTimeout bounds the work a collector does at scrape time (SLS requests of SubscriberCollector,
// the SQL query of OutboxCollector) unless WithScrapeTimeout changes it.
const DefaultScrapeTimeout = 5 * time.Second

// Option configures a constructor of this package.
type Option func(*options)

type options struct {
	namespace     string
	constLabels   prometheus.Labels
	scrapeTimeout time.Duration
}

// WithNamespace replaces DefaultNamespace as the metric names' prefix ("" for none). Names then read
// <namespace>_<subsystem>_<name>.
func WithNamespace(ns string) Option { return func(o *options) { o.namespace = ns } }

// WithConstLabels adds labels with fixed values to every metric of the constructor, e.g. to tell apart two
// Subscribers of one logstore in one process. Keep their values free of secrets.
func WithConstLabels(l prometheus.Labels) Option { return func(o *options) { o.constLabels = l } }

// WithScrapeTimeout replaces DefaultScrapeTimeout.
func WithScrapeTimeout(d time.Duration) Option { return func(o *options) { o.scrapeTimeout = d } }

func newOptions(opts []Option) options {
	o := options{namespace: DefaultNamespace, scrapeTimeout: DefaultScrapeTimeout}
	for _, f := range opts {
		f(&o)
	}
	if o.scrapeTimeout <= 0 {
		o.scrapeTimeout = DefaultScrapeTimeout
	}
	return o
}

func (o options) counter(subsystem, name, help string, labels ...string) *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: o.namespace, Subsystem: subsystem,
		Name: name, Help: help, ConstLabels: o.constLabels}, labels)
}

func (o options) histogram(subsystem, name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
	return prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: o.namespace, Subsystem: subsystem,
		Name: name, Help: help, ConstLabels: o.constLabels, Buckets: buckets}, labels)
}

func (o options) desc(subsystem, name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(prometheus.BuildFQName(o.namespace, subsystem, name), help, labels, o.constLabels)
}

// Buckets of the histograms.
var (
	// durationBuckets: 1 ms to ~16 s.
	durationBuckets = prometheus.ExponentialBuckets(0.001, 2, 15)
	// countBuckets: 1 to 16384 (logs or LogGroups per request).
	countBuckets = prometheus.ExponentialBuckets(1, 4, 8)
	// byteBuckets: 256 B to 16 MiB.
	byteBuckets = prometheus.ExponentialBuckets(256, 4, 9)
	// batchBuckets: 1 to 1024 messages per transaction.
	batchBuckets = prometheus.ExponentialBuckets(1, 2, 11)
	// lagBuckets: 1 ms to ~131 s.
	lagBuckets = prometheus.ExponentialBuckets(0.001, 2, 18)
)

// registerVec registers c with reg, or returns the collector already registered with the same descriptors (a
// second constructor call on one registry shares the first one's metrics).
func registerVec[T prometheus.Collector](reg prometheus.Registerer, c T) (T, error) {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(T); ok {
				return existing, nil
			}
		}
		return c, err
	}
	return c, nil
}
