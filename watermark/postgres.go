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
// expiry (anchoring it when it is pending), anchors pending members that wait
// for the group's first watermark, deletes rows expired for more than a TTL,
// and returns the minimum over the group's other unexpired members that hold
// it (see MemberState). It is not a
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
	ttl := ` + $5::bigint * interval '1 microsecond'`
	c.report = `WITH others AS (
	SELECT min(coalesce(watermark_ns, anchor_ns)) AS lowest,
		count(coalesce(watermark_ns, anchor_ns)) AS holding,
		count(*) FILTER (WHERE pending AND anchor_ns IS NULL) AS unanchored
	FROM ` + c.table + `
	WHERE alignment_group = $1 AND member <> $2 AND expires_at > now()
), upsert AS (
	INSERT INTO ` + c.table + ` AS t (alignment_group, member, watermark_ns, pending, anchor_ns, expires_at)
	SELECT $1, $2, $3::bigint, $4::boolean, CASE WHEN $4::boolean THEN o.lowest END, now()` + ttl + `
	FROM others o
	ON CONFLICT (alignment_group, member) DO UPDATE SET
		watermark_ns = EXCLUDED.watermark_ns,
		pending = EXCLUDED.pending,
		anchor_ns = CASE WHEN EXCLUDED.pending THEN coalesce(t.anchor_ns, EXCLUDED.anchor_ns) END,
		expires_at = EXCLUDED.expires_at
), adopt AS (
	UPDATE ` + c.table + ` SET anchor_ns = $3::bigint
	WHERE $3::bigint IS NOT NULL AND alignment_group = $1 AND member <> $2
		AND pending AND anchor_ns IS NULL AND expires_at > now()
), purge AS (
	DELETE FROM ` + c.table + `
	WHERE alignment_group = $1 AND member <> $2 AND expires_at < now() - $5::bigint * interval '1 microsecond'
)
SELECT CASE WHEN unanchored > 0 AND $3::bigint IS NOT NULL THEN least(lowest, $3::bigint) ELSE lowest END,
	holding + CASE WHEN $3::bigint IS NOT NULL THEN unanchored ELSE 0 END,
	CASE WHEN $3::bigint IS NOT NULL THEN 0 ELSE unanchored END
FROM others`
	c.leave = `DELETE FROM ` + c.table + ` WHERE alignment_group = $1 AND member = $2`
	c.members = `SELECT member, pending, coalesce(watermark_ns, anchor_ns), expires_at > now() FROM ` + c.table +
		` WHERE alignment_group = $1 ORDER BY member`
	return c, nil
}

// SchemaSQL returns the statement Migrate runs:
//
//	CREATE TABLE IF NOT EXISTS "watermark_alignment" (
//		alignment_group text        NOT NULL,
//		member          text        NOT NULL,
//		watermark_ns    bigint,                -- unix ns, when holding
//		pending         boolean     NOT NULL,  -- MemberPending
//		anchor_ns       bigint,                -- unix ns, a pending member's anchor
//		expires_at      timestamptz NOT NULL,  -- server clock
//		PRIMARY KEY (alignment_group, member)
//	)
//
// A member counts at watermark_ns when holding, at anchor_ns when pending and
// anchored, and not at all otherwise or once expires_at has passed.
func (c *PostgresCoordinator) SchemaSQL() string {
	return `CREATE TABLE IF NOT EXISTS ` + c.table + ` (
	alignment_group text        NOT NULL,
	member          text        NOT NULL,
	watermark_ns    bigint,
	pending         boolean     NOT NULL,
	anchor_ns       bigint,
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
func (c *PostgresCoordinator) Report(ctx context.Context, group, member string, state MemberState, wm time.Time) (GroupView, error) {
	var arg *int64
	if state == MemberHolding {
		n := wm.UnixNano()
		arg = &n
	}
	var lowest *int64
	var count, unanchored int
	err := c.db.QueryRow(ctx, c.report, group, member, arg, state == MemberPending, c.ttlMicro).Scan(&lowest, &count, &unanchored)
	if err != nil {
		return GroupView{}, fmt.Errorf("watermark: report %q in group %q: %w", member, group, err)
	}
	v := GroupView{Members: count, Unanchored: unanchored, TTL: c.cfg.MemberTTL}
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
	// State is the member's last reported state.
	State MemberState
	// Watermark is what the member counts at: its watermark when holding,
	// its anchor when pending and anchored; zero when HasWatermark is false.
	Watermark time.Time
	// HasWatermark is false when the member counts at nothing.
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
	var pending bool
	var wm *int64
	_, err = pgx.ForEachRow(rows, []any{&st.Member, &pending, &wm, &st.Live}, func() error {
		m := st
		switch {
		case pending:
			m.State = MemberPending
		case wm != nil:
			m.State = MemberHolding
		default:
			m.State = MemberReleased
		}
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
