package watermark

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Defaults of PostgresCoordinatorConfig.
const (
	DefaultAlignmentTable = "watermark_alignment"
	DefaultMemberTTL      = 30 * time.Second
)

// PostgresCoordinatorConfig configures a PostgresCoordinator.
type PostgresCoordinatorConfig struct {
	// Table is the table holding the members' reports, optionally
	// schema-qualified ("schema.table"). Default DefaultAlignmentTable.
	Table string

	// MemberTTL is how long a member's report counts: a member that stops
	// reporting (a crashed process) stops holding its group this long after
	// its last report, measured on the database server's clock. Expired rows
	// are deleted by other members' reports after twice the TTL. It must be
	// well above the members' UpdateInterval (at least twice). Default
	// DefaultMemberTTL.
	MemberTTL time.Duration
}

func (c *PostgresCoordinatorConfig) setDefaults() {
	if c.Table == "" {
		c.Table = DefaultAlignmentTable
	}
	if c.MemberTTL == 0 {
		c.MemberTTL = DefaultMemberTTL
	}
}

// Validate reports every invalid field, after defaults are applied to zero
// fields (on a copy).
func (c PostgresCoordinatorConfig) Validate() error {
	c.setDefaults()
	var errs []error
	if parts := strings.Split(c.Table, "."); len(parts) > 2 || slicesContainEmpty(parts) {
		errs = append(errs, fmt.Errorf("Table %q is not a table name or schema.table", c.Table))
	}
	if c.MemberTTL < time.Millisecond {
		errs = append(errs, fmt.Errorf("MemberTTL %v is below 1ms", c.MemberTTL))
	}
	if len(errs) > 0 {
		return fmt.Errorf("watermark: invalid PostgresCoordinatorConfig: %w", errors.Join(errs...))
	}
	return nil
}

func slicesContainEmpty(s []string) bool {
	for _, p := range s {
		if p == "" {
			return true
		}
	}
	return false
}

// DB is what a PostgresCoordinator needs of a database handle: a
// *pgxpool.Pool or a *pgx.Conn (a single Conn must not be used concurrently,
// so prefer the pool).
type DB interface {
	Exec(ctx context.Context, sql string, arguments ...any) (pgconn.CommandTag, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// PostgresCoordinator is a Coordinator whose groups live in a PostgreSQL
// table, so members in different processes and machines align. Each Report is
// one statement (one round trip): it upserts the member's row with a new
// expiry, deletes rows expired for more than a TTL, and returns the minimum
// over the group's other unexpired members that hold a watermark. It is not a
// Notifier: members poll it every UpdateInterval, so a shard of one process
// resumes at most one UpdateInterval (plus a round trip) after a member of
// another process moved the minimum, by however much it moved. Shards of one
// process still align with each other at once.
//
// The table is created by Migrate (see SchemaSQL for the statement); the
// coordinator does not create it on its own. Safe for concurrent use.
type PostgresCoordinator struct {
	db       DB
	cfg      PostgresCoordinatorConfig
	table    string // quoted identifier
	ttlMicro int64
	report   string
	leave    string
	members  string
}

// NewPostgresCoordinator returns a coordinator on db, or the config's
// validation error. It does not touch the database.
func NewPostgresCoordinator(db DB, config PostgresCoordinatorConfig) (*PostgresCoordinator, error) {
	if err := config.Validate(); err != nil {
		return nil, err
	}
	if db == nil {
		return nil, errors.New("watermark: NewPostgresCoordinator: nil DB")
	}
	config.setDefaults()
	c := &PostgresCoordinator{
		db:       db,
		cfg:      config,
		table:    pgx.Identifier(strings.Split(config.Table, ".")).Sanitize(),
		ttlMicro: config.MemberTTL.Microseconds(),
	}
	c.report = `WITH upsert AS (
	INSERT INTO ` + c.table + ` AS t (alignment_group, member, watermark_ns, expires_at)
	VALUES ($1, $2, $3::bigint, now() + $4::bigint * interval '1 microsecond')
	ON CONFLICT (alignment_group, member) DO UPDATE
		SET watermark_ns = EXCLUDED.watermark_ns, expires_at = EXCLUDED.expires_at
), purge AS (
	DELETE FROM ` + c.table + `
	WHERE alignment_group = $1 AND member <> $2
		AND expires_at < now() - $4::bigint * interval '1 microsecond'
)
SELECT min(watermark_ns), count(watermark_ns)
FROM ` + c.table + `
WHERE alignment_group = $1 AND member <> $2 AND expires_at > now()`
	c.leave = `DELETE FROM ` + c.table + ` WHERE alignment_group = $1 AND member = $2`
	c.members = `SELECT member, watermark_ns, expires_at > now() FROM ` + c.table +
		` WHERE alignment_group = $1 ORDER BY member`
	return c, nil
}

// SchemaSQL returns the statement Migrate runs:
//
//	CREATE TABLE IF NOT EXISTS "watermark_alignment" (
//		alignment_group text        NOT NULL,
//		member          text        NOT NULL,
//		watermark_ns    bigint,      -- unix ns; NULL: the member holds nothing
//		expires_at      timestamptz NOT NULL,
//		PRIMARY KEY (alignment_group, member)
//	)
func (c *PostgresCoordinator) SchemaSQL() string {
	return `CREATE TABLE IF NOT EXISTS ` + c.table + ` (
	alignment_group text        NOT NULL,
	member          text        NOT NULL,
	watermark_ns    bigint,
	expires_at      timestamptz NOT NULL,
	PRIMARY KEY (alignment_group, member)
)`
}

// Migrate creates the coordinator's table when it does not exist. Call it
// once at deployment or start-up; it is idempotent.
func (c *PostgresCoordinator) Migrate(ctx context.Context) error {
	if _, err := c.db.Exec(ctx, c.SchemaSQL()); err != nil {
		return fmt.Errorf("watermark: create table %s: %w", c.table, err)
	}
	return nil
}

// Report implements Coordinator in one round trip. The returned view's TTL is
// MemberTTL.
func (c *PostgresCoordinator) Report(ctx context.Context, group, member string, wm time.Time, holds bool) (GroupView, error) {
	var arg *int64
	if holds {
		n := wm.UnixNano()
		arg = &n
	}
	var lowest *int64
	var count int
	if err := c.db.QueryRow(ctx, c.report, group, member, arg, c.ttlMicro).Scan(&lowest, &count); err != nil {
		return GroupView{}, fmt.Errorf("watermark: report %q in group %q: %w", member, group, err)
	}
	v := GroupView{Members: count, TTL: c.cfg.MemberTTL}
	if lowest != nil {
		v.Min, v.Constrained = time.Unix(0, *lowest), true
	}
	return v, nil
}

// Leave implements Coordinator: it deletes the member's row.
func (c *PostgresCoordinator) Leave(ctx context.Context, group, member string) error {
	if _, err := c.db.Exec(ctx, c.leave, group, member); err != nil {
		return fmt.Errorf("watermark: leave %q from group %q: %w", member, group, err)
	}
	return nil
}

// MemberStatus is one row of a group, for monitoring.
type MemberStatus struct {
	// Member is the member's name.
	Member string
	// Watermark is its last reported watermark; zero when HasWatermark is
	// false.
	Watermark time.Time
	// HasWatermark is false when the member reported none.
	HasWatermark bool
	// Live is false once the member's report has expired.
	Live bool
}

// Members lists the rows of group, expired ones included until they are
// deleted, ordered by member name.
func (c *PostgresCoordinator) Members(ctx context.Context, group string) ([]MemberStatus, error) {
	rows, err := c.db.Query(ctx, c.members, group)
	if err != nil {
		return nil, fmt.Errorf("watermark: members of group %q: %w", group, err)
	}
	var out []MemberStatus
	var st MemberStatus
	var wm *int64
	_, err = pgx.ForEachRow(rows, []any{&st.Member, &wm, &st.Live}, func() error {
		m := st
		if wm != nil {
			m.Watermark, m.HasWatermark = time.Unix(0, *wm), true
		}
		out = append(out, m)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("watermark: members of group %q: %w", group, err)
	}
	return out, nil
}
