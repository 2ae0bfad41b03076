package slsmetrics

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/watermill-sls/watermill-sls/outbox"
)

const outboxSubsystem = "outbox"

// RelayMetrics is an outbox.Metrics that records what Relays do in Prometheus metrics (see the package
// documentation for the names). Set it as outbox.RelayConfig.Metrics; one value may serve several Relays.
// Safe for concurrent use. The table's backlog (pending and parked rows, the oldest pending row's age) comes
// from an OutboxCollector.
type RelayMetrics struct {
	relayed  *prometheus.CounterVec
	lag      *prometheus.HistogramVec
	failures *prometheus.CounterVec
	parked   *prometheus.CounterVec
	errors   *prometheus.CounterVec
}

var _ outbox.Metrics = (*RelayMetrics)(nil)

// NewRelayMetrics creates the Relays' metrics and registers them with reg. Called again with the same registry
// and options, it returns metrics that share the registered ones.
func NewRelayMetrics(reg prometheus.Registerer, opts ...Option) (*RelayMetrics, error) {
	o := newOptions(opts)
	m := &RelayMetrics{
		relayed: o.counter(outboxSubsystem, "relayed_total",
			"Outbox rows published and marked delivered.", "topic"),
		lag: o.histogram(outboxSubsystem, "relay_lag_seconds",
			"Time from a row's insert (its transaction's clock) to its delivery mark, in seconds.", lagBuckets, "topic"),
		failures: o.counter(outboxSubsystem, "publish_failures_total",
			"Failed publish attempts of outbox rows.", "topic"),
		parked: o.counter(outboxSubsystem, "parked_total",
			"Outbox rows parked after MaxAttempts failed attempts.", "topic"),
		errors: o.counter(outboxSubsystem, "relay_errors_total",
			"Relay-level errors the relay retries by itself (database, LISTEN connection, recovery)."),
	}
	var errs []error
	var err error
	if m.relayed, err = registerVec(reg, m.relayed); err != nil {
		errs = append(errs, err)
	}
	if m.lag, err = registerVec(reg, m.lag); err != nil {
		errs = append(errs, err)
	}
	if m.failures, err = registerVec(reg, m.failures); err != nil {
		errs = append(errs, err)
	}
	if m.parked, err = registerVec(reg, m.parked); err != nil {
		errs = append(errs, err)
	}
	if m.errors, err = registerVec(reg, m.errors); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return m, nil
}

// Relayed records a delivered row.
func (m *RelayMetrics) Relayed(topic string, lag time.Duration) {
	m.relayed.WithLabelValues(topic).Inc()
	m.lag.WithLabelValues(topic).Observe(lag.Seconds())
}

// Failed records a failed attempt.
func (m *RelayMetrics) Failed(topic string, _ int, _ error) { m.failures.WithLabelValues(topic).Inc() }

// Parked records a parked row.
func (m *RelayMetrics) Parked(topic string, _ int64, _ error) { m.parked.WithLabelValues(topic).Inc() }

// Error records a relay-level error.
func (m *RelayMetrics) Error(error) { m.errors.WithLabelValues().Inc() }

// OutboxCollector is a prometheus.Collector that reads an outbox table's backlog at scrape time with one SQL
// query (bounded by the scrape timeout): per topic, the pending rows (not delivered, not parked), the parked
// rows, and the age of the oldest pending row (the relay lag of the backlog: 0 when nothing is pending). A
// failed query yields no backlog series in that scrape and counts in scrape_errors_total. The query reads the
// undelivered rows only (its condition is the one of the table's partial indexes); check its plan where
// Retention keeps many delivered rows.
type OutboxCollector struct {
	db      outbox.Execer
	table   outbox.Table
	timeout time.Duration

	pending, parked, oldest *prometheus.Desc
	scrapeErrors            *prometheus.CounterVec
}

var _ prometheus.Collector = (*OutboxCollector)(nil)

// NewOutboxCollector returns a collector of table, queried through db (a *pgxpool.Pool), and registers it with
// reg.
func NewOutboxCollector(reg prometheus.Registerer, db outbox.Execer, table outbox.Table, opts ...Option) (*OutboxCollector, error) {
	if db == nil {
		return nil, errors.New("slsmetrics: NewOutboxCollector: nil db")
	}
	if err := table.Validate(); err != nil {
		return nil, err
	}
	o := newOptions(opts)
	c := &OutboxCollector{
		db: db, table: table, timeout: o.scrapeTimeout,
		pending: o.desc(outboxSubsystem, "pending_rows",
			"Outbox rows waiting to be relayed (not delivered, not parked).", "table", "topic"),
		parked: o.desc(outboxSubsystem, "parked_rows",
			"Outbox rows parked after MaxAttempts failures, waiting for Requeue.", "table", "topic"),
		oldest: o.desc(outboxSubsystem, "oldest_pending_age_seconds",
			"Age of the oldest pending outbox row in seconds (database clock): the relay lag of the backlog.", "table", "topic"),
		scrapeErrors: o.counter(outboxSubsystem, "scrape_errors_total",
			"Scrapes whose backlog query failed.", "table"),
	}
	if err := reg.Register(c); err != nil {
		return nil, err
	}
	return c, nil
}

// Describe implements prometheus.Collector.
func (c *OutboxCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.pending
	ch <- c.parked
	ch <- c.oldest
	c.scrapeErrors.Describe(ch)
}

// Collect implements prometheus.Collector.
func (c *OutboxCollector) Collect(ch chan<- prometheus.Metric) {
	name := c.table.String()
	if err := c.collect(ch, name); err != nil {
		c.scrapeErrors.WithLabelValues(name).Inc()
	}
	c.scrapeErrors.Collect(ch)
}

func (c *OutboxCollector) collect(ch chan<- prometheus.Metric, name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	rows, err := c.db.Query(ctx, `SELECT topic,
		count(*) FILTER (WHERE parked_at IS NULL),
		count(*) FILTER (WHERE parked_at IS NOT NULL),
		coalesce(extract(epoch FROM now() - min(created_at) FILTER (WHERE parked_at IS NULL)), 0)::float8
		FROM `+c.ident()+` WHERE delivered_at IS NULL GROUP BY topic`)
	if err != nil {
		return err
	}
	type backlog struct {
		topic           string
		pending, parked int64
		oldest          float64
	}
	list, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (backlog, error) {
		var b backlog
		err := r.Scan(&b.topic, &b.pending, &b.parked, &b.oldest)
		return b, err
	})
	if err != nil {
		return err
	}
	for _, b := range list {
		ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, float64(b.pending), name, b.topic)
		ch <- prometheus.MustNewConstMetric(c.parked, prometheus.GaugeValue, float64(b.parked), name, b.topic)
		ch <- prometheus.MustNewConstMetric(c.oldest, prometheus.GaugeValue, max(b.oldest, 0), name, b.topic)
	}
	return nil
}

// ident is the table's quoted, schema-qualified identifier.
func (c *OutboxCollector) ident() string {
	name := c.table.Name
	if name == "" {
		name = outbox.DefaultTableName
	}
	if c.table.Schema == "" {
		return pgx.Identifier{name}.Sanitize()
	}
	return pgx.Identifier{c.table.Schema, name}.Sanitize()
}
