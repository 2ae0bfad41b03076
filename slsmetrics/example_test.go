package slsmetrics_test

import (
	"context"
	"fmt"
	"log"
	"strings"

	"github.com/ThreeDotsLabs/watermill/components/metrics"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/watermill-sls/watermill-sls/slsmetrics"
	"github.com/watermill-sls/watermill-sls/slspubsub"
	"github.com/watermill-sls/watermill-sls/slspubsub/slstest"
)

// The SLS metrics of a Publisher and a Subscriber, next to Watermill's router metrics (components/metrics:
// handler execution time, messages received) in one registry. Serve reg with promhttp.HandlerFor.
func Example() {
	// The in-process emulator stands in for SLS here; use your endpoint, project and credentials.
	srv, err := slstest.NewServer()
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	if err := srv.CreateLogStore("demo", "events", 2); err != nil {
		log.Fatal(err)
	}
	client := slspubsub.ClientConfig{Endpoint: srv.Endpoint(), Project: "demo", HTTPClient: srv.HTTPClient(),
		AccessKeyID: slstest.DefaultAccessKeyID, AccessKeySecret: slstest.DefaultAccessKeySecret}

	reg := prometheus.NewRegistry()
	pubMetrics, err := slsmetrics.NewPublisherMetrics(reg)
	if err != nil {
		log.Fatal(err)
	}
	subMetrics, err := slsmetrics.NewSubscriberMetrics(reg)
	if err != nil {
		log.Fatal(err)
	}
	pub, err := slspubsub.NewPublisher(slspubsub.PublisherConfig{ClientConfig: client, Metrics: pubMetrics}, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer pub.Close()
	sub, err := slspubsub.NewSubscriber(slspubsub.SubscriberConfig{ClientConfig: client, Metrics: subMetrics}, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer sub.Close()
	if _, err := slsmetrics.NewSubscriberCollector(reg, sub, []string{"events"}); err != nil {
		log.Fatal(err)
	}

	// Watermill's metrics: what the router sees.
	router, err := message.NewRouter(message.RouterConfig{}, nil)
	if err != nil {
		log.Fatal(err)
	}
	metrics.NewPrometheusMetricsBuilder(reg, "demo", "").AddPrometheusRouterMetrics(router)
	handled := make(chan struct{}, 3)
	router.AddConsumerHandler("count", "events", sub, func(*message.Message) error {
		handled <- struct{}{}
		return nil
	})
	go func() { _ = router.Run(context.Background()) }()
	<-router.Running()

	for i := range 3 {
		if err := pub.Publish("events", message.NewMessage(fmt.Sprint(i), []byte("hello"))); err != nil {
			log.Fatal(err)
		}
	}
	for range 3 {
		<-handled
	}
	_ = router.Close()

	mfs, err := reg.Gather()
	if err != nil {
		log.Fatal(err)
	}
	for _, mf := range mfs {
		var v float64
		for _, m := range mf.GetMetric() {
			v += m.GetCounter().GetValue() + float64(m.GetHistogram().GetSampleCount())
		}
		switch name := mf.GetName(); {
		case name == "watermill_sls_publisher_logs_total", name == "watermill_sls_subscriber_logs_fetched_total",
			strings.HasPrefix(name, "demo_") && strings.HasSuffix(name, "_total"),
			name == "demo_handler_execution_time_seconds":
			fmt.Println(name, v)
		}
	}
	// Output:
	// demo_handler_execution_time_seconds 3
	// demo_subscriber_messages_received_total 3
	// watermill_sls_publisher_logs_total 3
	// watermill_sls_subscriber_logs_fetched_total 3
}
