package slstest_test

// Helpers of the SDK proof tests (sdk_proof_test.go, sdk_proof_heartbeat_test.go): a recorder of what the SDK's
// consumer library delivered, checks of per-key order and duplicates, consumer workers with a bounded stop (built on
// the shared SDK harness in internal/testutil/sdk.go: logger, bounded waits, leak check, data-race workarounds), and
// an HTTP transport that can be partitioned from the emulator to simulate a crashed process.

import (
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	sls "github.com/aliyun/aliyun-log-go-sdk"
	consumer "github.com/aliyun/aliyun-log-go-sdk/consumer"
	"github.com/gogo/protobuf/proto"
	"github.com/watermill-sls/watermill-sls/internal/testutil"
	"github.com/watermill-sls/watermill-sls/slspubsub/slstest"
)

// Contents of every log the proof tests write: the key index and the key's sequence number.
const (
	proofKeyField = "k"
	proofSeqField = "s"
)

// proofLog builds a log carrying key and seq.
func proofLog(key, seq int, now uint32) *sls.Log {
	return &sls.Log{
		Time: proto.Uint32(now),
		Contents: []*sls.LogContent{
			{Key: proto.String(proofKeyField), Value: proto.String(strconv.Itoa(key))},
			{Key: proto.String(proofSeqField), Value: proto.String(strconv.Itoa(seq))},
		},
	}
}

// proofParse extracts key and seq from a log written by proofLog.
func proofParse(l *sls.Log) (key, seq int, err error) {
	key, seq = -1, -1
	for _, c := range l.Contents {
		switch c.GetKey() {
		case proofKeyField:
			key, err = strconv.Atoi(c.GetValue())
		case proofSeqField:
			seq, err = strconv.Atoi(c.GetValue())
		}
		if err != nil {
			return 0, 0, err
		}
	}
	if key < 0 || seq < 0 {
		return 0, 0, fmt.Errorf("log without %q/%q contents: %v", proofKeyField, proofSeqField, l.Contents)
	}
	return key, seq, nil
}

// proofRecord is one log as a processor saw it. Records are kept in the order processors reported them (one
// lock), so a record's index is a global consumption sequence number.
type proofRecord struct {
	shard  int32
	key    int32
	seq    int32
	worker int8
}

// proofRecorder collects what the consumer workers' processors were given. It is safe for concurrent use.
type proofRecorder struct {
	keys, perKey int
	names        []string // worker names by id

	mu       sync.Mutex
	recs     []proofRecord
	first    []int8 // per (key, seq): worker of the first delivery, -1 before
	unique   int
	byWorker map[int8]int
	byShard  map[int]int // unique logs per shard (by first delivery)
	errs     []string
}

func newProofRecorder(keys, perKey int) *proofRecorder {
	first := make([]int8, keys*perKey)
	for i := range first {
		first[i] = -1
	}
	return &proofRecorder{keys: keys, perKey: perKey, first: first, byWorker: map[int8]int{}, byShard: map[int]int{}}
}

// worker registers a worker name and returns its id.
func (r *proofRecorder) worker(name string) int8 {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.names = append(r.names, name)
	return int8(len(r.names) - 1)
}

func (r *proofRecorder) name(id int8) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.names[id]
}

// record stores every log of l as delivered to worker from shard. Parse errors are kept for the test to report
// (processors run on SDK goroutines, where t.Fatal must not be called).
func (r *proofRecorder) record(worker int8, shard int, l *sls.LogGroupList) {
	var batch []proofRecord
	var errs []string
	for _, g := range l.LogGroups {
		for _, lg := range g.Logs {
			k, s, err := proofParse(lg)
			if err == nil && (k >= r.keys || s >= r.perKey) {
				err = fmt.Errorf("key %d seq %d out of range", k, s)
			}
			if err != nil {
				errs = append(errs, fmt.Sprintf("shard %d: %v", shard, err))
				continue
			}
			batch = append(batch, proofRecord{shard: int32(shard), key: int32(k), seq: int32(s), worker: worker})
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, errs...)
	for _, rec := range batch {
		i := int(rec.key)*r.perKey + int(rec.seq)
		if r.first[i] < 0 {
			r.first[i] = worker
			r.unique++
			r.byShard[shard]++
		}
		r.byWorker[worker]++
	}
	r.recs = append(r.recs, batch...)
}

// counts returns the number of distinct logs seen, and per shard.
func (r *proofRecorder) counts() (unique int, byShard map[int]int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.unique, maps.Clone(r.byShard)
}

func (r *proofRecorder) delivered(worker int8) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.byWorker[worker]
}

// snapshot returns a copy of the records, in consumption order.
func (r *proofRecorder) snapshot() []proofRecord {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.recs)
}

// proofDup is a log delivered again, and where it was first delivered.
type proofDup struct {
	rec         proofRecord
	firstShard  int32
	firstWorker int8
}

// checkOrder verifies at-least-once delivery in per-key order: for every key, the sequence numbers of first
// deliveries, in consumption order, are exactly 0..perKey-1. It returns the later deliveries (duplicates) for the
// caller to account for.
func (r *proofRecorder) checkOrder(t *testing.T) []proofDup {
	t.Helper()
	r.mu.Lock()
	errs := slices.Clone(r.errs)
	r.mu.Unlock()
	for i, e := range errs {
		if i == 10 {
			t.Errorf("... and %d more unparsable logs", len(errs)-10)
			break
		}
		t.Errorf("consumed an unparsable log: %s", e)
	}
	next := make([]int32, r.keys)
	firstAt := make([]proofRecord, r.keys*r.perKey)
	var dups []proofDup
	bad := 0
	for _, rec := range r.snapshot() {
		switch k := rec.key; {
		case rec.seq < next[k]:
			f := firstAt[int(k)*r.perKey+int(rec.seq)]
			dups = append(dups, proofDup{rec: rec, firstShard: f.shard, firstWorker: f.worker})
		case rec.seq == next[k]:
			firstAt[int(k)*r.perKey+int(rec.seq)] = rec
			next[k]++
		default:
			if bad++; bad <= 10 {
				t.Errorf("key %d: consumed seq %d (shard %d, worker %s) while seq %d was never consumed: order broken or a log lost",
					k, rec.seq, rec.shard, r.name(rec.worker), next[k])
			}
		}
	}
	missing := 0
	for k, n := range next {
		if int(n) != r.perKey {
			if missing++; missing <= 10 {
				t.Errorf("key %d: consumed seq 0..%d in order, want 0..%d", k, n-1, r.perKey-1)
			}
		}
	}
	if bad > 10 || missing > 10 {
		t.Errorf("%d out-of-order deliveries, %d keys incomplete", bad, missing)
	}
	return dups
}

// proofWorker is a started consumer worker whose stop is bounded and idempotent.
type proofWorker struct {
	name string
	id   int8
	w    *consumer.ConsumerWorker
	once sync.Once
	ok   bool
}

// stop calls StopAndWait, failing the test if it does not return within d.
func (w *proofWorker) stop(t *testing.T, d time.Duration) bool {
	t.Helper()
	w.once.Do(func() { w.ok = testutil.Within(t, d, "StopAndWait of worker "+w.name, w.w.StopAndWait) })
	return w.ok
}

// proofStopAll stops workers concurrently (each StopAndWait takes at least half a second).
func proofStopAll(t *testing.T, d time.Duration, ws ...*proofWorker) {
	t.Helper()
	var wg sync.WaitGroup
	for _, w := range ws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.stop(t, d)
		}()
	}
	wg.Wait()
}

// proofGroupStatus renders a consumer group's server-side state and the shards' end cursors for failure messages.
func proofGroupStatus(env interface {
	ConsumerGroupState(project, logstore, group string) (slstest.ConsumerGroupState, error)
	Shards(project, logstore string) ([]slstest.ShardInfo, error)
	Cursors(project, logstore string, shard int) (string, string, error)
}, project, logstore, group string) string {
	var b strings.Builder
	st, err := env.ConsumerGroupState(project, logstore, group)
	if err != nil {
		return fmt.Sprintf("consumer group state: %v", err)
	}
	for _, c := range st.Consumers {
		fmt.Fprintf(&b, "consumer %s holds %v (last heartbeat %s ago)\n", c.Name, c.Shards, time.Since(c.LastHeartbeat).Round(time.Millisecond))
	}
	infos, _ := env.Shards(project, logstore)
	status := map[int]string{}
	for _, in := range infos {
		status[in.ShardID] = in.Status
	}
	for _, a := range st.Shards {
		_, end, _ := env.Cursors(project, logstore, a.Shard)
		fmt.Fprintf(&b, "shard %d (%s): %s holder=%q checkpoint=%q end=%q\n", a.Shard, status[a.Shard], a.Status, a.Consumer, a.Checkpoint, end)
	}
	return b.String()
}

// proofPartition is an http.RoundTripper that can be cut off from the server, to make a consumer worker look
// crashed: while cut, its requests never reach the server (they hang, as on a dead network), so it sends no
// heartbeat, pull or checkpoint. Heal lets new requests through and fails the hung ones with a connection error.
//
// A hang rather than an immediate error: the SDK retries failed GETs (PullLogs, GetCheckpoint) with backoff for
// up to 90 s inside one call, so a worker whose requests fail fast cannot be stopped promptly after the test.
type proofPartition struct {
	base http.RoundTripper

	mu     sync.Mutex
	cut    bool
	healed chan struct{}
}

var errProofPartition = errors.New("proof partition: connection lost")

func (p *proofPartition) RoundTrip(r *http.Request) (*http.Response, error) {
	p.mu.Lock()
	cut, healed := p.cut, p.healed
	p.mu.Unlock()
	if !cut {
		return p.base.RoundTrip(r)
	}
	if r.Body != nil {
		_ = r.Body.Close()
	}
	select {
	case <-healed:
	case <-r.Context().Done():
	}
	return nil, errProofPartition
}

// Cut makes every request from now on hang until Heal.
func (p *proofPartition) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.cut {
		p.cut, p.healed = true, make(chan struct{})
	}
}

// Heal fails the hung requests and lets new ones through.
func (p *proofPartition) Heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cut {
		p.cut = false
		close(p.healed)
	}
}

// newProofWorker creates (does not start) an SDK consumer worker configured by cfg, registered with rec, talking
// to the emulator through base, with testutil.NewSDKConsumerWorker's logging and data-race workarounds. process is
// the worker's processor.
func newProofWorker(t *testing.T, rec *proofRecorder, cfg consumer.LogHubConfig, base http.RoundTripper,
	process func(w *proofWorker, shard int, l *sls.LogGroupList, tr consumer.CheckPointTracker) error) *proofWorker {
	t.Helper()
	w := &proofWorker{name: cfg.ConsumerName, id: rec.worker(cfg.ConsumerName)}
	w.w = testutil.NewSDKConsumerWorker(t, cfg, base, func(shard int, l *sls.LogGroupList, tr consumer.CheckPointTracker) (string, error) {
		return "", process(w, shard, l, tr)
	})
	return w
}
