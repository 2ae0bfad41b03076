package slspubsub

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	sls "github.com/aliyun/aliyun-log-go-sdk"

	"github.com/watermill-sls/watermill-sls/internal/testutil"
	"github.com/watermill-sls/watermill-sls/slspubsub/slstest"
)

// keyedProducer publishes "<key>|<seq>" messages for keys k0..k<keys-1>,
// seq 0, 1, 2, ... per key, hash-keyed by key, from workers goroutines each
// owning a share of the keys (so each key's messages are published in
// order), until stop is closed; it returns how many it published per key.
type keyedProducer struct {
	pub  *Publisher
	keys int
	mu   sync.Mutex
	sent map[string]int // key -> messages published
}

func newKeyedProducer(t *testing.T, env *testutil.SLSEnv, keys int) *keyedProducer {
	t.Helper()
	pub, err := NewPublisher(PublisherConfig{
		ClientConfig: testConfig(env),
		HashKey: func(_ string, msg *message.Message) (string, error) {
			return msg.Metadata.Get("key"), nil
		},
		HashBuckets: 64,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pub.Close() })
	return &keyedProducer{pub: pub, keys: keys, sent: map[string]int{}}
}

// run publishes rounds until stop closes (at least minRounds rounds).
func (p *keyedProducer) run(t *testing.T, stop <-chan struct{}, minRounds int) {
	const workers = 8
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for round := 0; ; round++ {
				if round >= minRounds {
					select {
					case <-stop:
						return
					default:
					}
				}
				var batch []*message.Message
				for k := w; k < p.keys; k += workers {
					key := "k" + strconv.Itoa(k)
					m := message.NewMessage(fmt.Sprintf("%s-%d", key, round), []byte(fmt.Sprintf("%s|%d", key, round)))
					m.Metadata.Set("key", key)
					batch = append(batch, m)
				}
				// One Publish call per round and worker: its keys' messages
				// of this round are written before the next round's.
				if err := p.pub.Publish(testLogstore, batch...); err != nil {
					t.Errorf("Publish: %v", err)
					return
				}
				p.mu.Lock()
				for _, m := range batch {
					p.sent[m.Metadata.Get("key")]++
				}
				p.mu.Unlock()
			}
		}()
	}
	wg.Wait()
}

func (p *keyedProducer) total() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, c := range p.sent {
		n += c
	}
	return n
}

// keyedConsumer records, per key, the sequence numbers received in order.
type keyedConsumer struct {
	mu   sync.Mutex
	seqs map[string][]int
	n    int
}

func (c *keyedConsumer) record(t *testing.T, msg *message.Message) {
	key, seq, ok := strings.Cut(string(msg.Payload), "|")
	n, err := strconv.Atoi(seq)
	if !ok || err != nil {
		t.Errorf("unexpected payload %q", msg.Payload)
		return
	}
	c.mu.Lock()
	c.seqs[key] = append(c.seqs[key], n)
	c.n++
	c.mu.Unlock()
}

func (c *keyedConsumer) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// check requires every key's sequence to be exactly 0..sent-1 in order.
func (c *keyedConsumer) check(t *testing.T, sent map[string]int) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	bad := 0
	for key, n := range sent {
		got := c.seqs[key]
		want := make([]int, n)
		for i := range want {
			want[i] = i
		}
		if !slices.Equal(got, want) {
			bad++
			if bad <= 5 {
				t.Errorf("key %s: received %d messages out of order or incomplete (sent %d): %v", key, len(got), n, got[:min(30, len(got))])
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d keys broke per-key order or lost messages", bad, len(sent))
	}
}

// TestSubscriberFollowsSplitAndMerge produces messages of 1 000 hash keys
// continuously while shards are split twice and merged once; one
// Subscriber (every shard) follows the new shards without restarting, and
// for every key the consumed order equals the produced order, with nothing
// lost or duplicated: parents are read to their end before their children.
func TestSubscriberFollowsSplitAndMerge(t *testing.T) {
	env := testutil.SLS(t)
	env.LogStore(t, testProject, testLogstore, 2)
	prod := newKeyedProducer(t, env, 1000)
	cons := &keyedConsumer{seqs: map[string][]int{}}

	s := stSubscriber(t, env, func(c *SubscriberConfig) { c.RediscoveryInterval = 50 * time.Millisecond })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := s.Subscribe(ctx, testLogstore)
	if err != nil {
		t.Fatal(err)
	}
	var gate sync.Mutex // held: the consumer stalls, a backlog builds up
	go func() {
		for msg := range ch {
			gate.Lock()
			gate.Unlock() //nolint:staticcheck // a barrier, not a critical section
			cons.record(t, msg)
			msg.Ack()
		}
	}()
	// reshape changes the shards while the consumer stalls and the
	// producer writes on: parents keep a backlog while their children
	// fill, so children read too early would break per-key order.
	reshape := func(op func()) {
		gate.Lock()
		defer gate.Unlock()
		before := prod.total()
		op()
		testutil.Poll(t, 60*time.Second, "messages produced after the change", func() (bool, string) {
			return prod.total() >= before+3000, fmt.Sprintf("%d produced", prod.total()-before)
		})
	}

	stop := make(chan struct{})
	produced := make(chan struct{})
	go func() {
		defer close(produced)
		prod.run(t, stop, 3)
	}()
	rounds := testutil.SoakOr(1, 5) // of split, split, merge
	for range rounds {
		waitCount(t, cons, cons.count()+2000)
		reshape(func() { splitShard(t, env, lowestReadWrite(t, env, 0)) })
		waitCount(t, cons, cons.count()+2000)
		reshape(func() { splitShard(t, env, lowestReadWrite(t, env, 1)) })
		waitCount(t, cons, cons.count()+2000)
		reshape(func() { mergeShards(t, env, lowestReadWrite(t, env, 0)) })
	}
	waitCount(t, cons, cons.count()+2000)
	close(stop)
	<-produced
	total := prod.total()
	waitCount(t, cons, total)
	shards, _ := env.Server.Shards(testProject, testLogstore)
	t.Logf("%d messages of %d keys consumed across %d shards (%d splits, %d merges)", total, prod.keys, len(shards), 2*rounds, rounds)
	cons.check(t, prod.sent)
}

// waitCount waits until c has received at least n messages.
func waitCount(t *testing.T, c *keyedConsumer, n int) {
	t.Helper()
	testutil.Poll(t, 60*time.Second, fmt.Sprintf("%d messages received", n), func() (bool, string) {
		got := c.count()
		return got >= n, fmt.Sprintf("%d received", got)
	})
}

// lowestReadWrite returns the readwrite shard with the i-th lowest hash
// range.
func lowestReadWrite(t *testing.T, env *testutil.SLSEnv, i int) int {
	t.Helper()
	shards, err := env.Server.Shards(testProject, testLogstore)
	if err != nil {
		t.Fatal(err)
	}
	shards = slices.DeleteFunc(shards, func(s slstest.ShardInfo) bool { return s.Status == slstest.ShardReadOnly })
	slices.SortFunc(shards, func(a, b slstest.ShardInfo) int { return strings.Compare(a.InclusiveBeginKey, b.InclusiveBeginKey) })
	if i >= len(shards) {
		t.Fatalf("no readwrite shard %d among %v", i, shards)
	}
	return shards[i].ShardID
}

func splitShard(t *testing.T, env *testutil.SLSEnv, id int) {
	t.Helper()
	if _, err := env.Server.SplitShard(testProject, testLogstore, id, ""); err != nil {
		t.Fatalf("split shard %d: %v", id, err)
	}
}

func mergeShards(t *testing.T, env *testutil.SLSEnv, id int) {
	t.Helper()
	if _, err := env.Server.MergeShards(testProject, testLogstore, id); err != nil {
		t.Fatalf("merge shard %d: %v", id, err)
	}
}

// received records which subscriber received each message, by shard.
type received struct {
	mu      sync.Mutex
	byShard map[int]map[string]int // shard -> subscriber -> messages
	uuids   map[string]int
}

func newReceived() *received {
	return &received{byShard: map[int]map[string]int{}, uuids: map[string]int{}}
}

func (r *received) consume(t *testing.T, name string, ch <-chan *message.Message) {
	go func() {
		for msg := range ch {
			p, err := PositionFromMessage(msg)
			if err != nil {
				t.Error(err)
			}
			r.mu.Lock()
			if r.byShard[p.Shard] == nil {
				r.byShard[p.Shard] = map[string]int{}
			}
			r.byShard[p.Shard][name]++
			r.uuids[msg.UUID]++
			r.mu.Unlock()
			msg.Ack()
		}
	}()
}

func (r *received) distinct() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.uuids)
}

func (r *received) readers(shard int) map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]int{}
	for k, v := range r.byShard[shard] {
		out[k] = v
	}
	return out
}

func fastGroup(name string) func(*SubscriberConfig) {
	return func(c *SubscriberConfig) {
		c.ConsumerGroup = "cg"
		c.ConsumerName = name
		c.HeartbeatInterval = 100 * time.Millisecond
		c.HeartbeatTimeout = time.Second
		c.RediscoveryInterval = 100 * time.Millisecond
		c.CommitInterval = 50 * time.Millisecond
	}
}

// TestSubscriberConsumerGroupAssignment runs two members of a consumer
// group over 4 shards: SLS gives each 2 shards and every message goes to
// one member; once one member closes, the other takes over its shards
// (after the group's timeout) from their committed checkpoints.
func TestSubscriberConsumerGroupAssignment(t *testing.T) {
	env := testutil.SLS(t)
	env.LogStore(t, testProject, testLogstore, 4)
	r := newReceived()
	a := stSubscriber(t, env, fastGroup("a"))
	b := stSubscriber(t, env, fastGroup("b"))
	for name, s := range map[string]*Subscriber{"a": a, "b": b} {
		ch, err := s.Subscribe(context.Background(), testLogstore)
		if err != nil {
			t.Fatal(err)
		}
		r.consume(t, name, ch)
	}
	testutil.Poll(t, 30*time.Second, "2 shards allocated to each member", func() (bool, string) {
		st, err := env.Server.ConsumerGroupState(testProject, testLogstore, "cg")
		if err != nil {
			return false, err.Error()
		}
		held := map[string]int{}
		for _, sh := range st.Shards {
			if sh.Status == slstest.AssignmentAllocated {
				held[sh.Consumer]++
			}
		}
		return held["a"] == 2 && held["b"] == 2, fmt.Sprint(held)
	})
	for shard := range 4 {
		stWrite(t, env, shard, fmt.Sprintf("a%d", shard), 10)
	}
	testutil.Poll(t, 30*time.Second, "40 messages", func() (bool, string) {
		return r.distinct() == 40, fmt.Sprint(r.distinct())
	})
	owners := map[string]int{}
	for shard := range 4 {
		rd := r.readers(shard)
		if len(rd) != 1 {
			t.Fatalf("shard %d read by %v, want one member", shard, rd)
		}
		for name := range rd {
			owners[name]++
		}
	}
	if owners["a"] != 2 || owners["b"] != 2 {
		t.Fatalf("shards per member %v, want 2 each", owners)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	for shard := range 4 {
		stWrite(t, env, shard, fmt.Sprintf("b%d", shard), 10)
	}
	testutil.Poll(t, 30*time.Second, "80 messages", func() (bool, string) {
		return r.distinct() == 80, fmt.Sprint(r.distinct())
	})
	for shard := range 4 {
		if got := r.readers(shard)["a"]; got < 10 {
			t.Errorf("member a read %d messages of shard %d after b left, want at least 10", got, shard)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, n := range r.uuids {
		if n != 1 {
			t.Errorf("message %s received %d times (b committed everything it acked before leaving)", id, n)
		}
	}
}

// TestSubscriberStaticConsistentChildrenFollowParent: with the consistent
// assigner, both children of a split shard go to the instance that read
// the parent; with round robin they would not.
func TestSubscriberStaticConsistentChildrenFollowParent(t *testing.T) {
	env := testutil.SLS(t)
	env.LogStore(t, testProject, testLogstore, 4)
	for shard := range 4 {
		stWrite(t, env, shard, fmt.Sprintf("p%d", shard), 5)
	}
	r := newReceived()
	names := []string{"i0", "i1"}
	for i, name := range names {
		s := stSubscriber(t, env, func(c *SubscriberConfig) {
			fastGroup(name)(c)
			c.Assignment = AssignStatic
			c.StaticInstances, c.StaticIndex = 2, i
		})
		ch, err := s.Subscribe(context.Background(), testLogstore)
		if err != nil {
			t.Fatal(err)
		}
		r.consume(t, name, ch)
	}
	testutil.Poll(t, 30*time.Second, "20 messages", func() (bool, string) {
		return r.distinct() == 20, fmt.Sprint(r.distinct())
	})
	parentOwner := ""
	for name := range r.readers(0) {
		parentOwner = name
	}
	infos, err := env.Server.SplitShard(testProject, testLogstore, 0, "")
	if err != nil {
		t.Fatal(err)
	}
	var children []int
	for _, in := range infos {
		if in.ShardID != 0 {
			children = append(children, in.ShardID)
			stWrite(t, env, in.ShardID, fmt.Sprintf("c%d", in.ShardID), 5)
		}
	}
	testutil.Poll(t, 30*time.Second, "30 messages", func() (bool, string) {
		return r.distinct() == 30, fmt.Sprint(r.distinct())
	})
	for _, c := range children {
		if rd := r.readers(c); len(rd) != 1 || rd[parentOwner] != 5 {
			t.Errorf("child shard %d read by %v, want all 5 by the parent's reader %s", c, rd, parentOwner)
		}
	}
}

// TestShardAssigners checks the static assigners over layouts with splits
// and merges: every shard has exactly one instance; with the consistent
// assigner, the children of a listed parent share its instance.
func TestShardAssigners(t *testing.T) {
	key := func(v uint64) string { return fmt.Sprintf("%016x%016x", v, 0) }
	full := ShardInfo{ID: 0, BeginKey: key(0), EndKey: "ffffffffffffffffffffffffffffffff"}
	quarter := uint64(1) << 62
	layout := []ShardInfo{
		{ID: 0, ReadOnly: true, BeginKey: key(0), EndKey: key(quarter)},
		{ID: 1, BeginKey: key(quarter), EndKey: key(2 * quarter)},
		{ID: 2, ReadOnly: true, BeginKey: key(2 * quarter), EndKey: key(3 * quarter)},
		{ID: 3, BeginKey: key(3 * quarter), EndKey: full.EndKey},
		{ID: 4, BeginKey: key(0), EndKey: key(quarter / 2)},                                     // split of 0
		{ID: 5, BeginKey: key(quarter / 2), EndKey: key(quarter)},                               // split of 0
		{ID: 6, ReadOnly: true, BeginKey: key(2 * quarter), EndKey: key(2*quarter + quarter/2)}, // split of 2
		{ID: 7, ReadOnly: true, BeginKey: key(2*quarter + quarter/2), EndKey: key(3 * quarter)}, // split of 2
		{ID: 8, BeginKey: key(2 * quarter), EndKey: key(3 * quarter)},                           // merge of 6, 7
	}
	for _, instances := range []int{1, 2, 3, 4, 7} {
		for name, a := range map[string]ShardAssigner{"consistent": ConsistentAssigner{}, "round robin": RoundRobinAssigner{}} {
			owner := map[int]int{}
			for i := range instances {
				ids, err := a.Assign(layout, instances, i)
				if err != nil {
					t.Fatal(err)
				}
				for _, id := range ids {
					if prev, dup := owner[id]; dup {
						t.Fatalf("%s/%d: shard %d given to %d and %d", name, instances, id, prev, i)
					}
					owner[id] = i
				}
			}
			if len(owner) != len(layout) {
				t.Fatalf("%s/%d: %d of %d shards assigned", name, instances, len(owner), len(layout))
			}
			if name != "consistent" {
				continue
			}
			for child, parent := range map[int]int{4: 0, 5: 0, 6: 2, 7: 2, 8: 6} {
				if owner[child] != owner[parent] {
					t.Errorf("consistent/%d: child %d on %d, parent %d on %d", instances, child, owner[child], parent, owner[parent])
				}
			}
		}
	}
}

// TestSubscriberConsumerGroupFencesItself: when heartbeats fail, the member
// stops fetching every shard before the group's timeout can hand them to
// another member, and resumes once heartbeats succeed again.
func TestSubscriberConsumerGroupFencesItself(t *testing.T) {
	var mu sync.Mutex
	var lastBeat, lastPull time.Time
	pulls := 0
	env := testutil.SLS(t, slstest.WithRequestObserver(func(ri slstest.RequestInfo) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case ri.Op == slstest.OpHeartBeat && ri.Status == 200:
			lastBeat = time.Now()
		case ri.Op == slstest.OpPullLogs:
			lastPull = time.Now()
			pulls++
		}
	}))
	env.LogStore(t, testProject, testLogstore, 2)
	s := stSubscriber(t, env, fastGroup("a"))
	ch, err := s.Subscribe(context.Background(), testLogstore)
	if err != nil {
		t.Fatal(err)
	}
	stWrite(t, env, 0, "before", 2)
	stReceive(t, ch, 2, true)

	remove := env.Server.InjectFault(slstest.ErrorFault(slstest.OpHeartBeat, 500, "InternalServerError"))
	mu.Lock()
	failedFrom := lastBeat
	mu.Unlock()
	// Past the group's timeout: SLS may hand the shards on by now.
	testutil.Poll(t, 10*time.Second, "the group timeout to pass", func() (bool, string) {
		return time.Since(failedFrom) > 1500*time.Millisecond, ""
	})
	mu.Lock()
	stoppedAt, beat := lastPull, lastBeat
	mu.Unlock()
	if deadline := beat.Add(time.Second); !stoppedAt.Before(deadline) {
		t.Fatalf("still fetching at %v, after the group timeout ended at %v (last heartbeat %v)",
			stoppedAt.Format("15:04:05.000"), deadline.Format("15:04:05.000"), beat.Format("15:04:05.000"))
	}
	remove()
	stWrite(t, env, 1, "after", 2)
	if got := uuids(stReceive(t, ch, 2, true)); got[0] != "after-0" || got[1] != "after-1" {
		t.Fatalf("after heartbeats resumed: %v", got)
	}
}

// TestSubscriberReportsUnorderedGroup: an existing consumer group with
// order=false is reported (logged at Error level); a group the Subscriber
// creates is in order.
func TestSubscriberReportsUnorderedGroup(t *testing.T) {
	env := testutil.SLS(t)
	env.LogStore(t, testProject, testLogstore, 1)
	api := newTestClient(t, testConfig(env))
	if err := api.createConsumerGroup(ctxT(t), testLogstore, sls.ConsumerGroup{ConsumerGroupName: "loose", Timeout: 10}); err != nil {
		t.Fatal(err)
	}
	for _, group := range []string{"loose", "created"} {
		logger := watermill.NewCaptureLogger()
		s, err := NewSubscriber(SubscriberConfig{ClientConfig: testConfig(env), ConsumerGroup: group}, logger)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		if _, err := s.Subscribe(ctx, testLogstore); err != nil {
			t.Fatal(err)
		}
		cancel()
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		reported := false
		for _, e := range logger.Captured()[watermill.ErrorLogLevel] {
			reported = reported || strings.Contains(e.Msg, "not in order")
		}
		if reported != (group == "loose") {
			t.Errorf("group %s: order=false reported %v", group, reported)
		}
	}
	st, err := env.Server.ConsumerGroupState(testProject, testLogstore, "created")
	if err != nil || !st.InOrder {
		t.Fatalf("created group: in order %v, %v", st.InOrder, err)
	}
}

// memPositions is a PositionStore kept in memory: the last applied
// position of each shard, as an exactly-once handler would store it.
type memPositions struct {
	mu  sync.Mutex
	pos map[int]Position
}

func (m *memPositions) LoadPosition(_ context.Context, _ string, shard int) (Position, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p, ok := m.pos[shard]
	return p, ok, nil
}

func (m *memPositions) apply(p Position) {
	m.mu.Lock()
	m.pos[p.Shard] = p
	m.mu.Unlock()
}

// TestSubscriberStaticPositionStoreParentFirst: two static instances with
// the round-robin assigner and no consumer group share a PositionStore.
// After a split, the child that lands on the other instance starts only
// once the parent's reader applied the parent's last log, as the
// PositionStore shows.
func TestSubscriberStaticPositionStoreParentFirst(t *testing.T) {
	env := testutil.SLS(t)
	env.LogStore(t, testProject, testLogstore, 2)
	store := &memPositions{pos: map[int]Position{}}
	for range 3 {
		stWrite(t, env, 0, "parent", 100)
	}
	if _, err := env.Server.SplitShard(testProject, testLogstore, 0, ""); err != nil {
		t.Fatal(err)
	}
	for _, child := range []int{2, 3} {
		stWrite(t, env, child, fmt.Sprintf("child%d", child), 5)
	}

	var mu sync.Mutex
	var parentDone time.Time
	childFirst := map[int]time.Time{}
	parentLeft := 300
	for i := range 2 {
		s := stSubscriber(t, env, func(c *SubscriberConfig) {
			c.Assignment = AssignStatic
			c.ShardAssigner = RoundRobinAssigner{}
			c.StaticInstances, c.StaticIndex = 2, i
			c.PositionStore = store
			c.RediscoveryInterval = 50 * time.Millisecond
		})
		ch, err := s.Subscribe(context.Background(), testLogstore)
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			for msg := range ch {
				p, err := PositionFromMessage(msg)
				if err != nil {
					t.Error(err)
				}
				if p.Shard == 0 {
					time.Sleep(time.Millisecond) // a slow parent reader
				}
				store.apply(p)
				mu.Lock()
				switch p.Shard {
				case 0:
					if parentLeft--; parentLeft == 0 {
						parentDone = time.Now()
					}
				case 2, 3:
					if _, seen := childFirst[p.Shard]; !seen {
						childFirst[p.Shard] = time.Now()
					}
				}
				mu.Unlock()
				msg.Ack()
			}
		}()
	}
	testutil.Poll(t, 30*time.Second, "both children read", func() (bool, string) {
		mu.Lock()
		defer mu.Unlock()
		return len(childFirst) == 2, fmt.Sprint(childFirst)
	})
	mu.Lock()
	defer mu.Unlock()
	for child, first := range childFirst {
		if parentDone.IsZero() || first.Before(parentDone) {
			t.Errorf("child shard %d delivered at %v, before the parent's last log was applied (%v)", child, first, parentDone)
		}
	}
}

// TestSubscriberHeartbeatsWhileClosing: a member whose Close waits for a
// slow handler longer than the group's timeout keeps heartbeating, so the
// group still takes its final checkpoint, which includes the late ack.
func TestSubscriberHeartbeatsWhileClosing(t *testing.T) {
	env := testutil.SLS(t)
	env.LogStore(t, testProject, testLogstore, 1)
	stWrite(t, env, 0, "m", 2)
	s := stSubscriber(t, env, func(c *SubscriberConfig) {
		fastGroup("slow")(c)
		c.CloseTimeout = 4 * time.Second // longer than the 1 s group timeout
	})
	ch, err := s.Subscribe(context.Background(), testLogstore)
	if err != nil {
		t.Fatal(err)
	}
	stReceive(t, ch, 1, true)
	last := stReceive(t, ch, 1, false)[0]
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	time.Sleep(2500 * time.Millisecond) // the handler is slow: well past the group timeout
	last.Ack()
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}
	begin, _, err := env.Server.Cursors(testProject, testLogstore, 0)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := cursorToInt64(begin)
	cps, err := newTestClient(t, testConfig(env)).getCheckpoints(ctxT(t), testLogstore, "cg")
	if err != nil || len(cps) != 1 || cps[0].CheckPoint != cursorFromInt64(b+1) {
		t.Fatalf("checkpoints %+v (%v), want the cursor after the group (%s)", cps, err, cursorFromInt64(b+1))
	}
}

// TestSubscriberConsumerGroupHeartbeatFaults runs two members of a group
// while logs are produced and heartbeats fail (30 %), are slow (30 %, up
// to 3 intervals) and, for a while, all fail: the group is never stuck
// (every log is consumed) and no two members fetch a shard together for
// longer than one heartbeat interval.
func TestSubscriberConsumerGroupHeartbeatFaults(t *testing.T) {
	pulls := &rbPulls{events: map[int][]rbPull{}}
	opts := []slstest.Option{slstest.WithSeed(11), slstest.WithRequestObserver(pulls.observe),
		slstest.WithAccount(slstest.Account{AccessKeyID: slstest.DefaultAccessKeyID, AccessKeySecret: slstest.DefaultAccessKeySecret})}
	for _, name := range []string{"c1", "c2"} {
		opts = append(opts, slstest.WithAccount(slstest.Account{AccessKeyID: name, AccessKeySecret: name + "-secret"}))
	}
	env := testutil.SLS(t, opts...)
	env.LogStore(t, testProject, testLogstore, 4)
	env.Server.InjectFault(slstest.Fault{Op: slstest.OpHeartBeat, Probability: 0.3, Status: 500, Code: "InternalServerError"})
	env.Server.InjectFault(slstest.Fault{Op: slstest.OpHeartBeat, Probability: 0.3, Latency: 300 * time.Millisecond})

	r := newReceived()
	for _, name := range []string{"c1", "c2"} {
		s := stSubscriber(t, env, func(c *SubscriberConfig) {
			fastGroup(name)(c)
			c.AccessKeyID, c.AccessKeySecret = name, name+"-secret"
		})
		ch, err := s.Subscribe(context.Background(), testLogstore)
		if err != nil {
			t.Fatal(err)
		}
		r.consume(t, name, ch)
	}
	pub, err := NewPublisher(PublisherConfig{ClientConfig: testConfig(env)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	produced := 0
	rounds := testutil.SoakOr(30, 150)
	for round := range rounds {
		if round == rounds/3 { // an outage: every heartbeat fails for a while
			remove := env.Server.InjectFault(slstest.ErrorFault(slstest.OpHeartBeat, 503, "ServerBusy"))
			time.AfterFunc(1500*time.Millisecond, func() { remove() })
		}
		var batch []*message.Message
		for range 50 {
			batch = append(batch, message.NewMessage(fmt.Sprintf("m-%06d", produced), []byte("x")))
			produced++
		}
		if err := pub.Publish(testLogstore, batch...); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond) // a steady stream, not a burst
	}
	testutil.Poll(t, 60*time.Second, "every log consumed", func() (bool, string) {
		return r.distinct() == produced, fmt.Sprintf("%d of %d", r.distinct(), produced)
	})
	overlap, where := pulls.maxOverlap(300 * time.Millisecond)
	t.Logf("%d logs consumed by 2 members under heartbeat faults; longest overlapping fetch %v %s", produced, overlap, where)
	if overlap > 100*time.Millisecond {
		t.Errorf("two members fetched a shard together for %v, more than one heartbeat interval: %s", overlap, where)
	}
}

// TestSubscriberCheckpointRefusedAfterHandover: a member the group has
// dropped (its heartbeats did not reach SLS within the group's timeout, as
// happens on an overloaded host) no longer holds its shard, so SLS refuses
// the checkpoint of what it acked. That is the group handing the shard on
// (the next holder reads from the group's last checkpoint), not a failure of
// the Subscriber: Close returns nil and the refusal is logged at Info level.
func TestSubscriberCheckpointRefusedAfterHandover(t *testing.T) {
	var mu sync.Mutex
	var refused []string
	var skew atomic.Int64 // how far the server's clock runs ahead, ns
	env := testutil.SLS(t,
		slstest.WithClock(func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }),
		slstest.WithRequestObserver(func(ri slstest.RequestInfo) {
			if ri.Op == slstest.OpUpdateCheckPoint && ri.Status != 200 {
				mu.Lock()
				refused = append(refused, ri.ErrorCode)
				mu.Unlock()
			}
		}))
	env.LogStore(t, testProject, testLogstore, 1)
	logger := watermill.NewCaptureLogger()
	cfg := SubscriberConfig{ClientConfig: testConfig(env), FetchInterval: 5 * time.Millisecond, MaxFetchInterval: 20 * time.Millisecond}
	fastGroup("a")(&cfg)
	cfg.CommitInterval = time.Hour // acked positions are committed only when the shard stops
	s, err := NewSubscriber(cfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	ch, err := s.Subscribe(context.Background(), testLogstore)
	if err != nil {
		t.Fatal(err)
	}
	stWrite(t, env, 0, "m", 2)
	stReceive(t, ch, 2, true)

	// The group's timeout passes on the server without a heartbeat of this
	// member reaching it; the member closes and commits what it acked.
	env.Server.InjectFault(slstest.ErrorFault(slstest.OpHeartBeat, 500, "InternalServerError"))
	skew.Store(int64(10 * time.Second))
	if err := s.Close(); err != nil {
		t.Fatalf("Close after the group dropped the member: %v", err)
	}
	mu.Lock()
	got := slices.Clone(refused)
	mu.Unlock()
	if len(got) == 0 || (got[0] != CodeConsumerNotExist && got[0] != CodeConsumerNotMatch) {
		t.Fatalf("refused checkpoints %v, want one refused with %s or %s", got, CodeConsumerNotExist, CodeConsumerNotMatch)
	}
	logged := false
	for _, e := range logger.Captured()[watermill.InfoLogLevel] {
		logged = logged || strings.Contains(e.Msg, "held by another consumer")
	}
	if !logged {
		t.Error("the refused checkpoint was not logged")
	}
}
