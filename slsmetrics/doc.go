// Package slsmetrics exports Prometheus metrics (client_golang) of watermill-sls: the SLS Publisher and
// Subscriber, the exactly-once handlers and the transactional outbox.
//
// The core packages do not import Prometheus: each has a small observer interface with a no-op default
// (slspubsub.PublisherMetrics, slspubsub.SubscriberMetrics, exactlyonce.Metrics, outbox.Metrics), called
// where events happen. This package implements them, and adds collectors that read state at scrape time:
//
//	reg := prometheus.NewRegistry()
//	pm, _ := slsmetrics.NewPublisherMetrics(reg)  // slspubsub.PublisherConfig.Metrics
//	sm, _ := slsmetrics.NewSubscriberMetrics(reg) // slspubsub.SubscriberConfig.Metrics
//	hm, _ := slsmetrics.NewHandlerMetrics(reg)    // exactlyonce.HandlerConfig.Metrics
//	rm, _ := slsmetrics.NewRelayMetrics(reg)      // outbox.RelayConfig.Metrics
//	slsmetrics.NewSubscriberCollector(reg, sub, []string{"logstore"}) // lag, watermarks, alignment
//	slsmetrics.NewOutboxCollector(reg, pool, outbox.Table{})          // pending and parked rows
//	slsmetrics.NewKafkaSinkCollector(reg, sink, "name")               // exactly-once into Kafka
//
// Every constructor takes the prometheus.Registerer to register with and Options: WithNamespace (default
// "watermill_sls"), WithConstLabels, WithScrapeTimeout (default 5 s, for the collectors). The observer
// implementations may be shared by several Publishers, Subscribers, handlers or relays (the logstore,
// consumer or topic is a label), and a second call on one registry returns metrics sharing the registered
// ones. Register one SubscriberCollector per Subscriber, one OutboxCollector per table and one KafkaSinkCollector per
// sink.
//
// Watermill's own metrics (components/metrics: messages published and received by topic, handler execution
// time by handler, through the router) count what the router sees; this package counts what SLS, PostgreSQL
// and the outbox see, below it. Use both: see the package example.
//
// # Metrics
//
// Names with the default namespace. Units are in the names (seconds, bytes) or are counts. Labels are
// bounded: logstore, shard (an SLS shard id), code (SLS's error code, e.g. ShardWriteQuotaExceed, or one of
// ok, timeout, canceled, network, http_<status>: see slspubsub.ErrorCode), consumer
// (exactlyonce.HandlerConfig.Consumer), sink (the name given to NewKafkaSinkCollector), topic (the outbox row's topic), table (the outbox table), state,
// outcome and result (fixed sets). No label holds message ids, keys or credentials.
//
// From NewPublisherMetrics (pushed by the Publisher on every PutLogs attempt):
//
//	watermill_sls_publisher_put_logs_requests_total     counter    logstore, code    PutLogs attempts by outcome (code ok on success)
//	watermill_sls_publisher_put_logs_duration_seconds   histogram  logstore          time of one PutLogs attempt
//	watermill_sls_publisher_logs_total                  counter    logstore          logs in PutLogs requests answered 200
//	watermill_sls_publisher_batch_logs                  histogram  logstore          logs per PutLogs request (first attempt)
//	watermill_sls_publisher_batch_bytes                 histogram  logstore          LogGroup bytes per request before compression (first attempt)
//	watermill_sls_publisher_retries_total               counter    logstore, code    failed attempts retried after a backoff, by their error code
//
// From NewSubscriberMetrics (pushed by the Subscriber's fetch loops):
//
//	watermill_sls_subscriber_pull_logs_requests_total   counter    logstore, code    PullLogs requests by outcome (code ok on success)
//	watermill_sls_subscriber_pull_logs_duration_seconds histogram  logstore          time of one PullLogs request, answer read
//	watermill_sls_subscriber_fetch_log_groups           histogram  logstore          LogGroups per successful answer (0 at a shard's end)
//	watermill_sls_subscriber_fetch_bytes                histogram  logstore          decompressed bytes per non-empty answer
//	watermill_sls_subscriber_fetch_logs                 histogram  logstore          logs per non-empty answer
//	watermill_sls_subscriber_logs_fetched_total         counter    logstore, shard   logs fetched
//	watermill_sls_subscriber_retries_total              counter    logstore, code    failed PullLogs requests retried, by error code
//	watermill_sls_subscriber_alignment_wait_seconds_total counter  logstore, shard   time a shard waited for watermark alignment before fetching
//
// From NewSubscriberCollector (read at scrape time):
//
//	watermill_sls_subscriber_shard_lag_log_groups       gauge      logstore, shard   LogGroups written and not yet fully acked
//	watermill_sls_subscriber_shard_lag_seconds          gauge      logstore, shard   now minus the cursor time of the first LogGroup not fully acked (0 when caught up)
//	watermill_sls_subscriber_shard_watermark_seconds    gauge      logstore, shard   the shard's event-time watermark, unix seconds
//	watermill_sls_subscriber_shard_state                gauge      logstore, shard, state  1 for the shard's state (active, pending, paused, idle, finished), else 0
//	watermill_sls_subscriber_alignment_blocked_shards   gauge      logstore          shards held back by alignment now
//	watermill_sls_subscriber_alignment_blocks_total     counter    logstore          fetches that had to wait for alignment
//	watermill_sls_subscriber_lag_errors_total           counter    logstore          scrapes in which some shard's lag could not be measured
//
// From NewHandlerMetrics (pushed after every exactly-once transaction):
//
//	watermill_sls_exactlyonce_transactions_total        counter    consumer, outcome  transactions: committed or rolled_back
//	watermill_sls_exactlyonce_messages_total            counter    consumer, result   messages: applied, skipped (duplicates), failed
//	watermill_sls_exactlyonce_transaction_duration_seconds histogram consumer         BEGIN to COMMIT or rollback
//	watermill_sls_exactlyonce_transaction_messages      histogram  consumer          messages per transaction (batch size)
//
// From NewKafkaSinkCollector (exactlyonce.KafkaSink.Stats, read at scrape time):
//
//	watermill_sls_exactlyonce_kafka_sink_transactions_total counter sink, outcome  Kafka transactions: committed or aborted
//	watermill_sls_exactlyonce_kafka_sink_messages_total counter    sink              consumed messages whose outputs and positions committed
//
// From NewRelayMetrics (pushed by outbox Relays):
//
//	watermill_sls_outbox_relayed_total                  counter    topic             rows published and marked delivered
//	watermill_sls_outbox_relay_lag_seconds              histogram  topic             row insert to delivery mark
//	watermill_sls_outbox_publish_failures_total         counter    topic             failed publish attempts
//	watermill_sls_outbox_parked_total                   counter    topic             rows parked after MaxAttempts
//	watermill_sls_outbox_relay_errors_total             counter    -                 relay-level errors retried by the relay
//
// From NewOutboxCollector (one SQL query at scrape time):
//
//	watermill_sls_outbox_pending_rows                   gauge      table, topic      rows waiting to be relayed
//	watermill_sls_outbox_parked_rows                    gauge      table, topic      parked rows waiting for Requeue
//	watermill_sls_outbox_oldest_pending_age_seconds     gauge      table, topic      age of the oldest pending row (the backlog's relay lag)
//	watermill_sls_outbox_scrape_errors_total            counter    table             scrapes whose query failed
//
// # Lag
//
// SLS cursors count LogGroups, not logs: a shard's lag is exported in LogGroups (end cursor minus the first
// cursor not fully acked), never as a made-up number of logs; a LogGroup holds one to thousands of logs
// (watermill_sls_publisher_batch_logs and watermill_sls_subscriber_fetch_logs show how many). The lag in
// seconds is the age of the first LogGroup not fully acked by SLS's receive time (GetCursorTime, whole
// seconds). Measuring it costs one GetCursor request per shard and one GetCursorTime per shard behind, at
// each scrape (at most 8 in flight, bounded by the scrape timeout): scrape every 15 s or more.
//
// # Costs
//
// The pushed metrics cost a label lookup and an atomic add per request, batch or transaction, never per
// message. Histograms have about 10 to 18 buckets.
package slsmetrics
