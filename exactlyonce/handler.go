package exactlyonce

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
)

// HandlerFunc applies one message inside tx: its writes commit together with the message's position, or not at
// all. It must do all its work through tx (no writes outside the transaction, no publishing), return an error to
// have the message redelivered, and must not commit or roll back tx. To drop a message for good (a poison
// message), return nil without writing: the message then counts as applied.
type HandlerFunc func(ctx context.Context, tx pgx.Tx, msg *message.Message) error

// Errors of the handlers. They reach the router as the handler's error, so the message is nacked and
// redelivered.
var (
	// ErrPartitionBlocked is returned for a message that comes after a message of its partition that failed
	// and has not been applied since: storing its position would move the partition past an unapplied message.
	// It clears once the failed message is redelivered and applied.
	ErrPartitionBlocked = errors.New("exactlyonce: an earlier message of the partition failed and is not applied yet")
	// ErrPositionConflict is returned when another transaction stored a position of the partition at or after
	// the message's position while this one ran (two consumers on one partition, e.g. during a rebalance). The
	// transaction is rolled back; the redelivered message is skipped if it was applied.
	ErrPositionConflict = errors.New("exactlyonce: the partition's position was advanced concurrently")
	// ErrClosed is returned for messages handed to a BatchHandler after Close.
	ErrClosed = errors.New("exactlyonce: handler closed")
)

// HandlerConfig is what both handlers need.
type HandlerConfig struct {
	// Consumer names the reader whose positions are stored (see Store). Required.
	Consumer string
	// Position extracts each message's position: SLSPosition, KafkaPosition, or a function of your own.
	// Required.
	Position PositionFunc
	// Stream, when not empty, replaces the stream of every extracted position: for messages that do not come
	// through a router (which SLSPosition and KafkaPosition read the topic from), or to store positions under
	// another name. Default: the stream Position returns, which must not be empty.
	Stream string
	// Metrics receives the outcome of every transaction (slsmetrics.NewHandlerMetrics). Default: NopMetrics.
	Metrics Metrics
}

// Validate reports every invalid field in one error.
func (c HandlerConfig) Validate() error {
	var errs []error
	if c.Consumer == "" {
		errs = append(errs, errors.New("Consumer: must be set"))
	}
	if c.Position == nil {
		errs = append(errs, errors.New("Position: must be set (e.g. exactlyonce.SLSPosition)"))
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("exactlyonce: invalid HandlerConfig: %w", errors.Join(errs...))
}

// position extracts the position of msg per c.
func (c HandlerConfig) position(msg *message.Message) (Position, error) {
	return c.positionOr(msg, "")
}

// positionOr is position with a stream name for positions that have none (and no Stream override).
func (c HandlerConfig) positionOr(msg *message.Message, stream string) (Position, error) {
	pos, err := c.Position(msg)
	if err != nil {
		return Position{}, err
	}
	if c.Stream != "" {
		pos.Stream = c.Stream
	}
	if pos.Stream == "" {
		pos.Stream = stream
	}
	if pos.Stream == "" {
		return Position{}, fmt.Errorf("exactlyonce: message %s: position has no stream (outside a router? set HandlerConfig.Stream)", msg.UUID)
	}
	return pos, nil
}

// blocks holds, per partition, the lowest position whose message failed in this process and has not been
// applied since. A message after it must not commit: its position would pass the failed one, and the
// redelivered failed message would then be skipped as applied.
type blocks struct {
	mu sync.Mutex
	m  map[partitionKey]Position
}

// check returns ErrPartitionBlocked when pos comes after the partition's failed position.
func (b *blocks) check(pos Position) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if f, ok := b.m[pos.key()]; ok && pos.After(f) {
		return fmt.Errorf("message at %s: %w (failed at %s)", pos, ErrPartitionBlocked, f)
	}
	return nil
}

// get returns the partition's failed position, if any.
func (b *blocks) get(k partitionKey) (Position, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	f, ok := b.m[k]
	return f, ok
}

// failed records that the message at pos was not applied.
func (b *blocks) failed(pos Position) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.m == nil {
		b.m = map[partitionKey]Position{}
	}
	if f, ok := b.m[pos.key()]; !ok || f.After(pos) {
		b.m[pos.key()] = pos
	}
}

// settled records that the message at pos is applied (by us or by anyone: it is at or before the stored
// position), which lifts a block at pos.
func (b *blocks) settled(pos Position) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if f, ok := b.m[pos.key()]; ok && f.Compare(pos) <= 0 {
		delete(b.m, pos.key())
	}
}

// MessageHandler applies each message in a transaction of its own: it begins a transaction, locks the
// partition's position row, acks (returns nil without calling the HandlerFunc) a message whose position is not
// after the stored one, calls the HandlerFunc, stores the message's position, and commits; the router acks
// only after the commit. A HandlerFunc error or a failed commit rolls back and returns the error (the router
// nacks). Simple and with the lowest latency; see BatchHandler for throughput.
//
// Order: a message after a failed one of its partition is refused with ErrPartitionBlocked until the failed
// one is redelivered and applied. With a subscriber that has at most one unacked message per partition
// (watermill-kafka; slspubsub with MaxInFlight 1, the default) nothing more is needed; with more, wrap the
// subscriber with Subscriber so that each partition's messages are applied one after the other in delivery
// order (see the package documentation).
//
// It is safe for concurrent use by the router's goroutines.
type MessageHandler struct {
	store  *Store
	cfg    HandlerConfig
	fn     HandlerFunc
	blocks blocks
}

// NewMessageHandler returns a MessageHandler applying fn with positions in store.
func NewMessageHandler(store *Store, cfg HandlerConfig, fn HandlerFunc) (*MessageHandler, error) {
	if store == nil || fn == nil {
		return nil, errors.New("exactlyonce: NewMessageHandler: nil store or handler function")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &MessageHandler{store: store, cfg: cfg, fn: fn}, nil
}

// Handle has the shape of message.NoPublishHandlerFunc: pass it to Router.AddConsumerHandler.
func (h *MessageHandler) Handle(msg *message.Message) error {
	pos, err := h.cfg.position(msg)
	if err != nil {
		return err
	}
	ctx := msg.Context()
	if t := ticketFrom(msg); t != nil {
		t.handled.Store(true)
		if err := t.gate.wait(ctx, t.closed, nil, t.seq); err != nil {
			return err
		}
		defer func() {
			t.gate.pass(t.seq)
			t.counted.Store(true)
		}()
	}
	if err := h.blocks.check(pos); err != nil {
		return err
	}
	skipped := false
	defer h.observer(&skipped, &err)()
	err = pgx.BeginFunc(ctx, h.store.pool, func(tx pgx.Tx) error {
		stored, ok, err := h.store.lock(ctx, tx, h.cfg.Consumer, pos)
		if err != nil {
			return err
		}
		if ok && !pos.After(stored) {
			skipped = true
			return nil // applied before: ack without running the handler
		}
		if err := h.fn(ctx, tx, msg); err != nil {
			return err
		}
		moved, err := h.store.Advance(ctx, tx, h.cfg.Consumer, pos)
		if err != nil {
			return err
		}
		if !moved {
			return fmt.Errorf("message at %s: %w", pos, ErrPositionConflict)
		}
		return nil
	})
	if err != nil {
		h.blocks.failed(pos)
		return err
	}
	h.blocks.settled(pos)
	return nil
}

// lock reads the stored position of pos's partition in tx and locks its row until tx ends, so that
// transactions of one partition run one after the other. When no row exists nothing is locked; Advance then
// detects a concurrent insert.
func (s *Store) lock(ctx context.Context, tx pgx.Tx, consumer string, pos Position) (Position, bool, error) {
	stored := Position{Stream: pos.Stream, Partition: pos.Partition}
	err := tx.QueryRow(ctx, `SELECT "offset", "index" FROM `+s.table+
		` WHERE consumer = $1 AND stream = $2 AND partition = $3 FOR UPDATE`, consumer, pos.Stream, pos.Partition).
		Scan(&stored.Offset, &stored.Index)
	if errors.Is(err, pgx.ErrNoRows) {
		return Position{}, false, nil
	}
	if err != nil {
		return Position{}, false, fmt.Errorf("exactlyonce: lock position %s/%d of %q: %w", pos.Stream, pos.Partition, consumer, err)
	}
	return stored, true, nil
}
