package exactlyonce

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// ksWait bounds every wait on Kafka in these tests.
const ksWait = 30 * time.Second

// Metadata keys of the synthetic source messages of these tests.
const (
	ksStreamKey    = "src_stream"
	ksPartitionKey = "src_partition"
	ksOffsetKey    = "src_offset"
)

// ksSource returns a message as a source would deliver it at (stream, partition, offset).
func ksSource(stream string, partition int32, offset int64) *message.Message {
	msg := message.NewMessage(stream+"-"+strconv.Itoa(int(partition))+"-"+strconv.FormatInt(offset, 10), []byte("payload"))
	msg.Metadata.Set(ksStreamKey, stream)
	msg.Metadata.Set(ksPartitionKey, strconv.Itoa(int(partition)))
	msg.Metadata.Set(ksOffsetKey, strconv.FormatInt(offset, 10))
	return msg
}

// ksPosition is the PositionFunc of ksSource messages.
func ksPosition(msg *message.Message) (Position, error) {
	p, err := strconv.ParseInt(msg.Metadata.Get(ksPartitionKey), 10, 32)
	if err != nil {
		return Position{}, err
	}
	o, err := strconv.ParseInt(msg.Metadata.Get(ksOffsetKey), 10, 64)
	if err != nil {
		return Position{}, err
	}
	return Position{Stream: msg.Metadata.Get(ksStreamKey), Partition: int32(p), Offset: o}, nil
}

// ksEcho outputs one message per input, with UUID "out-<input uuid>" and the input's payload.
func ksEcho(msg *message.Message) ([]*message.Message, error) {
	return []*message.Message{message.NewMessage("out-"+msg.UUID, msg.Payload)}, nil
}

func ksConfig(brokers []string, txnID string) KafkaSinkConfig {
	return KafkaSinkConfig{
		Brokers:         brokers,
		Consumer:        "test-consumer",
		TransactionalID: txnID,
		PositionsTopic:  "positions",
		OutputTopic:     "out",
	}
}

func ksNewSink(t testing.TB, cfg KafkaSinkConfig) *KafkaSink {
	t.Helper()
	s, err := NewKafkaSink(cfg, nil)
	if err != nil {
		t.Fatalf("NewKafkaSink: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// readTopic returns the records of every partition of topic up to its end as a reader with the given isolation
// sees them: for read_committed the last stable offset, for read_uncommitted the high watermark. Records of aborted
// transactions are left out under read_committed.
func readTopic(t testing.TB, brokers []string, topic string, committed bool) []*kgo.Record {
	t.Helper()
	iso := kgo.ReadUncommitted()
	if committed {
		iso = kgo.ReadCommitted()
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.FetchIsolationLevel(iso), kgo.KeepControlRecords())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), ksWait)
	defer cancel()
	adm := kadm.NewClient(cl)
	list := adm.ListEndOffsets
	if committed {
		list = adm.ListCommittedOffsets
	}
	ends, err := list(ctx, topic)
	if err != nil {
		t.Fatalf("list end offsets of %s: %v", topic, err)
	}
	remaining := map[int32]int64{}
	from := map[int32]kgo.Offset{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err == nil && o.Offset > 0 {
			remaining[o.Partition] = o.Offset
			from[o.Partition] = kgo.NewOffset().AtStart()
		}
	})
	var out []*kgo.Record
	if len(remaining) == 0 {
		return out
	}
	cl.AddConsumePartitions(map[string]map[int32]kgo.Offset{topic: from})
	for len(remaining) > 0 {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %s: %v (partitions left: %v)", topic, ctx.Err(), remaining)
		}
		fs.EachError(func(_ string, p int32, err error) { t.Fatalf("fetch %s/%d: %v", topic, p, err) })
		fs.EachRecord(func(r *kgo.Record) {
			end, ok := remaining[r.Partition]
			if !ok || r.Offset >= end {
				return
			}
			if r.Offset == end-1 {
				delete(remaining, r.Partition)
			}
			if !r.Attrs.IsControl() {
				out = append(out, r)
			}
		})
	}
	return out
}

// readOutputs reads topic with read_committed and decodes each record with watermill-kafka's DefaultMarshaler,
// as a watermill-kafka subscriber would.
func readOutputs(t testing.TB, brokers []string, topic string) []*message.Message {
	t.Helper()
	var msgs []*message.Message
	for _, r := range readTopic(t, brokers, topic, true) {
		cm := &sarama.ConsumerMessage{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset, Key: r.Key, Value: r.Value}
		for _, h := range r.Headers {
			cm.Headers = append(cm.Headers, &sarama.RecordHeader{Key: []byte(h.Key), Value: h.Value})
		}
		msg, err := kafka.DefaultMarshaler{}.Unmarshal(cm)
		if err != nil {
			t.Fatalf("unmarshal %s/%d@%d: %v", r.Topic, r.Partition, r.Offset, err)
		}
		msgs = append(msgs, msg)
	}
	return msgs
}

// handleAll runs h on every message concurrently, as router goroutines do, and returns each result by index.
func handleAll(h message.NoPublishHandlerFunc, msgs []*message.Message) []error {
	errs := make([]error, len(msgs))
	done := make(chan struct{})
	for i, m := range msgs {
		go func() {
			errs[i] = h(m)
			done <- struct{}{}
		}()
	}
	for range msgs {
		<-done
	}
	return errs
}

func joinErrs(errs []error) error { return errors.Join(errs...) }
