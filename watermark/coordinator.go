package watermark

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// GroupView is what a Coordinator tells a member about the rest of its
// alignment group.
type GroupView struct {
	// Min is the lowest watermark reported by the other members that hold
	// the group. Meaningful only when Constrained.
	Min time.Time
	// Constrained is false when no other member holds the group: there is
	// none, or every other member reported no watermark (idle, pending or
	// finished), left or expired.
	Constrained bool
	// Members is the number of other members holding the group.
	Members int
	// Unanchored is the number of other members that are pending without an
	// anchor (the group had no watermark when they joined). The first holding
	// report anchors them; until the reporting member has made one, it does
	// not know where they will hold, and its shards with a watermark wait.
	Unanchored int
	// TTL is how long the view may be used without a newer successful
	// report: after it, the other members would have expired this member, so
	// it stops counting them too (symmetric expiry). Zero: no limit.
	TTL time.Duration
}

// MemberState says how a member's report counts in its group.
type MemberState int

const (
	// MemberHolding members hold the group at the reported watermark.
	MemberHolding MemberState = iota
	// MemberPending members have shards but no watermark yet: they just
	// started or restarted. The coordinator anchors a pending member at the
	// group minimum when it first reports pending, or, when the group has no
	// watermark yet, at the first watermark another member reports, and
	// counts it at that anchor until it reports another state. So a member
	// that is starting neither lets the others run ahead of where it joined
	// nor holds them behind that point; it holds at most until its shards
	// emit or turn idle (Strategy.IdleTimeout), when it reports another
	// state.
	MemberPending
	// MemberReleased members hold nothing: all their shards are idle or
	// finished, or they have none. They stay members without counting.
	MemberReleased
)

// String returns the state's name ("holding", "pending", "released").
func (s MemberState) String() string {
	switch s {
	case MemberHolding:
		return "holding"
	case MemberPending:
		return "pending"
	case MemberReleased:
		return "released"
	}
	return fmt.Sprintf("MemberState(%d)", int(s))
}

// Coordinator aggregates the watermarks that the members of alignment groups
// report. Implementations must be safe for concurrent use.
type Coordinator interface {
	// Report records member's state in group, replacing what the member
	// reported before, and returns the view of the group's other members, in
	// one step. wm is the member's watermark for MemberHolding and ignored
	// otherwise. A member unknown to the group joins it. The view counts
	// holding members at their watermark and pending members at their anchor
	// (see MemberPending).
	Report(ctx context.Context, group, member string, state MemberState, wm time.Time) (GroupView, error)

	// Leave removes member from group. Leaving a group one is not in is not
	// an error.
	Leave(ctx context.Context, group, member string) error
}

// Notifier is implemented by coordinators that can tell members at once that
// a group's watermarks changed. An Aligner whose coordinator is a Notifier
// reports every change of its own watermark immediately and re-reads the
// group when notified; with any other coordinator it reports every
// UpdateInterval (and reads the group in the same round trip).
type Notifier interface {
	// Changed returns a channel that is closed at the next change of any
	// member's report in group.
	Changed(group string) <-chan struct{}
}

// InProcessCoordinator is a Coordinator for members in one process: several
// trackers (for example two Subscribers whose streams are joined) share a
// group through it. Reports take a mutex and a pass over the group's members;
// changes are signalled to the other members at once (it is a Notifier), so a
// blocked shard resumes as soon as the group minimum moves. Members do not
// expire: an Aligner leaves its group on Close. The zero value is not usable;
// call NewInProcessCoordinator.
type InProcessCoordinator struct {
	mu     sync.Mutex
	groups map[string]*ipGroup
}

type ipGroup struct {
	members map[string]*ipMember
	changed chan struct{}
}

type ipMember struct {
	state  MemberState
	wm     int64 // for MemberHolding
	anchor int64 // for MemberPending: none until anchored
}

// counts returns the value m holds the group at, or unconstrained.
func (m *ipMember) counts() int64 {
	switch {
	case m.state == MemberHolding:
		return m.wm
	case m.state == MemberPending && m.anchor != none:
		return m.anchor
	}
	return unconstrained
}

// NewInProcessCoordinator returns a coordinator with no groups.
func NewInProcessCoordinator() *InProcessCoordinator {
	return &InProcessCoordinator{groups: map[string]*ipGroup{}}
}

func (c *InProcessCoordinator) group(name string) *ipGroup {
	g := c.groups[name]
	if g == nil {
		g = &ipGroup{members: map[string]*ipMember{}, changed: make(chan struct{})}
		c.groups[name] = g
	}
	return g
}

func (g *ipGroup) signal() {
	close(g.changed)
	g.changed = make(chan struct{})
}

// Report implements Coordinator. It never fails (ctx is not consulted).
func (c *InProcessCoordinator) Report(_ context.Context, group, member string, state MemberState, wm time.Time) (GroupView, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reportLocked(group, member, state, wm), nil
}

// reportWatch is Report that also returns the group's change channel as it
// is after the report (the Aligner's ownWatcher): a member that watches it
// is woken by the others' changes, not by its own.
func (c *InProcessCoordinator) reportWatch(_ context.Context, group, member string, state MemberState, wm time.Time) (GroupView, <-chan struct{}, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	view := c.reportLocked(group, member, state, wm)
	return view, c.groups[group].changed, nil
}

// reportLocked is Report with c.mu held.
func (c *InProcessCoordinator) reportLocked(group, member string, state MemberState, wm time.Time) GroupView {
	g := c.group(group)
	lowest := int64(unconstrained) // over the others
	for name, o := range g.members {
		if name != member {
			lowest = min(lowest, o.counts())
		}
	}
	m := g.members[member]
	if m == nil {
		m = &ipMember{anchor: none}
		g.members[member] = m
	}
	before := *m
	m.state, m.wm = state, 0
	switch state {
	case MemberHolding:
		m.wm, m.anchor = wm.UnixNano(), none
		for name, o := range g.members { // the group's first watermark anchors waiting members
			if name != member && o.state == MemberPending && o.anchor == none {
				o.anchor = m.wm
				lowest = min(lowest, o.anchor)
				g.signal()
			}
		}
	case MemberPending:
		if m.anchor == none && lowest != unconstrained {
			m.anchor = lowest
		}
	default:
		m.anchor = none
	}
	if *m != before {
		g.signal()
	}
	view := GroupView{}
	for name, o := range g.members {
		switch {
		case name == member:
		case o.counts() != unconstrained:
			view.Members++
		case o.state == MemberPending:
			view.Unanchored++
		}
	}
	if lowest != unconstrained {
		view.Min, view.Constrained = time.Unix(0, lowest), true
	}
	return view
}

// Leave implements Coordinator.
func (c *InProcessCoordinator) Leave(_ context.Context, group, member string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	g := c.groups[group]
	if g == nil {
		return nil
	}
	if _, ok := g.members[member]; ok {
		delete(g.members, member)
		g.signal()
	}
	if len(g.members) == 0 {
		delete(c.groups, group) // its channel was closed: watchers re-read the group
	}
	return nil
}

// Changed implements Notifier.
func (c *InProcessCoordinator) Changed(group string) <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.group(group).changed
}
