package watermark

import (
	"context"
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
	// TTL is how long the view may be used without a newer successful
	// report: after it, the other members would have expired this member, so
	// it stops counting them too (symmetric expiry). Zero: no limit.
	TTL time.Duration
}

// Coordinator aggregates the watermarks that the members of alignment groups
// report. Implementations must be safe for concurrent use.
type Coordinator interface {
	// Report records member's watermark in group, replacing what the member
	// reported before, and returns the view of the group's other members,
	// in one step. holds is false when the member has no watermark to hold
	// the group with (all its shards idle, pending or finished): it then
	// stays a member but does not count in the minimum. A member unknown to
	// the group joins it.
	Report(ctx context.Context, group, member string, wm time.Time, holds bool) (GroupView, error)

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
	members map[string]int64 // member -> watermark, or unconstrained
	changed chan struct{}
}

// NewInProcessCoordinator returns a coordinator with no groups.
func NewInProcessCoordinator() *InProcessCoordinator {
	return &InProcessCoordinator{groups: map[string]*ipGroup{}}
}

func (c *InProcessCoordinator) group(name string) *ipGroup {
	g := c.groups[name]
	if g == nil {
		g = &ipGroup{members: map[string]int64{}, changed: make(chan struct{})}
		c.groups[name] = g
	}
	return g
}

func (g *ipGroup) signal() {
	close(g.changed)
	g.changed = make(chan struct{})
}

// Report implements Coordinator. It never fails (ctx is not consulted).
func (c *InProcessCoordinator) Report(_ context.Context, group, member string, wm time.Time, holds bool) (GroupView, error) {
	v := int64(unconstrained)
	if holds {
		v = wm.UnixNano()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	g := c.group(group)
	if old, ok := g.members[member]; !ok || old != v {
		g.members[member] = v
		g.signal()
	}
	view := GroupView{}
	lowest := int64(unconstrained)
	for m, w := range g.members {
		if m == member || w == unconstrained {
			continue
		}
		view.Members++
		lowest = min(lowest, w)
	}
	if lowest != unconstrained {
		view.Min, view.Constrained = time.Unix(0, lowest), true
	}
	return view, nil
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
