package slspubsub

import "context"

// PositionStore is an external source of resume positions, consulted before
// the consumer group's checkpoint and the StartPosition. The exactly-once
// layer implements it with the positions it commits together with its
// writes.
//
// LoadPosition returns the position of the last log of the shard that was
// applied, and ok=false when none is stored. The Subscriber resumes right
// after it: it reads from that log's LogGroup and skips the logs of the
// group up to and including pos.Index. An error fails Subscribe.
// Implementations must be safe for concurrent use.
type PositionStore interface {
	LoadPosition(ctx context.Context, logstore string, shard int) (pos Position, ok bool, err error)
}
