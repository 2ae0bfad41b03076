package exactlyonce

import (
	"context"
	"errors"
	"fmt"
	"regexp"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Store defaults.
const (
	DefaultSchema = "public"
	DefaultTable  = "watermill_sls_positions"
)

// StoreConfig configures a Store. The zero value is valid.
type StoreConfig struct {
	// Schema holds the positions table; Migrate creates it when missing. Default "public".
	Schema string
	// Table is the positions table. Migrate also creates "<Table>_migrations", which records the applied
	// schema versions. Default "watermill_sls_positions".
	Table string
}

var identifierRE = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,49}$`)

func (c *StoreConfig) setDefaults() {
	if c.Schema == "" {
		c.Schema = DefaultSchema
	}
	if c.Table == "" {
		c.Table = DefaultTable
	}
}

// Validate reports every invalid field in one error. Names must be lowercase SQL identifiers (letters, digits,
// underscores, not starting with a digit, at most 50 bytes so that derived names fit PostgreSQL's limit).
func (c StoreConfig) Validate() error {
	var errs []error
	if c.Schema != "" && !identifierRE.MatchString(c.Schema) {
		errs = append(errs, fmt.Errorf("Schema %q: must match %s", c.Schema, identifierRE))
	}
	if c.Table != "" && !identifierRE.MatchString(c.Table) {
		errs = append(errs, fmt.Errorf("Table %q: must match %s", c.Table, identifierRE))
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("exactlyonce: invalid StoreConfig: %w", errors.Join(errs...))
}

// Store keeps consumed positions in PostgreSQL, one row per (consumer, stream, partition) holding the position
// (offset, index) of the last message applied. Handlers advance a row in the same transaction as their writes,
// so a position is stored if and only if the writes of the message at it, and of every message before it,
// committed.
//
// A consumer is a name for one logical reader of a stream (like a consumer group); two pipelines that write to
// different sinks from the same stream must use different consumer names. A Store is safe for concurrent use.
type Store struct {
	pool   *pgxpool.Pool
	table  string // quoted, schema-qualified
	schema string // quoted
	migr   string // quoted, schema-qualified
	lockID string // key for pg_advisory_xact_lock during Migrate
}

// NewStore returns a Store on pool. It does not touch the database: call Migrate once before use (at start-up;
// it is idempotent and safe to run from several processes at once).
func NewStore(pool *pgxpool.Pool, cfg StoreConfig) (*Store, error) {
	if pool == nil {
		return nil, errors.New("exactlyonce: NewStore: nil pool")
	}
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Store{
		pool:   pool,
		schema: pgx.Identifier{cfg.Schema}.Sanitize(),
		table:  pgx.Identifier{cfg.Schema, cfg.Table}.Sanitize(),
		migr:   pgx.Identifier{cfg.Schema, cfg.Table + "_migrations"}.Sanitize(),
		lockID: cfg.Schema + "." + cfg.Table,
	}, nil
}

// Pool returns the pool the Store was created with.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// migrations are the schema versions, in order; Migrate applies those not yet recorded. Each is one
// statement list run in Migrate's transaction; %[1]s is the positions table. Never edit an applied
// migration: append a new one.
var migrations = []string{
	// 1: the positions table. (offset, index) is compared as a row value: positions only move forward.
	`CREATE TABLE IF NOT EXISTS %[1]s (
	consumer   text        NOT NULL,
	stream     text        NOT NULL,
	partition  integer     NOT NULL,
	"offset"   bigint      NOT NULL,
	"index"    integer     NOT NULL,
	updated_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (consumer, stream, partition)
)`,
}

// Migrate creates the schema, the positions table and its migrations table when missing, and applies the
// schema versions not yet applied, in one transaction under a transaction-scoped advisory lock, so concurrent
// calls from several processes are safe. The SQL is in the package documentation.
func (s *Store) Migrate(ctx context.Context) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, "exactlyonce:"+s.lockID); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS `+s.schema); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+s.migr+` (
	version    integer     PRIMARY KEY,
	applied_at timestamptz NOT NULL DEFAULT now()
)`); err != nil {
			return err
		}
		var current int
		if err := tx.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM `+s.migr).Scan(&current); err != nil {
			return err
		}
		if current > len(migrations) {
			return fmt.Errorf("schema version %d is newer than this library knows (%d)", current, len(migrations))
		}
		for v := current + 1; v <= len(migrations); v++ {
			if _, err := tx.Exec(ctx, fmt.Sprintf(migrations[v-1], s.table)); err != nil {
				return fmt.Errorf("version %d: %w", v, err)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO `+s.migr+` (version) VALUES ($1)`, v); err != nil {
				return fmt.Errorf("version %d: %w", v, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("exactlyonce: migrate %s: %w", s.table, err)
	}
	return nil
}

// Querier is what the Store reads positions with: a *pgxpool.Pool, a *pgx.Conn or a pgx.Tx.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Load returns the stored position of (consumer, stream, partition), and ok=false when none is stored.
func (s *Store) Load(ctx context.Context, consumer, stream string, partition int32) (pos Position, ok bool, err error) {
	return s.LoadWith(ctx, s.pool, consumer, stream, partition)
}

// LoadWith is Load through q, e.g. inside a transaction.
func (s *Store) LoadWith(ctx context.Context, q Querier, consumer, stream string, partition int32) (pos Position, ok bool, err error) {
	pos = Position{Stream: stream, Partition: partition}
	err = q.QueryRow(ctx, `SELECT "offset", "index" FROM `+s.table+
		` WHERE consumer = $1 AND stream = $2 AND partition = $3`, consumer, stream, partition).Scan(&pos.Offset, &pos.Index)
	if errors.Is(err, pgx.ErrNoRows) {
		return Position{}, false, nil
	}
	if err != nil {
		return Position{}, false, fmt.Errorf("exactlyonce: load position %s/%d of %q: %w", stream, partition, consumer, err)
	}
	return pos, true, nil
}

// Positions returns every stored position of consumer in stream, by partition.
func (s *Store) Positions(ctx context.Context, consumer, stream string) (map[int32]Position, error) {
	rows, err := s.pool.Query(ctx, `SELECT partition, "offset", "index" FROM `+s.table+
		` WHERE consumer = $1 AND stream = $2`, consumer, stream)
	if err != nil {
		return nil, fmt.Errorf("exactlyonce: load positions of %q in %s: %w", consumer, stream, err)
	}
	out := map[int32]Position{}
	p := Position{Stream: stream}
	_, err = pgx.ForEachRow(rows, []any{&p.Partition, &p.Offset, &p.Index}, func() error {
		out[p.Partition] = p
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("exactlyonce: load positions of %q in %s: %w", consumer, stream, err)
	}
	return out, nil
}

// advanceSQL inserts or moves a position forward. The WHERE on the row value makes a position that is not
// after the stored one a no-op (0 rows): positions never move backward, whatever the caller does. Under READ
// COMMITTED, a concurrent transaction advancing the same row makes this statement wait for it and then
// re-check the WHERE against the committed row.
const advanceSQL = `INSERT INTO %[1]s AS p (consumer, stream, partition, "offset", "index") VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (consumer, stream, partition) DO UPDATE
SET "offset" = EXCLUDED."offset", "index" = EXCLUDED."index", updated_at = now()
WHERE (p."offset", p."index") < (EXCLUDED."offset", EXCLUDED."index")`

// Advance stores pos for consumer in tx when it is after the stored position (or none is stored), and reports
// whether it did. It never moves a position backward: a pos at or before the stored one leaves the row as it is
// and returns false. Callers must only pass the position of a message whose writes are in tx and all of whose
// predecessors in the partition are applied; the handlers of this package do.
func (s *Store) Advance(ctx context.Context, tx pgx.Tx, consumer string, pos Position) (bool, error) {
	tag, err := tx.Exec(ctx, fmt.Sprintf(advanceSQL, s.table), consumer, pos.Stream, pos.Partition, pos.Offset, pos.Index)
	if err != nil {
		return false, fmt.Errorf("exactlyonce: store position %s of %q: %w", pos, consumer, err)
	}
	return tag.RowsAffected() == 1, nil
}

// Reset deletes the stored positions of consumer in stream (all partitions), so that its next run starts from
// the subscriber's start position. It is an administrative operation: never call it while the consumer runs.
func (s *Store) Reset(ctx context.Context, consumer, stream string) error {
	if _, err := s.pool.Exec(ctx, `DELETE FROM `+s.table+` WHERE consumer = $1 AND stream = $2`, consumer, stream); err != nil {
		return fmt.Errorf("exactlyonce: reset positions of %q in %s: %w", consumer, stream, err)
	}
	return nil
}

// lockAll reads the stored positions of keys in tx and locks their rows until tx ends, in key order (callers
// pass keys sorted, so that concurrent batches do not deadlock). Partitions without a row are absent.
func (s *Store) lockAll(ctx context.Context, tx pgx.Tx, consumer string, keys []partitionKey) (map[partitionKey]Position, error) {
	streams := make([]string, len(keys))
	partitions := make([]int32, len(keys))
	for i, k := range keys {
		streams[i], partitions[i] = k.stream, k.partition
	}
	rows, err := tx.Query(ctx, `SELECT p.stream, p.partition, p."offset", p."index" FROM `+s.table+` p
JOIN unnest($2::text[], $3::integer[]) AS k(stream, partition) ON (p.stream, p.partition) = (k.stream, k.partition)
WHERE p.consumer = $1 ORDER BY p.stream, p.partition FOR UPDATE OF p`, consumer, streams, partitions)
	if err != nil {
		return nil, fmt.Errorf("exactlyonce: lock positions of %q: %w", consumer, err)
	}
	out := make(map[partitionKey]Position, len(keys))
	var p Position
	_, err = pgx.ForEachRow(rows, []any{&p.Stream, &p.Partition, &p.Offset, &p.Index}, func() error {
		out[p.key()] = p
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("exactlyonce: lock positions of %q: %w", consumer, err)
	}
	return out, nil
}

// advanceFromSQL moves positions of partitions forward on a condition: a partition with a row moves only if
// its stored position is before the first message the transaction applied (k.first_*), and one without a row
// (k.known_row false) is inserted only if there still is none. A row that another transaction changed
// meanwhile makes the statement wait for that transaction and then re-check the condition on the committed
// row (READ COMMITTED), so the count of changed rows falls short exactly when another consumer applied some
// of the same messages first.
const advanceFromSQL = `WITH k AS (
	SELECT * FROM unnest($2::text[], $3::integer[], $4::bigint[], $5::integer[], $6::bigint[], $7::integer[], $8::boolean[])
	AS k(stream, partition, first_offset, first_index, "offset", "index", known_row)
), moved AS (
	UPDATE %[1]s AS p SET "offset" = k."offset", "index" = k."index", updated_at = now()
	FROM k WHERE k.known_row AND p.consumer = $1 AND p.stream = k.stream AND p.partition = k.partition
	AND (p."offset", p."index") < (k.first_offset, k.first_index)
	RETURNING 1
), inserted AS (
	INSERT INTO %[1]s (consumer, stream, partition, "offset", "index")
	SELECT $1, k.stream, k.partition, k."offset", k."index" FROM k WHERE NOT k.known_row
	ON CONFLICT (consumer, stream, partition) DO NOTHING
	RETURNING 1
)
SELECT (SELECT count(*) FROM moved) + (SELECT count(*) FROM inserted)`

// advanceStep is one partition's move in advanceFrom: from the stored position the transaction planned
// against, past the messages first..last it applied.
type advanceStep struct {
	from        storedPosition
	first, last Position
}

// advanceFrom stores the last position of each step for consumer in tx, if the partition's stored position
// is still before the step's first message (or, when from says none is stored, none is), with one statement,
// and returns how many partitions moved.
func (s *Store) advanceFrom(ctx context.Context, tx pgx.Tx, consumer string, steps []advanceStep) (int, error) {
	n := len(steps)
	streams, partitions := make([]string, n), make([]int32, n)
	firstOffsets, firstIndexes := make([]int64, n), make([]int32, n)
	offsets, indexes := make([]int64, n), make([]int32, n)
	knownRows := make([]bool, n)
	for i, st := range steps {
		streams[i], partitions[i] = st.last.Stream, st.last.Partition
		firstOffsets[i], firstIndexes[i] = st.first.Offset, st.first.Index
		offsets[i], indexes[i] = st.last.Offset, st.last.Index
		knownRows[i] = st.from.ok
	}
	var moved int
	err := tx.QueryRow(ctx, fmt.Sprintf(advanceFromSQL, s.table), consumer, streams, partitions,
		firstOffsets, firstIndexes, offsets, indexes, knownRows).Scan(&moved)
	if err != nil {
		return 0, fmt.Errorf("exactlyonce: store positions of %q: %w", consumer, err)
	}
	return moved, nil
}
