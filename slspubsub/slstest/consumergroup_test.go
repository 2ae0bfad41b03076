package slstest

import (
	"encoding/json"
	"fmt"
	"math/rand"
	"net/http"
	"reflect"
	"slices"
	"testing"
	"time"
)

const (
	cgInterval = 20 * time.Second // the SDK's default HeartbeatIntervalInSecond
	cgTimeout  = 60 * time.Second // the SDK's default timeout: 3 intervals
)

// simLogstore is the shard topology the tests feed the group: shards are
// split and merged the way SLS does it (the parent turns readonly with an end
// cursor, children name their parents).
type simLogstore struct {
	shards []cgShard
	nextID int
}

func newSimLogstore(n int) *simLogstore {
	ls := &simLogstore{}
	for range n {
		ls.add()
	}
	return ls
}

func (ls *simLogstore) add(parents ...int) int {
	id := ls.nextID
	ls.nextID++
	ls.shards = append(ls.shards, cgShard{ID: id, Parents: parents})
	return id
}

func (ls *simLogstore) get(id int) *cgShard {
	for i := range ls.shards {
		if ls.shards[i].ID == id {
			return &ls.shards[i]
		}
	}
	return nil
}

func (ls *simLogstore) seal(id int) {
	s := ls.get(id)
	s.ReadOnly = true
	s.EndCursor = fmt.Sprintf("end-%d", id)
}

// split seals shard id and returns its two readwrite children.
func (ls *simLogstore) split(id int) (int, int) {
	ls.seal(id)
	return ls.add(id), ls.add(id)
}

// merge seals shards a and b and returns their readwrite child.
func (ls *simLogstore) merge(a, b int) int {
	ls.seal(a)
	ls.seal(b)
	return ls.add(a, b)
}

// remove drops a shard, as SLS does when a readonly shard's data expires.
func (ls *simLogstore) remove(id int) {
	ls.shards = slices.DeleteFunc(ls.shards, func(s cgShard) bool { return s.ID == id })
}

func (ls *simLogstore) readwrite() []int {
	var ids []int
	for _, s := range ls.shards {
		if !s.ReadOnly {
			ids = append(ids, s.ID)
		}
	}
	return ids
}

// snapshot returns a copy of the shard set, as the HTTP layer would build it.
func (ls *simLogstore) snapshot() []cgShard {
	out := make([]cgShard, len(ls.shards))
	for i, s := range ls.shards {
		s.Parents = slices.Clone(s.Parents)
		out[i] = s
	}
	return out
}

// simConsumer behaves like the SDK's consumer worker (consumer/heart_beat.go
// and worker.go): it heartbeats with the union of the shards it still reports
// and the shards of its last response, and a shard leaves its reports only
// once its worker has stopped, stopDelay heartbeats after the response
// stopped listing it (the worker is shutting down and flushing meanwhile).
type simConsumer struct {
	name      string
	stopDelay int
	held      []int       // last heartbeat response
	heart     map[int]int // reported shard -> heartbeats since it left held
	beats     int
}

func newSimConsumer(name string) *simConsumer {
	return &simConsumer{name: name, stopDelay: 1, held: []int{}, heart: make(map[int]int)}
}

// report returns what the next heartbeat sends, advancing the workers.
func (c *simConsumer) report() []int {
	for id, age := range c.heart {
		if slices.Contains(c.held, id) {
			c.heart[id] = 0
		} else if age >= c.stopDelay {
			delete(c.heart, id)
		} else {
			c.heart[id] = age + 1
		}
	}
	for _, id := range c.held {
		if _, ok := c.heart[id]; !ok {
			c.heart[id] = 0
		}
	}
	ids := make([]int, 0, len(c.heart))
	for id := range c.heart {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// running returns every shard this consumer has a worker for.
func (c *simConsumer) running() []int {
	ids := slices.Clone(c.held)
	for id := range c.heart {
		if !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

// cgHarness drives a group with a simulated clock and SDK-like consumers and
// checks the group's invariants after every step.
type cgHarness struct {
	t    testing.TB
	g    *consumerGroup
	ls   *simLogstore
	now  time.Time
	sims map[string]*simConsumer // consumers that are running (heartbeating)
}

func newCGHarness(t testing.TB, shards int, inOrder bool) *cgHarness {
	return &cgHarness{
		t:    t,
		g:    newConsumerGroup("cg", cgTimeout, inOrder),
		ls:   newSimLogstore(shards),
		now:  time.Unix(1_700_000_000, 0),
		sims: make(map[string]*simConsumer),
	}
}

func (h *cgHarness) join(names ...string) {
	for _, n := range names {
		h.sims[n] = newSimConsumer(n)
	}
}

// crash stops a consumer without a word, as a killed process does.
func (h *cgHarness) crash(name string) { delete(h.sims, name) }

func (h *cgHarness) names() []string {
	names := make([]string, 0, len(h.sims))
	for n := range h.sims {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// beat sends one heartbeat of a running consumer and checks the invariants.
func (h *cgHarness) beat(name string) []int {
	h.t.Helper()
	c := h.sims[name]
	report := c.report()
	resp := h.g.heartbeat(name, report, h.ls.snapshot(), h.now)
	if resp == nil {
		h.t.Fatalf("heartbeat of %s returned nil", name)
	}
	if !slices.IsSorted(resp) {
		h.t.Fatalf("heartbeat of %s returned unsorted %v", name, resp)
	}
	c.held = resp
	c.beats++
	h.checkResponse(name, resp)
	h.check()
	return resp
}

// round lets every running consumer heartbeat once, in name order, then
// advances the clock by one heartbeat interval.
func (h *cgHarness) round() {
	h.t.Helper()
	for _, n := range h.names() {
		h.beat(n)
	}
	h.now = h.now.Add(cgInterval)
}

func (h *cgHarness) rounds(n int) {
	h.t.Helper()
	for range n {
		h.round()
	}
}

func (h *cgHarness) state() ConsumerGroupState {
	return h.g.state(h.ls.snapshot(), h.now)
}

func (h *cgHarness) checkpoint(consumer string, shard int, cp string, force bool) *Error {
	h.t.Helper()
	err := h.g.updateCheckpoint(consumer, shard, cp, force, h.ls.snapshot(), h.now)
	h.check()
	return err
}

// finish has the holder of a readonly shard commit its end cursor, as the
// SDK does after reading the shard to its end.
func (h *cgHarness) finish(shard int) {
	h.t.Helper()
	if err := h.checkpoint("", shard, h.ls.get(shard).EndCursor, true); err != nil {
		h.t.Fatalf("finish shard %d: %v", shard, err)
	}
}

// assignment returns, per running consumer, the shards of its last response.
func (h *cgHarness) assignment() map[string][]int {
	m := make(map[string][]int)
	for n, c := range h.sims {
		m[n] = slices.Clone(c.held)
	}
	return m
}

func (h *cgHarness) counts() []int {
	var out []int
	for _, c := range h.sims {
		out = append(out, len(c.held))
	}
	slices.Sort(out)
	return out
}

func (h *cgHarness) status(shard int) ShardAssignmentStatus {
	for _, a := range h.state().Shards {
		if a.Shard == shard {
			return a.Status
		}
	}
	h.t.Fatalf("shard %d not in state", shard)
	return ""
}

// parentsOver reports whether every parent of shard is over or gone.
func (h *cgHarness) parentsOver(st ConsumerGroupState, shard int) bool {
	s := h.ls.get(shard)
	for _, p := range s.Parents {
		for _, a := range st.Shards {
			if a.Shard == p && a.Status != AssignmentOver {
				return false
			}
		}
	}
	return true
}

// checkResponse checks one heartbeat response against the server's state:
// the consumer holds every shard it is given, none is over, and with InOrder
// none has a parent that is not over.
func (h *cgHarness) checkResponse(name string, resp []int) {
	h.t.Helper()
	st := h.state()
	for _, id := range resp {
		var a *ShardAssignment
		for i := range st.Shards {
			if st.Shards[i].Shard == id {
				a = &st.Shards[i]
			}
		}
		if a == nil {
			h.t.Fatalf("%s was given shard %d that does not exist", name, id)
		}
		if a.Status != AssignmentAllocated || a.Consumer != name {
			h.t.Fatalf("%s was given shard %d but the state says %s/%q", name, id, a.Status, a.Consumer)
		}
		if st.InOrder && !h.parentsOver(st, id) {
			h.t.Fatalf("%s was given shard %d before its parents %v are over", name, id, h.ls.get(id).Parents)
		}
	}
}

// check asserts that no shard has two holders, neither in the server's state
// nor among the running consumers' workers.
func (h *cgHarness) check() {
	h.t.Helper()
	st := h.state()
	if again := h.state(); !reflect.DeepEqual(st, again) {
		h.t.Fatalf("state is not stable:\n%+v\n%+v", st, again)
	}
	holder := make(map[int]string)
	for _, c := range st.Consumers {
		for _, id := range c.Shards {
			if other, dup := holder[id]; dup {
				h.t.Fatalf("shard %d held by %s and %s", id, other, c.Name)
			}
			holder[id] = c.Name
		}
	}
	for _, a := range st.Shards {
		if a.Consumer != holder[a.Shard] {
			h.t.Fatalf("shard %d: assignment names %q, consumer lists say %q", a.Shard, a.Consumer, holder[a.Shard])
		}
		if a.Status == AssignmentOver && a.Consumer != "" {
			h.t.Fatalf("over shard %d held by %s", a.Shard, a.Consumer)
		}
		if a.Status == AssignmentAllocated && st.InOrder && !h.parentsOver(st, a.Shard) {
			h.t.Fatalf("shard %d allocated to %s before its parents are over", a.Shard, a.Consumer)
		}
	}
	worker := make(map[int]string)
	for _, n := range h.names() {
		for _, id := range h.sims[n].running() {
			if other, dup := worker[id]; dup {
				h.t.Fatalf("shard %d runs on %s and %s at %v\nstate: %+v", id, other, n, h.now, st)
			}
			worker[id] = n
		}
	}
}

// settle runs rounds until the assignment has not changed for quiet rounds,
// failing when that takes more than limit rounds; it returns the number of
// rounds until the last change.
func (h *cgHarness) settle(quiet, limit int) int {
	h.t.Helper()
	last := h.assignment()
	lastChange := 0
	for r := 1; r <= limit; r++ {
		h.round()
		cur := h.assignment()
		if !sameAssignment(cur, last) {
			last, lastChange = cur, r
		}
		if r-lastChange >= quiet {
			return lastChange
		}
	}
	h.t.Fatalf("assignment still changing after %d rounds: %v", limit, last)
	return 0
}

func sameAssignment(a, b map[string][]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !slices.Equal(v, b[k]) {
			return false
		}
	}
	return true
}

// checkBalanced asserts a settled group: every assignable shard is handed
// out, nothing is in transfer, and counts differ by at most one.
func (h *cgHarness) checkBalanced() {
	h.t.Helper()
	st := h.state()
	if len(h.sims) == 0 {
		return
	}
	n := 0
	for _, a := range st.Shards {
		switch a.Status {
		case AssignmentNotAlloc, AssignmentTransfer:
			h.t.Fatalf("settled group has shard %d in %s: %+v", a.Shard, a.Status, st)
		case AssignmentAllocated:
			n++
		}
	}
	counts := h.counts()
	lo, hi := n/len(counts), (n+len(counts)-1)/len(counts)
	if counts[0] < lo || counts[len(counts)-1] > hi {
		h.t.Fatalf("unbalanced: %d shards over counts %v", n, counts)
	}
}

func TestConsumerGroupSingleConsumerGetsAllShards(t *testing.T) {
	for _, shards := range []int{1, 2, 4, 16} {
		for _, inOrder := range []bool{false, true} {
			t.Run(fmt.Sprintf("shards=%d/order=%v", shards, inOrder), func(t *testing.T) {
				h := newCGHarness(t, shards, inOrder)
				h.join("a")
				got := h.beat("a")
				want := make([]int, shards)
				for i := range want {
					want[i] = i
				}
				if !slices.Equal(got, want) {
					t.Fatalf("first heartbeat got %v, want %v", got, want)
				}
			})
		}
	}
}

func TestConsumerGroupNoShards(t *testing.T) {
	h := newCGHarness(t, 0, false)
	h.join("a")
	got := h.beat("a")
	if got == nil || len(got) != 0 {
		t.Fatalf("got %#v, want empty non-nil", got)
	}
	b, _ := json.Marshal(got)
	if string(b) != "[]" {
		t.Fatalf("response encodes as %s, want []", b)
	}
}

func TestConsumerGroupBalance(t *testing.T) {
	cases := []struct {
		consumers, shards int
		want              []int // sorted shard counts
	}{
		{1, 4, []int{4}},
		{2, 4, []int{2, 2}},
		{3, 4, []int{1, 1, 2}},
		{4, 4, []int{1, 1, 1, 1}},
		{5, 4, []int{0, 1, 1, 1, 1}},
		{3, 10, []int{3, 3, 4}},
		{4, 2, []int{0, 0, 1, 1}},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("%dx%d", tc.consumers, tc.shards), func(t *testing.T) {
			h := newCGHarness(t, tc.shards, false)
			for i := range tc.consumers {
				h.join(fmt.Sprintf("c%d", i))
			}
			changed := h.settle(10, 50)
			if changed > 5 {
				t.Errorf("took %d rounds to settle", changed)
			}
			if got := h.counts(); !slices.Equal(got, tc.want) {
				t.Fatalf("counts %v, want %v", got, tc.want)
			}
			h.checkBalanced()
		})
	}
}

func TestConsumerGroupJoinTakesShardsOnlyAfterRelease(t *testing.T) {
	h := newCGHarness(t, 4, false)
	h.join("a")
	h.settle(3, 10)
	if got := h.sims["a"].held; !slices.Equal(got, []int{0, 1, 2, 3}) {
		t.Fatalf("a holds %v", got)
	}

	h.join("b")
	if got := h.beat("b"); len(got) != 0 {
		t.Fatalf("b got %v while a still runs everything", got)
	}
	// b's arrival marks a's excess for transfer; a learns it in its own heartbeat.
	if s := h.status(3); s != AssignmentTransfer {
		t.Fatalf("shard 3 is %s, want transfer", s)
	}
	if got := h.beat("a"); !slices.Equal(got, []int{0, 1}) {
		t.Fatalf("a got %v, want [0 1]", got)
	}
	// a's workers for 2 and 3 are still flushing: it reports them once more,
	// and b must not get them yet.
	h.now = h.now.Add(cgInterval)
	if got := h.beat("b"); len(got) != 0 {
		t.Fatalf("b got %v before a released", got)
	}
	if got := h.beat("a"); !slices.Equal(got, []int{0, 1}) {
		t.Fatalf("a got %v", got)
	}
	if got := h.beat("b"); len(got) != 0 {
		t.Fatalf("b got %v before a released", got)
	}
	// Now a's workers are stopped: its heartbeat leaves 2 and 3 out.
	h.now = h.now.Add(cgInterval)
	if got := h.beat("a"); !slices.Equal(got, []int{0, 1}) {
		t.Fatalf("a got %v", got)
	}
	if s := h.status(2); s != AssignmentNotAlloc {
		t.Fatalf("shard 2 is %s after release, want not_alloc", s)
	}
	if got := h.beat("b"); !slices.Equal(got, []int{2, 3}) {
		t.Fatalf("b got %v, want [2 3]", got)
	}
	h.settle(5, 10)
	h.checkBalanced()
}

func TestConsumerGroupJoinConverges(t *testing.T) {
	h := newCGHarness(t, 8, false)
	h.join("a", "b")
	h.settle(3, 20)
	for _, n := range []string{"c", "d", "e"} {
		h.join(n)
		if changed := h.settle(5, 20); changed > 4 {
			t.Fatalf("joining %s took %d rounds", n, changed)
		}
		h.checkBalanced()
	}
	if got := h.counts(); !slices.Equal(got, []int{1, 1, 2, 2, 2}) {
		t.Fatalf("counts %v", got)
	}
}

func TestConsumerGroupRebalanceMovesFewestShards(t *testing.T) {
	cases := []struct {
		shards, moved int
	}{{2, 1}, {3, 1}, {5, 2}, {8, 4}}
	for _, tc := range cases {
		t.Run(fmt.Sprint(tc.shards), func(t *testing.T) {
			// "b" runs everything; "a" sorts first by name but holds
			// nothing, so the extra shard of an odd count stays with b.
			h := newCGHarness(t, tc.shards, false)
			h.join("b")
			h.settle(3, 10)
			h.join("a")
			h.settle(5, 20)
			if got := len(h.sims["a"].held); got != tc.moved {
				t.Fatalf("%d shards moved to a, want %d (b keeps %v)", got, tc.moved, h.sims["b"].held)
			}
			h.checkBalanced()
		})
	}
}

func TestConsumerGroupCancelledTransfer(t *testing.T) {
	h := newCGHarness(t, 4, false)
	h.join("a")
	h.sims["a"].stopDelay = 3 // slow shutdown: a reports its shards long after losing them
	h.beat("a")
	h.join("b")
	h.beat("b") // a's 2 and 3 go to transfer
	h.crash("b")
	for range 3 {
		h.now = h.now.Add(cgInterval)
		if got := h.beat("a"); !slices.Equal(got, []int{0, 1}) {
			t.Fatalf("a got %v while b is alive", got)
		}
	}
	// b expires before a released anything: a keeps 2 and 3, which never
	// went through not_alloc.
	h.now = h.now.Add(cgInterval)
	if s := h.status(2); s != AssignmentAllocated {
		t.Fatalf("shard 2 is %s once b expired, want back to already_alloc", s)
	}
	if got := h.beat("a"); !slices.Equal(got, []int{0, 1, 2, 3}) {
		t.Fatalf("a got %v, want all back", got)
	}
}

func TestConsumerGroupTimeoutMovesShards(t *testing.T) {
	h := newCGHarness(t, 4, false)
	h.join("a", "b")
	h.settle(3, 10)
	bHeld := slices.Clone(h.sims["b"].held)
	lastB := h.now.Add(-cgInterval) // b's last heartbeat was in the last round
	h.crash("b")

	// Until the timeout has passed, b keeps its shards.
	for h.now.Sub(lastB) <= cgTimeout {
		if got := h.beat("a"); len(got) != 2 {
			t.Fatalf("a got %v at %v after b's last heartbeat", got, h.now.Sub(lastB))
		}
		h.now = h.now.Add(cgInterval)
	}
	st := h.state()
	if len(st.Consumers) != 1 || st.Consumers[0].Name != "a" {
		t.Fatalf("b did not expire: %+v", st.Consumers)
	}
	for _, id := range bHeld {
		if s := h.status(id); s != AssignmentNotAlloc {
			t.Fatalf("b's shard %d is %s after expiry", id, s)
		}
	}
	if got := h.beat("a"); !slices.Equal(got, []int{0, 1, 2, 3}) {
		t.Fatalf("a got %v, want all", got)
	}
}

func TestConsumerGroupExpiredConsumerComesBack(t *testing.T) {
	h := newCGHarness(t, 2, false)
	h.join("a")
	h.beat("a")
	h.now = h.now.Add(cgTimeout + time.Second)
	// a was expired and lost its shards; its late heartbeat makes it a new
	// consumer, which is given the free shards again.
	if got := h.beat("a"); !slices.Equal(got, []int{0, 1}) {
		t.Fatalf("a got %v", got)
	}
	if st := h.state(); !st.Consumers[0].LastHeartbeat.Equal(h.now) {
		t.Fatalf("last heartbeat %v, want %v", st.Consumers[0].LastHeartbeat, h.now)
	}
}

func TestConsumerGroupRestartedConsumerReleases(t *testing.T) {
	h := newCGHarness(t, 4, false)
	h.join("a", "b")
	h.settle(3, 10)
	// b restarts with the same name before its timeout: a fresh SDK worker
	// reports nothing, which releases what it held; it is given shards anew.
	h.sims["b"] = newSimConsumer("b")
	if got := h.beat("b"); len(got) != 2 {
		t.Fatalf("restarted b got %v", got)
	}
	h.settle(3, 10)
	h.checkBalanced()
}

func TestConsumerGroupSplitInOrder(t *testing.T) {
	h := newCGHarness(t, 2, true)
	h.join("a", "b")
	h.settle(3, 10)
	c1, c2 := h.ls.split(0)

	h.rounds(3)
	for _, id := range []int{c1, c2} {
		if s := h.status(id); s != AssignmentWait {
			t.Fatalf("child %d is %s, want wait", id, s)
		}
	}
	// The readonly parent stays assigned until it is read to its end.
	if s := h.status(0); s != AssignmentAllocated {
		t.Fatalf("readonly parent is %s", s)
	}
	// A checkpoint short of the end changes nothing.
	if err := h.checkpoint("", 0, "somewhere", true); err != nil {
		t.Fatal(err)
	}
	h.rounds(2)
	if s := h.status(c1); s != AssignmentWait {
		t.Fatalf("child is %s after a partial checkpoint", s)
	}

	h.finish(0)
	if s := h.status(0); s != AssignmentOver {
		t.Fatalf("parent is %s after its end checkpoint", s)
	}
	for _, id := range []int{c1, c2} {
		if s := h.status(id); s != AssignmentNotAlloc {
			t.Fatalf("child %d is %s once the parent is over", id, s)
		}
	}
	h.settle(5, 20)
	h.checkBalanced()
	all := append(slices.Clone(h.sims["a"].held), h.sims["b"].held...)
	slices.Sort(all)
	if !slices.Equal(all, []int{1, c1, c2}) {
		t.Fatalf("assigned %v", all)
	}
}

func TestConsumerGroupMergeWaitsForBothParents(t *testing.T) {
	h := newCGHarness(t, 3, true)
	h.join("a", "b")
	h.settle(3, 10)
	child := h.ls.merge(0, 1)

	h.rounds(2)
	h.finish(0)
	h.rounds(3)
	if s := h.status(child); s != AssignmentWait {
		t.Fatalf("merged child is %s with one parent over", s)
	}
	h.finish(1)
	h.settle(5, 20)
	if s := h.status(child); s != AssignmentAllocated {
		t.Fatalf("merged child is %s with both parents over", s)
	}
	h.checkBalanced()
}

func TestConsumerGroupVanishedParentCountsAsOver(t *testing.T) {
	h := newCGHarness(t, 1, true)
	h.join("a")
	h.beat("a")
	c1, c2 := h.ls.split(0)
	h.ls.remove(0) // e.g. the readonly parent's data expired
	if got := h.beat("a"); !slices.Equal(got, []int{c1, c2}) {
		t.Fatalf("a got %v, want the children", got)
	}
	if cps := h.g.checkpoints(h.ls.snapshot()); len(cps) != 2 || cps[0].Shard != c1 {
		t.Fatalf("checkpoints still list the removed shard: %+v", cps)
	}
}

func TestConsumerGroupSplitWithoutOrder(t *testing.T) {
	h := newCGHarness(t, 2, false)
	h.join("a", "b")
	h.settle(3, 10)
	c1, c2 := h.ls.split(0)
	for _, id := range []int{c1, c2} {
		if s := h.status(id); s != AssignmentNotAlloc {
			t.Fatalf("child %d is %s, want not_alloc", id, s)
		}
	}
	h.settle(5, 20)
	h.checkBalanced()
	if s := h.status(0); s != AssignmentAllocated {
		t.Fatalf("readonly parent is %s, want still allocated", s)
	}
	for _, id := range []int{c1, c2} {
		if s := h.status(id); s != AssignmentAllocated {
			t.Fatalf("child %d is %s", id, s)
		}
	}
}

func TestConsumerGroupOverShardNeverReassigned(t *testing.T) {
	h := newCGHarness(t, 2, false)
	h.join("a", "b", "c")
	h.settle(3, 10)
	h.ls.seal(0)
	h.rounds(2)
	if s := h.status(0); s != AssignmentAllocated {
		t.Fatalf("readonly shard not read to its end is %s", s)
	}
	holder := h.state().Shards[0].Consumer
	h.finish(0)
	// The holder still reports it (its worker drains), which must not bring
	// it back, and neither may a later checkpoint.
	if got := h.beat(holder); slices.Contains(got, 0) {
		t.Fatalf("over shard returned to %s", holder)
	}
	if err := h.checkpoint(holder, 0, "elsewhere", true); err != nil {
		t.Fatal(err)
	}
	h.join("d")
	for range 10 {
		h.round()
		for n, c := range h.sims {
			if slices.Contains(c.held, 0) {
				t.Fatalf("over shard assigned to %s", n)
			}
		}
		if s := h.status(0); s != AssignmentOver {
			t.Fatalf("over shard is %s", s)
		}
	}
}

func TestConsumerGroupStaleAndDuplicateReports(t *testing.T) {
	h := newCGHarness(t, 4, false)
	h.join("a", "b")
	h.settle(3, 10)
	aHeld := h.sims["a"].held
	bHeld := h.sims["b"].held

	// b claims a's shards (stale) and repeats its own: nothing changes.
	claim := append(append(slices.Clone(bHeld), bHeld...), aHeld...)
	got := h.g.heartbeat("b", claim, h.ls.snapshot(), h.now)
	if !slices.Equal(got, bHeld) {
		t.Fatalf("b got %v, want %v", got, bHeld)
	}
	// Unknown shard ids are ignored too.
	got = h.g.heartbeat("a", append(slices.Clone(aHeld), 99, -1), h.ls.snapshot(), h.now)
	if !slices.Equal(got, aHeld) {
		t.Fatalf("a got %v, want %v", got, aHeld)
	}
	h.check()
}

func TestConsumerGroupLostResponseReleases(t *testing.T) {
	h := newCGHarness(t, 2, false)
	h.join("a")
	h.beat("a")
	// The response was lost: the consumer never learned of its shards and
	// reports none. The server frees and hands them out again in that call.
	if got := h.g.heartbeat("a", nil, h.ls.snapshot(), h.now); !slices.Equal(got, []int{0, 1}) {
		t.Fatalf("got %v", got)
	}
}

func TestConsumerGroupUpdate(t *testing.T) {
	h := newCGHarness(t, 2, false)
	h.g.update(0, false)
	if h.g.Timeout != cgTimeout {
		t.Fatalf("timeout 0 changed the timeout to %v", h.g.Timeout)
	}
	h.g.update(90*time.Second, false)
	if h.g.Timeout != 90*time.Second {
		t.Fatalf("timeout %v", h.g.Timeout)
	}

	// Children held while the group was unordered must go back to wait when
	// order is switched on, after their holders release them.
	h.join("a")
	h.beat("a")
	c1, c2 := h.ls.split(0)
	if got := h.beat("a"); !slices.Equal(got, []int{0, 1, c1, c2}) {
		t.Fatalf("a got %v", got)
	}
	h.g.update(0, true)
	if got := h.beat("a"); !slices.Equal(got, []int{0, 1}) {
		t.Fatalf("a got %v after order was switched on", got)
	}
	if s := h.status(c1); s != AssignmentTransfer {
		t.Fatalf("child is %s, want transfer until released", s)
	}
	h.rounds(3)
	if s := h.status(c1); s != AssignmentWait {
		t.Fatalf("child is %s, want wait", s)
	}
	h.finish(0)
	h.rounds(1)
	if got := h.sims["a"].held; !slices.Equal(got, []int{1, c1, c2}) {
		t.Fatalf("a holds %v", got)
	}
}

func TestConsumerGroupUpdateCheckpointErrors(t *testing.T) {
	type step struct {
		consumer string
		shard    int
		force    bool
		status   int
		code     string // "" for success
	}
	// Setup (below): shards 0, 1 and 2 are held by a, shard 2 in transfer
	// because b joined; c heartbeated once and has expired.
	cases := []struct {
		name string
		step step
	}{
		{"holder", step{"a", 0, false, 0, ""}},
		{"holder forced", step{"a", 0, true, 0, ""}},
		{"other consumer", step{"b", 0, false, http.StatusBadRequest, CodeConsumerNotMatch}},
		{"other consumer forced", step{"b", 0, true, 0, ""}},
		{"unknown consumer", step{"nobody", 0, false, http.StatusNotFound, CodeConsumerNotExist}},
		{"unknown consumer forced", step{"nobody", 0, true, 0, ""}},
		{"empty consumer forced", step{"", 0, true, 0, ""}},
		{"unknown shard", step{"a", 7, false, http.StatusNotFound, CodeShardNotExistCG}},
		{"unknown shard forced", step{"a", 7, true, http.StatusNotFound, CodeShardNotExistCG}},
		{"expired consumer", step{"c", 0, false, http.StatusNotFound, CodeConsumerNotExist}},
		{"holder of shard in transfer", step{"a", 2, false, 0, ""}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newCGHarness(t, 3, false)
			h.g.heartbeat("c", nil, h.ls.snapshot(), h.now)
			h.now = h.now.Add(cgTimeout + time.Second) // c expires
			h.join("a")
			h.beat("a") // a holds 0, 1, 2
			h.join("b")
			h.beat("b") // marks a's 2 for transfer; b gets nothing yet
			if s := h.status(2); s != AssignmentTransfer {
				t.Fatalf("setup: shard 2 is %s", s)
			}

			s := tc.step
			err := h.checkpoint(s.consumer, s.shard, "MTUyNDE1NTM3OTM3MzkwODQ5Ng==", s.force)
			if s.code == "" {
				if err != nil {
					t.Fatalf("got %v, want success", err)
				}
				cps := h.g.checkpoints(h.ls.snapshot())
				if cps[s.shard].Checkpoint != "MTUyNDE1NTM3OTM3MzkwODQ5Ng==" {
					t.Fatalf("checkpoint not stored: %+v", cps)
				}
				return
			}
			if err == nil || err.Code != s.code || err.Status != s.status {
				t.Fatalf("got %v, want %d %s", err, s.status, s.code)
			}
			for _, cp := range h.g.checkpoints(h.ls.snapshot()) {
				if cp.Checkpoint != "" {
					t.Fatalf("failed update stored a checkpoint: %+v", cp)
				}
			}
		})
	}
}

func TestConsumerGroupCheckpointAfterRelease(t *testing.T) {
	h := newCGHarness(t, 2, false)
	h.join("a")
	h.beat("a")
	h.join("b")
	h.settle(3, 10)
	// a gave shard 1 to b: a's late unforced commit must be refused, which
	// the SDK answers by dropping the shard from its reports.
	if err := h.checkpoint("a", 1, "late", false); err == nil || err.Code != CodeConsumerNotMatch {
		t.Fatalf("got %v, want ConsumerNotMatch", err)
	}
}

func TestConsumerGroupCheckpoints(t *testing.T) {
	h := newCGHarness(t, 3, false)
	h.join("a")
	h.beat("a")
	at := h.now.Add(1500 * time.Microsecond)
	h.now = at
	if err := h.checkpoint("a", 1, "Y3Vyc29y", false); err != nil {
		t.Fatal(err)
	}
	h.crash("a")
	h.now = h.now.Add(time.Hour) // a expires; the checkpoint stays
	if err := h.checkpoint("tool", 2, "b3RoZXI=", true); err != nil {
		t.Fatal(err)
	}

	got := h.g.checkpoints(h.ls.snapshot())
	want := []CheckpointEntry{
		{Shard: 0, Consumer: ""},
		{Shard: 1, Checkpoint: "Y3Vyc29y", UpdateTime: at.UnixMicro(), Consumer: "a"},
		{Shard: 2, Checkpoint: "b3RoZXI=", UpdateTime: h.now.UnixMicro(), Consumer: "tool"},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
	b, err := json.Marshal(got[1])
	if err != nil {
		t.Fatal(err)
	}
	wantJSON := fmt.Sprintf(`{"shard":1,"checkpoint":"Y3Vyc29y","updateTime":%d,"consumer":"a"}`, at.UnixMicro())
	if string(b) != wantJSON {
		t.Fatalf("JSON %s, want %s", b, wantJSON)
	}
	// A live holder is reported as the shard's consumer.
	h.join("b")
	h.beat("b")
	for _, cp := range h.g.checkpoints(h.ls.snapshot()) {
		if cp.Consumer != "b" {
			t.Fatalf("shard %d consumer %q, want the holder b", cp.Shard, cp.Consumer)
		}
	}
	if got := h.g.checkpoints(nil); got == nil || len(got) != 0 {
		t.Fatalf("no shards: got %#v", got)
	}
}

func TestConsumerGroupStateSnapshot(t *testing.T) {
	h := newCGHarness(t, 3, true)
	h.join("b", "a")
	h.settle(3, 10)
	c1, _ := h.ls.split(2)
	st := h.state()
	if st.Name != "cg" || st.Timeout != cgTimeout || !st.InOrder {
		t.Fatalf("header %+v", st)
	}
	if len(st.Consumers) != 2 || st.Consumers[0].Name != "a" || st.Consumers[1].Name != "b" {
		t.Fatalf("consumers %+v", st.Consumers)
	}
	if len(st.Shards) != 5 || st.Shards[c1].Status != AssignmentWait || st.Shards[c1].Consumer != "" {
		t.Fatalf("shards %+v", st.Shards)
	}
	var total int
	for _, c := range st.Consumers {
		total += len(c.Shards)
		if !slices.IsSorted(c.Shards) {
			t.Fatalf("unsorted %v", c.Shards)
		}
	}
	if total != 3 {
		t.Fatalf("consumers hold %d shards, want 3", total)
	}
}

// TestConsumerGroupRandomized drives the group through random joins,
// crashes, restarts, late heartbeats, splits, merges and checkpoints, and
// checks after every step that no shard has two holders (server state and
// running workers) and that with InOrder no child is handed out before its
// parents are over; after each quiet period the group must be balanced.
func TestConsumerGroupRandomized(t *testing.T) {
	for seed := int64(1); seed <= 40; seed++ {
		inOrder := seed%2 == 0
		t.Run(fmt.Sprintf("seed=%d/order=%v", seed, inOrder), func(t *testing.T) {
			runRandomized(t, seed, inOrder, 300)
		})
	}
}

func runRandomized(t *testing.T, seed int64, inOrder bool, steps int) {
	rng := rand.New(rand.NewSource(seed))
	h := newCGHarness(t, 1+rng.Intn(4), inOrder)
	next := 0
	var crashed []string
	join := func() {
		h.join(fmt.Sprintf("c%02d", next))
		next++
	}
	join()
	lastBeat := make(map[string]time.Time)

	for step := 0; step < steps; step++ {
		switch r := rng.Intn(100); {
		case r < 8 && len(h.sims) < 6:
			join()
		case r < 12 && len(h.sims) > 1:
			n := h.names()[rng.Intn(len(h.sims))]
			h.crash(n)
			crashed = append(crashed, n)
		case r < 15 && len(crashed) > 0:
			// A crashed process restarts under its old name, fresh.
			i := rng.Intn(len(crashed))
			h.join(crashed[i])
			crashed = slices.Delete(crashed, i, i+1)
		case r < 20 && len(h.ls.shards) < 16:
			rw := h.ls.readwrite()
			h.ls.split(rw[rng.Intn(len(rw))])
		case r < 24 && len(h.ls.readwrite()) >= 2:
			rw := h.ls.readwrite()
			i := rng.Intn(len(rw) - 1)
			h.ls.merge(rw[i], rw[i+1])
		case r < 34:
			// A consumer reads a readonly shard it runs to the end and
			// commits it, forced like the SDK.
			for _, n := range h.names() {
				for _, id := range h.sims[n].held {
					if s := h.ls.get(id); s != nil && s.ReadOnly && rng.Intn(2) == 0 {
						if err := h.checkpoint(n, id, s.EndCursor, true); err != nil {
							t.Fatalf("commit end of %d: %v", id, err)
						}
					}
				}
			}
		case r < 40:
			// An unforced intermediate commit: fine for the holder only.
			if len(h.sims) == 0 || len(h.ls.shards) == 0 {
				break
			}
			n := h.names()[rng.Intn(len(h.sims))]
			id := h.ls.shards[rng.Intn(len(h.ls.shards))].ID
			holder := ""
			for _, a := range h.state().Shards {
				if a.Shard == id {
					holder = a.Consumer
				}
			}
			err := h.checkpoint(n, id, fmt.Sprintf("cp-%d", step), false)
			if (err == nil) != (holder == n) {
				t.Fatalf("unforced commit by %s on %d held by %q: %v", n, id, holder, err)
			}
		case r < 43:
			// Drop an over shard, as when its data expires.
			for _, a := range h.state().Shards {
				if a.Status == AssignmentOver {
					h.ls.remove(a.Shard)
					break
				}
			}
		default:
			// One heartbeat round in random order; a consumer may be late,
			// but never so late that it expires while running.
			names := h.names()
			rng.Shuffle(len(names), func(i, j int) { names[i], names[j] = names[j], names[i] })
			for _, n := range names {
				if last, ok := lastBeat[n]; ok && rng.Intn(5) == 0 && h.now.Add(cgInterval).Sub(last) <= cgTimeout {
					continue
				}
				h.beat(n)
				lastBeat[n] = h.now
			}
			h.now = h.now.Add(cgInterval)
		}
		if step%60 == 59 {
			// Quiet period: no changes, every consumer on time.
			h.settle(5, 30)
			h.checkBalanced()
		}
	}
	// Restarted names keep their old lastBeat entries; that only makes late
	// beats rarer. A final quiet period must balance the group too.
	h.settle(5, 30)
	h.checkBalanced()
}
