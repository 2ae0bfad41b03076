package outbox

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"regexp"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// DefaultTableName is the outbox table's name when Table.Name is empty.
const DefaultTableName = "watermill_outbox"

// Table names the outbox table. The zero value is the table DefaultTableName in the first schema of the
// connection's search_path. Publisher, Relay and the maintenance functions of one outbox must use the same Table.
type Table struct {
	// Schema is the PostgreSQL schema holding the table. Empty means the connection's search_path decides.
	// Migrate does not create the schema.
	Schema string
	// Name is the table's name. Empty means DefaultTableName. Indexes are named after it, so it must leave room
	// for their suffixes within PostgreSQL's 63-byte identifier limit: at most 40 bytes.
	Name string
}

var identRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

func (t Table) name() string {
	if t.Name == "" {
		return DefaultTableName
	}
	return t.Name
}

// Validate reports an invalid schema or table name. Names are restricted to letters, digits and underscores
// (starting with a letter or underscore) so that the notification channel and index names derived from them
// are valid too.
func (t Table) Validate() error {
	var errs []error
	if t.Schema != "" && (!identRE.MatchString(t.Schema) || len(t.Schema) > 63) {
		errs = append(errs, fmt.Errorf("Table.Schema: %q is not 1 to 63 letters, digits or underscores", t.Schema))
	}
	if n := t.name(); !identRE.MatchString(n) || len(n) > 40 {
		errs = append(errs, fmt.Errorf("Table.Name: %q is not 1 to 40 letters, digits or underscores", n))
	}
	return errors.Join(errs...)
}

// ident returns the table's quoted, schema-qualified identifier for SQL text.
func (t Table) ident() string {
	if t.Schema == "" {
		return pgx.Identifier{t.name()}.Sanitize()
	}
	return pgx.Identifier{t.Schema, t.name()}.Sanitize()
}

// String returns the table's qualified name as it appears in errors: schema.name or name.
func (t Table) String() string {
	if t.Schema == "" {
		return t.name()
	}
	return t.Schema + "." + t.name()
}

// Channel is the LISTEN/NOTIFY channel a Publisher notifies on commit and a Relay listens on:
// "<schema>_<name>_notify" (or "<name>_notify").
func (t Table) Channel() string {
	if t.Schema == "" {
		return t.name() + "_notify"
	}
	return t.Schema + "_" + t.name() + "_notify"
}

// lockSpace is the first key of the advisory locks a Publisher takes per ordering key, so that outbox tables
// do not serialize each other's keys (a collision only serializes more).
func (t Table) lockSpace() int32 {
	h := fnv.New32a()
	h.Write([]byte(t.String()))
	return int32(h.Sum32())
}

// Execer is what Migrate and the maintenance functions need: a *pgxpool.Pool, *pgx.Conn or pgx.Tx.
type Execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// migrateSQL is the schema; doc.go shows it for the default table. Every statement is idempotent, so Migrate
// can run at every start, from several processes at once (an advisory lock serializes them).
func (t Table) migrateSQL() []string {
	tbl, n := t.ident(), t.name()
	idx := func(suffix string) string { return pgx.Identifier{n + suffix}.Sanitize() }
	return []string{
		`CREATE TABLE IF NOT EXISTS ` + tbl + ` (
	id              bigserial PRIMARY KEY,
	topic           text        NOT NULL,
	ordering_key    text,
	uuid            text        NOT NULL,
	metadata        jsonb       NOT NULL DEFAULT '{}',
	payload         bytea       NOT NULL,
	created_at      timestamptz NOT NULL DEFAULT now(),
	attempts        integer     NOT NULL DEFAULT 0,
	last_error      text,
	next_attempt_at timestamptz NOT NULL DEFAULT now(),
	delivered_at    timestamptz,
	parked_at       timestamptz,
	owner           text
)`,
		// The claim walks the pending keys (a loose scan of _key_idx), takes each key's oldest pending row
		// from the same index, and the oldest pending unkeyed rows from _unkeyed_idx.
		`CREATE INDEX IF NOT EXISTS ` + idx("_key_idx") + ` ON ` + tbl + ` (ordering_key, id) WHERE delivered_at IS NULL`,
		`CREATE INDEX IF NOT EXISTS ` + idx("_unkeyed_idx") + ` ON ` + tbl + ` (id) WHERE delivered_at IS NULL AND ordering_key IS NULL`,
		// Retention deletes delivered rows by age.
		`CREATE INDEX IF NOT EXISTS ` + idx("_delivered_idx") + ` ON ` + tbl + ` (delivered_at) WHERE delivered_at IS NOT NULL`,
	}
}

// Migrate creates the outbox table and its indexes when they are missing (see the package documentation for
// the SQL). It is idempotent and safe to call concurrently from several processes. It does not create the
// schema named by Table.Schema.
func (t Table) Migrate(ctx context.Context, db Beginner) error {
	if err := t.Validate(); err != nil {
		return fmt.Errorf("outbox: migrate: %w", err)
	}
	return pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1, 0)`, t.lockSpace()); err != nil {
			return fmt.Errorf("outbox: migrate %s: lock: %w", t, err)
		}
		for _, stmt := range t.migrateSQL() {
			if _, err := tx.Exec(ctx, stmt); err != nil {
				return fmt.Errorf("outbox: migrate %s: %w", t, err)
			}
		}
		return nil
	})
}

// Beginner starts transactions: a *pgxpool.Pool, *pgx.Conn or pgx.Tx (a savepoint).
type Beginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// tableError turns PostgreSQL's "relation does not exist" into an error that names the table and the fix.
func (t Table) tableError(op string, err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42P01" {
		return &MissingTableError{Table: t, Err: err}
	}
	return fmt.Errorf("outbox: %s %s: %w", op, t, err)
}

// MissingTableError reports that the outbox table does not exist: Migrate has not been called on this
// database (or the Table configured differs from the migrated one).
type MissingTableError struct {
	Table Table
	Err   error // PostgreSQL's error (*pgconn.PgError, code 42P01)
}

func (e *MissingTableError) Error() string {
	return fmt.Sprintf("outbox: table %s does not exist: call outbox.Table.Migrate on this database first (%v)", e.Table, e.Err)
}

func (e *MissingTableError) Unwrap() error { return e.Err }
