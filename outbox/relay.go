package outbox

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Relay moves committed outbox rows to their destination. Run it in every process that should relay (several
// relays share the work; see the package documentation for the guarantees).
type Relay struct {
	db     *pgxpool.Pool
	config RelayConfig
	logger watermill.LoggerAdapter

	running sync.Mutex // one Run at a time
	cursor  keyCursor  // where the first worker's next claim looks in the keyspace; used by it only
}

// NewRelay returns a Relay reading the outbox table through db. A nil logger discards logs.
func NewRelay(db *pgxpool.Pool, config RelayConfig, logger watermill.LoggerAdapter) (*Relay, error) {
	if db == nil {
		return nil, errors.New("outbox: NewRelay: db is nil")
	}
	config.setDefaults()
	if err := config.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = watermill.NopLogger{}
	}
	logger = logger.With(watermill.LogFields{"outbox_table": config.Table.String(), "relay": config.Name})
	return &Relay{db: db, config: config, logger: logger}, nil
}

// Run relays until ctx is cancelled, with RelayConfig.Workers batches at a time, then finishes the batches it
// holds (for at most ShutdownTimeout; an unfinished batch is released, its rows relayed again later) and
// returns nil. It returns an error at once
// when the outbox table does not exist (*MissingTableError). Other errors (database, destination) are
// retried; they reach Metrics and the logger. Every goroutine Run starts has ended when it returns.
func (r *Relay) Run(ctx context.Context) error {
	if !r.running.TryLock() {
		return errors.New("outbox: Relay.Run is already running")
	}
	defer r.running.Unlock()
	if err := r.checkTable(ctx); err != nil {
		var missing *MissingTableError
		if errors.As(err, &missing) {
			return err // a deployment error: retrying will not fix it
		}
		if ctx.Err() == nil {
			r.report(err) // the database may come back: the loop retries
		}
	}

	wake := make(chan struct{}, 1)
	var wg sync.WaitGroup
	defer wg.Wait()
	if !r.config.DisableListen {
		wg.Go(func() { r.listen(ctx, wake) })
	}
	for i := range r.config.Workers {
		cursor := &r.cursor
		if i > 0 {
			cursor = &keyCursor{}
		}
		wg.Go(func() { r.work(ctx, wake, cursor, i == 0) })
	}
	return nil
}

// work is one worker's loop: claim a batch, publish, mark, until ctx ends. The first worker (maintenance)
// also deletes expired rows and, with a TransactionalPublisher (then the only worker), recovers.
func (r *Relay) work(ctx context.Context, wake <-chan struct{}, cursor *keyCursor, maintenance bool) {
	needRecover := r.config.TransactionalPublisher != nil
	retention := maintenance && r.config.Retention >= 0
	nextRetention := time.Now()
	for ctx.Err() == nil {
		if needRecover {
			if err := r.recover(ctx); err != nil {
				r.report(err)
				sleep(ctx, r.config.ErrorBackoff)
				continue
			}
			needRecover = false
		}
		if retention && !time.Now().Before(nextRetention) {
			if err := r.deleteExpired(ctx); err != nil && ctx.Err() == nil {
				r.report(err)
			}
			nextRetention = time.Now().Add(r.config.RetentionInterval)
		}
		res, err := r.relayBatch(ctx, cursor)
		if err != nil {
			if errors.Is(err, errNeedRecover) {
				needRecover = true
			}
			if ctx.Err() == nil {
				r.report(err)
				sleep(ctx, r.config.ErrorBackoff)
			}
			continue
		}
		if res.claimed >= r.config.BatchSize || !res.endOfKeys {
			continue // more may be waiting, or keys not looked at yet
		}
		wait := r.config.PollInterval
		if res.retryIn > 0 && res.retryIn < wait {
			wait = res.retryIn
		}
		if d := time.Until(nextRetention); retention && d < wait {
			wait = max(d, 0)
		}
		r.waitForWork(ctx, wake, wait)
	}
}

func (r *Relay) checkTable(ctx context.Context) error {
	_, err := r.db.Exec(ctx, `SELECT 1 FROM `+r.config.Table.ident()+` LIMIT 0`)
	if err != nil {
		return r.config.Table.tableError("open", err)
	}
	return nil
}

func (r *Relay) report(err error) {
	r.config.Metrics.Error(err)
	r.logger.Error("Outbox relay error", err, nil)
}

func (r *Relay) waitForWork(ctx context.Context, wake <-chan struct{}, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-wake:
	case <-t.C:
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// listen holds one pool connection in LISTEN on the table's channel and signals wake on each notification.
// A lost connection is reported and re-established after ErrorBackoff; polling covers the gap.
func (r *Relay) listen(ctx context.Context, wake chan<- struct{}) {
	for ctx.Err() == nil {
		err := r.listenOnce(ctx, wake)
		if ctx.Err() != nil {
			return
		}
		r.report(fmt.Errorf("outbox: LISTEN %s: %w", r.config.Table.Channel(), err))
		sleep(ctx, r.config.ErrorBackoff)
	}
}

func (r *Relay) listenOnce(ctx context.Context, wake chan<- struct{}) error {
	conn, err := r.db.Acquire(ctx)
	if err != nil {
		return err
	}
	// The connection leaves the pool for good: its session is in LISTEN state.
	defer func() {
		c := conn.Hijack()
		closeCtx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = c.Close(closeCtx) // closing a connection we are abandoning; nothing to do on error
	}()
	if _, err := conn.Exec(ctx, `LISTEN `+pgx.Identifier{r.config.Table.Channel()}.Sanitize()); err != nil {
		return err
	}
	signal(wake) // rows may have committed before LISTEN took effect
	for {
		if _, err := conn.Conn().WaitForNotification(ctx); err != nil {
			return err
		}
		signal(wake)
	}
}

func signal(wake chan<- struct{}) {
	select {
	case wake <- struct{}{}:
	default:
	}
}

// workContext returns a context for one batch: it ends ShutdownTimeout after ctx ends.
func (r *Relay) workContext(ctx context.Context) (context.Context, context.CancelFunc) {
	work, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, func() {
		t := time.AfterFunc(r.config.ShutdownTimeout, cancel)
		context.AfterFunc(work, func() { t.Stop() })
	})
	return work, func() { stop(); cancel() }
}

type batchResult struct {
	claimed   int
	endOfKeys bool          // the claim's key window reached the end of the keyspace
	retryIn   time.Duration // earliest retry among the batch's failures, 0 if none
}

func (r *Relay) relayBatch(ctx context.Context, cursor *keyCursor) (batchResult, error) {
	if r.config.TransactionalPublisher != nil {
		return r.relayTransactional(ctx, cursor)
	}
	work, cancel := r.workContext(ctx)
	defer cancel()
	// The transaction runs on a connection of its own rather than a pgx.Tx, so that BEGIN travels with the
	// claim's first statements and COMMIT with the marks: three round trips per batch.
	conn, err := r.db.Acquire(work)
	if err != nil {
		return batchResult{}, fmt.Errorf("outbox: acquire a connection to claim: %w", err)
	}
	defer func() {
		if conn.Conn().PgConn().TxStatus() != 'I' { // claim failed, nothing claimed, or marking failed
			rollbackConn(conn)
		}
		conn.Release()
	}()
	rows, end, err := r.config.Table.claim(work, conn, true, cursor, r.config.BatchSize, nil)
	if err != nil || len(rows) == 0 {
		return batchResult{endOfKeys: end}, err
	}
	delivered, failures := r.publishRows(work, rows)
	if err := r.config.Table.markAndCommit(work, conn, delivered, failures, r.config.DeleteOnDelivery); err != nil {
		return batchResult{}, err
	}
	res := r.observe(rows, delivered, failures)
	res.endOfKeys = end
	return res, nil
}

// rollbackConn ends the transaction open on conn; a connection it cannot roll back is closed (the server
// then rolls back), so that the pool never hands out a connection inside a transaction.
func rollbackConn(conn *pgxpool.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := conn.Exec(ctx, `ROLLBACK`); err != nil {
		_ = conn.Conn().Close(ctx) // the server rolls back; the pool drops a closed connection
	}
}

// observe reports a finished batch to Metrics.
func (r *Relay) observe(rows []*row, delivered []int64, failures []failure) batchResult {
	res := batchResult{claimed: len(rows)}
	done := make(map[int64]bool, len(delivered))
	for _, id := range delivered {
		done[id] = true
	}
	now := time.Now()
	for _, row := range rows {
		if done[row.id] {
			r.config.Metrics.Relayed(row.topic, now.Sub(row.createdAt))
		}
	}
	for _, f := range failures {
		r.config.Metrics.Failed(f.row.topic, f.row.attempts+1, f.err)
		if f.parked {
			r.config.Metrics.Parked(f.row.topic, f.row.id, f.err)
			r.logger.Error("Outbox row parked", f.err, watermill.LogFields{"id": f.row.id, "topic": f.row.topic})
		} else if res.retryIn == 0 || f.delay < res.retryIn {
			res.retryIn = f.delay
		}
	}
	return res
}

// chains splits rows (in id order) into publish units: each ordering key's rows in order, and each unkeyed
// row alone.
func chains(rows []*row) [][]*row {
	var out [][]*row
	byKey := map[string]int{}
	for _, rw := range rows {
		if rw.orderingKey == nil {
			out = append(out, []*row{rw})
			continue
		}
		i, ok := byKey[*rw.orderingKey]
		if !ok {
			i = len(out)
			byKey[*rw.orderingKey] = i
			out = append(out, nil)
		}
		out[i] = append(out[i], rw)
	}
	return out
}

// publishCall is one Publish call: runs of rows of one topic, each run a prefix of what is left of one
// chain (so of at most one ordering key), in id order.
type publishCall struct {
	topic string
	runs  []run
	size  int // rows in runs
}

// run is the rows a round publishes of one chain.
type run struct {
	chain  int // index of the chain in the round's pending chains
	rows   []*row
	msgs   []*message.Message // rows' messages, built by publishCall
	bad    *row               // the row after rows whose message could not be built, or nil
	badErr error
}

// planRound takes from every pending chain its next run (consecutive rows of one topic, at most max) and
// packs the runs into calls of at most max rows, one topic per call. A chain is in at most one call of a
// round, so the calls of a round can run concurrently without reordering a key.
func planRound(pending [][]*row, max int) []*publishCall {
	var calls []*publishCall
	open := map[string]*publishCall{} // topic -> its call being filled
	for i, chain := range pending {
		n := 1
		for n < len(chain) && n < max && chain[n].topic == chain[0].topic {
			n++
		}
		topic := chain[0].topic
		c := open[topic]
		if c == nil || c.size+n > max {
			c = &publishCall{topic: topic}
			open[topic] = c
			calls = append(calls, c)
		}
		c.runs = append(c.runs, run{chain: i, rows: chain[:n]})
		c.size += n
	}
	return calls
}

// publishRows publishes rows (in id order) through the Publisher and returns the ids it delivered and the
// failures. It works in rounds: each round publishes, for every key, its next rows of one topic (up to
// MaxMessagesPerPublish), packed with other keys' rows into as few Publish calls as MaxMessagesPerPublish
// allows, the calls running concurrently (up to MaxConcurrentPublishes). The runs of a call that failed are
// published again one row per call, each in order, so that the failure is attributed to its row (rows of the
// call that were written are written again: at least once). A key stops at its first failed row; its later
// rows are left for a later batch (not counted as attempts).
func (r *Relay) publishRows(ctx context.Context, rows []*row) (delivered []int64, failures []failure) {
	ctx, cancel := context.WithTimeout(ctx, r.config.PublishTimeout)
	defer cancel()
	pending := chains(rows)
	delivered = make([]int64, 0, len(rows))
	var mu sync.Mutex
	sem := make(chan struct{}, r.config.MaxConcurrentPublishes)
	concurrently := func(n int, f func(i int)) {
		var wg sync.WaitGroup
		for i := range n {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				f(i)
			})
		}
		wg.Wait()
	}
	for len(pending) > 0 {
		calls := planRound(pending, r.config.MaxMessagesPerPublish)
		stopped := make([]bool, len(pending))
		var retry []run
		fail := func(rn run, rw *row, err error) {
			failures = append(failures, r.failures([]*row{rw}, err)[0])
			stopped[rn.chain] = true
		}
		settle := func(rn run, ok []int64, bad *row, err error) {
			mu.Lock()
			defer mu.Unlock()
			delivered = append(delivered, ok...)
			if bad != nil {
				fail(rn, bad, err)
			}
		}
		concurrently(len(calls), func(i int) {
			if failed := r.publishCall(ctx, calls[i], settle); len(failed) > 0 {
				mu.Lock()
				retry = append(retry, failed...)
				mu.Unlock()
			}
		})
		concurrently(len(retry), func(i int) {
			ok, bad, err := r.publishOneByOne(retry[i])
			settle(retry[i], ok, bad, err)
		})
		sent := make([]int, len(pending)) // rows of each chain this round published
		for _, c := range calls {
			for _, rn := range c.runs {
				sent[rn.chain] = len(rn.rows)
			}
		}
		next := make([][]*row, 0, len(pending))
		for i, chain := range pending {
			if rest := chain[sent[i]:]; !stopped[i] && len(rest) > 0 {
				next = append(next, rest)
			}
		}
		pending = next
	}
	return delivered, failures
}

// publishCall publishes call's runs in one Publish call and settles each run: the ids delivered and the row
// that failed, if any (a row whose message cannot be built fails and cuts its run before it). When a call of
// several rows fails, it returns its runs (with their messages) for publishOneByOne instead of settling them.
func (r *Relay) publishCall(ctx context.Context, call *publishCall, settle func(rn run, ok []int64, bad *row, err error)) (retry []run) {
	msgs := make([]*message.Message, 0, call.size)
	for j := range call.runs {
		rn := &call.runs[j]
		rn.msgs = make([]*message.Message, 0, len(rn.rows))
		for i, rw := range rn.rows {
			msg, err := rw.message(ctx)
			if err != nil {
				rn.bad, rn.badErr = rw, err
				rn.rows = rn.rows[:i]
				break
			}
			rn.msgs = append(rn.msgs, msg)
		}
		msgs = append(msgs, rn.msgs...)
	}
	var err error
	if len(msgs) > 0 {
		err = r.config.Publisher.Publish(call.topic, msgs...)
	}
	if err != nil && len(msgs) > 1 {
		for _, rn := range call.runs {
			if len(rn.rows) > 0 {
				retry = append(retry, rn)
			} else {
				settle(rn, nil, rn.bad, rn.badErr)
			}
		}
		return retry
	}
	for _, rn := range call.runs {
		switch {
		case err != nil && len(rn.rows) == 1:
			settle(rn, nil, rn.rows[0], fmt.Errorf("publish to %q: %w", call.topic, err))
		default:
			settle(rn, ids(rn.rows), rn.bad, rn.badErr)
		}
	}
	return nil
}

// publishOneByOne publishes rn's rows one Publish call each, in order, and stops at the first failure, which
// it returns with its row; after the last row it returns rn's unbuildable row, if any.
func (r *Relay) publishOneByOne(rn run) (ok []int64, bad *row, err error) {
	topic := rn.rows[0].topic
	for i, rw := range rn.rows {
		if err := r.config.Publisher.Publish(topic, rn.msgs[i]); err != nil {
			return ok, rw, fmt.Errorf("publish to %q: %w", topic, err)
		}
		ok = append(ok, rw.id)
	}
	return ok, rn.bad, rn.badErr
}

func ids(rows []*row) []int64 {
	out := make([]int64, len(rows))
	for i, rw := range rows {
		out[i] = rw.id
	}
	return out
}

func (r *Relay) failures(rows []*row, err error) []failure {
	fs := make([]failure, len(rows))
	for i, row := range rows {
		fs[i] = failure{row: row, err: err, delay: r.backoff(row.attempts), parked: row.attempts+1 >= r.config.MaxAttempts}
	}
	return fs
}

// backoff is the wait after a row's (attempts+1)-th failure.
func (r *Relay) backoff(attempts int) time.Duration {
	d := r.config.RetryInitialBackoff
	for i := 0; i < attempts && d < r.config.RetryMaxBackoff; i++ {
		d *= 2
	}
	d = min(d, r.config.RetryMaxBackoff)
	return d + time.Duration(rand.Int64N(int64(d)/4+1))
}

// deleteExpired deletes delivered rows older than Retention, in chunks, skipping rows another relay deletes.
func (r *Relay) deleteExpired(ctx context.Context) error {
	const chunk = 5000
	for ctx.Err() == nil {
		tag, err := r.db.Exec(ctx, `DELETE FROM `+r.config.Table.ident()+` WHERE id IN (
			SELECT id FROM `+r.config.Table.ident()+`
			WHERE delivered_at < now() - $1 * interval '1 microsecond'
			LIMIT $2 FOR UPDATE SKIP LOCKED)`, r.config.Retention.Microseconds(), chunk)
		if err != nil {
			return r.config.Table.tableError("delete expired rows from", err)
		}
		if tag.RowsAffected() < chunk {
			return nil
		}
	}
	return nil
}
