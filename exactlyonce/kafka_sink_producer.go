package exactlyonce

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// The sink produces with franz-go's transactional client rather than sarama's: sarama v1.50.1's transaction
// manager reads its last error outside its lock (transaction_manager.go, publishTxnPartitions) while a failing
// produce writes it, which the race detector reports whenever a transaction fails, and after a failed send it
// can keep sequence numbers the broker never saw (OUT_OF_ORDER_SEQUENCE_NUMBER on every later transaction).
// Output records are still built by watermill-kafka's Marshaler (sarama.ProducerMessage) and placed on partitions
// as sarama places them, so watermill-kafka consumers and publishers see no difference.

// newProducerSession starts a transactional client and initializes its producer id: the broker bumps the epoch
// of the transactional id, which fences every older producer with that id, and completes (commits or aborts)
// the transaction such a producer left open before it answers.
func newProducerSession(ctx context.Context, config KafkaSinkConfig) (*kgo.Client, error) {
	opts := []kgo.Opt{
		kgo.SeedBrokers(config.Brokers...),
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(kgo.SaramaCompatHasher(fnv32a))),
	}
	opts = append(opts, config.ClientOptions...)
	opts = append(opts, kgo.TransactionalID(config.TransactionalID))
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("transactional client %q: %w", config.TransactionalID, err)
	}
	if _, _, err := cl.ProducerID(ctx); err != nil {
		cl.Close()
		return nil, fmt.Errorf("initialize transactional id %q: %w", config.TransactionalID, err)
	}
	return cl, nil
}

// fnv32a is the hash of sarama's default partitioner.
func fnv32a(b []byte) uint32 {
	h := fnv.New32a()
	_, _ = h.Write(b)
	return h.Sum32()
}

// isFenced reports whether err means that a newer producer with the same transactional id took over.
func isFenced(err error) bool {
	return errors.Is(err, kerr.ProducerFenced) || errors.Is(err, kerr.InvalidProducerEpoch) ||
		errors.Is(err, kerr.TransactionalIDAuthorizationFailed)
}

// toRecord turns a record built by a watermill-kafka Marshaler into a franz-go record. An explicit
// ProducerMessage.Partition is not kept: records are placed by key as sarama's default partitioner places them.
func toRecord(pm *sarama.ProducerMessage) (*kgo.Record, error) {
	r := &kgo.Record{Topic: pm.Topic, Timestamp: pm.Timestamp}
	var err error
	if pm.Key != nil {
		if r.Key, err = pm.Key.Encode(); err != nil {
			return nil, fmt.Errorf("encode key: %w", err)
		}
	}
	if pm.Value != nil {
		if r.Value, err = pm.Value.Encode(); err != nil {
			return nil, fmt.Errorf("encode value: %w", err)
		}
	}
	if len(pm.Headers) > 0 {
		r.Headers = make([]kgo.RecordHeader, len(pm.Headers))
		for i, h := range pm.Headers {
			r.Headers[i] = kgo.RecordHeader{Key: string(h.Key), Value: h.Value}
		}
	}
	return r, nil
}
