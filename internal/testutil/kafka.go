package testutil

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// KafkaBrokersEnv names the environment variable that points the Kafka fixtures at real brokers: a
// comma-separated list of host:port seed addresses of a Kafka 2.4+ cluster.
const KafkaBrokersEnv = "KAFKA_BROKERS"

// kafkaTimeout bounds creating topics on real brokers, including waiting until every partition has a leader.
const kafkaTimeout = time.Minute

// Kafka returns the seed broker addresses of a Kafka cluster on which each of topics exists with one partition.
// See [KafkaWithPartitions].
func Kafka(t testing.TB, topics ...string) []string {
	t.Helper()
	return KafkaWithPartitions(t, 1, topics...)
}

// KafkaWithPartitions returns the seed broker addresses of a Kafka cluster on which each of topics exists with
// the given number of partitions.
//
// By default every call starts its own in-process kfake broker on 127.0.0.1, closed when the test ends; it speaks
// the wire protocol (sarama and franz-go clients alike, transactions and read_committed included) and creates
// topics it is asked about, with the same partition count, when a client allows auto-creation.
//
// When KAFKA_BROKERS is set, those brokers are used instead: topics are created with the broker's default
// replication factor, and the ones this call created are deleted when the test ends. A topic that already exists
// is used as it is, records from earlier runs included, so tests meant for shared brokers should use topic and
// group names of their own.
func KafkaWithPartitions(t testing.TB, partitions int, topics ...string) []string {
	t.Helper()
	if partitions < 1 || partitions > math.MaxInt32 {
		t.Fatalf("testutil: KafkaWithPartitions: partitions = %d, want 1 or more", partitions)
	}
	if env := os.Getenv(KafkaBrokersEnv); env != "" {
		brokers := splitBrokers(env)
		if len(brokers) == 0 {
			t.Fatalf("testutil: %s=%q holds no broker address", KafkaBrokersEnv, env)
		}
		createKafkaTopics(t, brokers, int32(partitions), topics)
		return brokers
	}
	cluster, err := kfake.NewCluster(
		kfake.NumBrokers(1),
		kfake.SeedTopics(int32(partitions), topics...),
		kfake.AllowAutoTopicCreation(),
		kfake.DefaultNumPartitions(partitions),
	)
	if err != nil {
		t.Fatalf("testutil: start kfake cluster: %v", err)
	}
	t.Cleanup(cluster.Close)
	return cluster.ListenAddrs()
}

func splitBrokers(env string) []string {
	var brokers []string
	for b := range strings.SplitSeq(env, ",") {
		if b = strings.TrimSpace(b); b != "" {
			brokers = append(brokers, b)
		}
	}
	return brokers
}

// createKafkaTopics creates topics on real brokers, waits until they are usable, and deletes the ones it
// created when the test ends.
func createKafkaTopics(t testing.TB, brokers []string, partitions int32, topics []string) {
	t.Helper()
	if len(topics) == 0 {
		return
	}
	adm, closeAdm, err := newKafkaAdmin(brokers)
	if err != nil {
		t.Fatalf("testutil: %v", err)
	}
	defer closeAdm()
	ctx, cancel := context.WithTimeout(context.Background(), kafkaTimeout)
	defer cancel()

	resps, err := adm.CreateTopics(ctx, partitions, -1, nil, topics...)
	if err != nil {
		t.Fatalf("testutil: create Kafka topics %v: %v", topics, err)
	}
	var created []string
	for _, r := range resps.Sorted() {
		switch {
		case r.Err == nil:
			created = append(created, r.Topic)
		case !errors.Is(r.Err, kerr.TopicAlreadyExists):
			t.Fatalf("testutil: create Kafka topic %s: %v (%s)", r.Topic, r.Err, r.ErrMessage)
		}
	}
	if len(created) > 0 {
		t.Cleanup(func() { deleteKafkaTopics(t, brokers, created) })
	}
	if err := waitForKafkaTopics(ctx, adm, topics); err != nil {
		t.Fatalf("testutil: %v", err)
	}
}

// waitForKafkaTopics polls metadata until every partition of topics has a leader: a broker answers
// CreateTopics before the controller has spread the new topic's metadata, and clients would see
// UNKNOWN_TOPIC_OR_PARTITION for a while.
func waitForKafkaTopics(ctx context.Context, adm *kadm.Client, topics []string) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		details, err := adm.ListTopics(ctx, topics...)
		if err == nil && kafkaTopicsReady(details, topics) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("topics %v not ready on the Kafka brokers (last metadata error: %v): %w", topics, err, ctx.Err())
		case <-tick.C:
		}
	}
}

func kafkaTopicsReady(details kadm.TopicDetails, topics []string) bool {
	for _, topic := range topics {
		d, ok := details[topic]
		if !ok || d.Err != nil || len(d.Partitions) == 0 {
			return false
		}
		for _, p := range d.Partitions {
			if p.Err != nil || p.Leader < 0 {
				return false
			}
		}
	}
	return true
}

func deleteKafkaTopics(t testing.TB, brokers, topics []string) {
	adm, closeAdm, err := newKafkaAdmin(brokers)
	if err != nil {
		t.Errorf("testutil: %v", err)
		return
	}
	defer closeAdm()
	ctx, cancel := context.WithTimeout(context.Background(), kafkaTimeout)
	defer cancel()
	resps, err := adm.DeleteTopics(ctx, topics...)
	if err == nil {
		err = resps.Error()
	}
	if err != nil && !errors.Is(err, kerr.UnknownTopicOrPartition) {
		t.Errorf("testutil: delete Kafka topics %v: %v", topics, err)
	}
}

func newKafkaAdmin(brokers []string) (*kadm.Client, func(), error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		return nil, nil, fmt.Errorf("admin client for Kafka brokers %v: %w", brokers, err)
	}
	return kadm.NewClient(cl), cl.Close, nil
}
