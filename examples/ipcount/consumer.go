package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/watermill-sls/watermill-sls/exactlyonce"
	"github.com/watermill-sls/watermill-sls/slspubsub"
	"github.com/watermill-sls/watermill-sls/slspubsub/slstest"
	"github.com/watermill-sls/watermill-sls/watermark"
)

// The pipeline's event-time settings.
const (
	windowSize        = 5 * time.Second  // tumbling windows
	allowedLateness   = 10 * time.Second // >= maxDrift + one fetch's event-time span: alignment skew loses nothing
	maxOutOfOrderness = 2 * time.Second  // > maxReqTime: a host's logs are at most that much out of order
	maxDrift          = 5 * time.Second  // alignment: no shard more than this ahead of the slowest
	idleTimeout       = 3 * time.Second
	fetchCount        = 4  // LogGroups per PullLogs: small answers, so that watermarks move in small steps
	maxInFlight       = 16 // per shard; several logs of a shard share a transaction
)

// schema creates the sink's tables. Rows are keyed by run, so runs never touch each other's rows and nothing
// is ever deleted but a run's own open-window rows as their windows fire.
//
//   - ipcount_open: the counts of windows that have not fired yet, upserted by every log in the transaction
//     that stores its position: the open-window state lives here, so a killed consumer loses none of it.
//   - ipcount_counts: the result. A window's rows move here from ipcount_open when the watermark passes the
//     window's end plus the allowed lateness ("requests"); a log that arrives after its window fired is
//     added to "late" of its row, in its own transaction too.
//   - ipcount_progress: the watermark up to which windows have fired, so that a restarted consumer knows which
//     windows are closed.
const schema = `
CREATE TABLE IF NOT EXISTS ipcount_open (
	run          text        NOT NULL,
	window_start timestamptz NOT NULL,
	ip           text        NOT NULL,
	requests     bigint      NOT NULL,
	PRIMARY KEY (run, window_start, ip)
);
CREATE TABLE IF NOT EXISTS ipcount_counts (
	run          text        NOT NULL,
	window_start timestamptz NOT NULL,
	ip           text        NOT NULL,
	requests     bigint      NOT NULL DEFAULT 0,  -- counted before the window fired
	late         bigint      NOT NULL DEFAULT 0,  -- arrived after it fired
	PRIMARY KEY (run, window_start, ip)
);
CREATE TABLE IF NOT EXISTS ipcount_progress (
	run       text        PRIMARY KEY,
	watermark timestamptz NOT NULL
);`

const (
	countOpenSQL = `INSERT INTO ipcount_open AS o (run, window_start, ip, requests) VALUES ($1, $2, $3, 1)
ON CONFLICT (run, window_start, ip) DO UPDATE SET requests = o.requests + 1`
	countLateSQL = `INSERT INTO ipcount_counts AS c (run, window_start, ip, late) VALUES ($1, $2, $3, 1)
ON CONFLICT (run, window_start, ip) DO UPDATE SET late = c.late + 1`
	// fireSQL moves every open row of a window whose end plus the allowed lateness is at or before the
	// watermark ($2: the latest window start that fired): a condition, not a list, so a firing that a rolled
	// back transaction did not store is done by the next one.
	fireSQL = `WITH fired AS (
	DELETE FROM ipcount_open WHERE run = $1 AND window_start <= $2 RETURNING window_start, ip, requests
)
INSERT INTO ipcount_counts AS c (run, window_start, ip, requests)
SELECT $1, window_start, ip, requests FROM fired
ON CONFLICT (run, window_start, ip) DO UPDATE SET requests = c.requests + EXCLUDED.requests`
	progressSQL = `INSERT INTO ipcount_progress AS p (run, watermark) VALUES ($1, $2)
ON CONFLICT (run) DO UPDATE SET watermark = GREATEST(p.watermark, EXCLUDED.watermark)`
)

// consumerConfig is what the parent passes to a consumer process (as JSON in consumerEnv). Credentials are not
// in it: the child reads them from the environment it inherits, like the parent.
type consumerConfig struct {
	Endpoint  string    `json:"endpoint"`
	Addr      string    `json:"addr,omitempty"` // send every SLS request to this host:port (an emulator)
	Emulator  bool      `json:"emulator"`       // the parent's in-process emulator: its fixed credentials
	Project   string    `json:"project"`
	Logstore  string    `json:"logstore"`
	Shards    int       `json:"shards"`
	Run       string    `json:"run"`
	StartTime time.Time `json:"start_time,omitzero"` // real SLS: read from here (the run's first upload)
	StopAtEnd bool      `json:"stop_at_end"`         // read to the end as of start, then fire every window
}

func (c consumerConfig) consumer() string { return "ipcount/" + c.Run }

// consumerMain runs a consumer process from the configuration in the environment.
func consumerMain(ctx context.Context, out io.Writer) error {
	var cfg consumerConfig
	if err := json.Unmarshal([]byte(os.Getenv(consumerEnv)), &cfg); err != nil {
		return fmt.Errorf("%s: %w", consumerEnv, err)
	}
	return consume(ctx, cfg, out)
}

// counter is the HandlerFunc's state: the event-time windows of the IP counts. The windows decide when a
// window fires and which logs are late; the counts themselves are only ever taken from PostgreSQL.
//
// Why the memory may be wrong without the result being wrong: the BatchHandler may run the HandlerFunc more
// than once for a log (a batch rolled back and run again with savepoints), so the in-memory aggregates can
// count a log twice, and a window may fire in memory in a transaction that then rolls back. Neither reaches
// the result: every committed log adds exactly 1 to exactly one row (its open row, or the late column of its
// result row), a firing moves rows without changing their sum, and the firing statement takes every open row
// at or before the watermark, so a firing that was rolled back is done by the next one (at the latest at the
// end of the input).
type counter struct {
	run     string
	windows *watermark.Windows[string, int64, int64]
	decoder slspubsub.Decoder
}

// requestFields are the contents of an access log the count needs.
type requestFields struct {
	IP  string `sls:"remote_addr"`
	Run string `sls:"run"`
}

func newCounter(run string) (*counter, error) {
	w, err := watermark.NewWindows[string, int64, int64](watermark.WindowConfig{
		Size: windowSize, AllowedLateness: allowedLateness,
	}, func(acc, n int64) int64 { return acc + n })
	if err != nil {
		return nil, err
	}
	return &counter{run: run, windows: w}, nil
}

// restore rebuilds the windows from what the transactions of earlier consumers committed: first the watermark
// up to which windows fired (logs for those windows are late), then the open windows' counts.
func (c *counter) restore(ctx context.Context, db *pgxpool.Pool) (rows int, counted int64, wm time.Time, err error) {
	err = db.QueryRow(ctx, `SELECT watermark FROM ipcount_progress WHERE run = $1`, c.run).Scan(&wm)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		err = nil
	case err != nil:
		return 0, 0, wm, err
	default:
		c.windows.Advance(wm)
	}
	r, err := db.Query(ctx, `SELECT window_start, ip, requests FROM ipcount_open WHERE run = $1`, c.run)
	if err != nil {
		return 0, 0, wm, err
	}
	defer r.Close()
	for r.Next() {
		var (
			start time.Time
			ip    string
			n     int64
		)
		if err := r.Scan(&start, &ip, &n); err != nil {
			return 0, 0, wm, err
		}
		// A row of a window that fired already (its move not yet stored) stays in PostgreSQL for the next fire.
		c.windows.Add(ip, start, n)
		rows++
		counted += n
	}
	return rows, counted, wm, r.Err()
}

// handle counts one access log in tx, the transaction that also stores its position.
func (c *counter) handle(ctx context.Context, tx pgx.Tx, msg *message.Message) error {
	var f requestFields
	if err := c.decoder.DecodeMessage(msg, &f); err != nil {
		return err
	}
	if f.Run != c.run {
		return nil // someone else's log (a real logstore): its position is stored, nothing else
	}
	lf, err := slspubsub.LogFieldsFromMessage(msg)
	if err != nil {
		return err
	}
	sql := countOpenSQL
	if c.windows.Add(f.IP, lf.Time, 1) {
		sql = countLateSQL // its window fired: the count becomes a correction of the result
	}
	if _, err := tx.Exec(ctx, sql, c.run, windowStart(lf.Time), f.IP); err != nil {
		return err
	}
	if fired := c.windows.AdvanceFromMessage(msg); len(fired) > 0 {
		return c.fire(ctx, tx, fired[len(fired)-1].Start)
	}
	return nil
}

// fire moves the open rows of every window starting at or before last to the result, in tx.
func (c *counter) fire(ctx context.Context, tx pgx.Tx, last time.Time) error {
	if _, err := tx.Exec(ctx, fireSQL, c.run, last); err != nil {
		return fmt.Errorf("fire windows up to %s: %w", last.Format(time.TimeOnly), err)
	}
	wm, _ := c.windows.Watermark()
	_, err := tx.Exec(ctx, progressSQL, c.run, wm)
	return err
}

// consume reads the logstore through an aligned Subscriber and counts into PostgreSQL exactly once, until ctx
// ends or, with StopAtEnd, the end of the logstore as of the start; then it fires every window left.
func consume(ctx context.Context, cfg consumerConfig, out io.Writer) error {
	logger := quietLogger{watermill.NewSlogLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))}
	db, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		return err
	}
	defer db.Close()
	store, err := exactlyonce.NewStore(db, exactlyonce.StoreConfig{})
	if err != nil {
		return err
	}
	c, err := newCounter(cfg.Run)
	if err != nil {
		return err
	}
	rows, counted, wm, err := c.restore(ctx, db)
	if err != nil {
		return fmt.Errorf("restore windows: %w", err)
	}
	if rows > 0 || !wm.IsZero() {
		fired := "no window fired yet"
		if !wm.IsZero() {
			fired = "windows fired up to watermark " + wm.Format(time.TimeOnly)
		}
		fmt.Fprintf(out, "resumed from PostgreSQL: %s; %d open (window, IP) counts holding %d requests rebuilt\n",
			fired, rows, counted)
	}
	sub, err := slspubsub.NewSubscriber(subscriberConfig(cfg, store), logger)
	if err != nil {
		return err
	}
	h, err := exactlyonce.NewBatchHandler(store, exactlyonce.BatchConfig{
		HandlerConfig: exactlyonce.HandlerConfig{Consumer: cfg.consumer(), Position: exactlyonce.SLSPosition},
		MaxBatch:      cfg.Shards * maxInFlight, // every unacked log of every shard
		MaxWait:       2 * time.Millisecond,
	}, c.handle)
	if err != nil {
		return err
	}
	defer h.Close()
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 10 * time.Second}, logger)
	if err != nil {
		return err
	}
	// The wrapper keeps each shard's logs in delivery order with MaxInFlight above 1.
	router.AddConsumerHandler("ipcount", cfg.Logstore, h.Subscriber(sub), h.Handle)
	if err := router.Run(ctx); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil || !cfg.StopAtEnd {
		return err
	}
	if err := h.Close(); err != nil {
		return err
	}
	// The input ended: every window fires, in one transaction (a crash here repeats it, nothing is left open).
	c.windows.Flush()
	err = pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		return c.fire(ctx, tx, time.Unix(1<<40, 0))
	})
	if err != nil {
		return err
	}
	st := c.windows.Stats()
	fmt.Fprintf(out, "end of input: every window fired (%d (window, IP) results fired by this consumer)\n", st.Fired)
	return nil
}

func subscriberConfig(cfg consumerConfig, store *exactlyonce.Store) slspubsub.SubscriberConfig {
	client := slspubsub.ClientConfig{
		Endpoint:        cfg.Endpoint,
		Project:         cfg.Project,
		AccessKeyID:     os.Getenv("ALIBABA_CLOUD_ACCESS_KEY_ID"),
		AccessKeySecret: os.Getenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET"),
		SecurityToken:   os.Getenv("ALIBABA_CLOUD_SECURITY_TOKEN"),
	}
	if cfg.Emulator {
		client.AccessKeyID, client.AccessKeySecret, client.SecurityToken = slstest.DefaultAccessKeyID, slstest.DefaultAccessKeySecret, ""
	}
	if cfg.Addr != "" {
		client.HTTPClient = slstest.HTTPClientFor(cfg.Addr)
	}
	sc := slspubsub.SubscriberConfig{
		ClientConfig:  client,
		FetchCount:    fetchCount,
		FetchInterval: 20 * time.Millisecond,
		MaxInFlight:   maxInFlight,
		PositionStore: store.SubscriberPositions(cfg.consumer()),
		Watermark: &slspubsub.WatermarkConfig{
			Strategy: watermark.Strategy{MaxOutOfOrderness: maxOutOfOrderness, IdleTimeout: idleTimeout},
			Alignment: &slspubsub.AlignmentConfig{
				Group: "ipcount", MaxDrift: maxDrift, Coordinator: watermark.NewInProcessCoordinator(),
			},
		},
	}
	if !cfg.StartTime.IsZero() {
		sc.StartPosition = slspubsub.StartAtTime(cfg.StartTime)
	}
	if cfg.StopAtEnd {
		sc.StopPosition = slspubsub.StopAtEnd()
	}
	return sc
}

// quietLogger drops the router's error on the normal end of a bounded subscription.
type quietLogger struct{ watermill.LoggerAdapter }

func (l quietLogger) Error(msg string, err error, fields watermill.LogFields) {
	if msg == "All handlers stopped, closing router" {
		return
	}
	l.LoggerAdapter.Error(msg, err, fields)
}

func (l quietLogger) With(fields watermill.LogFields) watermill.LoggerAdapter {
	return quietLogger{l.LoggerAdapter.With(fields)}
}
