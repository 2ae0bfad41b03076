package exactlyonce_test

import (
	"context"
	"log"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/watermill-sls/watermill-sls/exactlyonce"
	"github.com/watermill-sls/watermill-sls/slspubsub"
)

// An SLS logstore into a PostgreSQL table, each log applied exactly once, eight logs of a shard in flight.
func Example() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, "postgres://app@db/app")
	if err != nil {
		log.Fatal(err)
	}
	store, err := exactlyonce.NewStore(pool, exactlyonce.StoreConfig{})
	if err != nil {
		log.Fatal(err)
	}
	if err := store.Migrate(ctx); err != nil {
		log.Fatal(err)
	}
	const consumer = "access-log-to-pg"
	sub, err := slspubsub.NewSubscriber(slspubsub.SubscriberConfig{
		ClientConfig:  slspubsub.ClientConfig{Endpoint: "cn-hangzhou.log.aliyuncs.com", Project: "web" /* credentials */},
		MaxInFlight:   8,
		PositionStore: store.SubscriberPositions(consumer), // resume where the sink is
	}, nil)
	if err != nil {
		log.Fatal(err)
	}
	batch, err := exactlyonce.NewBatchHandler(store, exactlyonce.BatchConfig{
		HandlerConfig: exactlyonce.HandlerConfig{Consumer: consumer, Position: exactlyonce.SLSPosition},
		MaxBatch:      8 * 16, // MaxInFlight x shards
	}, func(ctx context.Context, tx pgx.Tx, msg *message.Message) error {
		_, err := tx.Exec(ctx, `INSERT INTO access_log (body) VALUES ($1)`, msg.Payload)
		return err
	})
	if err != nil {
		log.Fatal(err)
	}
	defer batch.Close()
	router, err := message.NewRouter(message.RouterConfig{}, watermill.NopLogger{})
	if err != nil {
		log.Fatal(err)
	}
	// The wrapper keeps each shard's logs in order for the handler (MaxInFlight > 1).
	router.AddConsumerHandler("access-log", "access-log", batch.Subscriber(sub), batch.Handle)
	if err := router.Run(ctx); err != nil {
		log.Fatal(err)
	}
}

// An SLS logstore into PostgreSQL at high rates: each batch of up to 2 048 logs is written with one COPY,
// together with the positions of its shards, exactly once.
func ExampleNewBulkHandler() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, "postgres://app@db/app")
	if err != nil {
		log.Fatal(err)
	}
	store, err := exactlyonce.NewStore(pool, exactlyonce.StoreConfig{})
	if err != nil {
		log.Fatal(err)
	}
	if err := store.Migrate(ctx); err != nil {
		log.Fatal(err)
	}
	const consumer = "access-log-to-pg"
	sub, err := slspubsub.NewSubscriber(slspubsub.SubscriberConfig{
		ClientConfig:  slspubsub.ClientConfig{Endpoint: "cn-hangzhou.log.aliyuncs.com", Project: "web" /* credentials */},
		MaxInFlight:   512, // per shard: the next batch fills while one commits
		PositionStore: store.SubscriberPositions(consumer),
	}, nil)
	if err != nil {
		log.Fatal(err)
	}
	bulk, err := exactlyonce.NewBulkHandler(store, exactlyonce.BatchConfig{
		HandlerConfig: exactlyonce.HandlerConfig{Consumer: consumer, Position: exactlyonce.SLSPosition},
		MaxBatch:      2048,
	}, func(ctx context.Context, tx pgx.Tx, msgs []*message.Message) error {
		rows := make([][]any, len(msgs))
		for i, msg := range msgs {
			rows[i] = []any{msg.Payload}
		}
		// If this fails, the handler bisects the batch to find the failing log; the logs of other shards,
		// and those before it in its shard, still commit.
		_, err := tx.CopyFrom(ctx, pgx.Identifier{"access_log"}, []string{"body"}, pgx.CopyFromRows(rows))
		return err
	})
	if err != nil {
		log.Fatal(err)
	}
	defer bulk.Close()
	router, err := message.NewRouter(message.RouterConfig{}, watermill.NopLogger{})
	if err != nil {
		log.Fatal(err)
	}
	// The wrapper keeps each shard's logs in order for the handler (MaxInFlight > 1).
	router.AddConsumerHandler("access-log", "access-log", bulk.Subscriber(sub), bulk.Handle)
	if err := router.Run(ctx); err != nil {
		log.Fatal(err)
	}
}
