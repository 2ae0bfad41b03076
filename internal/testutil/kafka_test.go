package testutil_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/watermill-sls/watermill-sls/internal/testutil"
)

// kafkaWait bounds every wait for a record in these tests.
const kafkaWait = 30 * time.Second

// saramaConfig is the configuration watermill-kafka users start from, at the protocol version sarama defaults to.
func saramaConfig() *sarama.Config {
	cfg := sarama.NewConfig()
	cfg.ClientID = "testutil"
	cfg.Producer.Return.Successes = true
	cfg.Producer.RequiredAcks = sarama.WaitForAll
	cfg.Consumer.Return.Errors = true
	return cfg
}

func TestKafkaServesSarama(t *testing.T) {
	brokers := testutil.Kafka(t, "plain")
	cfg := saramaConfig()

	producer, err := sarama.NewSyncProducer(brokers, cfg)
	if err != nil {
		t.Fatalf("sarama producer: %v", err)
	}
	defer producer.Close()
	partition, offset, err := producer.SendMessage(&sarama.ProducerMessage{
		Topic: "plain", Key: sarama.StringEncoder("k"), Value: sarama.StringEncoder("hello"),
	})
	if err != nil {
		t.Fatalf("send: %v", err)
	}
	if partition != 0 {
		t.Errorf("record of a one-partition topic went to partition %d", partition)
	}

	msg := consumeOne(t, brokers, cfg, "plain", offset)
	if string(msg.Key) != "k" || string(msg.Value) != "hello" || msg.Offset != offset {
		t.Errorf("consumed %q=%q at offset %d, want k=hello at %d", msg.Key, msg.Value, msg.Offset, offset)
	}
}

func TestKafkaServesSaramaTransactions(t *testing.T) {
	brokers := testutil.Kafka(t, "txn")
	cfg := saramaConfig()
	cfg.Producer.Idempotent = true
	cfg.Producer.Transaction.ID = "testutil-txn"
	cfg.Net.MaxOpenRequests = 1

	producer, err := sarama.NewSyncProducer(brokers, cfg)
	if err != nil {
		t.Fatalf("transactional sarama producer: %v", err)
	}
	defer producer.Close()
	aborted := produceInTxn(t, producer, "txn", "aborted", false)
	committed := produceInTxn(t, producer, "txn", "committed", true)

	// Reading from the aborted record on, a read_committed consumer must skip it (and the abort marker).
	cfg.Consumer.IsolationLevel = sarama.ReadCommitted
	msg := consumeOne(t, brokers, cfg, "txn", aborted)
	if string(msg.Value) != "committed" || msg.Offset != committed {
		t.Errorf("read_committed consumer got %q at offset %d first, want the committed record at %d",
			msg.Value, msg.Offset, committed)
	}
}

// produceInTxn sends one record to partition 0 of topic in a transaction of its own and returns its offset.
func produceInTxn(t *testing.T, producer sarama.SyncProducer, topic, value string, commit bool) int64 {
	t.Helper()
	if err := producer.BeginTxn(); err != nil {
		t.Fatalf("begin transaction: %v", err)
	}
	_, offset, err := producer.SendMessage(&sarama.ProducerMessage{Topic: topic, Value: sarama.StringEncoder(value)})
	if err != nil {
		t.Fatalf("send in transaction: %v", err)
	}
	end, what := producer.AbortTxn, "abort"
	if commit {
		end, what = producer.CommitTxn, "commit"
	}
	if err := end(); err != nil {
		t.Fatalf("%s transaction: %v", what, err)
	}
	return offset
}

// consumeOne reads the first record that partition 0 of topic delivers from offset on.
func consumeOne(t *testing.T, brokers []string, cfg *sarama.Config, topic string, offset int64) *sarama.ConsumerMessage {
	t.Helper()
	consumer, err := sarama.NewConsumer(brokers, cfg)
	if err != nil {
		t.Fatalf("sarama consumer: %v", err)
	}
	defer consumer.Close()
	pc, err := consumer.ConsumePartition(topic, 0, offset)
	if err != nil {
		t.Fatalf("consume %s/0: %v", topic, err)
	}
	defer pc.Close()
	deadline := time.NewTimer(kafkaWait)
	defer deadline.Stop()
	select {
	case msg := <-pc.Messages():
		return msg
	case err := <-pc.Errors():
		t.Fatalf("consume %s/0: %v", topic, err)
	case <-deadline.C:
		t.Fatalf("no record on %s/0 within %v", topic, kafkaWait)
	}
	return nil
}

func TestKafkaWithPartitionsSeedsTopics(t *testing.T) {
	brokers := testutil.KafkaWithPartitions(t, 4, "a", "b")
	details := listTopics(t, brokers, "a", "b")
	for _, topic := range []string{"a", "b"} {
		if n := len(details[topic].Partitions); n != 4 {
			t.Errorf("topic %s has %d partitions, want 4", topic, n)
		}
	}
}

// TestKafkaUsesBrokersFromEnvironment runs the KAFKA_BROKERS path against a broker of the default path.
func TestKafkaUsesBrokersFromEnvironment(t *testing.T) {
	external := testutil.Kafka(t) // no topics: the fixture must create them
	t.Setenv(testutil.KafkaBrokersEnv, " "+strings.Join(external, ", ")+",")

	t.Run("creates topics", func(t *testing.T) {
		brokers := testutil.KafkaWithPartitions(t, 3, "from-env")
		if strings.Join(brokers, ",") != strings.Join(external, ",") {
			t.Fatalf("fixture returned brokers %v, want the ones in %s: %v", brokers, testutil.KafkaBrokersEnv, external)
		}
		details := listTopics(t, brokers, "from-env")
		if d := details["from-env"]; d.Err != nil || len(d.Partitions) != 3 {
			t.Errorf("topic from-env: %d partitions, error %v; want 3 partitions", len(d.Partitions), d.Err)
		}
		// Asking again for an existing topic is not an error.
		testutil.KafkaWithPartitions(t, 3, "from-env")
	})
	if t.Failed() {
		return
	}
	if d := listTopics(t, external)["from-env"]; d.Topic != "" {
		t.Errorf("topic from-env still exists after the test that created it ended")
	}
}

func listTopics(t *testing.T, brokers []string, topics ...string) kadm.TopicDetails {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), kafkaWait)
	defer cancel()
	details, err := kadm.NewClient(cl).ListTopics(ctx, topics...)
	if err != nil {
		t.Fatalf("list topics: %v", err)
	}
	return details
}
