package slstest

import (
	"net/http"
	"slices"
	"sort"
	"time"
)

// This file holds the server side of SLS consumer groups: which consumer runs
// which shard, checkpoints, and the shard life cycle (wait / over) that
// ordered consumption across splits and merges depends on. It is pure logic:
// no HTTP, no goroutines, no clock. Time is passed in by the caller, which also
// serializes calls (one lock around the logstore); a consumerGroup is not safe
// for concurrent use on its own.
//
// The protocol it serves is the one the SDK's consumer library speaks
// (consumer/heart_beat.go, worker.go, checkpoint_tracker.go):
//
//   - A consumer heartbeats with the shards it still runs and learns from the
//     response which shards it owns. It keeps reporting a shard after the
//     response stopped listing it, until its worker for that shard has stopped
//     and flushed its checkpoint; only then does the shard leave its reports.
//   - So a shard moves between consumers in two steps: the server first drops
//     it from the holder's responses (status transfer), and hands it to another
//     consumer only after the holder sent a heartbeat that no longer lists it.
//     This is what keeps two consumers from running one shard at the same time.

// ShardAssignmentStatus is the consumer-group status of one shard, as SLS
// names it.
type ShardAssignmentStatus string

// The statuses a shard can have in a consumer group.
const (
	// AssignmentNotAlloc: the shard can be consumed and nobody holds it; the
	// next heartbeat of a consumer below its fair share takes it.
	AssignmentNotAlloc ShardAssignmentStatus = "not_alloc"
	// AssignmentAllocated: a consumer holds the shard and its heartbeat
	// responses list it.
	AssignmentAllocated ShardAssignmentStatus = "already_alloc"
	// AssignmentWait: the group consumes in order and one of the shard's
	// parents (the shards it was split or merged from) is not over yet.
	AssignmentWait ShardAssignmentStatus = "wait"
	// AssignmentTransfer: a consumer still holds the shard, but its heartbeat
	// responses no longer list it (rebalancing, or the shard has to wait for
	// its parents). It stays with that consumer until a heartbeat of the
	// consumer leaves it out.
	AssignmentTransfer ShardAssignmentStatus = "transfer"
	// AssignmentOver: the shard is readonly and its checkpoint reached its end
	// cursor. It is never assigned again.
	AssignmentOver ShardAssignmentStatus = "over"
)

// CheckpointEntry is one element of a GetCheckpoint response: the stored
// checkpoint of a shard in a consumer group.
type CheckpointEntry struct {
	// Shard is the shard id.
	Shard int `json:"shard"`
	// Checkpoint is the stored cursor, "" when none was ever stored (the SDK
	// then starts from its configured start position).
	Checkpoint string `json:"checkpoint"`
	// UpdateTime is when the checkpoint was last stored, in microseconds since
	// the Unix epoch (SLS documents seconds but answers with 16-digit
	// microsecond values); 0 when none was stored.
	UpdateTime int64 `json:"updateTime"`
	// Consumer is the consumer holding the shard now or, when nobody does,
	// the consumer named by the last checkpoint update ("" if none).
	Consumer string `json:"consumer"`
}

// ConsumerGroupState is a snapshot of a consumer group for tests and admin
// tools: who is alive, who holds what, and where every shard stands.
type ConsumerGroupState struct {
	// Name is the consumer group name.
	Name string
	// Timeout is how long a consumer stays alive without a heartbeat.
	Timeout time.Duration
	// InOrder is true when children of split / merged shards wait until all
	// their parents are over.
	InOrder bool
	// Consumers lists the live consumers, sorted by name.
	Consumers []ConsumerState
	// Shards lists every existing shard of the logstore, sorted by id.
	Shards []ShardAssignment
}

// ConsumerState describes one live consumer of a group.
type ConsumerState struct {
	// Name is the consumer name (the SDK's LogHubConfig.ConsumerName).
	Name string
	// LastHeartbeat is the server time of its last heartbeat. It expires once
	// the group's Timeout has passed since then.
	LastHeartbeat time.Time
	// Shards are the shards the server counts as held by this consumer,
	// ascending, including shards in transfer that it has not released yet.
	Shards []int
}

// ShardAssignment describes one shard of a consumer group.
type ShardAssignment struct {
	// Shard is the shard id.
	Shard int
	// Status is where the shard stands in the group.
	Status ShardAssignmentStatus
	// Consumer is the holder for AssignmentAllocated and AssignmentTransfer,
	// "" otherwise.
	Consumer string
	// Checkpoint is the stored checkpoint, "" when none.
	Checkpoint string
	// CheckpointTime is when the checkpoint was stored; zero when none.
	CheckpointTime time.Time
}

// cgShard is the logstore's view of one shard, passed in on every call: the
// shard set changes with splits and merges, and the group keeps no copy of it.
type cgShard struct {
	ID       int
	ReadOnly bool
	// EndCursor is the shard's end cursor; meaningful once ReadOnly: a
	// checkpoint equal to it makes the shard over.
	EndCursor string
	// Parents are the shards this one was split or merged from (empty for
	// original shards).
	Parents []int
}

// consumerGroup is the server-side state of one consumer group of a logstore.
// Name, Timeout and InOrder are read (and, through update, written) by the
// HTTP layer; everything else is private. The caller serializes all calls.
type consumerGroup struct {
	Name    string
	Timeout time.Duration
	InOrder bool

	consumers map[string]*cgConsumer
	shards    map[int]*cgShardState
}

// cgConsumer is a live consumer.
type cgConsumer struct {
	lastHeartbeat time.Time
}

// cgShardState is what the group remembers about one shard.
type cgShardState struct {
	holder   string // consumer holding the shard, "" when free
	transfer bool   // holder must release it: its responses no longer list it
	over     bool   // checkpoint reached the end of the readonly shard; latched

	checkpoint string
	cpTime     time.Time
	cpConsumer string // consumer named by the last checkpoint update
}

// cgView indexes the shard set passed in by the caller.
type cgView struct {
	byID map[int]cgShard
	ids  []int // ascending
}

func newCGView(shards []cgShard) cgView {
	v := cgView{byID: make(map[int]cgShard, len(shards))}
	for _, s := range shards {
		if _, dup := v.byID[s.ID]; !dup {
			v.ids = append(v.ids, s.ID)
		}
		v.byID[s.ID] = s
	}
	slices.Sort(v.ids)
	return v
}

// newConsumerGroup returns an empty group. timeout must be positive (the
// HTTP layer validates it): a consumer whose last heartbeat is more than
// timeout old has expired.
func newConsumerGroup(name string, timeout time.Duration, inOrder bool) *consumerGroup {
	return &consumerGroup{
		Name:      name,
		Timeout:   timeout,
		InOrder:   inOrder,
		consumers: make(map[string]*cgConsumer),
		shards:    make(map[int]*cgShardState),
	}
}

// update applies UpdateConsumerGroup. A timeout of 0 keeps the current one
// (the SDK omits the field then). Switching InOrder on takes effect at the
// next heartbeat: held children whose parents are not over go to transfer.
func (g *consumerGroup) update(timeout time.Duration, inOrder bool) {
	if timeout > 0 {
		g.Timeout = timeout
	}
	g.InOrder = inOrder
}

// heartbeat records that consumer is alive and still runs the shards in held,
// and returns the shards assigned to it: sorted ascending, never nil.
//
// In order: consumers silent for longer than Timeout (the caller included)
// expire and free their shards; shards the consumer holds but left out of
// held are released; shards it lists without holding them are ignored
// (stale); the group is rebalanced so that live consumers' counts differ by
// at most one; finally free assignable shards are given to the caller up to
// its fair share. The response leaves out shards in transfer, waiting and
// over shards.
func (g *consumerGroup) heartbeat(consumer string, held []int, shards []cgShard, now time.Time) []int {
	v := newCGView(shards)
	g.sync(v)
	g.expire(now)

	c, ok := g.consumers[consumer]
	if !ok {
		c = &cgConsumer{}
		g.consumers[consumer] = c
	}
	c.lastHeartbeat = now

	g.release(consumer, held, v)
	targets, kept := g.rebalance(v)
	g.assign(consumer, targets[consumer]-kept[consumer], v)

	assigned := []int{}
	for _, id := range v.ids {
		if st := g.shards[id]; st.holder == consumer && !st.transfer {
			assigned = append(assigned, id)
		}
	}
	return assigned
}

// release frees the shards consumer holds but no longer reports: its worker
// for them has stopped. Reported shards it does not hold are ignored.
func (g *consumerGroup) release(consumer string, held []int, v cgView) {
	reported := make(map[int]bool, len(held))
	for _, id := range held {
		reported[id] = true
	}
	for _, id := range v.ids {
		if st := g.shards[id]; st.holder == consumer && !reported[id] {
			st.holder, st.transfer = "", false
		}
	}
}

// assign gives consumer up to n free assignable shards, lowest ids first.
func (g *consumerGroup) assign(consumer string, n int, v cgView) {
	for _, id := range v.ids {
		if n <= 0 {
			return
		}
		if st := g.shards[id]; st.holder == "" && g.assignable(id, v) {
			st.holder, st.transfer = consumer, false
			n--
		}
	}
}

// updateCheckpoint stores checkpoint for shard, naming consumer as its
// author. It fails with ShardNotExsit when the shard does not exist. Unless
// force is set, consumer must be alive (else ConsumerNotExsit) and hold the
// shard, also while the shard is in transfer (else ConsumerNotMatch). The
// SDK's consumer library always sets force. A checkpoint equal to the end
// cursor of a readonly shard makes the shard over for good.
func (g *consumerGroup) updateCheckpoint(consumer string, shard int, checkpoint string, force bool, shards []cgShard, now time.Time) *Error {
	v := newCGView(shards)
	g.sync(v)
	g.expire(now)

	st, ok := g.shards[shard]
	if !ok {
		return errorf(http.StatusNotFound, CodeShardNotExistCG, "shard %d does not exist", shard)
	}
	if !force {
		if _, alive := g.consumers[consumer]; !alive {
			return errorf(http.StatusNotFound, CodeConsumerNotExist, "consumer %q does not exist in consumer group %q", consumer, g.Name)
		}
		if st.holder != consumer {
			return errorf(http.StatusBadRequest, CodeConsumerNotMatch, "consumer %q does not hold shard %d", consumer, shard)
		}
	}
	st.checkpoint, st.cpTime = checkpoint, now
	if consumer != "" {
		st.cpConsumer = consumer
	}
	g.markOver(st, v.byID[shard])
	return nil
}

// checkpoints returns one entry per existing shard, sorted by shard id, in
// the wire shape of GetCheckpoint. It changes nothing.
func (g *consumerGroup) checkpoints(shards []cgShard) []CheckpointEntry {
	v := newCGView(shards)
	out := make([]CheckpointEntry, 0, len(v.ids))
	for _, id := range v.ids {
		e := CheckpointEntry{Shard: id}
		if st, ok := g.shards[id]; ok {
			e.Checkpoint = st.checkpoint
			if !st.cpTime.IsZero() {
				e.UpdateTime = st.cpTime.UnixMicro()
			}
			e.Consumer = st.holder
			if e.Consumer == "" {
				e.Consumer = st.cpConsumer
			}
		}
		out = append(out, e)
	}
	return out
}

// state expires silent consumers and returns a snapshot of the group. It
// applies the same bookkeeping a heartbeat starts with (expiry, vanished
// shards, rebalancing marks), so the snapshot shows what the next heartbeats
// will be told; it assigns nothing.
func (g *consumerGroup) state(shards []cgShard, now time.Time) ConsumerGroupState {
	v := newCGView(shards)
	g.sync(v)
	g.expire(now)
	g.rebalance(v)

	s := ConsumerGroupState{Name: g.Name, Timeout: g.Timeout, InOrder: g.InOrder}
	held := make(map[string][]int)
	for _, id := range v.ids {
		st := g.shards[id]
		a := ShardAssignment{Shard: id, Checkpoint: st.checkpoint, CheckpointTime: st.cpTime, Consumer: st.holder}
		switch {
		case st.over:
			a.Status = AssignmentOver
		case st.holder != "" && st.transfer:
			a.Status = AssignmentTransfer
		case st.holder != "":
			a.Status = AssignmentAllocated
		case !g.assignable(id, v):
			a.Status = AssignmentWait
		default:
			a.Status = AssignmentNotAlloc
		}
		if st.holder != "" {
			held[st.holder] = append(held[st.holder], id)
		}
		s.Shards = append(s.Shards, a)
	}
	for _, name := range g.consumerNames() {
		ids := held[name]
		if ids == nil {
			ids = []int{}
		}
		s.Consumers = append(s.Consumers, ConsumerState{Name: name, LastHeartbeat: g.consumers[name].lastHeartbeat, Shards: ids})
	}
	return s
}

// sync aligns the shard states with the logstore's shard set: state of
// vanished shards is dropped, new shards start free, and readonly shards whose
// checkpoint already equals their end cursor become over.
func (g *consumerGroup) sync(v cgView) {
	for id := range g.shards {
		if _, ok := v.byID[id]; !ok {
			delete(g.shards, id)
		}
	}
	for _, id := range v.ids {
		st, ok := g.shards[id]
		if !ok {
			st = &cgShardState{}
			g.shards[id] = st
		}
		g.markOver(st, v.byID[id])
	}
}

// markOver latches over once the checkpoint of a readonly shard reaches its
// end cursor. An over shard has nothing left to read: it is freed at once, as
// nobody will ever be given it again.
func (g *consumerGroup) markOver(st *cgShardState, s cgShard) {
	if !st.over && s.ReadOnly && s.EndCursor != "" && st.checkpoint == s.EndCursor {
		st.over = true
	}
	if st.over {
		st.holder, st.transfer = "", false
	}
}

// expire removes consumers whose last heartbeat is more than Timeout before
// now; their shards become free immediately.
func (g *consumerGroup) expire(now time.Time) {
	for name, c := range g.consumers {
		if now.Sub(c.lastHeartbeat) > g.Timeout {
			delete(g.consumers, name)
		}
	}
	for _, st := range g.shards {
		if st.holder != "" && g.consumers[st.holder] == nil {
			st.holder, st.transfer = "", false
		}
	}
}

// assignable reports whether shard id may be consumed now: it exists, is not
// over and, when the group consumes in order, all its parents are over
// (parents that no longer exist count as over).
func (g *consumerGroup) assignable(id int, v cgView) bool {
	st, ok := g.shards[id]
	if !ok || st.over {
		return false
	}
	if !g.InOrder {
		return true
	}
	for _, p := range v.byID[id].Parents {
		if ps, exists := g.shards[p]; exists && !ps.over {
			return false
		}
	}
	return true
}

// rebalance computes every live consumer's fair share of the assignable
// shards and moves the transfer marks to match; it returns the shares and how
// many assignable shards each consumer keeps (holds without a transfer mark).
//
// With n assignable shards and m consumers everyone gets n/m, and the n%m
// consumers holding the most shards (marked ones included, as they are the
// holder's until released; ties: name order) get one more: the fewest shards
// move, and an idle group settles and stays put. A consumer above its share
// has its highest-numbered kept shards marked for transfer; one below its
// share gets its own marked shards back (lowest first) before any free shard.
// Held shards that must wait for their parents are marked too. Marked shards
// stay with their holder until its heartbeat leaves them out.
//
// Marks do not change what a consumer holds, so the order and the shares do
// not depend on earlier marks: calling rebalance again without other changes
// changes nothing.
func (g *consumerGroup) rebalance(v cgView) (targets, kept map[string]int) {
	keep := make(map[string][]int)
	marked := make(map[string][]int)
	n := 0
	for _, id := range v.ids {
		st := g.shards[id]
		ok := g.assignable(id, v)
		if ok {
			n++
		}
		switch {
		case st.holder == "":
		case !ok:
			st.transfer = true
		case st.transfer:
			marked[st.holder] = append(marked[st.holder], id)
		default:
			keep[st.holder] = append(keep[st.holder], id)
		}
	}

	order := g.consumerNames()
	targets = make(map[string]int, len(order))
	kept = make(map[string]int, len(order))
	if len(order) == 0 {
		return targets, kept
	}
	holds := func(name string) int { return len(keep[name]) + len(marked[name]) }
	sort.SliceStable(order, func(i, j int) bool { return holds(order[i]) > holds(order[j]) })
	for i, name := range order {
		t := n / len(order)
		if i < n%len(order) {
			t++
		}
		targets[name] = t
		k, m := keep[name], marked[name]
		for len(k) > t {
			g.shards[k[len(k)-1]].transfer = true
			k = k[:len(k)-1]
		}
		for len(k) < t && len(m) > 0 {
			g.shards[m[0]].transfer = false
			k, m = append(k, m[0]), m[1:]
		}
		kept[name] = len(k)
	}
	return targets, kept
}

// consumerNames returns the live consumers in name order.
func (g *consumerGroup) consumerNames() []string {
	names := make([]string, 0, len(g.consumers))
	for name := range g.consumers {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}
