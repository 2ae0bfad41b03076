// Command router runs an SLS logstore through a Watermill router: orders are
// read from one logstore, enriched and published to another; orders that
// cannot be processed are retried, then moved to a poison logstore.
//
// Without flags it starts the SLS emulator (slstest) in process, fills the
// "orders" logstore and exits once every order is enriched or poisoned. With
// -endpoint and -project (and credentials in ALIBABA_CLOUD_ACCESS_KEY_ID and
// ALIBABA_CLOUD_ACCESS_KEY_SECRET) it runs against a real SLS project whose
// logstores orders, orders-enriched and orders-poison exist.
//
// Metrics: the SLS metrics of the Publisher and Subscriber (package
// slsmetrics) and Watermill's router metrics (components/metrics) share one
// Prometheus registry; -metrics-addr serves it on /metrics while the router
// runs, and the program prints a few of its values at the end.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/components/metrics"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/watermill-sls/watermill-sls/slsmetrics"
	"github.com/watermill-sls/watermill-sls/slspubsub"
	"github.com/watermill-sls/watermill-sls/slspubsub/slstest"
)

const (
	ordersTopic   = "orders"
	enrichedTopic = "orders-enriched"
	poisonTopic   = "orders-poison"
)

func main() {
	endpoint := flag.String("endpoint", "", "SLS endpoint (empty: an in-process emulator)")
	project := flag.String("project", "router-example", "SLS project")
	orders := flag.Int("orders", 1000, "orders to write first (0: none)")
	metricsAddr := flag.String("metrics-addr", "", "serve Prometheus metrics on this address (/metrics) while running")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	cfg, cleanup, err := clientConfig(*endpoint, *project)
	if err != nil {
		log.Fatal(err)
	}
	defer cleanup()
	reg := prometheus.NewRegistry()
	if *metricsAddr != "" {
		srv := &http.Server{Addr: *metricsAddr, Handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Fatalf("metrics: %v", err)
			}
		}()
		defer srv.Close()
	}
	res, err := run(ctx, cfg, *orders, reg, watermill.NewSlogLogger(nil))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("orders written %d, enriched %d, poisoned %d, in %v\n", res.written, res.enriched, res.poisoned, res.took.Round(time.Millisecond))
	for _, name := range []string{"watermill_sls_publisher_logs_total", "watermill_sls_subscriber_logs_fetched_total",
		"router_example_handler_execution_time_seconds"} {
		v, err := metricSum(reg, name)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%s %v\n", name, v)
	}
}

// metricSum is the sum over a metric's series in reg: counter values, or
// histogram sample counts.
func metricSum(reg prometheus.Gatherer, name string) (float64, error) {
	mfs, err := reg.Gather()
	if err != nil {
		return 0, err
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		var v float64
		for _, m := range mf.GetMetric() {
			v += m.GetCounter().GetValue() + float64(m.GetHistogram().GetSampleCount())
		}
		return v, nil
	}
	return 0, fmt.Errorf("metric %s not registered", name)
}

// clientConfig points at a real SLS project, or at an emulator started here
// with the example's logstores.
func clientConfig(endpoint, project string) (slspubsub.ClientConfig, func(), error) {
	if endpoint != "" {
		return slspubsub.ClientConfig{
			Endpoint: endpoint, Project: project,
			AccessKeyID:     os.Getenv("ALIBABA_CLOUD_ACCESS_KEY_ID"),
			AccessKeySecret: os.Getenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET"),
		}, func() {}, nil
	}
	srv, err := slstest.NewServer()
	if err != nil {
		return slspubsub.ClientConfig{}, nil, err
	}
	for topic, shards := range map[string]int{ordersTopic: 4, enrichedTopic: 2, poisonTopic: 1} {
		if err := srv.CreateLogStore(project, topic, shards); err != nil {
			_ = srv.Close()
			return slspubsub.ClientConfig{}, nil, err
		}
	}
	return slspubsub.ClientConfig{
		Endpoint: srv.Endpoint(), Project: project,
		AccessKeyID: slstest.DefaultAccessKeyID, AccessKeySecret: slstest.DefaultAccessKeySecret,
		HTTPClient: srv.HTTPClient(),
	}, func() { _ = srv.Close() }, nil
}

// order is the payload of an order message.
type order struct {
	ID     string  `json:"id"`
	Amount float64 `json:"amount"`
}

type result struct {
	written, enriched, poisoned int
	took                        time.Duration
}

// run writes n orders, then routes the orders logstore until every order
// written was enriched or poisoned (or ctx ends). The Publisher's, the orders
// Subscriber's and the router's metrics go to reg.
func run(ctx context.Context, cfg slspubsub.ClientConfig, n int, reg *prometheus.Registry, logger watermill.LoggerAdapter) (result, error) {
	start := time.Now()
	pubMetrics, err := slsmetrics.NewPublisherMetrics(reg)
	if err != nil {
		return result{}, err
	}
	subMetrics, err := slsmetrics.NewSubscriberMetrics(reg)
	if err != nil {
		return result{}, err
	}
	pub, err := slspubsub.NewPublisher(slspubsub.PublisherConfig{ClientConfig: cfg, Metrics: pubMetrics}, logger)
	if err != nil {
		return result{}, err
	}
	defer pub.Close()
	if err := writeOrders(pub, n); err != nil {
		return result{}, err
	}
	sub, err := slspubsub.NewSubscriber(slspubsub.SubscriberConfig{
		ClientConfig:  cfg,
		ConsumerGroup: "router-example", // several copies of this program share the shards
		MaxInFlight:   8,
		Metrics:       subMetrics,
	}, logger)
	if err != nil {
		return result{}, err
	}
	defer sub.Close()
	// Lag, watermarks and shard states of the orders logstore, read at scrape time.
	if _, err := slsmetrics.NewSubscriberCollector(reg, sub, []string{ordersTopic}); err != nil {
		return result{}, err
	}

	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 10 * time.Second}, logger)
	if err != nil {
		return result{}, err
	}
	// Watermill's metrics: handler execution time, messages received and published, per handler.
	metrics.NewPrometheusMetricsBuilder(reg, "router_example", "").AddPrometheusRouterMetrics(router)
	poison, err := middleware.PoisonQueue(pub, poisonTopic)
	if err != nil {
		return result{}, err
	}
	router.AddMiddleware(
		poison, // after the retries: the message goes to orders-poison and is acked
		middleware.Retry{MaxRetries: 2, InitialInterval: 5 * time.Millisecond, Logger: logger}.Middleware,
		middleware.Recoverer,
	)
	throttle := middleware.NewThrottle(5000, time.Second) // at most 5 000 orders a second
	router.AddHandler("enrich", ordersTopic, sub, enrichedTopic, pub, enrich).AddMiddleware(throttle.Middleware)

	// Count what arrives downstream, from this run on.
	var enriched, poisoned atomic.Int64
	for topic, counter := range map[string]*atomic.Int64{enrichedTopic: &enriched, poisonTopic: &poisoned} {
		counts, err := slspubsub.NewSubscriber(slspubsub.SubscriberConfig{
			ClientConfig:  cfg,
			StartPosition: slspubsub.StartAtTime(start.Add(-time.Second)),
		}, logger)
		if err != nil {
			return result{}, err
		}
		router.AddConsumerHandler("count-"+topic, topic, counts, func(*message.Message) error {
			counter.Add(1)
			return nil
		})
	}

	routerCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- router.Run(routerCtx) }()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for n > 0 && enriched.Load()+poisoned.Load() < int64(n) {
		select {
		case <-ctx.Done():
		case <-tick.C:
			continue
		}
		break
	}
	cancel()
	if err := <-done; err != nil {
		return result{}, err
	}
	// ctx ended (interrupted) before everything was routed: an error.
	return result{written: n, enriched: int(enriched.Load()), poisoned: int(poisoned.Load()), took: time.Since(start)}, ctx.Err()
}

// writeOrders publishes n orders; every 50th has a negative amount, which
// enrich refuses.
func writeOrders(pub message.Publisher, n int) error {
	msgs := make([]*message.Message, 0, n)
	for i := range n {
		amount := float64(i%97) + 0.5
		if i%50 == 49 {
			amount = -amount
		}
		b, err := json.Marshal(order{ID: fmt.Sprintf("o-%05d", i), Amount: amount})
		if err != nil {
			return err
		}
		msgs = append(msgs, message.NewMessage(watermill.NewUUID(), b))
	}
	return pub.Publish(ordersTopic, msgs...)
}

var errBadAmount = errors.New("amount is not positive")

// enrich adds a tax line to an order; it refuses orders whose amount is not
// positive (they end in the poison logstore after the retries).
func enrich(msg *message.Message) ([]*message.Message, error) {
	var o order
	if err := json.Unmarshal(msg.Payload, &o); err != nil {
		return nil, fmt.Errorf("order %s: %w", msg.UUID, err)
	}
	if o.Amount <= 0 {
		return nil, fmt.Errorf("order %s: %w", o.ID, errBadAmount)
	}
	out, err := json.Marshal(map[string]any{"id": o.ID, "amount": o.Amount, "tax": o.Amount * 0.13})
	if err != nil {
		return nil, err
	}
	m := message.NewMessage(watermill.NewUUID(), out)
	m.Metadata.Set("order_id", o.ID)
	return []*message.Message{m}, nil
}
