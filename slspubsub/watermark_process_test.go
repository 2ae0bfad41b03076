package slspubsub

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/watermill-sls/watermill-sls/internal/testutil"
	"github.com/watermill-sls/watermill-sls/slspubsub/slstest"
	"github.com/watermill-sls/watermill-sls/watermark"
)

// Environment of an alignment child process.
const (
	waEnvIndex    = "WSLS_ALIGN_CHILD"
	waEnvEndpoint = "WSLS_ALIGN_ENDPOINT"
	waEnvDB       = "WSLS_ALIGN_DB"
	waEnvOut      = "WSLS_ALIGN_OUT"
)

const (
	waGroup    = "xproc"
	waInterval = 50 * time.Millisecond // UpdateInterval of the PostgreSQL coordinator
)

// TestWatermarkAlignChild is a subscriber process of
// TestSubscriberWatermarkAlignmentAcrossProcesses (it does nothing unless
// started by it): static instance i of 2 on the skewed logstore, aligned in
// a group on the PostgreSQL coordinator. Every millisecond it appends
// "<unix ns> <lowest> <highest> <delivered>" to its output file: the lowest
// and highest watermark of its shards that hold the subscription (active or
// paused; see holdingSpread). It closes on SIGTERM.
func TestWatermarkAlignChild(t *testing.T) {
	idx := os.Getenv(waEnvIndex)
	if idx == "" {
		return // not a child process
	}
	index, err := strconv.Atoi(idx)
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	pool, err := pgxpool.New(ctx, os.Getenv(waEnvDB))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	coord, err := watermark.NewPostgresCoordinator(pool, watermark.PostgresCoordinatorConfig{MemberTTL: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	out, err := os.OpenFile(os.Getenv(waEnvOut), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	endpoint := os.Getenv(waEnvEndpoint)
	s, err := NewSubscriber(SubscriberConfig{
		ClientConfig: ClientConfig{
			Endpoint: endpoint, Project: testProject,
			AccessKeyID: slstest.DefaultAccessKeyID, AccessKeySecret: slstest.DefaultAccessKeySecret,
			HTTPClient: slstest.HTTPClientFor(endpoint),
		},
		Assignment: AssignStatic, StaticInstances: 2, StaticIndex: index,
		ConsumerGroup: waGroup, ConsumerName: "p" + idx, CommitInterval: 100 * time.Millisecond,
		FetchCount: skewFetch, FetchInterval: 5 * time.Millisecond, MaxFetchInterval: 20 * time.Millisecond,
		Watermark: &WatermarkConfig{
			Strategy: watermark.Strategy{IdleTimeout: time.Minute},
			Alignment: &AlignmentConfig{Group: waGroup, Member: "p" + idx, MaxDrift: skewMaxDrift,
				UpdateInterval: waInterval, Coordinator: coord},
		},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ch, err := s.Subscribe(ctx, testLogstore)
	if err != nil {
		t.Fatal(err)
	}
	var delivered atomic.Int64
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		w := bufio.NewWriter(out)
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				_ = w.Flush()
				return
			case <-tick.C:
			}
			first := s.ShardWatermarkStatus(testLogstore)
			second := s.ShardWatermarkStatus(testLogstore)
			l, h, n := holdingSpread(first, second)
			var lo, hi int64
			if n > 0 {
				lo, hi = l.UnixNano(), h.UnixNano()
			}
			if os.Getenv("WSLS_ALIGN_DEBUG") != "" && time.Duration(hi-lo) > skewMaxDrift+skewBatchSpan {
				fmt.Fprintf(os.Stderr, "p%s wide %v: %+v then %+v\n", idx, time.Duration(hi-lo), first, second)
			}
			fmt.Fprintf(w, "%d %d %d %d\n", time.Now().UnixNano(), lo, hi, delivered.Load())
			if err := w.Flush(); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for msg := range ch {
		delivered.Add(1)
		msg.Ack()
	}
	<-sampled
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// waSample is one line of a child's output.
type waSample struct {
	at, lo, hi int64
	delivered  int
}

func waReadSamples(t *testing.T, path string) []waSample {
	t.Helper()
	var out []waSample
	for _, fs := range childRecords(t, path, 4) {
		var v [4]int64
		ok := true
		for i, s := range fs {
			n, err := strconv.ParseInt(s, 10, 64)
			ok = ok && err == nil
			v[i] = n
		}
		if ok {
			out = append(out, waSample{at: v[0], lo: v[1], hi: v[2], delivered: int(v[3])})
		}
	}
	return out
}

// TestSubscriberWatermarkAlignmentAcrossProcesses runs the skewed logstore
// (8 shards, 2 with 10x the logs) in two subscriber processes, static
// instances 0 and 1 of 2, aligned in one group on the PostgreSQL
// coordinator: the dense shards land in one process, so the other's shards
// are held back only through PostgreSQL. Both processes join before the logs
// are written. From the processes' samples the parent measures the spread
// between the highest and the lowest shard watermark across both: it stays
// within MaxDrift plus one answer's span, and every log is delivered.
func TestSubscriberWatermarkAlignmentAcrossProcesses(t *testing.T) {
	env := testutil.SLS(t)
	env.LogStore(t, testProject, testLogstore, skewShards)
	dbURL := testutil.PostgresURL(t)
	admin, err := pgxpool.New(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	coord, err := watermark.NewPostgresCoordinator(admin, watermark.PostgresCoordinatorConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if err := coord.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var children []*exec.Cmd
	var outs []string
	for i := range 2 {
		out := filepath.Join(dir, fmt.Sprintf("p%d.out", i))
		cmd := exec.Command(os.Args[0], "-test.run=^TestWatermarkAlignChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), waEnvIndex+"="+strconv.Itoa(i), waEnvEndpoint+"="+env.Endpoint,
			waEnvDB+"="+dbURL, waEnvOut+"="+out)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		t.Cleanup(func() {
			_ = cmd.Process.Kill()
			<-done
		})
		children = append(children, cmd)
		outs = append(outs, out)
		_ = done
	}
	ok := testutil.Poll(t, 60*time.Second, "both processes in the alignment group", func() (bool, string) {
		ms, err := coord.Members(context.Background(), waGroup)
		if err != nil {
			return false, err.Error()
		}
		return len(ms) == 2, fmt.Sprintf("%+v", ms)
	})
	if !ok {
		t.FailNow()
	}
	span := testutil.SoakOr(300*time.Second, 3000*time.Second)
	total := writeSkewed(t, env, testLogstore, span, nil)
	ok = testutil.Poll(t, testutil.SoakOr(2*time.Minute, 20*time.Minute), "every log delivered", func() (bool, string) {
		n := 0
		for _, o := range outs {
			if s := waReadSamples(t, o); len(s) > 0 {
				n += s[len(s)-1].delivered
			}
		}
		return n == total, fmt.Sprintf("%d of %d", n, total)
	})
	if !ok {
		t.FailNow()
	}
	for _, c := range children {
		if err := c.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
	}
	// Merge the samples: at each sample instant, each process's highest
	// watermark is taken from its last sample at or before it and its lowest
	// from its first sample at or after it (watermarks only grow, so this
	// never overstates the spread by sampling delay); "latest" takes both
	// from the last sample, which may overstate it by one sampling period.
	procs := make([][]waSample, len(outs))
	var instants []int64
	for i, o := range outs {
		for _, s := range waReadSamples(t, o) {
			if s.hi != 0 {
				procs[i] = append(procs[i], s)
				instants = append(instants, s.at)
			}
		}
		if len(procs[i]) == 0 {
			t.Fatalf("process %d reported no shard watermark", i)
		}
	}
	sort.Slice(instants, func(a, b int) bool { return instants[a] < instants[b] })
	var spread, latest time.Duration
	samples := 0
	where := ""
	for _, at := range instants {
		var lo, hi, llo int64
		ok := true
		detail := ""
		for i, ps := range procs {
			k := sort.Search(len(ps), func(j int) bool { return ps[j].at > at }) // first after at
			if k == 0 {
				ok = false
				break
			}
			before := ps[k-1]
			after := before
			if before.at != at {
				if k == len(ps) {
					ok = false
					break
				}
				after = ps[k]
			}
			if i == 0 || before.hi > hi {
				hi = before.hi
			}
			if i == 0 || after.lo < lo {
				lo = after.lo
			}
			if i == 0 || before.lo < llo {
				llo = before.lo
			}
			detail += fmt.Sprintf(" p%d: hi %v lo %v (delivered %d)", i, time.Duration(before.hi-wmBase.UnixNano()),
				time.Duration(after.lo-wmBase.UnixNano()), before.delivered)
		}
		if !ok {
			continue
		}
		samples++
		if d := time.Duration(hi - lo); d > spread {
			spread, where = d, fmt.Sprintf("%v after the first sample:%s", time.Duration(at-instants[0]), detail)
		}
		latest = max(latest, time.Duration(hi-llo))
	}
	bound := skewMaxDrift + skewBatchSpan
	t.Logf("%d logs over %v of event time in 2 processes aligned through PostgreSQL (UpdateInterval %v): max spread %v (latest-sample estimate %v) over %d instants, bound %v; widest at %s",
		total, span, waInterval, spread, latest, samples, bound, where)
	if samples == 0 {
		t.Fatal("no instant with samples of both processes")
	}
	if spread > bound {
		t.Errorf("spread %v across processes exceeds %v", spread, bound)
	}
}
