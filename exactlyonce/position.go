package exactlyonce

import (
	"encoding/base64"
	"fmt"
	"strconv"

	"github.com/ThreeDotsLabs/watermill/message"
)

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

// Compare orders p and q by (Offset, Index): -1 when p comes first, 0 when they are equal, +1 when p comes
// after q. It ignores Stream and Partition: positions of different partitions are not comparable, and callers
// compare only positions of one (Stream, Partition).
func (p Position) Compare(q Position) int {
	switch {
	case p.Offset < q.Offset:
		return -1
	case p.Offset > q.Offset:
		return 1
	case p.Index < q.Index:
		return -1
	case p.Index > q.Index:
		return 1
	}
	return 0
}

// After reports whether p comes strictly after q within their partition (see Compare).
func (p Position) After(q Position) bool { return p.Compare(q) > 0 }

// String formats p as "<stream>/<partition>@<offset>.<index>", for logs and errors.
func (p Position) String() string {
	return fmt.Sprintf("%s/%d@%d.%d", p.Stream, p.Partition, p.Offset, p.Index)
}

// partitionKey identifies a partition of a stream.
type partitionKey struct {
	stream    string
	partition int32
}

func (p Position) key() partitionKey { return partitionKey{p.Stream, p.Partition} }

// SLSCursor returns the SLS cursor of the LogGroup at p.Offset: the standard base64 of the offset in decimal,
// as SLS spells cursors (slspubsub.Position.CursorValue reverses it).
func (p Position) SLSCursor() string {
	return base64.StdEncoding.EncodeToString(strconv.AppendInt(nil, p.Offset, 10))
}
