package outbox_test

import (
	"context"
	"fmt"
	"log"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/watermill-sls/watermill-sls/outbox"
)

// Example shows the outbox end to end: migrate, publish in the business transaction, relay to a Watermill
// Publisher (here gochannel; in production slspubsub or watermill-kafka). It needs a PostgreSQL database, so it
// is compiled but not run by go test.
func Example() {
	ctx := context.Background()
	db, err := pgxpool.New(ctx, "postgres://localhost/shop")
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	if err := (outbox.Table{}).Migrate(ctx, db); err != nil {
		log.Fatal(err)
	}

	// Write side: the message commits with the order, or neither does.
	err = pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO orders (id, total) VALUES ($1, $2)`, "o-1", 42); err != nil {
			return err
		}
		pub, err := outbox.NewPublisher(tx, outbox.PublisherConfig{})
		if err != nil {
			return err
		}
		msg := message.NewMessage(watermill.NewUUID(), []byte(`{"order":"o-1","total":42}`))
		msg.Metadata.Set(outbox.DefaultOrderingKeyMetadata, "o-1") // events of one order stay in order
		return pub.Publish("order_placed", msg)
	})
	if err != nil {
		log.Fatal(err)
	}

	// Relay side (usually its own process or goroutine): runs until ctx is cancelled.
	dest := gochannel.NewGoChannel(gochannel.Config{}, nil)
	relay, err := outbox.NewRelay(db, outbox.RelayConfig{Publisher: dest}, watermill.NewStdLogger(false, false))
	if err != nil {
		log.Fatal(err)
	}
	if err := relay.Run(ctx); err != nil {
		log.Fatal(err)
	}
}

// ExampleSequenceKey shows what a destination with idempotent writes receives from a relayed message: the
// ordering key as the key of the sequence (a key of the row's own when it has none) and the row id as the
// sequence id. With slspubsub:
//
//	slspubsub.PublisherConfig{HashKey: outbox.SequenceKey, IdempotentWrites: true, SequenceID: outbox.SequenceID, ...}
func ExampleSequenceKey() {
	msg := message.NewMessage(watermill.NewUUID(), nil) // as the Relay builds it from row 42 of key "o-1"
	msg.Metadata.Set(outbox.MetadataOutboxID, "42")
	msg.Metadata.Set(outbox.MetadataOrderingKey, "o-1")
	key, _ := outbox.SequenceKey("orders", msg)
	id, _ := outbox.SequenceID("orders", msg)
	fmt.Printf("key %q, sequence id %d\n", key, id)

	unkeyed := message.NewMessage(watermill.NewUUID(), nil) // row 43, no ordering key
	unkeyed.Metadata.Set(outbox.MetadataOutboxID, "43")
	key, _ = outbox.SequenceKey("orders", unkeyed)
	fmt.Printf("key %q\n", key)
	// Output:
	// key "o-1", sequence id 42
	// key "\x00outbox_id:43"
}
