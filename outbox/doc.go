// Package outbox is a transactional outbox for microservices on PostgreSQL: messages are written in the same
// transaction as the business rows (a Publisher bound to a pgx.Tx), and a Relay publishes the committed ones
// through any Watermill Publisher (SLS, Kafka, ...), in order per ordering key, at least once; or exactly once
// into Kafka for read_committed readers with package outboxkafka, and exactly once into SLS with idempotent
// writes whose sequence ids are the row ids (SequenceKey, SequenceID).
//
// It depends on Watermill and pgx only.
//
// # Writing
//
//	tx, _ := pool.Begin(ctx)
//	// ... business writes in tx ...
//	pub, _ := outbox.NewPublisher(tx, outbox.PublisherConfig{})
//	msg := message.NewMessage(watermill.NewUUID(), payload)
//	msg.Metadata.Set(outbox.DefaultOrderingKeyMetadata, orderID) // optional ordering key
//	err := pub.Publish("orders", msg)
//	// ... tx.Commit(ctx): the message exists if and only if the business rows do.
//
// Inside a handler that received the transaction through its context, use ContextWithTx and
// PublisherFromContext. Publish issues pg_notify in the same transaction, so listening relays wake when it
// commits. Misuse fails with errors that say what to do: ErrTxDone (publish after Commit or Rollback),
// ErrTxAborted (an earlier statement failed), *MissingTableError (Migrate was not called),
// *PayloadTooLargeError (PublisherConfig.MaxPayloadBytes).
//
// # Schema
//
// Table.Migrate creates the table and its indexes (idempotent, safe to run from several processes at once).
// For the default table it runs:
//
//	CREATE TABLE IF NOT EXISTS watermill_outbox (
//		id              bigserial PRIMARY KEY,          -- monotonically increasing; per key, in commit order
//		topic           text        NOT NULL,           -- destination topic
//		ordering_key    text,                           -- NULL: not ordered with any other row
//		uuid            text        NOT NULL,           -- Watermill message UUID
//		metadata        jsonb       NOT NULL DEFAULT '{}',
//		payload         bytea       NOT NULL,
//		created_at      timestamptz NOT NULL DEFAULT now(),
//		attempts        integer     NOT NULL DEFAULT 0, -- publish attempts so far
//		last_error      text,                           -- error of the last failed attempt
//		next_attempt_at timestamptz NOT NULL DEFAULT now(), -- not relayed before (retry backoff)
//		delivered_at    timestamptz,                    -- set when relayed; retention deletes by it
//		parked_at       timestamptz,                    -- set after MaxAttempts failures (parked)
//		owner           text                            -- relay name holding the row (transactional mode)
//	);
//	CREATE INDEX IF NOT EXISTS watermill_outbox_key_idx       ON watermill_outbox (ordering_key, id) WHERE delivered_at IS NULL;
//	CREATE INDEX IF NOT EXISTS watermill_outbox_unkeyed_idx   ON watermill_outbox (id) WHERE delivered_at IS NULL AND ordering_key IS NULL;
//	CREATE INDEX IF NOT EXISTS watermill_outbox_delivered_idx ON watermill_outbox (delivered_at) WHERE delivered_at IS NOT NULL;
//
// Table.Schema and Table.Name choose another table; the notification channel is Table.Channel().
//
// # Relaying
//
// A Relay (NewRelay, Run) loops: claim a batch, publish it, mark it, commit. It sleeps until a notification
// (LISTEN on one pool connection) or PollInterval, whichever comes first; RelayConfig.DisableListen polls only,
// for PgBouncer-style poolers in transaction mode. Run several relays (processes) on one table to share the
// work; within a relay, RelayConfig.Workers batches are worked on at once, each in its own transaction, as
// that many relays would. Each relayed message carries its row id in metadata MetadataOutboxID and its ordering key in
// MetadataOrderingKey: ids of one key increase in commit order, so a destination can use the id as a per-key
// sequence id for idempotent writes.
//
// A failed publish counts an attempt and delays the row by exponential backoff (RetryInitialBackoff doubling
// up to RetryMaxBackoff, with jitter). After MaxAttempts the row is parked: Table.Parked lists parked rows,
// Table.Requeue makes them eligible again. Delivered rows are deleted after Retention (or at once, with
// DeleteOnDelivery: the fastest way to relay, an UPDATE costs a new row version). Metrics receives
// relayed (with lag), failed, parked and relay-level errors. On cancellation Run finishes its batch within
// ShutdownTimeout or abandons it (its rows are released).
//
// # Order per key, with several relays
//
// Claim. A row is a head when no row of its ordering key with a smaller id is undelivered (parked and
// backing-off rows are undelivered). Each claim looks at a window of 2×BatchSize keys, found by a loose scan
// of the key index (one index descent per key, whatever the backlog of each key); successive claims move the
// window round-robin through the keyspace, so every key is looked at within keys/window claims. The claim
// statement locks, with FOR UPDATE SKIP LOCKED and oldest first, the window's heads (and the oldest unkeyed
// rows) that are still undelivered, due and not parked, then reads, for each locked head's key, the later
// undelivered rows (its followers) in id order, at most BatchSize/heads per key, stopping at the first one that
// is parked or waiting for a retry. The relay publishes a key's rows in id order, in one Publish call (up to
// MaxMessagesPerPublish rows, packed with other keys' rows of the same topic) after another, never two calls
// of one key at a time; a failed call is published again one row per call, in order, so the key stops at its
// first failed row. It marks what it published delivered (or deletes it, with DeleteOnDelivery) and commits,
// all in the claim's transaction.
//
// Mutual exclusion per key. While relay A's transaction holds key k's head h locked and undelivered, no other
// relay can claim a row of k: h is skipped because it is locked, and every later row of k is not a head,
// because h is undelivered in every snapshot taken before A commits. After A commits, the rows it marked are
// delivered and the first row of k it did not publish becomes the head; a relay whose snapshot predates A's
// commit still sees h undelivered and claims nothing of k, and if it reaches h after A's commit,
// PostgreSQL re-checks h's new version (delivered) and skips it. The key scan and the claim are two statements:
// a row the scan found as its key's head is still the head when the claim locks it, unless it was delivered
// meanwhile (then the claim skips it), because no row of its key with a smaller id can commit later (next
// paragraph). So a key is relayed by one relay at a time,
// and each relay publishes a prefix of the key's undelivered rows in id order, each after its predecessor
// was delivered.
//
// Id order is commit order. The Publisher takes a transaction-scoped advisory lock per ordering key
// (pg_advisory_xact_lock) before it inserts, so a second transaction publishing the same key waits until the
// first ends, and only then draws its ids from the sequence. PostgreSQL makes a commit visible before it
// releases the transaction's locks, so a row of key k is never visible while a row of k with a smaller id is
// still uncommitted: a relay cannot skip ahead of a row that commits later.
//
// Parking keeps order. A parked row stays undelivered, so it remains its key's head but is never claimed:
// the key stops there until Table.Requeue (TestParkedRowBlocksItsKey). Rows without an ordering key are
// independent and relayed in parallel.
//
// Crashes. The claim's locks live in the relay's transaction: when a relay dies, PostgreSQL rolls it back and
// the rows are claimable again; a message published before the crash is published again (at least once; see
// "Exactly once into SLS" for a destination that refuses it).
//
// # Exactly once into Kafka
//
// With RelayConfig.TransactionalPublisher (outboxkafka.TransactionalPublisher) and a stable RelayConfig.Name,
// the relay commits its claim (rows owned by its name) in PostgreSQL, publishes the batch and a progress
// record with the batch's row ids in one Kafka transaction, then marks the rows. Rows owned by a relay are
// never claimed by another (nor, for order, the rest of their keys). When the relay restarts under its name,
// Recover fences the old producer (its open transaction is aborted), reads the last progress record, marks
// those rows delivered, and releases the others, before publishing anything: a crash between the Kafka commit
// and the PostgreSQL mark produces no duplicate for read_committed readers. A relay that never comes back
// holds its rows until a relay is started under its name. In this mode a failing batch counts an attempt for
// each of its rows.
//
// # Exactly once into SLS
//
// SLS refuses a write whose sequence id (seqid) is not greater than the last one it wrote for the request's
// hash key. Configure the slspubsub Publisher with HashKey = SequenceKey (the ordering key, or for a row
// without one a key of its own), IdempotentWrites, and SequenceID = SequenceID (the row id): each row then
// travels in a request of its own whose seqid is its row id, and a row that was written before (by a relay
// killed before it marked the row, or whose answer was lost) is refused as a duplicate when it is sent again,
// which the Publisher reports as written. So the logstore holds each committed row once
// (TestCrashRelayToSLSIdempotent: SIGKILLed relays, zero duplicates, nothing missing).
//
//	pub, err := slspubsub.NewPublisher(slspubsub.PublisherConfig{
//		ClientConfig:     clientConfig,
//		HashKey:          outbox.SequenceKey,
//		IdempotentWrites: true,
//		SequenceID:       outbox.SequenceID,
//	}, logger)
//	relay, err := outbox.NewRelay(db, outbox.RelayConfig{Publisher: pub}, logger)
//
// Why a refusal means written: SLS's last seqid for a key is the id of a row that was written, and every
// earlier row of the key was written before it. Ids of a key increase in commit order (above); a relay
// publishes a key's rows in id order, in Publish calls one after another, and stops the key at its first
// failure; within a call the Publisher (with SequenceID) sends a key's messages one request each, in order,
// and fails the rest of the key unsent at the first failure; and a key is relayed by one relay at a time, so
// a row is sent only after every earlier row of its key was written. A failed call is published again one
// row per call from its first row: rows it had written are refused as duplicates (reported written). A row parked after MaxAttempts stops its key (Parking keeps order), so no later row is written
// before it. A late request of a dead relay either was the first copy or is refused. Rows without an ordering
// key are relayed in parallel, in no order, so SequenceKey gives each its own key: one sequence per row in SLS.
//
// What this needs from the deployment: no other writer uses sequence ids on the same hash keys of the
// logstore (in particular no Publisher with clock-based IdempotentWrites, whose ids are far above row ids:
// every row would be refused and reported written), the outbox table's ids are never reset (a new table, or a
// restored backup with lower ids, must write to a fresh logstore), and SLS keeps a key's sequence for as long
// as a row may be sent again.
package outbox
