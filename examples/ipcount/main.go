// Command ipcount is a real-time per-IP request count over nginx access logs in SLS, written exactly once
// into PostgreSQL, crashed and restarted midway: the classic exactly-once streaming job.
//
// It generates access logs of several web hosts into a logstore (one host per shard; the hosts' clocks and
// traffic differ, so the shards are skewed in event time, and a few logs are uploaded late), and a consumer
// process reads them through the slspubsub Subscriber with watermarks and alignment, counts requests per
// client IP in 5-second event-time tumbling windows with 10 seconds of allowed lateness (watermark.Windows),
// and writes the counts with exactlyonce.BatchHandler: each log's count and its SLS position commit in one
// transaction. The counts of windows that have not fired yet are upserted per (window, IP) in PostgreSQL
// too, so the open-window state survives a crash; a window's counts move to the result table when the
// watermark passes its end plus the allowed lateness, and a log that arrives after that is added to its
// window's row as a late correction, never dropped.
//
// Midway the demo kills the consumer with SIGKILL (the consumer is this program re-executed with
// IPCOUNT_ROLE=consumer) and starts a new one, which resumes from the positions in PostgreSQL and rebuilds
// the open windows from the rows there. At the end it compares the counts in PostgreSQL with the counts
// computed directly from the generated logs, window by window and IP by IP, prints the comparison, and exits
// with status 1 when they differ.
//
// Without -endpoint everything runs on this machine: the SLS emulator (slstest) in process and PostgreSQL
// from DATABASE_URL or, when unset, a throwaway cluster started from the system's binaries. With -endpoint
// (and ALIBABA_CLOUD_ACCESS_KEY_ID, ALIBABA_CLOUD_ACCESS_KEY_SECRET, optionally ALIBABA_CLOUD_SECURITY_TOKEN)
// the same job runs against a real project and logstore; see the examples README for what it then creates and
// writes (nothing is ever deleted; a missing logstore is created only with -create-logstore).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"time"
)

// consumerEnv carries a consumer process's configuration (JSON); roleEnv selects the consumer role.
const (
	roleEnv     = "IPCOUNT_ROLE"
	consumerEnv = "IPCOUNT_CONSUMER"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if os.Getenv(roleEnv) == "consumer" {
		if err := consumerMain(ctx, os.Stdout); err != nil {
			fmt.Fprintf(os.Stderr, "consumer: %v\n", err)
			os.Exit(1)
		}
		return
	}
	var o options
	flag.IntVar(&o.logs, "logs", 100_000, "access logs to generate")
	flag.IntVar(&o.shards, "shards", 4, "shards of the logstore (one web host each)")
	flag.Float64Var(&o.killAt, "kill-at", 0.5, "kill the consumer once this share of the logs is committed (0: no kill, one consumer after the upload)")
	flag.Uint64Var(&o.seed, "seed", 1, "seed of the generated logs")
	flag.StringVar(&o.endpoint, "endpoint", "", "SLS endpoint, e.g. cn-hangzhou.log.aliyuncs.com (empty: the in-process emulator)")
	flag.StringVar(&o.project, "project", "ipcount", "SLS project (with -endpoint it must exist)")
	flag.StringVar(&o.logstore, "logstore", "ipcount-access-log", "SLS logstore to write the logs to and read them from")
	flag.StringVar(&o.slsAddr, "sls-addr", "", "with -endpoint: send every SLS request to this host:port whatever host it names (the slsemu emulator command)")
	flag.BoolVar(&o.createLogstore, "create-logstore", false, "with -endpoint: create the logstore (-shards shards, 1 day TTL) when it does not exist")
	timeout := flag.Duration("timeout", 5*time.Minute, "give up (and fail) after this long")
	flag.Parse()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	spawn := func() *commandSpec { return &commandSpec{path: exe, env: []string{roleEnv + "=consumer"}} }
	v, err := run(ctx, o, spawn, os.Stdout)
	if err != nil {
		fmt.Fprintf(os.Stderr, "ipcount: %v\n", err)
		os.Exit(1)
	}
	if !v.ok() {
		os.Exit(1)
	}
}

// options are the demo's flags.
type options struct {
	logs, shards   int
	killAt         float64
	seed           uint64
	endpoint       string
	project        string
	logstore       string
	slsAddr        string
	createLogstore bool
}

func (o options) validate() error {
	var errs []error
	if o.logs < 1 {
		errs = append(errs, fmt.Errorf("-logs %d: must be positive", o.logs))
	}
	if o.shards < 1 || o.shards > 64 {
		errs = append(errs, fmt.Errorf("-shards %d: must be 1 to 64", o.shards))
	}
	if o.killAt < 0 || o.killAt >= 1 {
		errs = append(errs, fmt.Errorf("-kill-at %v: must be in [0, 1)", o.killAt))
	}
	if o.slsAddr != "" && o.endpoint == "" {
		errs = append(errs, errors.New("-sls-addr: needs -endpoint"))
	}
	if o.endpoint != "" && (os.Getenv("ALIBABA_CLOUD_ACCESS_KEY_ID") == "" || os.Getenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET") == "") {
		errs = append(errs, errors.New("-endpoint: set ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET"))
	}
	return errors.Join(errs...)
}

// commandSpec is how to start a consumer process: a program and the environment it needs on top of ours.
type commandSpec struct {
	path string
	args []string
	env  []string
}

// elapsedSince formats a duration since t for the report.
func elapsedSince(t time.Time) string { return time.Since(t).Round(10 * time.Millisecond).String() }
