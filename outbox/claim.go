package outbox

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// MetadataOutboxID is the metadata key in which a relayed message carries its outbox row id (decimal). Ids
// increase with commit order within an ordering key, so a destination can use it as a monotonically increasing
// per-key sequence id (for idempotent writes).
const MetadataOutboxID = "outbox_id"

// MetadataOrderingKey is the metadata key in which a relayed message carries its row's ordering key, when it
// has one, so a destination can partition by it. A message of a row without an ordering key does not carry it
// (the Relay removes it from the stored metadata).
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

// planSettingsSQL sets, for the rest of the transaction, planner settings for the relay's statements, which
// are all meant to run as index lookups whatever the size of the table: JIT off (the claim's cost estimate
// can make PostgreSQL JIT-compile it on every call, which costs more than running it), a custom plan for every
// execution of a prepared statement (a generic plan does not know the batch's ids and sizes), and no
// sequential or bitmap scans, hash or merge joins (statistics taken before a backlog, or while the table was
// small, make those look cheaper than the index, and then each batch reads the whole table).
const planSettingsSQL = `SELECT set_config('jit', 'off', true), set_config('plan_cache_mode', 'force_custom_plan', true),
	set_config('enable_seqscan', 'off', true), set_config('enable_bitmapscan', 'off', true),
	set_config('enable_hashjoin', 'off', true), set_config('enable_mergejoin', 'off', true)`

// headsSQL returns the head (oldest undelivered row) of each ordering key after $1 in key order, at most $2
// keys: a loose index scan of the key index, one index descent per key, so its cost does not grow with the
// number of rows per key.
func (t Table) headsSQL() string {
	tbl := t.ident()
	return `WITH RECURSIVE keys(k, id) AS (
	(SELECT ordering_key, id FROM ` + tbl + ` WHERE delivered_at IS NULL AND ordering_key > $1
		ORDER BY ordering_key, id LIMIT 1)
	UNION ALL
	SELECT n.ordering_key, n.id FROM keys, LATERAL (
		SELECT ordering_key, id FROM ` + tbl + ` WHERE delivered_at IS NULL AND ordering_key > keys.k
		ORDER BY ordering_key, id LIMIT 1) n
)
SELECT k, id FROM keys LIMIT $2`
}

// unkeyedSQL returns the oldest claimable rows without an ordering key. $1 limit, $2 relay name or NULL.
func (t Table) unkeyedSQL() string {
	return `SELECT id FROM ` + t.ident() + ` WHERE ordering_key IS NULL AND delivered_at IS NULL
	AND parked_at IS NULL AND next_attempt_at <= now() AND (owner IS NULL OR owner = $2)
	ORDER BY id LIMIT $1`
}

// claimSQL claims a batch. See the package documentation ("Order per key") for why this preserves order:
//
//   - $3 holds candidate heads: the oldest undelivered row of some keys, and unkeyed rows. A row that was
//     its key's head stays the head until it is delivered (ids of a key follow commit order). The statement
//     locks the candidates that are still undelivered, due, not parked and not owned by another relay, with
//     FOR UPDATE SKIP LOCKED, so a locked head is its key's lock;
//   - followers are the later undelivered rows of the keys whose head this statement locked, at most
//     BatchSize / heads per key; nobody else can claim them while the head is locked and undelivered (they
//     are not heads), so they are not locked;
//   - the batch is the first $1 rows in id order, which keeps a prefix of every key's chain.
//
// $1 batch size, $2 relay name or NULL, $3 candidate head ids.
//
// Heads are looked up by primary key: "(o.delivered_at IS NULL) IS TRUE" means "o.delivered_at IS NULL",
// but does not let the planner scan the partial indexes (all undelivered rows) instead, which it would when
// its statistics predate a backlog. Followers are read from the key index (ordering_key, id), a key's undelivered rows in id order from its
// head. "y.id + 0" keeps the planner from walking the primary key from the head's id instead, filtering the
// rows of every other key on the way (which it prefers when its statistics predate the backlog).
func (t Table) claimSQL() string {
	tbl := t.ident()
	cols := `x.id, x.topic, x.ordering_key, x.uuid, x.metadata, x.payload, x.created_at, x.attempts,
		(x.parked_at IS NULL AND x.next_attempt_at <= now() AND (x.owner IS NULL OR x.owner = $2)) AS ready`
	return `WITH heads AS (
	SELECT o.id, o.ordering_key FROM ` + tbl + ` o
	WHERE o.id = ANY($3::bigint[])
		AND (o.delivered_at IS NULL) IS TRUE AND o.parked_at IS NULL AND o.next_attempt_at <= now()
		AND (o.owner IS NULL OR o.owner = $2)
	ORDER BY o.id
	LIMIT $1
	FOR UPDATE OF o SKIP LOCKED
)
SELECT * FROM (
	SELECT ` + cols + ` FROM heads h CROSS JOIN LATERAL (
		SELECT * FROM ` + tbl + ` y
		WHERE y.ordering_key = h.ordering_key AND y.delivered_at IS NULL AND y.id + 0 >= h.id
		ORDER BY y.ordering_key, y.id LIMIT (SELECT ceil($1::float8 / count(*))::int FROM heads)) x
	WHERE h.ordering_key IS NOT NULL
	UNION ALL
	SELECT ` + cols + ` FROM heads h JOIN ` + tbl + ` x ON x.id = h.id
	WHERE h.ordering_key IS NULL
) b ORDER BY id LIMIT $1`
}

// keyCursor walks the keyspace round-robin, a window of keys per claim, so that every key is looked at
// within (keys / window) claims however many rows the others have.
type keyCursor struct {
	after string // last key of the previous window; "" starts from the first key
}

// candidates returns the ids of the heads of the next window of n keys, the oldest unkeyed rows, and whether
// the window reached the end of the keyspace (the next window then starts from the first key again). It turns
// JIT off for the rest of tx (the claim's cost estimate can make PostgreSQL JIT-compile it on every call,
// which costs more than running it) and sets the other planSettingsSQL, in the same round trip as the first
// scan; with begin, that round trip also opens the transaction.
func (t Table) candidates(ctx context.Context, tx querier, begin bool, c *keyCursor, n int, owner *string) ([]int64, bool, error) {
	var keys []string
	var ids, unkeyed []int64
	b := &pgx.Batch{}
	if begin {
		b.Queue(`BEGIN`)
	}
	b.Queue(planSettingsSQL)
	b.Queue(t.headsSQL(), c.after, n).Query(func(rs pgx.Rows) error {
		var err error
		keys, ids, err = scanHeads(rs)
		return err
	})
	b.Queue(t.unkeyedSQL(), n, owner).Query(func(rs pgx.Rows) error {
		var err error
		unkeyed, err = pgx.CollectRows(rs, pgx.RowTo[int64])
		return err
	})
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return nil, false, t.tableError("claim rows from", err)
	}
	end := len(keys) < n
	switch {
	case !end:
		c.after = keys[n-1]
	case c.after != "": // wrap around for the rest of the window
		moreKeys, moreIDs, err := t.headsAfter(ctx, tx, "", n-len(keys))
		if err != nil {
			return nil, false, err
		}
		for i, k := range moreKeys {
			if k > c.after {
				break
			}
			ids = append(ids, moreIDs[i])
		}
		c.after = ""
	}
	return append(ids, unkeyed...), end, nil
}

func (t Table) headsAfter(ctx context.Context, tx querier, after string, n int) ([]string, []int64, error) {
	if n <= 0 {
		return nil, nil, nil
	}
	rs, err := tx.Query(ctx, t.headsSQL(), after, n)
	if err != nil {
		return nil, nil, t.tableError("list keys of", err)
	}
	keys, ids, err := scanHeads(rs)
	if err != nil {
		return nil, nil, t.tableError("list keys of", err)
	}
	return keys, ids, nil
}

func scanHeads(rs pgx.Rows) (keys []string, ids []int64, err error) {
	var k string
	var id int64
	_, err = pgx.ForEachRow(rs, []any{&k, &id}, func() error {
		keys, ids = append(keys, k), append(ids, id)
		return nil
	})
	return keys, ids, err
}

// claim returns the rows to publish, in id order: for each key, its chain up to the first row that is not
// ready (parked, waiting for a retry, or owned by another relay). It also reports whether the key window
// reached the end of the keyspace.
//
// With begin, tx is a connection outside a transaction: claim opens one (BEGIN, in the first round trip),
// which the caller must end, also when claim fails.
func (t Table) claim(ctx context.Context, tx querier, begin bool, c *keyCursor, batch int, owner *string) ([]*row, bool, error) {
	cands, end, err := t.candidates(ctx, tx, begin, c, 2*batch, owner)
	if err != nil || len(cands) == 0 {
		return nil, end, err
	}
	rs, err := tx.Query(ctx, t.claimSQL(), batch, owner, cands)
	if err != nil {
		return nil, false, t.tableError("claim rows from", err)
	}
	var out []*row
	blocked := map[string]bool{}
	for rs.Next() {
		r := &row{}
		if err := rs.Scan(&r.id, &r.topic, &r.orderingKey, &r.uuid, &r.metadata, &r.payload, &r.createdAt,
			&r.attempts, &r.ready); err != nil {
			rs.Close()
			return nil, false, fmt.Errorf("outbox: claim rows from %s: %w", t, err)
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
		return nil, false, t.tableError("claim rows from", err)
	}
	return out, end, nil
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
	} else {
		delete(md, MetadataOrderingKey) // the row's key, or none: never a stale value from the stored metadata
	}
	msg := message.NewMessage(r.uuid, r.payload)
	msg.Metadata = md
	msg.SetContext(ctx)
	return msg, nil
}

// markDeliveredSQL marks the rows of the ids in $1 delivered, or deletes them (del), by primary key lookups
// ("(delivered_at IS NULL) IS TRUE" keeps the planner off the partial indexes, see claimSQL).
func (t Table) markDeliveredSQL(del bool) string {
	if del {
		return `DELETE FROM ` + t.ident() + ` WHERE id = ANY($1) AND (delivered_at IS NULL) IS TRUE`
	}
	return `UPDATE ` + t.ident() + ` SET delivered_at = now(), attempts = attempts + 1, last_error = NULL
		WHERE id = ANY($1) AND (delivered_at IS NULL) IS TRUE`
}

// markDelivered marks ids delivered in tx, or deletes them (del), with planSettingsSQL, in one round trip.
func (t Table) markDelivered(ctx context.Context, tx pgx.Tx, ids []int64, del bool) error {
	if len(ids) == 0 {
		return nil
	}
	b := &pgx.Batch{}
	b.Queue(planSettingsSQL)
	b.Queue(t.markDeliveredSQL(del), ids)
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return t.tableError("mark rows delivered in", err)
	}
	return nil
}

// markAndCommit records a batch's outcome in the transaction open on conn and commits it, in one round trip:
// ids delivered (or deleted: del), failures as markFailed does. The transaction must have run planSettingsSQL
// (claim does). After an error the transaction may still be open (aborted): the caller rolls it back.
func (t Table) markAndCommit(ctx context.Context, conn querier, ids []int64, fs []failure, del bool) error {
	b := &pgx.Batch{}
	if len(ids) > 0 {
		b.Queue(t.markDeliveredSQL(del), ids)
	}
	if len(fs) > 0 {
		b.Queue(t.markFailedSQL(), failureArgs(fs)...)
	}
	b.Queue(`COMMIT`)
	if err := conn.SendBatch(ctx, b).Close(); err != nil {
		return t.tableError("mark relayed rows and commit in", err)
	}
	return nil
}

// querier is what the claim needs: a pgx.Tx, or a pool connection on which claim opens the transaction.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
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
	if _, err := tx.Exec(ctx, t.markFailedSQL(), failureArgs(fs)...); err != nil {
		return t.tableError("record failed attempts in", err)
	}
	return nil
}

func (t Table) markFailedSQL() string {
	return `UPDATE ` + t.ident() + ` AS t SET attempts = t.attempts + 1, last_error = f.err,
		next_attempt_at = now() + f.delay * interval '1 microsecond',
		parked_at = CASE WHEN f.parked THEN now() END, owner = NULL
		FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bool[]) AS f(id, err, delay, parked)
		WHERE t.id = f.id AND (t.delivered_at IS NULL) IS TRUE`
}

func failureArgs(fs []failure) []any {
	ids := make([]int64, len(fs))
	errs := make([]string, len(fs))
	delays := make([]int64, len(fs))
	parked := make([]bool, len(fs))
	for i, f := range fs {
		ids[i], errs[i], delays[i], parked[i] = f.row.id, f.err.Error(), f.delay.Microseconds(), f.parked
	}
	return []any{ids, errs, delays, parked}
}
