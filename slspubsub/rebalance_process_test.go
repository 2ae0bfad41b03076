package slspubsub

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/watermill-sls/watermill-sls/internal/testutil"
	"github.com/watermill-sls/watermill-sls/slspubsub/slstest"
)

// Environment of a rebalance child process.
const (
	rbEnvRole     = "WSLS_REBALANCE_CHILD"
	rbEnvEndpoint = "WSLS_REBALANCE_ENDPOINT"
	rbEnvKey      = "WSLS_REBALANCE_KEY"
	rbEnvOut      = "WSLS_REBALANCE_OUT"
)

// Timing of the rebalance test's consumer group. The timeout leaves room
// for a heartbeat delayed by a loaded machine: a member the group drops is
// refused its checkpoints, and its handled logs are delivered again.
const (
	rbHeartbeat = 200 * time.Millisecond
	rbTimeout   = 5 * time.Second
)

// TestRebalanceChild is the consumer process of TestConsumerGroupRebalance
// (it does nothing unless started by it): a Subscriber in the group that
// appends "<uuid> <shard>" to its output file for every message before
// acking it (with the time in ns), and closes gracefully on SIGTERM.
func TestRebalanceChild(t *testing.T) {
	name := os.Getenv(rbEnvRole)
	if name == "" {
		return // not a child process
	}
	out, err := os.OpenFile(os.Getenv(rbEnvOut), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	key := os.Getenv(rbEnvKey)
	s, err := NewSubscriber(SubscriberConfig{
		ClientConfig: ClientConfig{
			Endpoint: os.Getenv(rbEnvEndpoint), Project: testProject,
			AccessKeyID: key, AccessKeySecret: key + "-secret",
			HTTPClient: slstest.HTTPClientFor(os.Getenv(rbEnvEndpoint)),
		},
		ConsumerGroup: "rebalance", ConsumerName: name,
		HeartbeatInterval: rbHeartbeat, HeartbeatTimeout: rbTimeout,
		RediscoveryInterval: 500 * time.Millisecond, CommitInterval: 100 * time.Millisecond,
		FetchInterval: 10 * time.Millisecond, MaxFetchInterval: 100 * time.Millisecond,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	ch, err := s.Subscribe(ctx, testLogstore)
	if err != nil {
		t.Fatal(err)
	}
	for msg := range ch {
		if _, err := fmt.Fprintf(out, "%s %s %d\n", msg.UUID, msg.Metadata.Get(MetadataShard), time.Now().UnixNano()); err != nil {
			t.Fatal(err)
		}
		msg.Ack()
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// rbDelivery is one delivery of a log: by whom, when (unix ns).
type rbDelivery struct {
	consumer string
	at       int64
}

// rbChild is a running consumer process.
type rbChild struct {
	name string
	out  string
	cmd  *exec.Cmd
	done chan error
}

func startRebalanceChild(t *testing.T, env *testutil.SLSEnv, dir, name string) *rbChild {
	t.Helper()
	c := &rbChild{name: name, out: filepath.Join(dir, name+".out"), done: make(chan error, 1)}
	c.cmd = exec.Command(os.Args[0], "-test.run=^TestRebalanceChild$", "-test.count=1")
	c.cmd.Env = append(os.Environ(), rbEnvRole+"="+name, rbEnvEndpoint+"="+env.Endpoint,
		rbEnvKey+"="+name, rbEnvOut+"="+c.out)
	c.cmd.Stdout, c.cmd.Stderr = os.Stderr, os.Stderr
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { c.done <- c.cmd.Wait() }()
	t.Cleanup(func() {
		_ = c.cmd.Process.Kill()
		<-c.done
	})
	return c
}

// rbPulls records which account pulled which shard when.
type rbPulls struct {
	mu     sync.Mutex
	events map[int][]rbPull // by shard
}

type rbPull struct {
	at       time.Time
	consumer string
}

func (p *rbPulls) observe(ri slstest.RequestInfo) {
	if ri.Op != slstest.OpPullLogs || ri.Status != 200 || !strings.HasPrefix(ri.AccessKeyID, "c") {
		return
	}
	p.mu.Lock()
	p.events[ri.Shard] = append(p.events[ri.Shard], rbPull{at: time.Now(), consumer: ri.AccessKeyID})
	p.mu.Unlock()
}

// maxOverlap returns, over all shards, the longest time two consumers were
// both fetching a shard. A consumer fetches a shard from its first pull to
// its last pull of a run, runs being split by gaps longer than idleGap (a
// consumer that holds a shard pulls it at least every MaxFetchInterval, or
// waits on a full prefetch buffer).
func (p *rbPulls) maxOverlap(idleGap time.Duration) (time.Duration, string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var worst time.Duration
	where := ""
	for shard, evs := range p.events {
		type span struct {
			consumer   string
			start, end time.Time
		}
		var spans []span
		last := map[string]int{} // consumer -> index of its open span
		for _, e := range evs {
			if i, ok := last[e.consumer]; ok && e.at.Sub(spans[i].end) <= idleGap {
				spans[i].end = e.at
				continue
			}
			spans = append(spans, span{e.consumer, e.at, e.at})
			last[e.consumer] = len(spans) - 1
		}
		for i := range spans {
			for j := i + 1; j < len(spans); j++ {
				a, b := spans[i], spans[j]
				if a.consumer == b.consumer {
					continue
				}
				end, start := a.end, a.start
				if b.end.Before(end) {
					end = b.end
				}
				if b.start.After(start) {
					start = b.start
				}
				o := end.Sub(start)
				if o > worst {
					worst = o
					where = fmt.Sprintf("shard %d: %s %s..%s and %s %s..%s", shard,
						a.consumer, a.start.Format("15:04:05.000"), a.end.Format("15:04:05.000"),
						b.consumer, b.start.Format("15:04:05.000"), b.end.Format("15:04:05.000"))
				}
			}
		}
	}
	return worst, where
}

// TestConsumerGroupRebalance runs three consumer processes in one consumer
// group over 8 shards while logs are produced: c3 joins late, c1 leaves
// cleanly (SIGTERM), c2 is killed (SIGKILL). Every produced log is
// delivered at least once; duplicates come only from c2's uncommitted
// window; no two live processes fetch a shard at the same time for longer
// than one heartbeat interval.
func TestConsumerGroupRebalance(t *testing.T) {
	pulls := &rbPulls{events: map[int][]rbPull{}}
	var opts []slstest.Option
	for _, name := range []string{"c1", "c2", "c3"} {
		opts = append(opts, slstest.WithAccount(slstest.Account{AccessKeyID: name, AccessKeySecret: name + "-secret"}))
	}
	opts = append(opts, slstest.WithAccount(slstest.Account{AccessKeyID: slstest.DefaultAccessKeyID, AccessKeySecret: slstest.DefaultAccessKeySecret}),
		slstest.WithRequestObserver(pulls.observe))
	env := testutil.SLS(t, opts...)
	env.LogStore(t, testProject, testLogstore, 8)
	dir := t.TempDir()

	pub, err := NewPublisher(PublisherConfig{ClientConfig: testConfig(env)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	perStep := testutil.SoakOr(2_000, 50_000)
	produced := 0
	produce := func(n int) {
		t.Helper()
		var batch []*message.Message
		for range n {
			batch = append(batch, message.NewMessage(fmt.Sprintf("m-%07d", produced), []byte("x")))
			produced++
			if len(batch) == 100 {
				if err := pub.Publish(testLogstore, batch...); err != nil {
					t.Fatal(err)
				}
				batch = nil
			}
		}
		if len(batch) > 0 {
			if err := pub.Publish(testLogstore, batch...); err != nil {
				t.Fatal(err)
			}
		}
	}
	consumed := func(children ...*rbChild) map[string][]rbDelivery { // uuid -> deliveries
		got := map[string][]rbDelivery{}
		for _, c := range children {
			for _, f := range childRecords(t, c.out, 3) {
				ns, _ := strconv.ParseInt(f[2], 10, 64)
				got[f[0]] = append(got[f[0]], rbDelivery{consumer: c.name, at: ns})
			}
		}
		return got
	}
	waitAll := func(children ...*rbChild) {
		t.Helper()
		testutil.Poll(t, 120*time.Second, "every produced log consumed", func() (bool, string) {
			n := len(consumed(children...))
			return n == produced, fmt.Sprintf("%d of %d", n, produced)
		})
	}

	c1 := startRebalanceChild(t, env, dir, "c1")
	c2 := startRebalanceChild(t, env, dir, "c2")
	produce(perStep)
	waitAll(c1, c2)
	c3 := startRebalanceChild(t, env, dir, "c3")
	rbWaitMembers(t, env, 3)
	produce(perStep)
	waitAll(c1, c2, c3)

	// c1 leaves cleanly while logs keep coming.
	if err := c1.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	produce(perStep)
	if err := <-c1.done; err != nil {
		t.Fatalf("c1 did not exit cleanly: %v", err)
	}
	c1.done <- nil // for the cleanup
	waitAll(c1, c2, c3)

	// c2 is killed while logs keep coming.
	produce(perStep / 2)
	if err := c2.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-c2.done
	c2.done <- nil
	produce(perStep / 2)
	waitAll(c1, c2, c3)

	got := consumed(c1, c2, c3)
	dups := map[string]int{}
	lost := 0
	for i := range produced {
		id := fmt.Sprintf("m-%07d", i)
		by := got[id]
		if len(by) == 0 {
			lost++
			continue
		}
		if len(by) > 1 {
			slices.SortFunc(by, func(a, b rbDelivery) int { return int(a.at - b.at) })
			for _, d := range by[1:] {
				dups[by[0].consumer]++
				_ = d
			}
			// Only the killed c2 may have handled a log that a later reader
			// got again: every earlier delivery is c2's.
			for _, d := range by[:len(by)-1] {
				if d.consumer != "c2" {
					t.Errorf("log %s delivered to %v: a redelivery after %s handled it, not the killed c2", id, by, d.consumer)
					break
				}
			}
		}
	}
	overlap, where := pulls.maxOverlap(500 * time.Millisecond)
	t.Logf("produced %d, lost %d, redeliveries by who handled the log first %v (only the killed c2 may appear), longest overlapping fetch %v (%s)",
		produced, lost, dups, overlap, where)
	if lost > 0 {
		t.Errorf("%d logs never delivered", lost)
	}
	if overlap > rbHeartbeat {
		t.Errorf("two live consumers fetched a shard together for %v, more than one heartbeat interval (%v): %s", overlap, rbHeartbeat, where)
	}
}

// rbWaitMembers waits until the group has n live members.
func rbWaitMembers(t *testing.T, env *testutil.SLSEnv, n int) {
	t.Helper()
	testutil.Poll(t, 30*time.Second, fmt.Sprintf("%d consumers in the group", n), func() (bool, string) {
		st, err := env.Server.ConsumerGroupState(testProject, testLogstore, "rebalance")
		if err != nil {
			return false, err.Error()
		}
		return len(st.Consumers) == n, strconv.Itoa(len(st.Consumers))
	})
}

// childRecords reads a child process's output file: the fields of each
// line that has exactly n of them (a line cut short by SIGKILL has fewer).
// A file not written yet has none.
func childRecords(t *testing.T, path string, n int) [][]string {
	t.Helper()
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out [][]string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fs := strings.Fields(sc.Text()); len(fs) == n {
			out = append(out, fs)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
