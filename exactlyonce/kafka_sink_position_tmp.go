package exactlyonce

import "github.com/ThreeDotsLabs/watermill/message"

// Position is where a consumed message sits in its source: a stream (SLS logstore or Kafka topic), a partition
// (SLS shard or Kafka partition) and an offset within the partition. Positions of one (Stream, Partition) are
// totally ordered by (Offset, Index).
type Position struct {
	Stream    string
	Partition int32
	// Offset is the Kafka offset, or for SLS the int64 value of the LogGroup's cursor.
	Offset int64
	// Index is the index of the log inside its SLS LogGroup; 0 for Kafka.
	Index int32
}

// PositionFunc extracts a message's position.
type PositionFunc func(*message.Message) (Position, error)
