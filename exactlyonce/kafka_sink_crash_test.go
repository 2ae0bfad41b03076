package exactlyonce

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	sls "github.com/aliyun/aliyun-log-go-sdk"
	"github.com/gogo/protobuf/proto"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/watermill-sls/watermill-sls/internal/testutil"
	"github.com/watermill-sls/watermill-sls/slspubsub"
	"github.com/watermill-sls/watermill-sls/slspubsub/slstest"
)

// Environment of the child process of the crash test.
const (
	crashRoleEnv    = "WSLS_EO_KAFKA_CRASH_CHILD" // set to 1 in the child
	crashSLSEnv     = "WSLS_EO_KAFKA_CRASH_SLS"   // emulator address
	crashBrokersEnv = "WSLS_EO_KAFKA_CRASH_BROKERS"
	crashLastEnv    = "WSLS_EO_KAFKA_CRASH_LAST" // "shard:offset:index,..." of the last log of each shard
	crashInFlight   = "WSLS_EO_KAFKA_CRASH_INFLIGHT"
)

// crashFailRate is the share of first attempts the child's handler fails, so that nacks and redeliveries (and,
// with MaxInFlight above 1, messages waiting behind a failed one) happen between the kills.
const crashFailRate = 0.005

const (
	crashProject  = "eo-kafka"
	crashLogstore = "crash-src"
	crashOut      = "crash-out"
	crashShards   = 8
	crashGroup    = 100 // logs per LogGroup
)

// slsKafkaPosition is the PositionFunc of messages of the slspubsub Subscriber reading logstore.
func slsKafkaPosition(logstore string) PositionFunc {
	return func(msg *message.Message) (Position, error) {
		p, err := slspubsub.PositionFromMessage(msg)
		if err != nil {
			return Position{}, err
		}
		v, err := p.CursorValue()
		if err != nil {
			return Position{}, err
		}
		return Position{Stream: logstore, Partition: int32(p.Shard), Offset: v, Index: int32(p.Index)}, nil
	}
}

// TestKafkaSinkCrashSLSToKafka runs an SLS -> Kafka pipeline in a child process (slspubsub.Subscriber resuming
// from the sink's PositionStore, a watermill Router, the KafkaSink, a handler failing some first attempts), kills
// it with SIGKILL K times at random points of its progress, restarts it, lets the last run finish, and then reads
// the output topic with read_committed: every source log must be there exactly once. It runs with one message
// per shard in flight (strict mode) and with 32 (the SubscriberDecorator's delivery-order mode).
func TestKafkaSinkCrashSLSToKafka(t *testing.T) {
	if os.Getenv(crashRoleEnv) == "1" {
		crashChild(t)
		return
	}
	for _, inFlight := range []int{1, 32} {
		t.Run(fmt.Sprintf("inflight=%d", inFlight), func(t *testing.T) { crashParent(t, inFlight) })
	}
}

func crashParent(t *testing.T, inFlight int) {
	n := testutil.SoakOr(10_000, 1_000_000)
	kills := testutil.SoakOr(4, 20)

	env := testutil.SLS(t)
	env.LogStore(t, crashProject, crashLogstore, crashShards)
	brokers := testutil.KafkaWithPartitions(t, 4, "positions", crashOut)
	last := crashWriteSource(t, env, n)

	childEnv := append(os.Environ(),
		crashRoleEnv+"=1",
		crashSLSEnv+"="+env.Endpoint,
		crashBrokersEnv+"="+strings.Join(brokers, ","),
		crashLastEnv+"="+last,
		crashInFlight+"="+strconv.Itoa(inFlight),
	)
	adm := crashAdmin(t, brokers)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	timeout := testutil.SoakOr(2*time.Minute, 30*time.Minute)
	killed := 0
	for k := range kills {
		// Kill somewhere in the k-th slice of the run, measured by records in the output log (committed or not).
		target := int64(n) * int64(k) / int64(kills+1)
		target += rng.Int64N(int64(n)/int64(kills+1) + 1)
		child, out := crashStart(t, childEnv)
		reached := testutil.Poll(t, timeout, fmt.Sprintf("%d output records before kill %d", target, k+1), func() (bool, string) {
			if child.ProcessState != nil {
				return true, ""
			}
			got := crashLogEnd(adm)
			return got >= target, fmt.Sprintf("%d records in the output log", got)
		})
		if err := child.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatalf("kill child: %v", err)
		}
		err := child.Wait()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("child %d ended with %v before it was killed; output:\n%s", k+1, err, out)
		}
		if !reached {
			t.Fatalf("child %d made no progress; output:\n%s", k+1, out)
		}
		killed++
	}

	child, out := crashStart(t, childEnv)
	done := make(chan error, 1)
	go func() { done <- child.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("final child: %v; output:\n%s", err, out)
		}
	case <-time.After(timeout):
		_ = child.Process.Kill()
		<-done
		t.Fatalf("final child did not finish within %v; output:\n%s", timeout, out)
	}

	seen := make([]int, n)
	bad := 0
	for _, m := range readOutputs(t, brokers, crashOut) {
		var rec struct{ ID string }
		id, err := -1, json.Unmarshal(m.Payload, &rec)
		if err == nil {
			id, err = strconv.Atoi(rec.ID)
		}
		if err != nil || id < 0 || id >= n {
			bad++
			continue
		}
		seen[id]++
	}
	dups, lost := 0, 0
	for _, c := range seen {
		switch {
		case c == 0:
			lost++
		case c > 1:
			dups += c - 1
		}
	}
	t.Logf("inflight=%d logs=%d shards=%d kills=%d duplicates=%d losses=%d foreign=%d", inFlight, n, crashShards, killed, dups, lost, bad)
	if dups != 0 || lost != 0 || bad != 0 {
		t.Errorf("exactly-once broken: %d duplicates, %d losses, %d unreadable outputs", dups, lost, bad)
	}
}

// crashWriteSource appends n logs {"id": i} to the shards in groups of crashGroup and returns the position of
// the last log of each shard in the form of crashLastEnv.
func crashWriteSource(t *testing.T, env *testutil.SLSEnv, n int) string {
	t.Helper()
	var last []string
	lastOf := make(map[int]string)
	for start, g := 0, 0; start < n; start, g = start+crashGroup, g+1 {
		shard := g % crashShards
		lg := &sls.LogGroup{}
		end := min(start+crashGroup, n)
		for i := start; i < end; i++ {
			lg.Logs = append(lg.Logs, &sls.Log{
				Time:     proto.Uint32(uint32(time.Now().Unix())),
				Contents: []*sls.LogContent{{Key: proto.String("id"), Value: proto.String(strconv.Itoa(i))}},
			})
		}
		cursor, err := env.Server.AppendLogGroup(crashProject, crashLogstore, shard, lg)
		if err != nil {
			t.Fatalf("append to shard %d: %v", shard, err)
		}
		v, err := slspubsub.Position{Cursor: cursor}.CursorValue()
		if err != nil {
			t.Fatal(err)
		}
		lastOf[shard] = fmt.Sprintf("%d:%d:%d", shard, v, end-start-1)
	}
	for _, s := range lastOf {
		last = append(last, s)
	}
	return strings.Join(last, ",")
}

func crashStart(t *testing.T, env []string) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestKafkaSinkCrashSLSToKafka$", "-test.count=1", "-test.v")
	cmd.Env = env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start child: %v", err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_, _ = cmd.Process.Wait()
		}
	})
	return cmd, &out
}

func crashAdmin(t *testing.T, brokers []string) *kadm.Client {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return kadm.NewClient(cl)
}

// crashLogEnd is the number of records (of any transaction, with markers) in the output log.
func crashLogEnd(adm *kadm.Client) int64 {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ends, err := adm.ListEndOffsets(ctx, crashOut)
	if err != nil {
		return 0
	}
	var sum int64
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err == nil {
			sum += o.Offset
		}
	})
	return sum
}

// crashChild is the pipeline: it runs until the sink committed the last log of every shard, then closes.
func crashChild(t *testing.T) {
	addr := os.Getenv(crashSLSEnv)
	inFlight, err := strconv.Atoi(os.Getenv(crashInFlight))
	if err != nil {
		t.Fatalf("child: %s: %v", crashInFlight, err)
	}
	brokers := strings.Split(os.Getenv(crashBrokersEnv), ",")
	want := make(map[int32]Position)
	for _, s := range strings.Split(os.Getenv(crashLastEnv), ",") {
		f := strings.Split(s, ":")
		shard, _ := strconv.Atoi(f[0])
		off, _ := strconv.ParseInt(f[1], 10, 64)
		idx, _ := strconv.Atoi(f[2])
		want[int32(shard)] = Position{Stream: crashLogstore, Partition: int32(shard), Offset: off, Index: int32(idx)}
	}

	sink, err := NewKafkaSink(KafkaSinkConfig{
		Brokers:         brokers,
		Consumer:        "crash",
		TransactionalID: "crash-instance-0",
		PositionsTopic:  "positions",
		OutputTopic:     crashOut,
	}, nil)
	if err != nil {
		t.Fatalf("child: NewKafkaSink: %v", err)
	}
	sub, err := slspubsub.NewSubscriber(slspubsub.SubscriberConfig{
		ClientConfig: slspubsub.ClientConfig{
			Endpoint: addr, Project: crashProject,
			AccessKeyID: slstest.DefaultAccessKeyID, AccessKeySecret: slstest.DefaultAccessKeySecret,
			HTTPClient: slstest.HTTPClientFor(addr),
		},
		FetchInterval:    5 * time.Millisecond,
		MaxFetchInterval: 20 * time.Millisecond,
		MaxInFlight:      inFlight,
		PositionStore:    sink.PositionStore(),
	}, nil)
	if err != nil {
		t.Fatalf("child: NewSubscriber: %v", err)
	}
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 30 * time.Second}, watermill.NopLogger{})
	if err != nil {
		t.Fatal(err)
	}
	if inFlight > 1 {
		router.AddSubscriberDecorators(sink.SubscriberDecorator(slsKafkaPosition(crashLogstore)))
	}
	var failMu sync.Mutex
	failed := make(map[string]bool)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 2))
	process := func(msg *message.Message) ([]*message.Message, error) {
		failMu.Lock()
		fail := !failed[msg.UUID] && rng.Float64() < crashFailRate
		if fail {
			failed[msg.UUID] = true
		}
		failMu.Unlock()
		if fail {
			if inFlight > 1 {
				// Fail late, once later logs of the shard are in flight (and likely waiting to commit): a sink
				// that let them commit first would hide this log from its redelivery.
				crashWaitForLaterLogs(sink, msg)
			}
			return nil, fmt.Errorf("first attempt of %s fails", msg.UUID)
		}
		return []*message.Message{message.NewMessage(watermill.NewUUID(), msg.Payload)}, nil
	}
	router.AddConsumerHandler("sls-to-kafka", crashLogstore, sub, sink.Handler(process, slsKafkaPosition(crashLogstore)))
	runErr := make(chan error, 1)
	go func() { runErr <- router.Run(context.Background()) }()

	testutil.Poll(t, testutil.SoakOr(2*time.Minute, 30*time.Minute), "every shard committed to its last log", func() (bool, string) {
		if err := sink.Err(); err != nil {
			t.Fatalf("child: sink stopped: %v", err)
		}
		var behind []string
		for shard, last := range want {
			if p, ok := sink.CommittedPosition(crashLogstore, shard); !ok || last.After(p) {
				behind = append(behind, fmt.Sprintf("%d at %+v", shard, p))
			}
		}
		return len(behind) == 0, strings.Join(behind, "; ")
	})
	if err := router.Close(); err != nil {
		t.Errorf("child: router close: %v", err)
	}
	if err := <-runErr; err != nil {
		t.Errorf("child: router: %v", err)
	}
	if err := sub.Close(); err != nil {
		t.Errorf("child: subscriber close: %v", err)
	}
	if err := sink.Close(); err != nil {
		t.Errorf("child: sink close: %v", err)
	}
}

// crashWaitForLaterLogs waits, for at most a second, until logs of msg's shard delivered after msg are in flight.
func crashWaitForLaterLogs(sink *KafkaSink, msg *message.Message) {
	pos, err := slsKafkaPosition(crashLogstore)(msg)
	if err != nil {
		return
	}
	key := partitionKey{pos.Stream, pos.Partition}
	deadline := time.Now().Add(time.Second)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for time.Now().Before(deadline) {
		sink.mu.Lock()
		n := 0
		if po := sink.orders[key]; po != nil {
			for _, d := range po.delivered {
				if d.After(pos) {
					n++
				}
			}
		}
		sink.mu.Unlock()
		if n >= 4 {
			return
		}
		<-tick.C
	}
}
