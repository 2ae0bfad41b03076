package exactlyonce

import (
	"context"
	"fmt"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"

	"github.com/watermill-sls/watermill-sls/outbox"
)

// Output is a message a ProduceFunc emits and the topic it is for.
type Output struct {
	Topic   string
	Message *message.Message
}

// ProduceFunc handles a message inside the transaction (it may also write
// rows through tx) and returns the messages it emits.
type ProduceFunc func(ctx context.Context, tx pgx.Tx, msg *message.Message) ([]Output, error)

// ToOutbox turns fn into a HandlerFunc for MessageHandler or BatchHandler
// whose outputs are written to the outbox table (package outbox) in the
// transaction that stores the consumed position: the outputs of a message
// are committed exactly once, together with its position and fn's other
// writes, or not at all. An outbox.Relay then delivers them to any
// Watermill Publisher (SLS, Kafka), so "exactly-once into anything" goes
// through the outbox; with the relay's Kafka transactional mode the
// delivery is exactly-once too, otherwise at-least-once.
//
// Outputs are written in the order fn returns them (consecutive outputs
// of one topic in one insert); their ordering keys come from cfg (by
// default the outbox.DefaultOrderingKeyMetadata metadata key). An error of
// fn or of the outbox write fails the message: its transaction (or, in a
// batch, its savepoint) is rolled back.
func ToOutbox(cfg outbox.PublisherConfig, fn ProduceFunc) HandlerFunc {
	return func(ctx context.Context, tx pgx.Tx, msg *message.Message) error {
		outs, err := fn(ctx, tx, msg)
		if err != nil || len(outs) == 0 {
			return err
		}
		pub, err := outbox.NewPublisher(tx, cfg)
		if err != nil {
			return fmt.Errorf("exactlyonce: outbox publisher: %w", err)
		}
		for start := 0; start < len(outs); {
			end := start + 1
			for end < len(outs) && outs[end].Topic == outs[start].Topic {
				end++
			}
			msgs := make([]*message.Message, 0, end-start)
			for _, o := range outs[start:end] {
				msgs = append(msgs, o.Message)
			}
			if err := pub.Publish(outs[start].Topic, msgs...); err != nil {
				return fmt.Errorf("exactlyonce: write outputs of message %s to the outbox: %w", msg.UUID, err)
			}
			start = end
		}
		return nil
	}
}
