package outbox

import (
	"fmt"
	"strconv"

	"github.com/ThreeDotsLabs/watermill/message"
)

// unkeyedSequencePrefix starts the SequenceKey of a row without an ordering key. PostgreSQL text cannot hold
// a NUL byte, so no ordering key starts with it.
const unkeyedSequencePrefix = "\x00outbox_id:"

// SequenceKey returns the key under which a destination keeps the sequence of a relayed message's
// SequenceID: its ordering key (MetadataOrderingKey) or, for a row without one, a key of that row alone. Use
// it as the destination's partition key for idempotent writes, e.g. slspubsub's PublisherConfig.HashKey: ids
// increase in relay order per ordering key, while rows without a key are relayed in parallel, in no order,
// so each needs a sequence of its own (which costs the destination one sequence per such row: give rows an
// ordering key when that matters). It has the signature of those hooks; topic is not used. It never fails.
func SequenceKey(_ string, msg *message.Message) (string, error) {
	if key, ok := msg.Metadata[MetadataOrderingKey]; ok && key != "" {
		return key, nil
	}
	return unkeyedSequencePrefix + msg.Metadata.Get(MetadataOutboxID), nil
}

// SequenceID returns a relayed message's outbox row id (MetadataOutboxID): a sequence id that increases, per
// SequenceKey, in the order the Relay publishes, for idempotent writes such as slspubsub's
// PublisherConfig.SequenceID. It fails for a message that does not carry one (not relayed from an outbox).
//
// Why it is exact with the Relay (see the package documentation, "Exactly once into SLS"): ids of an
// ordering key increase in commit order, the Relay publishes a key's rows in id order, in Publish calls one
// after another (within a call slspubsub sends a key's messages one request each, in order, and fails the
// rest at the first failure), and a key stops at its first failure, so a row is sent only after every earlier
// row of its key was written; a row sent again (after a crash, a lost answer, or a failed call published
// again row by row) carries its old id and is refused as a duplicate.
func SequenceID(_ string, msg *message.Message) (int64, error) {
	v, ok := msg.Metadata[MetadataOutboxID]
	if !ok {
		return 0, fmt.Errorf("outbox: message %s has no %s metadata: it was not relayed from an outbox", msg.UUID, MetadataOutboxID)
	}
	id, err := strconv.ParseInt(v, 10, 64)
	if err != nil || id < 0 {
		return 0, fmt.Errorf("outbox: message %s: %s metadata %q is not a row id", msg.UUID, MetadataOutboxID, v)
	}
	return id, nil
}
