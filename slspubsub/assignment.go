package slspubsub

import (
	"encoding/hex"
	"errors"
	"fmt"
	"math/bits"
	"slices"
	"strings"
	"time"

	sls "github.com/aliyun/aliyun-log-go-sdk"
)

// Assignment says which shards of a logstore a Subscriber reads.
type Assignment int

const (
	// AssignAuto is the default: AssignConsumerGroup when a ConsumerGroup is
	// configured, else AssignAllShards.
	AssignAuto Assignment = iota
	// AssignAllShards reads every shard in this process.
	AssignAllShards
	// AssignConsumerGroup lets SLS assign shards to the live consumers of
	// the ConsumerGroup (by heartbeat): run more processes with the same
	// group to scale out. Requires ConsumerGroup.
	AssignConsumerGroup
	// AssignStatic splits the shards among StaticInstances processes with a
	// ShardAssigner; this process is StaticIndex. Every process must use the
	// same count and assigner. Requires a ConsumerGroup or a
	// PositionStore: their checkpoints or positions tell each process when
	// a parent shard read by another is finished.
	AssignStatic
)

func (a Assignment) String() string {
	switch a {
	case AssignAuto:
		return "AssignAuto"
	case AssignAllShards:
		return "AssignAllShards"
	case AssignConsumerGroup:
		return "AssignConsumerGroup"
	case AssignStatic:
		return "AssignStatic"
	}
	return fmt.Sprintf("Assignment(%d)", int(a))
}

// ShardInfo describes a shard as ListShards reports it.
type ShardInfo struct {
	// ID is the shard id. SLS numbers shards in creation order: a shard
	// made by a split or merge has a larger id than its parents.
	ID int
	// ReadOnly is true for a shard that was split or merged: it takes no
	// more writes and ends once read to its end.
	ReadOnly bool
	// BeginKey and EndKey bound the shard's hash range [BeginKey, EndKey),
	// as 32 lower-case hex digits of an md5 hash.
	BeginKey, EndKey string
	// CreateTime is when the shard was created (whole seconds).
	CreateTime time.Time
}

func shardInfoFrom(s sls.Shard) ShardInfo {
	return ShardInfo{
		ID:         s.ShardID,
		ReadOnly:   strings.EqualFold(s.Status, "readonly"),
		BeginKey:   strings.ToLower(s.InclusiveBeginKey),
		EndKey:     strings.ToLower(s.ExclusiveBeginKey),
		CreateTime: time.Unix(int64(s.CreateTime), 0),
	}
}

// overlaps reports whether the hash ranges of s and o intersect. Keys of
// equal length in lower-case hex compare like the numbers they spell.
func (s ShardInfo) overlaps(o ShardInfo) bool {
	return s.BeginKey < o.EndKey && o.BeginKey < s.EndKey
}

// contains reports whether key is in s's hash range.
func (s ShardInfo) contains(key string) bool { return s.BeginKey <= key && key < s.EndKey }

// midpoint returns the middle key of s's hash range, as 32 hex digits.
func (s ShardInfo) midpoint() (string, error) {
	bh, bl, err := parseHashKey(s.BeginKey)
	if err != nil {
		return "", fmt.Errorf("shard %d: begin key: %w", s.ID, err)
	}
	eh, el, err := parseHashKey(s.EndKey)
	if err != nil {
		return "", fmt.Errorf("shard %d: end key: %w", s.ID, err)
	}
	// (b + e) / 2 in 129 bits.
	lo, carry := bits.Add64(bl, el, 0)
	hi, top := bits.Add64(bh, eh, carry)
	lo = lo>>1 | hi<<63
	hi = hi>>1 | top<<63
	return fmt.Sprintf("%016x%016x", hi, lo), nil
}

func parseHashKey(k string) (hi, lo uint64, err error) {
	if len(k) != 32 {
		return 0, 0, fmt.Errorf("hash key %q is not 32 hex digits", k)
	}
	var b [16]byte
	if _, err := hex.Decode(b[:], []byte(k)); err != nil {
		return 0, 0, fmt.Errorf("hash key %q: %w", k, err)
	}
	for i := range 8 {
		hi = hi<<8 | uint64(b[i])
		lo = lo<<8 | uint64(b[8+i])
	}
	return hi, lo, nil
}

// parentsOf returns the shards that must be read to their end before s
// starts (the parent-first rule): every readonly shard created before s
// (smaller id) whose hash range overlaps s's. Grandparents are included,
// which changes nothing: a parent is finished only after its own parents.
func parentsOf(s ShardInfo, layout []ShardInfo) []int {
	var ps []int
	for _, p := range layout {
		if p.ReadOnly && p.ID < s.ID && p.overlaps(s) {
			ps = append(ps, p.ID)
		}
	}
	return ps
}

// ShardAssigner decides which shards each of several static instances
// reads (Assignment AssignStatic).
type ShardAssigner interface {
	// Assign returns the ids of the shards instance index (0 to
	// instances-1) reads. shards is every shard of the logstore, readonly
	// ones included, sorted by id; every instance passes the same list and
	// the answers must be disjoint and cover every shard. It is called
	// again whenever the shard list changes.
	Assign(shards []ShardInfo, instances, index int) ([]int, error)
}

// ConsistentAssigner gives each shard to the instance that owns the
// midpoint of its hash range, the hash space being cut into equal parts,
// one per instance. A shard created by a split or merge goes to the owner
// of the parent whose range holds its midpoint, as long as that parent is
// listed: both children of a split land with their parent's reader, which
// then reads them after the parent without waiting for another process.
// Once the parents expire from the list, shards follow their own midpoints.
type ConsistentAssigner struct{}

// Assign implements ShardAssigner.
func (ConsistentAssigner) Assign(shards []ShardInfo, instances, index int) ([]int, error) {
	owner := make(map[int]int, len(shards))
	var out []int
	for _, s := range shards { // by id: parents before children
		mid, err := s.midpoint()
		if err != nil {
			return nil, err
		}
		o := -1
		for _, p := range shards {
			if p.ID < s.ID && p.ReadOnly && p.contains(mid) {
				o = owner[p.ID] // the youngest such parent wins
			}
		}
		if o < 0 {
			hi, _, _ := parseHashKey(mid)
			top, _ := bits.Mul64(hi, uint64(instances))
			o = int(top)
		}
		owner[s.ID] = o
		if o == index {
			out = append(out, s.ID)
		}
	}
	return out, nil
}

// RoundRobinAssigner gives the i-th shard by id to instance i mod
// instances. Children of a split usually land elsewhere than their parent
// and wait for its reader to finish it.
type RoundRobinAssigner struct{}

// Assign implements ShardAssigner.
func (RoundRobinAssigner) Assign(shards []ShardInfo, instances, index int) ([]int, error) {
	var out []int
	for i, s := range shards {
		if i%instances == index {
			out = append(out, s.ID)
		}
	}
	return out, nil
}

// validateAssignment checks the assignment fields of a SubscriberConfig.
func (c SubscriberConfig) validateAssignment() []error {
	var errs []error
	switch c.Assignment {
	case AssignAuto, AssignAllShards:
	case AssignConsumerGroup:
		if c.ConsumerGroup == "" {
			errs = append(errs, errors.New("Assignment: AssignConsumerGroup requires ConsumerGroup"))
		}
	case AssignStatic:
		if c.ConsumerGroup == "" && c.PositionStore == nil {
			errs = append(errs, errors.New("Assignment: AssignStatic requires ConsumerGroup or PositionStore "+
				"(how an instance learns that a parent shard read by another is finished)"))
		}
		if c.StaticInstances < 1 {
			errs = append(errs, fmt.Errorf("StaticInstances: %d is not positive (AssignStatic)", c.StaticInstances))
		} else if c.StaticIndex < 0 || c.StaticIndex >= c.StaticInstances {
			errs = append(errs, fmt.Errorf("StaticIndex: %d is not from 0 to StaticInstances-1 (%d)", c.StaticIndex, c.StaticInstances-1))
		}
	default:
		errs = append(errs, fmt.Errorf("Assignment: %v is not a known mode", c.Assignment))
	}
	if c.Assignment != AssignStatic && (c.StaticInstances != 0 || c.StaticIndex != 0) {
		errs = append(errs, errors.New("StaticInstances, StaticIndex: set without Assignment AssignStatic"))
	}
	if c.HeartbeatInterval < 0 {
		errs = append(errs, fmt.Errorf("HeartbeatInterval: %v is negative", c.HeartbeatInterval))
	}
	if c.HeartbeatTimeout < 0 {
		errs = append(errs, fmt.Errorf("HeartbeatTimeout: %v is negative", c.HeartbeatTimeout))
	}
	if c.HeartbeatInterval > 0 && c.HeartbeatTimeout > 0 && c.HeartbeatTimeout < 3*c.HeartbeatInterval {
		errs = append(errs, fmt.Errorf("HeartbeatTimeout: %v is less than 3 x HeartbeatInterval %v", c.HeartbeatTimeout, c.HeartbeatInterval))
	}
	if c.HeartbeatTimeout > 0 && c.HeartbeatTimeout%time.Second != 0 {
		errs = append(errs, fmt.Errorf("HeartbeatTimeout: %v is not whole seconds (SLS keeps seconds)", c.HeartbeatTimeout))
	}
	if c.RediscoveryInterval < 0 {
		errs = append(errs, fmt.Errorf("RediscoveryInterval: %v is negative", c.RediscoveryInterval))
	}
	return errs
}

// mode resolves AssignAuto.
func (c SubscriberConfig) mode() Assignment {
	if c.Assignment != AssignAuto {
		return c.Assignment
	}
	if c.ConsumerGroup != "" {
		return AssignConsumerGroup
	}
	return AssignAllShards
}

// sortShards sorts by id.
func sortShards(s []ShardInfo) {
	slices.SortFunc(s, func(a, b ShardInfo) int { return a.ID - b.ID })
}
