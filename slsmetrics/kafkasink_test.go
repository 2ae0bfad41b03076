package slsmetrics_test

import (
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/watermill-sls/watermill-sls/exactlyonce"
	"github.com/watermill-sls/watermill-sls/internal/testutil"
	"github.com/watermill-sls/watermill-sls/slsmetrics"
)

// TestKafkaSinkCollector runs SLS -> Kafka exactly once (kfake) and checks that the collector shows the
// messages the sink committed and its committed transactions.
func TestKafkaSinkCollector(t *testing.T) {
	const n, logstore = 10, "access"
	env := slsEnv(t, nil, logstore, 1)
	publish(t, env, logstore, n)
	brokers := testutil.Kafka(t, "eo-positions", "out")
	sink, err := exactlyonce.NewKafkaSink(exactlyonce.KafkaSinkConfig{Brokers: brokers, Consumer: "c",
		TransactionalID: "c-0", PositionsTopic: "eo-positions", OutputTopic: "out"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sink.Close() })
	reg := prometheus.NewRegistry()
	if _, err := slsmetrics.NewKafkaSinkCollector(reg, sink, "c-0"); err != nil {
		t.Fatal(err)
	}
	copyMsg := func(msg *message.Message) ([]*message.Message, error) {
		return []*message.Message{message.NewMessage(msg.UUID, msg.Payload)}, nil
	}
	testutil.RunRouter(t, logstore, subscriber(t, env), sink.Handler(copyMsg, exactlyonce.SLSPosition))
	const messages = "watermill_sls_exactlyonce_kafka_sink_messages_total"
	pollGather(t, reg, "every message committed to Kafka", func(f families) bool {
		v, _ := f.sum(messages, "sink", "c-0")
		return v == n
	}, messages)
	f := gather(t, reg)
	committed, _ := f.sum("watermill_sls_exactlyonce_kafka_sink_transactions_total", "sink", "c-0", "outcome", "committed")
	aborted, _ := f.sum("watermill_sls_exactlyonce_kafka_sink_transactions_total", "sink", "c-0", "outcome", "aborted")
	if st := sink.Stats(); committed < 1 || committed != float64(st.Transactions) || aborted != 0 {
		t.Errorf("transactions committed %v (sink says %d), aborted %v", committed, st.Transactions, aborted)
	}
	t.Logf("%d messages in %v Kafka transactions", n, committed)
}
