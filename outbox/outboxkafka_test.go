package outbox_test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/watermill-sls/watermill-sls/internal/testutil"
	"github.com/watermill-sls/watermill-sls/outbox"
	"github.com/watermill-sls/watermill-sls/outbox/outboxkafka"
)

// TestKafkaTransactionalRecoversCommittedBatch stages the crash window deterministically: a batch is committed
// to Kafka (records + progress) by relay "r1" but its rows are not marked in PostgreSQL, as when the relay dies
// between the two commits. A relay restarted under the same name must mark those rows from its progress and
// publish only the rest: read_committed readers see every message exactly once.
func TestKafkaTransactionalRecoversCommittedBatch(t *testing.T) {
	db := migrated(t)
	ctx := context.Background()
	brokers := testutil.Kafka(t, crashTopic, outboxkafka.DefaultProgressTopic)
	for i := range 6 {
		if err := publishInTx(ctx, db, outbox.PublisherConfig{}, crashTopic, "k", i, true, keyed("k", strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	// The dead relay's last act: rows 1-3 claimed (owned) and committed to Kafka, never marked.
	if _, err := db.Exec(ctx, `UPDATE watermill_outbox SET owner = 'r1' WHERE id <= 3`); err != nil {
		t.Fatal(err)
	}
	dead, err := outboxkafka.NewTransactionalPublisher(outboxkafka.Config{Brokers: brokers, RelayName: "r1"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if ids, err := dead.Recover(ctx); err != nil || len(ids) != 0 {
		t.Fatalf("first Recover = %v, %v; want no ids on an empty progress topic", ids, err)
	}
	var batch []outbox.BatchMessage
	for id := int64(1); id <= 3; id++ {
		var uuid string
		if err := db.QueryRow(ctx, `SELECT uuid FROM watermill_outbox WHERE id = $1`, id).Scan(&uuid); err != nil {
			t.Fatal(err)
		}
		m := message.NewMessage(uuid, []byte(strconv.FormatInt(id-1, 10)))
		m.Metadata.Set(outbox.MetadataOutboxID, strconv.FormatInt(id, 10))
		batch = append(batch, outbox.BatchMessage{ID: id, Topic: crashTopic, OrderingKey: "k", Message: m})
	}
	if err := dead.PublishBatch(ctx, batch); err != nil {
		t.Fatal(err)
	}
	// Then a transaction the dead relay opened and never finished: its record must never become visible.
	zcfg := sarama.NewConfig()
	zcfg.Producer.Idempotent, zcfg.Producer.Transaction.ID, zcfg.Net.MaxOpenRequests = true, "outbox-relay-r1", 1
	zcfg.Producer.RequiredAcks, zcfg.Producer.Return.Successes = sarama.WaitForAll, true
	zombie, err := sarama.NewSyncProducer(brokers, zcfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = zombie.Close() })
	if err := zombie.BeginTxn(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := zombie.SendMessage(&sarama.ProducerMessage{Topic: crashTopic, Value: sarama.StringEncoder("zombie")}); err != nil {
		t.Fatal(err)
	}

	// Another relay must not take r1's owned rows (nor, for order, later rows of their key).
	other := &collector{}
	stopOther := runRelay(t, db, outbox.RelayConfig{Publisher: other, PollInterval: 20 * time.Millisecond})
	waitRounds(t, db)
	stopOther()
	if n := len(payloads(other.snapshot(), "k")); n != 0 {
		t.Fatalf("another relay relayed %d rows of a key whose head r1 owns", n)
	}

	restarted, err := outboxkafka.NewTransactionalPublisher(outboxkafka.Config{Brokers: brokers, RelayName: "r1"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = restarted.Close() })
	runRelay(t, db, outbox.RelayConfig{Name: "r1", TransactionalPublisher: restarted, PollInterval: 20 * time.Millisecond})
	testutil.Poll(t, time.Minute, "all rows delivered", func() (bool, string) {
		n := countRows(t, db, "delivered_at IS NULL")
		return n == 0, fmt.Sprintf("%d pending", n)
	})
	var got []string
	for _, m := range readKafkaMessages(t, brokers, sarama.ReadCommitted) {
		got = append(got, string(m.Payload)+"@"+m.Metadata.Get(outbox.MetadataOutboxID))
	}
	if want := "[0@1 1@2 2@3 3@4 4@5 5@6]"; fmt.Sprint(got) != want {
		t.Errorf("read_committed reader got %v, want %s (each row once, in order, with its outbox id)", got, want)
	}
}

// readKafkaMessages reads crashTopic up to a sentinel (see readKafka) and unmarshals the records with
// watermill-kafka's DefaultMarshaler.
func readKafkaMessages(t *testing.T, brokers []string, isolation sarama.IsolationLevel) []*message.Message {
	var out []*message.Message
	readKafkaRecords(t, brokers, isolation, func(m *sarama.ConsumerMessage) {
		msg, err := kafka.DefaultMarshaler{}.Unmarshal(m)
		if err != nil {
			t.Fatalf("record at offset %d: %v", m.Offset, err)
		}
		out = append(out, msg)
	})
	return out
}

// TestKafkaTransactionalOutputReadByWatermillKafka relays rows in transactional mode and reads them with
// watermill-kafka's Subscriber (read_committed, consumer group): UUID, payload, metadata and the outbox id
// arrive as published.
func TestKafkaTransactionalOutputReadByWatermillKafka(t *testing.T) {
	db := migrated(t)
	ctx := context.Background()
	brokers := testutil.Kafka(t, crashTopic, outboxkafka.DefaultProgressTopic)
	var sent []*message.Message
	for i := range 5 {
		m := keyed("k", "payload-"+strconv.Itoa(i))
		m.Metadata.Set("trace", strconv.Itoa(i))
		sent = append(sent, m)
		if err := publishInTx(ctx, db, outbox.PublisherConfig{}, crashTopic, "k", i, true, m); err != nil {
			t.Fatal(err)
		}
	}
	tp, err := outboxkafka.NewTransactionalPublisher(outboxkafka.Config{Brokers: brokers, RelayName: "r"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tp.Close() })
	runRelay(t, db, outbox.RelayConfig{Name: "r", TransactionalPublisher: tp, PollInterval: 20 * time.Millisecond})

	sc := kafka.DefaultSaramaSubscriberConfig()
	sc.Consumer.IsolationLevel = sarama.ReadCommitted
	sc.Consumer.Offsets.Initial = sarama.OffsetOldest
	sub, err := kafka.NewSubscriber(kafka.SubscriberConfig{Brokers: brokers, Unmarshaler: kafka.DefaultMarshaler{},
		OverwriteSaramaConfig: sc, ConsumerGroup: "readers"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Close() })
	subCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	ch, err := sub.Subscribe(subCtx, crashTopic)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range sent {
		select {
		case m := <-ch:
			m.Ack()
			if m.UUID != want.UUID || string(m.Payload) != string(want.Payload) || m.Metadata.Get("trace") != strconv.Itoa(i) ||
				m.Metadata.Get(outbox.MetadataOutboxID) != strconv.Itoa(i+1) || m.Metadata.Get(outbox.MetadataOrderingKey) != "k" {
				t.Errorf("message %d: %s %q %v, want %s %q with trace %d and outbox id %d", i, m.UUID, m.Payload, m.Metadata,
					want.UUID, want.Payload, i, i+1)
			}
		case <-subCtx.Done():
			t.Fatalf("watermill-kafka subscriber got %d of %d messages", i, len(sent))
		}
	}
}

// TestKafkaTransactionalBadRowParksAlone publishes a row watermill-kafka's marshaler rejects (reserved
// metadata key) among good rows: only that row counts attempts and is parked; the others are relayed.
func TestKafkaTransactionalBadRowParksAlone(t *testing.T) {
	db := migrated(t)
	ctx := context.Background()
	brokers := testutil.Kafka(t, crashTopic, outboxkafka.DefaultProgressTopic)
	bad := keyed("b", "bad")
	bad.Metadata.Set(kafka.UUIDHeaderKey, "reserved")
	for i, m := range []*message.Message{keyed("a", "good-1"), bad, keyed("c", "good-2")} {
		if err := publishInTx(ctx, db, outbox.PublisherConfig{}, crashTopic, "k", i, true, m); err != nil {
			t.Fatal(err)
		}
	}
	tp, err := outboxkafka.NewTransactionalPublisher(outboxkafka.Config{Brokers: brokers, RelayName: "r"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tp.Close() })
	runRelay(t, db, outbox.RelayConfig{Name: "r", TransactionalPublisher: tp, PollInterval: 20 * time.Millisecond,
		MaxAttempts: 2, RetryInitialBackoff: time.Millisecond, RetryMaxBackoff: 5 * time.Millisecond})
	testutil.Poll(t, time.Minute, "bad row parked, good rows delivered", func() (bool, string) {
		parked := countRows(t, db, "parked_at IS NOT NULL")
		delivered := countRows(t, db, "delivered_at IS NOT NULL")
		return parked == 1 && delivered == 2, fmt.Sprintf("parked %d, delivered %d", parked, delivered)
	})
	parked, err := (outbox.Table{}).Parked(ctx, db, 10)
	if err != nil || len(parked) != 1 || parked[0].UUID != bad.UUID || parked[0].Attempts != 2 {
		t.Errorf("parked rows %+v (err %v), want only the bad row after 2 attempts", parked, err)
	}
	if n := countRows(t, db, "attempts > 1 AND parked_at IS NULL"); n != 0 {
		t.Errorf("%d good rows counted more than one attempt because of the bad row", n)
	}
	var got []string
	for _, m := range readKafkaMessages(t, brokers, sarama.ReadCommitted) {
		got = append(got, string(m.Payload))
	}
	slices.Sort(got)
	if fmt.Sprint(got) != "[good-1 good-2]" {
		t.Errorf("read_committed reader got %v, want [good-1 good-2]", got)
	}
}

// A progress topic holding a record no relay wrote stops recovery with an
// error naming it, rather than being read past.
func TestKafkaTransactionalRecoverRefusesForeignRecords(t *testing.T) {
	ctx := context.Background()
	brokers := testutil.Kafka(t, outboxkafka.DefaultProgressTopic)
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	rec := &kgo.Record{Topic: outboxkafka.DefaultProgressTopic, Partition: 0, Key: []byte("r"), Value: []byte("not a progress record")}
	if err := cl.ProduceSync(ctx, rec).FirstErr(); err != nil {
		t.Fatal(err)
	}
	tp, err := outboxkafka.NewTransactionalPublisher(outboxkafka.Config{Brokers: brokers, RelayName: "r"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	if _, err := tp.Recover(ctx); err == nil || !strings.Contains(err.Error(), "offset 0 holds no progress record") {
		t.Fatalf("Recover = %v, want the foreign record at offset 0 named", err)
	}
}
