package outbox

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
)

// BatchMessage is one row of a batch given to a TransactionalPublisher.
type BatchMessage struct {
	ID          int64  // the outbox row id (also in Message.Metadata under MetadataOutboxID)
	Topic       string // destination topic
	OrderingKey string // empty when the row has none
	Message     *message.Message
}

// TransactionalPublisher publishes a batch atomically together with a record of which outbox rows it holds,
// so that a Relay that crashes after the destination committed but before PostgreSQL marked the rows can find
// out on restart (exactly-once into destinations with transactions, such as Kafka; see package outboxkafka).
//
// A Relay calls it from one goroutine. The implementation is identified by the relay's Name: two running
// relays must never share one.
type TransactionalPublisher interface {
	// Recover fences every earlier incarnation of this relay (their open transactions can no longer commit)
	// and returns the outbox ids of the last batch this relay committed. The Relay calls it before its first
	// batch and after every failed PublishBatch, and marks the ids delivered.
	Recover(ctx context.Context) ([]int64, error)
	// PublishBatch publishes msgs (in order) and a progress record naming their ids, in one transaction: after
	// nil all are committed; after an error the Relay calls Recover to learn whether they were. An error that
	// wraps a *RowError blames one row: only that row counts a failed attempt.
	PublishBatch(ctx context.Context, msgs []BatchMessage) error
}

// RowError is returned (wrapped) by a TransactionalPublisher's PublishBatch when one row made the batch fail
// before anything was sent (it cannot be marshaled, say): the Relay then counts a failed attempt for that row
// only and releases the others without counting, so one bad row cannot park its whole batch.
type RowError struct {
	ID  int64 // outbox row id
	Err error
}

func (e *RowError) Error() string { return fmt.Sprintf("outbox row %d: %v", e.ID, e.Err) }

func (e *RowError) Unwrap() error { return e.Err }

// errNeedRecover marks errors after which the relay must run Recover before its next batch.
var errNeedRecover = errors.New("outbox: transactional publish failed")

// recover marks the rows of the last committed batch delivered and releases the other rows this relay owns.
func (r *Relay) recover(ctx context.Context) error {
	ids, err := r.config.TransactionalPublisher.Recover(ctx)
	if err != nil {
		return fmt.Errorf("outbox: recover relay %q: %w", r.config.Name, err)
	}
	return pgx.BeginFunc(ctx, r.db, func(tx pgx.Tx) error {
		if err := r.config.Table.markDelivered(ctx, tx, ids, r.config.DeleteOnDelivery); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `UPDATE `+r.config.Table.ident()+` SET owner = NULL
			WHERE owner = $1 AND delivered_at IS NULL`, r.config.Name)
		if err != nil {
			return r.config.Table.tableError("release rows in", err)
		}
		return nil
	})
}

// relayTransactional claims a batch and commits the claim (rows owned by this relay's name), publishes it in
// one destination transaction, then marks it delivered. A crash after the destination commit leaves the rows
// owned: no other relay takes them, and this relay's Recover marks them on restart.
func (r *Relay) relayTransactional(ctx context.Context, cursor *keyCursor) (batchResult, error) {
	work, cancel := r.workContext(ctx)
	defer cancel()
	name := r.config.Name
	var rows []*row
	var end bool
	err := pgx.BeginFunc(work, r.db, func(tx pgx.Tx) error {
		var err error
		if rows, end, err = r.config.Table.claim(work, tx, false, cursor, r.config.BatchSize, &name); err != nil || len(rows) == 0 {
			return err
		}
		ids := make([]int64, len(rows))
		for i, row := range rows {
			ids[i] = row.id
		}
		_, err = tx.Exec(work, `UPDATE `+r.config.Table.ident()+` SET owner = $1 WHERE id = ANY($2)`, name, ids)
		return err
	})
	if err != nil || len(rows) == 0 {
		return batchResult{endOfKeys: end}, err
	}
	batch, ids, err := batchMessages(work, rows)
	if err != nil {
		return batchResult{}, fmt.Errorf("%w: %w", errNeedRecover, err) // Recover releases the claim
	}
	pubCtx, cancelPub := context.WithTimeout(work, r.config.PublishTimeout)
	pubErr := r.config.TransactionalPublisher.PublishBatch(pubCtx, batch)
	cancelPub()
	if pubErr != nil {
		return r.afterFailedBatch(work, rows, pubErr)
	}
	if err := pgx.BeginFunc(work, r.db, func(tx pgx.Tx) error {
		return r.config.Table.markDelivered(work, tx, ids, r.config.DeleteOnDelivery)
	}); err != nil {
		// Committed in the destination but not marked: Recover marks them.
		return batchResult{}, fmt.Errorf("%w: %w", errNeedRecover, err)
	}
	res := r.observe(rows, ids, nil)
	res.endOfKeys = end
	return res, nil
}

// afterFailedBatch learns from Recover which rows the failed transaction committed after all, marks those,
// and records a failed attempt for the others, releasing them.
func (r *Relay) afterFailedBatch(ctx context.Context, rows []*row, pubErr error) (batchResult, error) {
	committed, err := r.config.TransactionalPublisher.Recover(ctx)
	if err != nil {
		return batchResult{}, fmt.Errorf("%w: %w (then recover: %w)", errNeedRecover, pubErr, err)
	}
	var delivered []int64
	var failed []*row
	for _, row := range rows {
		if slices.Contains(committed, row.id) {
			delivered = append(delivered, row.id)
		} else {
			failed = append(failed, row)
		}
	}
	var released []int64
	var rowErr *RowError
	if errors.As(pubErr, &rowErr) {
		var culprit []*row
		for _, row := range failed {
			if row.id == rowErr.ID {
				culprit = append(culprit, row)
			} else {
				released = append(released, row.id)
			}
		}
		failed = culprit
	}
	failures := r.failures(failed, fmt.Errorf("transactional publish: %w", pubErr))
	err = pgx.BeginFunc(ctx, r.db, func(tx pgx.Tx) error {
		if err := r.config.Table.markDelivered(ctx, tx, delivered, r.config.DeleteOnDelivery); err != nil {
			return err
		}
		if len(released) > 0 {
			if _, err := tx.Exec(ctx, `UPDATE `+r.config.Table.ident()+` SET owner = NULL WHERE id = ANY($1)`, released); err != nil {
				return r.config.Table.tableError("release rows in", err)
			}
		}
		return r.config.Table.markFailed(ctx, tx, failures)
	})
	if err != nil {
		return batchResult{}, fmt.Errorf("%w: %w", errNeedRecover, err)
	}
	res := r.observe(rows, delivered, failures)
	res.endOfKeys = true // back off: the destination failed
	return res, nil
}

func batchMessages(ctx context.Context, rows []*row) ([]BatchMessage, []int64, error) {
	batch := make([]BatchMessage, len(rows))
	ids := make([]int64, len(rows))
	for i, row := range rows {
		msg, err := row.message(ctx)
		if err != nil {
			return nil, nil, err
		}
		batch[i] = BatchMessage{ID: row.id, Topic: row.topic, Message: msg}
		if row.orderingKey != nil {
			batch[i].OrderingKey = *row.orderingKey
		}
		ids[i] = row.id
	}
	return batch, ids, nil
}
