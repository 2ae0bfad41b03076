package outbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// DefaultOrderingKeyMetadata is the metadata key a Publisher reads a message's ordering key from when
// PublisherConfig.OrderingKey is nil.
const DefaultOrderingKeyMetadata = "outbox_ordering_key"

// DefaultMaxPayloadBytes is PublisherConfig.MaxPayloadBytes when it is zero: 1 MiB.
const DefaultMaxPayloadBytes = 1 << 20

// PublisherConfig configures a Publisher. The zero value is valid: the default table, ordering keys from the
// metadata key DefaultOrderingKeyMetadata, payloads up to 1 MiB, and a notification on commit.
type PublisherConfig struct {
	// Table is the outbox table (default: DefaultTableName). It must have been created with Table.Migrate.
	Table Table

	// OrderingKey returns a message's ordering key: messages with the same key are relayed one after
	// another in commit order (see the package documentation). An empty key means the message is not
	// ordered with respect to any other message. An error fails the Publish call before anything is written.
	// Default: the value of metadata key OrderingKeyMetadata.
	OrderingKey func(topic string, msg *message.Message) (string, error)

	// OrderingKeyMetadata is the metadata key read when OrderingKey is nil.
	// Default: DefaultOrderingKeyMetadata.
	OrderingKeyMetadata string

	// MaxPayloadBytes is the largest payload accepted; a larger one fails Publish with a *PayloadTooLargeError
	// and nothing of that call is written. Default: DefaultMaxPayloadBytes. Negative means no limit.
	MaxPayloadBytes int

	// DisableNotify skips the pg_notify that wakes relays when the transaction commits. Relays then find the
	// rows at their next poll. Default: false (notify).
	DisableNotify bool
}

func (c *PublisherConfig) setDefaults() {
	if c.OrderingKeyMetadata == "" {
		c.OrderingKeyMetadata = DefaultOrderingKeyMetadata
	}
	if c.MaxPayloadBytes == 0 {
		c.MaxPayloadBytes = DefaultMaxPayloadBytes
	}
}

// Validate reports every invalid field, each named, in one error.
func (c PublisherConfig) Validate() error {
	if err := c.Table.Validate(); err != nil {
		return fmt.Errorf("outbox: invalid PublisherConfig: %w", err)
	}
	return nil
}

// Publisher writes messages into the outbox table inside one pgx transaction: they become visible to relays
// when, and only if, that transaction commits, together with the business rows written in it. It implements
// message.Publisher.
//
// A Publisher is cheap (create one per transaction) and safe for concurrent use, but pgx transactions are not:
// do not use the transaction from another goroutine while Publish runs. Publish after the transaction ended
// fails with ErrTxDone.
//
// Ordering: for each distinct ordering key of a Publish call the Publisher takes a transaction-scoped advisory
// lock before inserting, so concurrent transactions publishing the same key serialize until commit and ids of
// one key increase in commit order. Keep transactions that publish hot keys short.
type Publisher struct {
	tx     pgx.Tx
	config PublisherConfig

	mu     sync.Mutex
	closed bool
}

// NewPublisher returns a Publisher that writes into the outbox table through tx.
func NewPublisher(tx pgx.Tx, config PublisherConfig) (*Publisher, error) {
	if tx == nil {
		return nil, errors.New("outbox: NewPublisher: tx is nil")
	}
	config.setDefaults()
	if err := config.Validate(); err != nil {
		return nil, err
	}
	return &Publisher{tx: tx, config: config}, nil
}

// ErrTxDone is returned (wrapped) by Publish when the Publisher's transaction was already committed or rolled
// back: messages must be published inside the transaction they belong to.
var ErrTxDone = errors.New("outbox: the transaction already ended (committed or rolled back); publish before Commit")

// ErrTxAborted is returned (wrapped) by Publish when an earlier statement of the transaction failed, so
// PostgreSQL ignores everything until ROLLBACK (SQLSTATE 25P02).
var ErrTxAborted = errors.New("outbox: the transaction is aborted by an earlier error; roll it back")

// ErrPublisherClosed is returned by Publish after Close.
var ErrPublisherClosed = errors.New("outbox: publisher closed")

// PayloadTooLargeError is returned by Publish for a message whose payload exceeds
// PublisherConfig.MaxPayloadBytes. Nothing of that Publish call is written.
type PayloadTooLargeError struct {
	Topic string
	UUID  string
	Size  int // payload bytes
	Limit int // PublisherConfig.MaxPayloadBytes
}

func (e *PayloadTooLargeError) Error() string {
	return fmt.Sprintf("outbox: message %s to topic %q: payload of %d bytes exceeds MaxPayloadBytes %d",
		e.UUID, e.Topic, e.Size, e.Limit)
}

// Publish inserts messages as rows of the outbox table for topic, in order, and (unless DisableNotify) queues a
// notification that PostgreSQL sends on commit. It returns nil once the rows are written in the transaction;
// they are relayed only if the transaction commits. It is one round trip to the server.
func (p *Publisher) Publish(topic string, messages ...*message.Message) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return ErrPublisherClosed
	}
	if len(messages) == 0 {
		return nil
	}
	rows, keys, err := p.encode(topic, messages)
	if err != nil {
		return err
	}
	ctx := messages[0].Context()
	b := &pgx.Batch{}
	if len(keys) > 0 {
		// Locks in hash order, so two transactions locking the same keys cannot deadlock on them.
		b.Queue(`SELECT pg_advisory_xact_lock($1, h) FROM
			(SELECT DISTINCT hashtext(k) AS h FROM unnest($2::text[]) AS k ORDER BY h) AS s`,
			p.config.Table.lockSpace(), keys)
	}
	b.Queue(`INSERT INTO `+p.config.Table.ident()+` (topic, ordering_key, uuid, metadata, payload)
		SELECT $1, NULLIF(k, ''), u, m, pl FROM unnest($2::text[], $3::text[], $4::jsonb[], $5::bytea[]) AS r(k, u, m, pl)`,
		topic, rows.keys, rows.uuids, rows.metadata, rows.payloads)
	if !p.config.DisableNotify {
		b.Queue(`SELECT pg_notify($1, '')`, p.config.Table.Channel())
	}
	if err := p.tx.SendBatch(ctx, b).Close(); err != nil {
		return p.publishError(topic, err)
	}
	return nil
}

type encodedRows struct {
	keys, uuids []string
	metadata    [][]byte
	payloads    [][]byte
}

func (p *Publisher) encode(topic string, messages []*message.Message) (encodedRows, []string, error) {
	r := encodedRows{
		keys: make([]string, len(messages)), uuids: make([]string, len(messages)),
		metadata: make([][]byte, len(messages)), payloads: make([][]byte, len(messages)),
	}
	var distinct []string
	for i, msg := range messages {
		if msg == nil {
			return r, nil, fmt.Errorf("outbox: publish to %q: message %d is nil", topic, i)
		}
		if limit := p.config.MaxPayloadBytes; limit > 0 && len(msg.Payload) > limit {
			return r, nil, &PayloadTooLargeError{Topic: topic, UUID: msg.UUID, Size: len(msg.Payload), Limit: limit}
		}
		key, err := p.orderingKey(topic, msg)
		if err != nil {
			return r, nil, fmt.Errorf("outbox: ordering key of message %s to topic %q: %w", msg.UUID, topic, err)
		}
		md := msg.Metadata
		if md == nil {
			md = message.Metadata{}
		}
		if r.metadata[i], err = json.Marshal(md); err != nil {
			return r, nil, fmt.Errorf("outbox: metadata of message %s: %w", msg.UUID, err)
		}
		r.keys[i], r.uuids[i], r.payloads[i] = key, msg.UUID, msg.Payload
		if r.payloads[i] == nil {
			r.payloads[i] = []byte{}
		}
		if key != "" {
			distinct = append(distinct, key)
		}
	}
	slices.Sort(distinct)
	return r, slices.Compact(distinct), nil
}

func (p *Publisher) orderingKey(topic string, msg *message.Message) (string, error) {
	if p.config.OrderingKey != nil {
		return p.config.OrderingKey(topic, msg)
	}
	return msg.Metadata.Get(p.config.OrderingKeyMetadata), nil
}

func (p *Publisher) publishError(topic string, err error) error {
	if errors.Is(err, pgx.ErrTxClosed) {
		return fmt.Errorf("outbox: publish to %q: %w", topic, ErrTxDone)
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "25P02" {
		return fmt.Errorf("outbox: publish to %q: %w (%w)", topic, ErrTxAborted, err)
	}
	return p.config.Table.tableError(fmt.Sprintf("publish to %q into", topic), err)
}

// Close makes later Publish calls fail with ErrPublisherClosed. It neither commits nor rolls back the
// transaction, which belongs to the caller.
func (p *Publisher) Close() error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	return nil
}
