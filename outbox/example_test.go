package outbox_test

import (
	"context"
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
