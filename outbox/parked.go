package outbox

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// ParkedRow is a row a Relay stopped retrying after MaxAttempts failures. It holds back every later row of its
// ordering key until it is requeued (or deleted by hand).
type ParkedRow struct {
	ID          int64
	Topic       string
	OrderingKey string // empty when the row has none
	UUID        string
	CreatedAt   time.Time
	ParkedAt    time.Time
	Attempts    int
	LastError   string
}

// Parked returns up to limit parked rows, oldest first.
func (t Table) Parked(ctx context.Context, db Execer, limit int) ([]ParkedRow, error) {
	rs, err := db.Query(ctx, `SELECT id, topic, coalesce(ordering_key, ''), uuid, created_at, parked_at, attempts,
		coalesce(last_error, '') FROM `+t.ident()+` WHERE parked_at IS NOT NULL AND delivered_at IS NULL
		ORDER BY id LIMIT $1`, limit)
	if err != nil {
		return nil, t.tableError("list parked rows of", err)
	}
	out, err := pgx.CollectRows(rs, func(row pgx.CollectableRow) (ParkedRow, error) {
		var p ParkedRow
		err := row.Scan(&p.ID, &p.Topic, &p.OrderingKey, &p.UUID, &p.CreatedAt, &p.ParkedAt, &p.Attempts, &p.LastError)
		return p, err
	})
	if err != nil {
		return nil, fmt.Errorf("outbox: list parked rows of %s: %w", t, err)
	}
	return out, nil
}

// Requeue makes parked rows (by id) eligible again at once, with their attempt count reset to zero, and
// returns how many it requeued. Ids that are not parked are ignored.
func (t Table) Requeue(ctx context.Context, db Execer, ids ...int64) (int64, error) {
	tag, err := db.Exec(ctx, `UPDATE `+t.ident()+` SET parked_at = NULL, attempts = 0, next_attempt_at = now()
		WHERE id = ANY($1) AND parked_at IS NOT NULL AND delivered_at IS NULL`, ids)
	if err != nil {
		return 0, t.tableError("requeue rows of", err)
	}
	if tag.RowsAffected() > 0 {
		if _, err := db.Exec(ctx, `SELECT pg_notify($1, '')`, t.Channel()); err != nil {
			return tag.RowsAffected(), fmt.Errorf("outbox: notify relays of %s: %w", t, err)
		}
	}
	return tag.RowsAffected(), nil
}
