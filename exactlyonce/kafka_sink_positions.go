package exactlyonce

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/watermill-sls/watermill-sls/slspubsub"
)

// positionRecord is the value of a record of the positions topic.
type positionValue struct {
	Consumer  string `json:"consumer"`
	Stream    string `json:"stream"`
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset"`
	Index     int32  `json:"index"`
}

// positionRecordKey is the compaction key of (consumer, stream, partition): a JSON array, so no name can make
// two keys collide whatever characters it holds.
func positionRecordKey(consumer string, k partitionKey) []byte {
	b, _ := json.Marshal([]any{consumer, k.stream, k.partition}) // strings and an int32 always marshal
	return b
}

func positionRecord(topic, consumer string, p Position) *kgo.Record {
	v, _ := json.Marshal(positionValue{Consumer: consumer, Stream: p.Stream, Partition: p.Partition, Offset: p.Offset, Index: p.Index})
	return &kgo.Record{Topic: topic, Key: positionRecordKey(consumer, partitionKey{p.Stream, p.Partition}), Value: v}
}

// loadPositions reads the positions of consumer committed in topic, with read_committed isolation, up to the last
// stable offset of each partition as it is when the read starts. Records of the same key are applied in log order
// (the newest wins, as compaction keeps it). A topic that does not exist is an error: reading it as "nothing
// committed" would reprocess everything after the topic was lost or misnamed.
func loadPositions(ctx context.Context, config KafkaSinkConfig) (map[partitionKey]Position, error) {
	topic, consumer := config.PositionsTopic, config.Consumer
	opts := append([]kgo.Opt{kgo.SeedBrokers(config.Brokers...)}, config.ClientOptions...)
	opts = append(opts,
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		// Control records (commit and abort markers) are returned so that reading can stop at the last stable
		// offset even when the last record before it is a marker.
		kgo.KeepControlRecords(),
	)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("client for the positions topic %s: %w", topic, err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)

	ends, err := adm.ListCommittedOffsets(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("list last stable offsets of %s: %w", topic, err)
	}
	starts, err := adm.ListStartOffsets(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("list start offsets of %s: %w", topic, err)
	}
	remaining := make(map[int32]int64) // partition -> last stable offset still to reach
	from := make(map[int32]kgo.Offset)
	var listErr error
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err != nil {
			if errors.Is(o.Err, kerr.UnknownTopicOrPartition) {
				o.Err = fmt.Errorf("%w: the positions topic must exist (create it with cleanup.policy=compact)", o.Err)
			}
			listErr = errors.Join(listErr, fmt.Errorf("last stable offset of %s/%d: %w", topic, o.Partition, o.Err))
			return
		}
		s, ok := starts.Lookup(topic, o.Partition)
		if !ok || s.Err != nil {
			listErr = errors.Join(listErr, fmt.Errorf("start offset of %s/%d: %v", topic, o.Partition, s.Err))
			return
		}
		if s.Offset < o.Offset {
			remaining[o.Partition] = o.Offset
			from[o.Partition] = kgo.NewOffset().At(s.Offset)
		}
	})
	if listErr != nil {
		return nil, listErr
	}
	positions := make(map[partitionKey]Position)
	if len(ends) == 0 {
		return nil, fmt.Errorf("the positions topic %s does not exist: create it (cleanup.policy=compact)", topic)
	}
	if len(remaining) == 0 {
		return positions, nil
	}
	cl.AddConsumePartitions(map[string]map[int32]kgo.Offset{topic: from})
	for len(remaining) > 0 {
		fetches := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("read positions topic %s: %w", topic, err)
		}
		var fetchErr error
		fetches.EachError(func(t string, p int32, err error) {
			fetchErr = errors.Join(fetchErr, fmt.Errorf("fetch %s/%d: %w", t, p, err))
		})
		if fetchErr != nil {
			return nil, fetchErr
		}
		var decodeErr error
		fetches.EachRecord(func(r *kgo.Record) {
			end, ok := remaining[r.Partition]
			if !ok {
				return
			}
			if r.Offset >= end {
				delete(remaining, r.Partition)
				return
			}
			if r.Offset == end-1 {
				delete(remaining, r.Partition)
			}
			if r.Attrs.IsControl() {
				return
			}
			var rec positionValue
			if err := json.Unmarshal(r.Value, &rec); err != nil {
				decodeErr = errors.Join(decodeErr, fmt.Errorf("record %s/%d@%d: %w", topic, r.Partition, r.Offset, err))
				return
			}
			if rec.Consumer != consumer {
				return
			}
			positions[partitionKey{rec.Stream, rec.Partition}] = Position{Stream: rec.Stream, Partition: rec.Partition, Offset: rec.Offset, Index: rec.Index}
		})
		if decodeErr != nil {
			return nil, fmt.Errorf("read positions topic %s: %w", topic, decodeErr)
		}
	}
	return positions, nil
}

// PositionStore returns the committed positions as a resume source for an slspubsub.Subscriber
// (SubscriberConfig.PositionStore): for a logstore and shard it gives the position of the last log whose
// outputs the sink committed, and the Subscriber resumes right after it. Start the Subscriber after
// NewKafkaSink returned, with the same sink. Safe for concurrent use.
func (s *KafkaSink) PositionStore() slspubsub.PositionStore {
	return kafkaSinkSLSPositions{s}
}

type kafkaSinkSLSPositions struct{ s *KafkaSink }

func (k kafkaSinkSLSPositions) LoadPosition(_ context.Context, logstore string, shard int) (slspubsub.Position, bool, error) {
	p, ok := k.s.CommittedPosition(logstore, int32(shard))
	if !ok {
		return slspubsub.Position{}, false, nil
	}
	return slspubsub.Position{Shard: shard, Cursor: p.SLSCursor(), Index: int(p.Index)}, true, nil
}

// KafkaResumeOffsets returns, for a Kafka source topic, the offset to resume each partition at (the committed
// offset plus one), for partitions the sink has committed. Partitions absent from the map have nothing committed
// and start wherever the consumer's own policy says.
//
// A consumer-group subscriber (watermill-kafka) needs none of this for correctness: it commits a source offset
// only after the Handler acked, so its group offset is never ahead of the sink's, and the Handler skips what it
// redelivers. Use these offsets to start partition consumers without a group (sarama's ConsumePartition), or to
// move a group's offsets forward (e.g. with kadm.Client.CommitOffsets while the group is empty) so that a new
// or lagging group does not re-read what is already committed.
func (s *KafkaSink) KafkaResumeOffsets(topic string) map[int32]int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[int32]int64)
	for k, p := range s.committed {
		if k.stream == topic {
			out[k.partition] = p.Offset + 1
		}
	}
	return out
}

// CommittedPosition returns the last committed position of a source partition and whether there is one. It
// reflects the positions read at NewKafkaSink and every transaction the sink committed since.
func (s *KafkaSink) CommittedPosition(stream string, partition int32) (Position, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.committed[partitionKey{stream, partition}]
	return p, ok
}
