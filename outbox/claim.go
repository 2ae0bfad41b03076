package outbox

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
)

// MetadataOutboxID is the metadata key in which a relayed message carries its outbox row id (decimal). Ids
// increase with commit order within an ordering key, so a destination can use it as a monotonically increasing
// per-key sequence id (for idempotent writes).
const MetadataOutboxID = "outbox_id"

// MetadataOrderingKey is the metadata key in which a relayed message carries its row's ordering key, when it
// has one, so a destination can partition by it.
const MetadataOrderingKey = "outbox_ordering_key"

// row is one claimed outbox row.
type row struct {
	id          int64
	topic       string
	orderingKey *string
	uuid        string
	metadata    []byte
	payload     []byte
	createdAt   time.Time
	attempts    int
	ready       bool
}

// claimSQL claims a batch. See the package documentation ("Order per key") for why this preserves order:
//
//   - heads are the oldest undelivered row of each key (and unkeyed rows), due, not parked, not owned by
//     another relay; FOR UPDATE SKIP LOCKED locks them, so a locked head is its key's lock;
//   - followers are the later undelivered rows of the keys whose head this statement locked; nobody else can
//     claim them while the head is locked and undelivered (they are not heads), so they are not locked;
//   - the batch is the first $1 rows in id order, which keeps a prefix of every key's chain.
//
// $1 batch size, $2 relay name or NULL.
func (t Table) claimSQL() string {
	tbl := t.ident()
	cols := `x.id, x.topic, x.ordering_key, x.uuid, x.metadata, x.payload, x.created_at, x.attempts,
		(x.parked_at IS NULL AND x.next_attempt_at <= now() AND (x.owner IS NULL OR x.owner = $2)) AS ready`
	return `WITH heads AS (
	SELECT o.id, o.ordering_key FROM ` + tbl + ` o
	WHERE o.delivered_at IS NULL AND o.parked_at IS NULL AND o.next_attempt_at <= now()
		AND (o.owner IS NULL OR o.owner = $2)
		AND (o.ordering_key IS NULL OR NOT EXISTS (
			SELECT 1 FROM ` + tbl + ` p
			WHERE p.ordering_key = o.ordering_key AND p.delivered_at IS NULL AND p.id < o.id))
	ORDER BY o.id
	LIMIT $1
	FOR UPDATE OF o SKIP LOCKED
)
SELECT * FROM (
	SELECT ` + cols + ` FROM heads h CROSS JOIN LATERAL (
		SELECT * FROM ` + tbl + ` y
		WHERE y.ordering_key = h.ordering_key AND y.delivered_at IS NULL AND y.id >= h.id
		ORDER BY y.id LIMIT $1) x
	WHERE h.ordering_key IS NOT NULL
	UNION ALL
	SELECT ` + cols + ` FROM heads h JOIN ` + tbl + ` x ON x.id = h.id
	WHERE h.ordering_key IS NULL
) b ORDER BY id LIMIT $1`
}

// claim runs claimSQL in tx and returns the rows to publish, in id order: for each key, its chain up to the
// first row that is not ready (parked, waiting for a retry, or owned by another relay).
func (t Table) claim(ctx context.Context, tx pgx.Tx, batch int, owner *string) ([]*row, error) {
	rs, err := tx.Query(ctx, t.claimSQL(), batch, owner)
	if err != nil {
		return nil, t.tableError("claim rows from", err)
	}
	var out []*row
	blocked := map[string]bool{}
	for rs.Next() {
		r := &row{}
		if err := rs.Scan(&r.id, &r.topic, &r.orderingKey, &r.uuid, &r.metadata, &r.payload, &r.createdAt,
			&r.attempts, &r.ready); err != nil {
			rs.Close()
			return nil, fmt.Errorf("outbox: claim rows from %s: %w", t, err)
		}
		if r.orderingKey != nil {
			if blocked[*r.orderingKey] {
				continue
			}
			if !r.ready {
				blocked[*r.orderingKey] = true
				continue
			}
		}
		out = append(out, r)
	}
	if err := rs.Err(); err != nil {
		return nil, t.tableError("claim rows from", err)
	}
	return out, nil
}

// message rebuilds the Watermill message of r, with MetadataOutboxID (and MetadataOrderingKey) added.
func (r *row) message(ctx context.Context) (*message.Message, error) {
	md := message.Metadata{}
	if len(r.metadata) > 0 {
		if err := json.Unmarshal(r.metadata, &md); err != nil {
			return nil, fmt.Errorf("outbox: row %d: metadata: %w", r.id, err)
		}
	}
	md.Set(MetadataOutboxID, strconv.FormatInt(r.id, 10))
	if r.orderingKey != nil {
		md.Set(MetadataOrderingKey, *r.orderingKey)
	}
	msg := message.NewMessage(r.uuid, r.payload)
	msg.Metadata = md
	msg.SetContext(ctx)
	return msg, nil
}

// markDelivered marks ids delivered in tx.
func (t Table) markDelivered(ctx context.Context, tx pgx.Tx, ids []int64) error {
	if len(ids) == 0 {
		return nil
	}
	_, err := tx.Exec(ctx, `UPDATE `+t.ident()+` SET delivered_at = now(), attempts = attempts + 1, last_error = NULL
		WHERE id = ANY($1) AND delivered_at IS NULL`, ids)
	if err != nil {
		return t.tableError("mark rows delivered in", err)
	}
	return nil
}

// failure is one failed row: its new backoff, and whether it is parked now.
type failure struct {
	row    *row
	err    error
	delay  time.Duration
	parked bool
}

// markFailed records failed attempts in tx: attempts, last error, next attempt time, parking; it releases the
// rows' owner.
func (t Table) markFailed(ctx context.Context, tx pgx.Tx, fs []failure) error {
	if len(fs) == 0 {
		return nil
	}
	ids := make([]int64, len(fs))
	errs := make([]string, len(fs))
	delays := make([]int64, len(fs))
	parked := make([]bool, len(fs))
	for i, f := range fs {
		ids[i], errs[i], delays[i], parked[i] = f.row.id, f.err.Error(), f.delay.Microseconds(), f.parked
	}
	_, err := tx.Exec(ctx, `UPDATE `+t.ident()+` AS t SET attempts = t.attempts + 1, last_error = f.err,
		next_attempt_at = now() + f.delay * interval '1 microsecond',
		parked_at = CASE WHEN f.parked THEN now() END, owner = NULL
		FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bool[]) AS f(id, err, delay, parked)
		WHERE t.id = f.id AND t.delivered_at IS NULL`, ids, errs, delays, parked)
	if err != nil {
		return t.tableError("record failed attempts in", err)
	}
	return nil
}
