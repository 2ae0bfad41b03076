package slsmetrics

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/watermill-sls/watermill-sls/exactlyonce"
)

// KafkaSinkCollector is a prometheus.Collector that reads an exactlyonce.KafkaSink's counters
// (KafkaSink.Stats) at scrape time: its Kafka transactions, committed and aborted, and the consumed messages
// they committed. The sink does not count skipped redeliveries, so neither does this collector. Register one
// per sink, each with its own name.
type KafkaSinkCollector struct {
	sink                   *exactlyonce.KafkaSink
	name                   string
	transactions, messages *prometheus.Desc
}

var _ prometheus.Collector = (*KafkaSinkCollector)(nil)

// NewKafkaSinkCollector returns a collector of sink, whose series carry the label sink=name (e.g. its
// TransactionalID), and registers it with reg.
func NewKafkaSinkCollector(reg prometheus.Registerer, sink *exactlyonce.KafkaSink, name string, opts ...Option) (*KafkaSinkCollector, error) {
	if sink == nil {
		return nil, errors.New("slsmetrics: NewKafkaSinkCollector: nil sink")
	}
	o := newOptions(opts)
	c := &KafkaSinkCollector{sink: sink, name: name,
		transactions: o.desc(exactlyonceSubsystem, "kafka_sink_transactions_total",
			"Kafka transactions of an exactly-once KafkaSink by outcome: committed or aborted.", "sink", "outcome"),
		messages: o.desc(exactlyonceSubsystem, "kafka_sink_messages_total",
			"Consumed messages whose outputs and positions a KafkaSink committed (skipped redeliveries not included).", "sink"),
	}
	if err := reg.Register(c); err != nil {
		return nil, err
	}
	return c, nil
}

// Describe implements prometheus.Collector.
func (c *KafkaSinkCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.transactions
	ch <- c.messages
}

// Collect implements prometheus.Collector.
func (c *KafkaSinkCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.sink.Stats()
	ch <- prometheus.MustNewConstMetric(c.transactions, prometheus.CounterValue, float64(st.Transactions), c.name, "committed")
	ch <- prometheus.MustNewConstMetric(c.transactions, prometheus.CounterValue, float64(st.Aborted), c.name, "aborted")
	ch <- prometheus.MustNewConstMetric(c.messages, prometheus.CounterValue, float64(st.Messages), c.name)
}
