package slspubsub

import "sync"

// ackTracker computes a shard's committed position from out-of-order acks.
//
// Groups are added in cursor order as they are fetched; the committed cursor
// is the cursor of the first tracked group that still has a log not acked,
// or, when every tracked group is fully acked, the cursor after the last
// fetch. A restart from it redelivers at most the acked logs of that one
// group. It is safe for concurrent use.
type ackTracker struct {
	mu     sync.Mutex
	groups []trackedGroup // groups[head:] are tracked, in cursor order
	head   int
	next   int64 // where the next fetch starts
}

type trackedGroup struct {
	cursor  int64
	pending int    // logs not yet acked
	acked   []bool // per log index
}

func newAckTracker(start int64) *ackTracker { return &ackTracker{next: start} }

// add tracks a fetched group of logs logs whose first preAcked logs count as
// acked already (skipped on resume from a PositionStore).
func (t *ackTracker) add(cursor int64, logs, preAcked int) {
	preAcked = min(preAcked, logs)
	g := trackedGroup{cursor: cursor, pending: logs - preAcked, acked: make([]bool, logs)}
	for i := range preAcked {
		g.acked[i] = true
	}
	t.mu.Lock()
	t.groups = append(t.groups, g)
	t.mu.Unlock()
}

// fetched records where the next fetch starts (the last answer's next
// cursor).
func (t *ackTracker) fetched(next int64) {
	t.mu.Lock()
	t.next = next
	t.mu.Unlock()
}

// ack marks log index of the group at cursor acked. Acking twice, or a log
// no longer tracked, is a no-op.
func (t *ackTracker) ack(cursor int64, index int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	live := t.groups[t.head:]
	if len(live) == 0 {
		return
	}
	// Cursors of one shard grow by one per group, so the offset is direct;
	// fall back to a scan should they ever not.
	i := int(cursor - live[0].cursor)
	if i < 0 || i >= len(live) || live[i].cursor != cursor {
		i = -1
		for j := range live {
			if live[j].cursor == cursor {
				i = j
				break
			}
		}
		if i < 0 {
			return
		}
	}
	g := &live[i]
	if index < 0 || index >= len(g.acked) || g.acked[index] {
		return
	}
	g.acked[index] = true
	g.pending--
}

// committed returns the committed cursor value: the first group with a log
// not acked, else the next fetch cursor. It drops fully acked groups.
func (t *ackTracker) committed() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	for t.head < len(t.groups) && t.groups[t.head].pending == 0 {
		t.groups[t.head] = trackedGroup{}
		t.head++
	}
	if t.head == len(t.groups) {
		t.groups, t.head = t.groups[:0], 0
		return t.next
	}
	if t.head > len(t.groups)/2 && t.head > 64 { // compact
		n := copy(t.groups, t.groups[t.head:])
		clear(t.groups[n:])
		t.groups, t.head = t.groups[:n], 0
	}
	return t.groups[t.head].cursor
}

// drained reports whether every tracked log is acked.
func (t *ackTracker) drained() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, g := range t.groups[t.head:] {
		if g.pending > 0 {
			return false
		}
	}
	return true
}
