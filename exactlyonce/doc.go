// Package exactlyonce gives Watermill handlers exactly-once effects in PostgreSQL: the position a message was
// consumed at and the handler's writes commit in one transaction, and a message whose position is already
// stored is acked without running the handler again.
//
// # The pieces
//
//   - [Store] keeps, per (consumer, stream, partition), the position of the last message applied: a
//     [Position] (SLS logstore/shard/cursor value/index in the LogGroup, or Kafka topic/partition/offset).
//     Positions only move forward, enforced in SQL. The Store is also where a restarted consumer resumes:
//     [Store.SubscriberPositions] is an slspubsub.PositionStore, [Store.KafkaResume] a watermill-kafka
//     SaramaTracer that starts each partition after its stored offset.
//   - [MessageHandler] applies each message in a transaction of its own; [BatchHandler] applies the messages of
//     many router goroutines in shared transactions (group commit). Both have the shape of
//     message.NoPublishHandlerFunc and call a [HandlerFunc] with the transaction, once per message.
//   - [NewBulkHandler] is the BatchHandler for throughput: its [BulkFunc] gets the whole batch and writes it
//     with a few statements (tx.CopyFrom, a pgx.Batch, INSERT ... SELECT FROM unnest), so a batch of
//     thousands of messages costs a handful of round trips instead of one per message.
//   - [ToOutbox] adapts a handler that emits messages: its outputs are written to the transactional outbox
//     (package outbox) in the transaction that stores the position, and an outbox Relay delivers them to any
//     Publisher, so exactly-once effects reach SLS, Kafka or anything else through the outbox.
//   - [KafkaSink] is exactly-once into Kafka instead of PostgreSQL: each Kafka transaction carries a batch's
//     output messages and the source positions they consumed (records of a compacted positions topic), so
//     outputs and positions commit together; a restart reads the committed positions with read_committed and
//     the source resumes after them ([KafkaSink.PositionStore] for slspubsub, [KafkaSink.KafkaResumeOffsets]
//     for a Kafka source). A stable transactional id fences a zombie instance. With slspubsub's MaxInFlight
//     above 1, decorate the subscriber with [KafkaSink.SubscriberDecorator].
//   - Position extractors: [SLSPosition] for slspubsub messages, [KafkaPosition] for watermill-kafka messages,
//     or any [PositionFunc].
//
// # The guarantees
//
// A handler stores a message's position in the transaction that holds the message's writes; the router acks
// the message only after the commit. A message whose position is not after the stored one is acked without
// calling the HandlerFunc. A stored position never moves backward, and never past a message that was not
// applied: when a message fails, no later message of its partition commits until the failed one is
// redelivered and applied (they fail with [ErrPartitionBlocked] and are redelivered). In a batch, a failing
// message is isolated by a savepoint: the other partitions of the batch commit, and nothing after it in its
// partition does. A [BulkFunc] cannot say which message it failed on, so the handler finds it by bisection
// under savepoints (halves of the set, in order, down to single messages) with the same outcome. A failed
// commit fails every message of the batch. Two consumers applying the same partition
// at once (a rebalance) cannot both commit a message: the position row is locked and the upsert is
// forward-only, so one of them fails with [ErrPositionConflict] or skips.
//
// What this needs from the HandlerFunc: all its effects go through the transaction it is given (no
// publishing, no calls to other systems whose effects would survive a rollback), and it may run more than once
// for a message (after a rollback or a crash) with only one run ever committed.
//
// # Order within a partition
//
// A partition's position is one value, so its messages must commit in order. With one unacked message per
// partition at a time (watermill-kafka; slspubsub with MaxInFlight 1, the default) that is given. With
// slspubsub's MaxInFlight above 1 the router runs several messages of a shard in parallel goroutines and a
// later one could commit first; wrap the subscriber with the handler's Subscriber method (for example
// batch.Subscriber(sub)) and pass the wrapper to the router: it numbers each partition's messages in delivery
// order and the handler admits them in that order. A *slspubsub.Subscriber is numbered as it delivers
// (slspubsub's SubscribeObserved), so the wrapper adds no goroutine between it and the router; any other
// subscriber (or one decorated by another type) is numbered by a goroutine that forwards its channel, one more
// hand-off per message. A message that a middleware acks without calling the
// handler counts as dropped on purpose (the partition goes on); one a middleware nacks blocks its partition
// like a failure until it is redelivered and applied. Keep middleware that acks failed messages (such as a
// poison queue) outside these handlers only if skipping those messages for good is what you want.
//
// # Group commit
//
// A batch holds at most what the subscriber releases before the first ack: with one partition and
// MaxInFlight 1 every batch has one message and only adds BatchConfig.MaxWait of latency. Batching pays off
// with many partitions (SLS shards, Kafka partitions) or with slspubsub.SubscriberConfig.MaxInFlight above 1;
// set BatchConfig.MaxBatch to partitions x MaxInFlight so that a batch is applied as soon as it is full.
// While a batch commits the next one fills, so MaxInFlight of about twice MaxBatch / partitions keeps the
// database busy.
//
// A batch costs these round trips: BEGIN, the function's statements (one per message for a HandlerFunc that
// runs one INSERT; one COPY for a typical BulkFunc), one statement storing the positions of all its
// partitions, and COMMIT; plus, for partitions the handler has not seen yet (or after a failed batch), one
// statement before the function that reads and locks their stored positions. Otherwise the handler plans
// against the positions its own last batches stored, and the statement storing the new ones checks that each
// partition's stored position is still before the first message applied (another consumer may have applied
// the partition meanwhile): if not, the batch fails with [ErrPositionConflict] and the redelivered messages
// are planned against a fresh read. When the round trips rather than the database's work bound the
// throughput, BatchConfig.Parallel commits several batches at once, each for its own share of the
// partitions.
//
// For the highest rates use [NewBulkHandler] with batches of 1 000 to 2 000 messages written with
// tx.CopyFrom, MaxInFlight of 256 to 1 024 per shard, and the subscriber wrapped with the handler's
// Subscriber method.
//
// # Schema
//
// [Store.Migrate] creates, in one transaction under an advisory lock (safe from several processes), the
// schema (StoreConfig.Schema, default public), a migrations table and the positions table (StoreConfig.Table,
// default watermill_sls_positions):
//
//	CREATE SCHEMA IF NOT EXISTS public;
//	CREATE TABLE IF NOT EXISTS public.watermill_sls_positions_migrations (
//		version    integer     PRIMARY KEY,
//		applied_at timestamptz NOT NULL DEFAULT now()
//	);
//	-- version 1
//	CREATE TABLE IF NOT EXISTS public.watermill_sls_positions (
//		consumer   text        NOT NULL,
//		stream     text        NOT NULL,  -- SLS logstore or Kafka topic
//		partition  integer     NOT NULL,  -- SLS shard or Kafka partition
//		"offset"   bigint      NOT NULL,  -- Kafka offset, or the SLS LogGroup cursor's int64 value
//		"index"    integer     NOT NULL,  -- index of the log in its SLS LogGroup; 0 for Kafka
//		updated_at timestamptz NOT NULL DEFAULT now(),
//		PRIMARY KEY (consumer, stream, partition)
//	);
//
// MessageHandler stores a position with a forward-only upsert, in the handler's transaction (BatchHandler
// stores those of all partitions of a batch with one statement, an UPDATE ... FROM unnest(...) conditional on
// the stored position being before the batch's first message of the partition, plus an INSERT ... ON
// CONFLICT DO NOTHING for partitions without a row):
//
//	INSERT INTO public.watermill_sls_positions AS p (consumer, stream, partition, "offset", "index")
//	VALUES ($1, $2, $3, $4, $5)
//	ON CONFLICT (consumer, stream, partition) DO UPDATE
//	SET "offset" = EXCLUDED."offset", "index" = EXCLUDED."index", updated_at = now()
//	WHERE (p."offset", p."index") < (EXCLUDED."offset", EXCLUDED."index");
//
// The SLS cursor of a stored offset is the standard base64 of its decimal form ([Position.SLSCursor]).
//
// # Resuming
//
// SLS: set slspubsub.SubscriberConfig.PositionStore to store.SubscriberPositions(consumer); each shard starts
// right after its stored log (inside its LogGroup), before any consumer-group checkpoint is looked at.
// Positions are keyed by logstore name, not project.
//
// Kafka: set kafka.SubscriberConfig.Tracer to store.KafkaResume(consumer, nil). With a consumer group, each
// claimed partition's session offset is set to the stored offset + 1 in Setup (the store wins over the group's
// committed offset); without one, each partition consumer starts there. Partitions without a stored position
// start as sarama would.
//
// Use the same consumer name in the handler's HandlerConfig and in the resume hook.
package exactlyonce
