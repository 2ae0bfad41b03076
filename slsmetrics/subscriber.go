package slsmetrics

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/watermill-sls/watermill-sls/slspubsub"
	"github.com/watermill-sls/watermill-sls/watermark"
)

const subscriberSubsystem = "subscriber"

// SubscriberMetrics is a slspubsub.SubscriberMetrics that records the fetch loops' PullLogs requests and
// alignment waits in Prometheus metrics (see the package documentation for the names). Set it as
// slspubsub.SubscriberConfig.Metrics; one value may serve several Subscribers. Safe for concurrent use. The
// values read at scrape time (lag, watermarks, pauses) come from a SubscriberCollector.
type SubscriberMetrics struct {
	requests  *prometheus.CounterVec
	duration  *prometheus.HistogramVec
	groups    *prometheus.HistogramVec
	bytes     *prometheus.HistogramVec
	logsFetch *prometheus.HistogramVec
	logs      *prometheus.CounterVec
	retries   *prometheus.CounterVec
	alignWait *prometheus.CounterVec
}

var _ slspubsub.SubscriberMetrics = (*SubscriberMetrics)(nil)

// NewSubscriberMetrics creates the fetch loops' metrics and registers them with reg. Called again with the
// same registry and options, it returns metrics that share the registered ones.
func NewSubscriberMetrics(reg prometheus.Registerer, opts ...Option) (*SubscriberMetrics, error) {
	o := newOptions(opts)
	m := &SubscriberMetrics{
		requests: o.counter(subscriberSubsystem, "pull_logs_requests_total",
			"PullLogs requests by outcome: code is ok, or the SLS error code or failure class.", "logstore", "code"),
		duration: o.histogram(subscriberSubsystem, "pull_logs_duration_seconds",
			"Time of one PullLogs request, from request to the end of its answer, in seconds.", durationBuckets, "logstore"),
		groups: o.histogram(subscriberSubsystem, "fetch_log_groups",
			"LogGroups per successful PullLogs answer (0 at the end of a shard).", countBuckets, "logstore"),
		bytes: o.histogram(subscriberSubsystem, "fetch_bytes",
			"Decompressed bytes per non-empty PullLogs answer.", byteBuckets, "logstore"),
		logsFetch: o.histogram(subscriberSubsystem, "fetch_logs",
			"Logs per non-empty PullLogs answer.", countBuckets, "logstore"),
		logs: o.counter(subscriberSubsystem, "logs_fetched_total",
			"Logs fetched from a shard (delivered or about to be; a restart fetches unacked logs again).", "logstore", "shard"),
		retries: o.counter(subscriberSubsystem, "retries_total",
			"Failed PullLogs requests the fetch loop retries, by error code.", "logstore", "code"),
		alignWait: o.counter(subscriberSubsystem, "alignment_wait_seconds_total",
			"Time a shard waited for watermark alignment before fetching, in seconds.", "logstore", "shard"),
	}
	var errs []error
	reg1 := func(v *prometheus.CounterVec) *prometheus.CounterVec {
		r, err := registerVec(reg, v)
		errs = append(errs, err)
		return r
	}
	reg2 := func(v *prometheus.HistogramVec) *prometheus.HistogramVec {
		r, err := registerVec(reg, v)
		errs = append(errs, err)
		return r
	}
	m.requests, m.duration, m.groups, m.bytes = reg1(m.requests), reg2(m.duration), reg2(m.groups), reg2(m.bytes)
	m.logsFetch, m.logs, m.retries, m.alignWait = reg2(m.logsFetch), reg1(m.logs), reg1(m.retries), reg1(m.alignWait)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return m, nil
}

// PullLogs records one request.
func (m *SubscriberMetrics) PullLogs(s slspubsub.PullLogsStats) {
	m.requests.WithLabelValues(s.Logstore, slspubsub.ErrorCode(s.Err)).Inc()
	m.duration.WithLabelValues(s.Logstore).Observe(s.Duration.Seconds())
	if s.Err != nil {
		if s.Retried {
			m.retries.WithLabelValues(s.Logstore, slspubsub.ErrorCode(s.Err)).Inc()
		}
		return
	}
	m.groups.WithLabelValues(s.Logstore).Observe(float64(s.LogGroups))
	if s.LogGroups > 0 {
		m.bytes.WithLabelValues(s.Logstore).Observe(float64(s.RawBytes))
	}
}

// LogsFetched records a decoded answer's logs.
func (m *SubscriberMetrics) LogsFetched(logstore string, shard, logs int) {
	m.logsFetch.WithLabelValues(logstore).Observe(float64(logs))
	m.logs.WithLabelValues(logstore, strconv.Itoa(shard)).Add(float64(logs))
}

// AlignmentWait records a wait for alignment.
func (m *SubscriberMetrics) AlignmentWait(logstore string, shard int, d time.Duration) {
	m.alignWait.WithLabelValues(logstore, strconv.Itoa(shard)).Add(d.Seconds())
}

// SubscriberCollector is a prometheus.Collector that reads a Subscriber's state at scrape time: per shard its
// lag (Subscriber.ShardLag: SLS requests, bounded by the scrape timeout), watermark and state
// (Subscriber.ShardWatermarkStatus), and its alignment counters (Subscriber.AlignmentStats), for the logstores
// given. A shard whose lag could not be measured in a scrape has no lag series in that scrape, and
// lag_errors_total counts the failure. Register one per Subscriber (WithConstLabels tells apart two
// Subscribers of one logstore in one registry).
type SubscriberCollector struct {
	sub       *slspubsub.Subscriber
	logstores []string
	timeout   time.Duration

	lagGroups, lagSeconds, watermark, state, blocked, blocks *prometheus.Desc
	lagErrors                                                *prometheus.CounterVec
}

var _ prometheus.Collector = (*SubscriberCollector)(nil)

// shardStates are the values of the state label of shard_state.
var shardStates = []watermark.ShardState{watermark.ShardActive, watermark.ShardPending, watermark.ShardPaused,
	watermark.ShardIdle, watermark.ShardFinished}

// NewSubscriberCollector returns a collector of sub's subscriptions to logstores and registers it with reg.
func NewSubscriberCollector(reg prometheus.Registerer, sub *slspubsub.Subscriber, logstores []string, opts ...Option) (*SubscriberCollector, error) {
	if sub == nil || len(logstores) == 0 {
		return nil, errors.New("slsmetrics: NewSubscriberCollector: nil Subscriber or no logstore")
	}
	o := newOptions(opts)
	c := &SubscriberCollector{
		sub: sub, logstores: append([]string(nil), logstores...), timeout: o.scrapeTimeout,
		lagGroups: o.desc(subscriberSubsystem, "shard_lag_log_groups",
			"LogGroups written to the shard and not yet fully acked (SLS cursors count LogGroups, not logs).", "logstore", "shard"),
		lagSeconds: o.desc(subscriberSubsystem, "shard_lag_seconds",
			"Now minus the SLS receive time (cursor time) of the shard's first LogGroup not fully acked; 0 when caught up.", "logstore", "shard"),
		watermark: o.desc(subscriberSubsystem, "shard_watermark_seconds",
			"The shard's event-time watermark as a unix time in seconds (shards that have one).", "logstore", "shard"),
		state: o.desc(subscriberSubsystem, "shard_state",
			"1 for the shard's watermark state (active, pending, paused by alignment or back-pressure, idle, finished), 0 for the others.", "logstore", "shard", "state"),
		blocked: o.desc(subscriberSubsystem, "alignment_blocked_shards",
			"Shards held back by watermark alignment now.", "logstore"),
		blocks: o.desc(subscriberSubsystem, "alignment_blocks_total",
			"Fetches that had to wait for watermark alignment.", "logstore"),
		lagErrors: o.counter(subscriberSubsystem, "lag_errors_total",
			"Scrapes in which the lag of some shards could not be measured.", "logstore"),
	}
	if err := reg.Register(c); err != nil {
		return nil, err
	}
	return c, nil
}

// Describe implements prometheus.Collector.
func (c *SubscriberCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.lagGroups, c.lagSeconds, c.watermark, c.state, c.blocked, c.blocks} {
		ch <- d
	}
	c.lagErrors.Describe(ch)
}

// Collect implements prometheus.Collector.
func (c *SubscriberCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	now := time.Now()
	for _, ls := range c.logstores {
		lags, err := c.sub.ShardLag(ctx, ls)
		if err != nil {
			c.lagErrors.WithLabelValues(ls).Inc()
		}
		seen := map[int]bool{} // a shard read by two subscriptions of ls: the first one's series
		for _, l := range lags {
			if seen[l.Shard] {
				continue
			}
			seen[l.Shard] = true
			shard := strconv.Itoa(l.Shard)
			ch <- prometheus.MustNewConstMetric(c.lagGroups, prometheus.GaugeValue, float64(l.LogGroups), ls, shard)
			secs := 0.0
			if l.LogGroups > 0 {
				secs = max(now.Sub(l.CursorTime).Seconds(), 0)
			}
			ch <- prometheus.MustNewConstMetric(c.lagSeconds, prometheus.GaugeValue, secs, ls, shard)
		}
		clear(seen)
		for _, st := range c.sub.ShardWatermarkStatus(ls) {
			if seen[st.ID] {
				continue
			}
			seen[st.ID] = true
			shard := strconv.Itoa(st.ID)
			if st.HasWatermark {
				ch <- prometheus.MustNewConstMetric(c.watermark, prometheus.GaugeValue,
					float64(st.Watermark.UnixNano())/1e9, ls, shard)
			}
			for _, s := range shardStates {
				v := 0.0
				if st.State == s {
					v = 1
				}
				ch <- prometheus.MustNewConstMetric(c.state, prometheus.GaugeValue, v, ls, shard, s.String())
			}
		}
		if a, ok := c.sub.AlignmentStats(ls); ok {
			ch <- prometheus.MustNewConstMetric(c.blocked, prometheus.GaugeValue, float64(a.Blocked), ls)
			ch <- prometheus.MustNewConstMetric(c.blocks, prometheus.CounterValue, float64(a.Blocks), ls)
		}
	}
	c.lagErrors.Collect(ch)
}
