package main

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	sls "github.com/aliyun/aliyun-log-go-sdk"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/watermill-sls/watermill-sls/exactlyonce"
	"github.com/watermill-sls/watermill-sls/internal/pgcluster"
	"github.com/watermill-sls/watermill-sls/slspubsub"
	"github.com/watermill-sls/watermill-sls/slspubsub/slstest"
)

// publishBatch is how many logs a host uploads at once (one LogGroup).
const publishBatch = 64

// env is what the demo runs against.
type env struct {
	db       *pgxpool.Pool
	dbURL    string
	client   slspubsub.ClientConfig
	emulator string // the in-process emulator's address; empty with -endpoint
	closers  []func()
}

func (e *env) close() {
	for i := len(e.closers) - 1; i >= 0; i-- {
		e.closers[i]()
	}
}

// newEnv connects to PostgreSQL (DATABASE_URL, or a throwaway cluster) and to SLS (the emulator, or the
// endpoint of o), and makes sure the logstore exists.
func newEnv(ctx context.Context, o options) (_ *env, err error) {
	e := &env{dbURL: os.Getenv("DATABASE_URL")}
	defer func() {
		if err != nil {
			e.close()
		}
	}()
	if e.dbURL == "" {
		c, err := pgcluster.Start(ctx)
		if err != nil {
			return nil, fmt.Errorf("start PostgreSQL (or set DATABASE_URL): %w", err)
		}
		e.closers = append(e.closers, func() { _ = c.Stop() })
		e.dbURL = c.URL()
	}
	if e.db, err = pgxpool.New(ctx, e.dbURL); err != nil {
		return nil, err
	}
	e.closers = append(e.closers, e.db.Close)
	if o.endpoint == "" {
		srv, err := slstest.NewServer()
		if err != nil {
			return nil, err
		}
		e.closers = append(e.closers, func() { _ = srv.Close() })
		if err := srv.CreateLogStore(o.project, o.logstore, o.shards); err != nil {
			return nil, err
		}
		e.emulator = srv.Endpoint()
		e.client = slspubsub.ClientConfig{
			Endpoint: srv.Endpoint(), Project: o.project,
			AccessKeyID: slstest.DefaultAccessKeyID, AccessKeySecret: slstest.DefaultAccessKeySecret,
			HTTPClient: srv.HTTPClient(),
		}
		return e, nil
	}
	e.client = slspubsub.ClientConfig{
		Endpoint: o.endpoint, Project: o.project,
		AccessKeyID:     os.Getenv("ALIBABA_CLOUD_ACCESS_KEY_ID"),
		AccessKeySecret: os.Getenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET"),
		SecurityToken:   os.Getenv("ALIBABA_CLOUD_SECURITY_TOKEN"),
	}
	if o.slsAddr != "" {
		e.client.HTTPClient = slstest.HTTPClientFor(o.slsAddr)
	}
	c := sdkClient(e.client)
	if _, err := c.GetLogStore(o.project, o.logstore); err != nil {
		var se *sls.Error
		if !errors.As(err, &se) || se.Code != "LogStoreNotExist" || !o.createLogstore {
			return nil, fmt.Errorf("logstore %s/%s: %w (with -create-logstore the demo creates a missing one)", o.project, o.logstore, err)
		}
		if err := c.CreateLogStore(o.project, o.logstore, 1, o.shards, false, 0); err != nil {
			return nil, fmt.Errorf("create logstore %s/%s: %w", o.project, o.logstore, err)
		}
	}
	return e, nil
}

func sdkClient(c slspubsub.ClientConfig) *sls.Client {
	return &sls.Client{Endpoint: c.Endpoint, AccessKeyID: c.AccessKeyID, AccessKeySecret: c.AccessKeySecret,
		SecurityToken: c.SecurityToken, HTTPClient: c.HTTPClient}
}

// run is the demo: it sets up its environment and runs the job once (runOn).
func run(ctx context.Context, o options, spawn func() *commandSpec, out io.Writer) (*verification, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	e, err := newEnv(ctx, o)
	if err != nil {
		return nil, err
	}
	defer e.close()
	return runOn(ctx, e, o, spawn, out)
}

// runOn writes the logs of a new run, runs a consumer, kills it midway, runs another to the end, and verifies
// the run's counts. It writes its report to out. The logstore may hold other logs (of earlier runs, of
// anyone): the consumers read past them.
func runOn(ctx context.Context, e *env, o options, spawn func() *commandSpec, out io.Writer) (*verification, error) {
	if err := migrate(ctx, e.db); err != nil {
		return nil, err
	}
	ranges, err := shardRanges(e.client, o.logstore)
	if err != nil {
		return nil, err
	}
	keys, err := shardKeys(ranges)
	if err != nil {
		return nil, err
	}

	runID := fmt.Sprintf("run-%d", time.Now().UnixNano())
	start := time.Now()
	base := start.Truncate(time.Second).Add(-time.Duration(float64(o.logs) / eventRate * float64(time.Second)))
	data := generate(o.logs, len(ranges), base, o.seed, runID)
	fmt.Fprintf(out, "ipcount: %d nginx access logs of %d hosts, one per shard of %s (clocks %v apart, first half 3x the traffic), %v of event time, %d uploaded %v-%v late\n",
		o.logs, len(ranges), o.logstore, hostSkew, data.span.Round(time.Second), data.delayed, minDelay, maxDelay)
	fmt.Fprintf(out, "pipeline: Subscriber (watermarks, alignment MaxDrift %v) -> %v tumbling windows per IP, allowed lateness %v -> exactlyonce.BatchHandler -> PostgreSQL\n",
		maxDrift, windowSize, allowedLateness)

	cfg := consumerConfig{
		Endpoint: e.client.Endpoint, Addr: cmp.Or(e.emulator, o.slsAddr), Emulator: e.emulator != "",
		Project: o.project, Logstore: o.logstore,
		Shards: len(ranges), Run: runID,
	}
	if e.emulator == "" {
		cfg.StartTime = start.Add(-time.Minute) // a real logstore: read from shortly before the first upload
	}
	up := startUpload(e.client, o.logstore, data, keys)
	defer func() { <-up.done }() // the producer never outlives the run

	// The first consumer reads while the logs are being written, until it is killed.
	consumeStart := time.Now()
	name := "consumer"
	if o.killAt > 0 {
		first, err := startConsumer(spawn(), cfg, e.dbURL, out, "consumer 1")
		if err != nil {
			return nil, err
		}
		target := int64(float64(o.logs) * o.killAt)
		n, err := awaitCommitted(ctx, e.db, runID, target, first, up)
		first.kill()
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(out, "consumer 1: killed with SIGKILL after %s, %d of %d logs committed\n", elapsedSince(consumeStart), n, o.logs)
		name = "consumer 2"
	}
	<-up.done
	if up.err != nil {
		return nil, fmt.Errorf("write logs: %w", up.err)
	}
	fmt.Fprintf(out, "producer: %d logs written in %v (%.0f logs/s)\n", o.logs, up.took.Round(10*time.Millisecond), float64(o.logs)/up.took.Seconds())

	// The next one reads to the end of the logstore as it is now, which holds every log of the run.
	cfg.StopAtEnd = true
	second, err := startConsumer(spawn(), cfg, e.dbURL, out, name)
	if err != nil {
		return nil, err
	}
	if err := second.wait(ctx); err != nil {
		return nil, err
	}
	consumeTime := time.Since(consumeStart)
	v, err := verify(ctx, e.db, runID, data)
	if err != nil {
		return nil, err
	}
	v.consumeTime = consumeTime
	v.print(out)
	return v, nil
}

// migrate creates the sink's tables and the exactly-once positions table when they are missing.
func migrate(ctx context.Context, db *pgxpool.Pool) error {
	if _, err := db.Exec(ctx, schema); err != nil {
		return fmt.Errorf("create tables: %w", err)
	}
	store, err := exactlyonce.NewStore(db, exactlyonce.StoreConfig{})
	if err != nil {
		return err
	}
	return store.Migrate(ctx)
}

// upload is the producer, running in the background.
type upload struct {
	done chan struct{} // closed when it ended; err and took are set then
	err  error
	took time.Duration
}

func startUpload(c slspubsub.ClientConfig, logstore string, d *dataset, keys []string) *upload {
	u := &upload{done: make(chan struct{})}
	go func() {
		defer close(u.done)
		t := time.Now()
		u.err = produce(c, logstore, d, keys)
		u.took = time.Since(t)
	}()
	return u
}

func shardRanges(c slspubsub.ClientConfig, logstore string) ([]hashRange, error) {
	shards, err := sdkClient(c).ListShards(c.Project, logstore)
	if err != nil {
		return nil, fmt.Errorf("list shards of %s: %w", logstore, err)
	}
	var out []hashRange
	for _, s := range shards {
		if strings.EqualFold(s.Status, "readwrite") {
			out = append(out, hashRange{shard: s.ShardID, begin: s.InclusiveBeginKey, end: s.ExclusiveBeginKey})
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("logstore %s has no readwrite shard", logstore)
	}
	return out, nil
}

// produce uploads each host's logs to its shard, the hosts in parallel, publishBatch logs at a time.
func produce(c slspubsub.ClientConfig, logstore string, d *dataset, keys []string) error {
	pub, err := slspubsub.NewPublisher(slspubsub.PublisherConfig{
		ClientConfig: c,
		Marshaler:    accessLogMarshaler{},
		HashKey: func(_ string, msg *message.Message) (string, error) {
			return msg.Metadata.Get("host_key"), nil
		},
		IdempotentWrites: true, // a retried upload is not written twice
	}, nil)
	if err != nil {
		return err
	}
	defer pub.Close()
	var wg sync.WaitGroup
	errs := make(chan error, len(d.hosts))
	for k, logs := range d.hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < len(logs); i += publishBatch {
				var msgs []*message.Message
				for j := i; j < min(i+publishBatch, len(logs)); j++ {
					payload, err := json.Marshal(logs[j])
					if err != nil {
						errs <- err
						return
					}
					m := message.NewMessage(fmt.Sprintf("%s-%d", logs[j].Host, j), payload)
					m.Metadata.Set("host_key", keys[k])
					msgs = append(msgs, m)
				}
				if err := pub.Publish(logstore, msgs...); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return errors.Join(<-errs, pub.Close())
}

// committed returns how many of the run's logs are counted in PostgreSQL.
func committed(ctx context.Context, db *pgxpool.Pool, run string) (int64, error) {
	var n int64
	err := db.QueryRow(ctx, `SELECT
		(SELECT coalesce(sum(requests), 0) FROM ipcount_open WHERE run = $1) +
		(SELECT coalesce(sum(requests + late), 0) FROM ipcount_counts WHERE run = $1)`, run).Scan(&n)
	return n, err
}

// awaitCommitted polls until target logs are committed, the consumer exits, the upload fails, or ctx ends.
func awaitCommitted(ctx context.Context, db *pgxpool.Pool, run string, target int64, c *consumerProc, up *upload) (int64, error) {
	uploaded := up.done
	tick := time.NewTicker(250 * time.Millisecond) // each poll sums the run's rows: not too often
	defer tick.Stop()
	for {
		n, err := committed(ctx, db, run)
		if err != nil || n >= target {
			return n, err
		}
		select {
		case <-ctx.Done():
			return n, ctx.Err()
		case <-c.exited:
			return n, fmt.Errorf("%s exited at %d logs committed (%v)", c.name, n, c.err)
		case <-uploaded:
			if up.err != nil {
				return n, fmt.Errorf("write logs: %w", up.err)
			}
			uploaded = nil
		case <-tick.C:
		}
	}
}

// consumerProc is a running consumer process.
type consumerProc struct {
	name   string
	cmd    *exec.Cmd
	exited chan struct{} // closed when it has exited and its output is copied; err is then set
	err    error
}

// startConsumer starts a consumer process; its output lines are copied to out with its name in front.
func startConsumer(spec *commandSpec, cfg consumerConfig, dbURL string, out io.Writer, name string) (*consumerProc, error) {
	js, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(spec.path, spec.args...)
	cmd.Env = append(os.Environ(), spec.env...)
	cmd.Env = append(cmd.Env, consumerEnv+"="+string(js), "DATABASE_URL="+dbURL)
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &consumerProc{name: name, cmd: cmd, exited: make(chan struct{})}
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		s := bufio.NewScanner(pr)
		for s.Scan() {
			if line := s.Text(); !strings.HasPrefix(line, "=== RUN") && !strings.HasPrefix(line, "--- PASS") && line != "PASS" {
				fmt.Fprintf(out, "%s: %s\n", name, line)
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	go func() {
		p.err = cmd.Wait()
		_ = pw.Close()
		<-copied
		close(p.exited)
	}()
	return p, nil
}

// kill ends the process with SIGKILL and waits for it.
func (p *consumerProc) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
}

// wait waits for the process to exit on its own and returns an error unless it exited with status 0.
func (p *consumerProc) wait(ctx context.Context) error {
	select {
	case <-p.exited:
		if p.err != nil {
			return fmt.Errorf("%s: %w", p.name, p.err)
		}
		return nil
	case <-ctx.Done():
		p.kill()
		return ctx.Err()
	}
}
