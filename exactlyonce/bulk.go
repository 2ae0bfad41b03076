package exactlyonce

import (
	"context"
	"errors"
	"fmt"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
)

// BulkFunc applies a set of messages inside tx in one go, typically with a few statements for the whole set:
// tx.CopyFrom, or a pgx.Batch sent with tx.SendBatch, or one INSERT ... SELECT FROM unnest(...). Its writes
// commit together with the positions of the messages, or not at all.
//
// msgs holds the messages of every partition in the set; the messages of one partition are in position order
// and each appears once. A call may get a whole batch or any subset of it (see NewBulkHandler), and a message
// may be passed again after its transaction or savepoint was rolled back; only one run ever commits. The slice
// is only valid during the call.
//
// The rules of HandlerFunc hold: all work goes through tx (no publishing, no writes elsewhere), no commit or
// rollback of tx, and an error means "not applied". To drop a poison message for good, leave it out of the
// writes and return nil: it then counts as applied.
type BulkFunc func(ctx context.Context, tx pgx.Tx, msgs []*message.Message) error

// NewBulkHandler returns a BatchHandler that hands each batch to fn as a whole instead of one message at a time,
// and starts its goroutine; Close stops it. Everything else is as for NewBatchHandler: messages of many router
// goroutines share a transaction (group commit), messages at or before the stored position and duplicates are
// skipped before fn is called, the positions of every partition of the batch are stored with one statement,
// and every Handle call returns (the router acks) only after the commit. A failed commit fails every message
// of the batch.
//
// When fn fails, the handler cannot tell which message it failed on, so it finds out by bisection: it rolls
// the transaction back, begins a new one, and calls fn on the set inside a savepoint; when that fails, it rolls
// back to the savepoint and applies the first half, then the second half, each the same way, down to single
// messages. A single message on which fn fails is the failed message: its Handle call returns fn's error, and
// every later message of its partition in the batch fails with ErrPartitionBlocked (they are dropped from the
// halves still to run), while every other message commits. So the stored position of a partition never passes
// a message that fn did not apply, as with NewBatchHandler, and a message that failed blocks its partition
// across batches until it is redelivered and applied. One failing message among n costs about 2·log2(n) extra
// calls of fn on ever smaller sets; fn must be deterministic enough for this to converge (an error that is
// not the messages' fault, such as a lost connection, fails the batch as a whole when the next savepoint
// cannot be made).
//
// fn runs on the batch's goroutine with a context that ends with the batch's Timeout.
func NewBulkHandler(store *Store, cfg BatchConfig, fn BulkFunc) (*BatchHandler, error) {
	if store == nil || fn == nil {
		return nil, errors.New("exactlyonce: NewBulkHandler: nil store or bulk function")
	}
	return newBatchHandler(store, cfg, nil, fn)
}

// runBulk applies the planned messages with the BulkFunc: all at once without savepoints (an error fails the run
// with errUseSavepoints), or by bisection under savepoints. A returned error fails the whole batch.
func (h *BatchHandler) runBulk(ctx context.Context, tx pgx.Tx, runs []*partitionRun, results map[*batchRequest]error, savepoints bool) error {
	var (
		reqs []*batchRequest
		of   = make(map[partitionKey]*partitionRun, len(runs))
	)
	for _, p := range runs {
		reqs = append(reqs, p.reqs...)
		of[p.reqs[0].pos.key()] = p
	}
	if len(reqs) == 0 {
		return nil
	}
	if !savepoints {
		if err := h.bulk(ctx, tx, messagesOf(reqs)); err != nil {
			return errUseSavepoints
		}
		for _, p := range runs {
			p.last, p.nApplied = p.reqs[len(p.reqs)-1].pos, len(p.reqs)
		}
		return nil
	}
	return h.bisect(ctx, tx, reqs, of, results)
}

// bisect applies reqs (each partition's in position order) in a savepoint; when the BulkFunc fails on them it
// rolls back to the savepoint and applies the first half, then the second. Requests of a partition that failed
// in an earlier part are refused, not applied: they come after the failed message in their partition, because
// the parts run in order.
func (h *BatchHandler) bisect(ctx context.Context, tx pgx.Tx, reqs []*batchRequest, of map[partitionKey]*partitionRun, results map[*batchRequest]error) error {
	live := make([]*batchRequest, 0, len(reqs))
	for _, r := range reqs {
		if p := of[r.pos.key()]; p.failed != nil {
			p.refuse(r, results)
			continue
		}
		live = append(live, r)
	}
	if len(live) == 0 {
		return nil
	}
	herr, err := inSavepoint(ctx, tx, func() error { return h.bulk(ctx, tx, messagesOf(live)) })
	if err != nil {
		return fmt.Errorf("exactlyonce: bulk of %d messages from %s: %w", len(live), live[0].pos, err)
	}
	if herr == nil {
		for _, r := range live {
			p := of[r.pos.key()]
			p.last, p.nApplied = r.pos, p.nApplied+1
		}
		return nil
	}
	if len(live) == 1 {
		r := live[0]
		results[r] = fmt.Errorf("message at %s: %w", r.pos, herr)
		of[r.pos.key()].failed = &r.pos
		return nil
	}
	mid := len(live) / 2
	if err := h.bisect(ctx, tx, live[:mid], of, results); err != nil {
		return err
	}
	return h.bisect(ctx, tx, live[mid:], of, results)
}

func messagesOf(reqs []*batchRequest) []*message.Message {
	msgs := make([]*message.Message, len(reqs))
	for i, r := range reqs {
		msgs[i] = r.msg
	}
	return msgs
}
