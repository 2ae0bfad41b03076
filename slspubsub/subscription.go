package slspubsub

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	sls "github.com/aliyun/aliyun-log-go-sdk"

	"github.com/watermill-sls/watermill-sls/watermark"
)

// subscription is one Subscribe call. Its manager goroutine (run) decides
// which shards are read: it rediscovers the shard list, heartbeats to the
// consumer group or asks the static assigner, applies the parent-first rule,
// and starts and stops one worker per shard read. Workers end by themselves
// when a readonly shard is read to its end, at a stop position, when the
// shard is gone, or on an error; the manager reaps them.
type subscription struct {
	s       *Subscriber
	topic   string
	mode    Assignment
	bounded bool // a StopPosition: the shard set is fixed at Subscribe
	out     chan *message.Message
	events  chan struct{} // capacity 1: a worker ended, or rediscover now
	// observer, when set, sees each message before it goes to out
	// (SubscribeObserved); set before the workers start.
	observer DeliveryObserver

	mu      sync.Mutex // guards layout and workers (read by workers and the commit loop)
	layout  []ShardInfo
	workers map[int]*shardWorker

	// Owned by the manager goroutine.
	finished     map[int]bool   // readonly shards read to their end
	stopped      map[int]bool   // shards that reached the stop position, or stopped on an error
	failures     int            // shards stopped on an error
	ends         map[int]int64  // end cursors of readonly shards
	checkpoints  map[int]string // the consumer group's, as of the last rediscovery
	static       map[int]bool   // AssignStatic: this instance's shards
	assigned     map[int]bool   // AssignConsumerGroup: the last heartbeat's answer
	lastBeat     time.Time      // last successful heartbeat
	beatFailures int
	groupTimeout time.Duration
	pending      map[int]*shardState // opened at Subscribe, started by run
	finals       map[int]time.Time   // final watermarks of shards finished here

	// wm is the watermark state; nil without WatermarkConfig.
	wm *subWatermark

	workersWG sync.WaitGroup
}

// shardWorker reads one shard: a fetch loop and a delivery loop.
type shardWorker struct {
	info     ShardInfo
	cancel   context.CancelFunc
	done     chan struct{}
	stopping bool // manager: asked to stop

	st atomic.Pointer[shardState] // once opened

	// wm is the shard's watermark state (set by start); nil without
	// WatermarkConfig.
	wm *shardWatermark

	// Set before done closes.
	final    time.Time // the shard's final watermark, when finished with one
	finished bool      // a readonly shard read to its end, its final checkpoint committed
	ended    bool      // reached the stop position
	gone     bool      // the shard no longer exists
	err      error     // stopped on this error
}

// shardState is what the loops of one shard share.
type shardState struct {
	id      int
	reader  *shardReader
	tracker *ackTracker

	commitMu  sync.Mutex
	committed int64 // last committed cursor value, -1 when none
}

func (s *Subscriber) newSubscription(ctx context.Context, topic string) (*subscription, error) {
	sub := &subscription{
		s: s, topic: topic, mode: s.cfg.mode(), bounded: s.cfg.StopPosition.Kind != StopNever,
		out: make(chan *message.Message), events: make(chan struct{}, 1),
		workers: map[int]*shardWorker{}, finished: map[int]bool{}, stopped: map[int]bool{},
		ends: map[int]int64{}, assigned: map[int]bool{}, pending: map[int]*shardState{},
		finals: map[int]time.Time{}, groupTimeout: s.cfg.HeartbeatTimeout,
	}
	if err := sub.discover(ctx); err != nil {
		return nil, err
	}
	if s.cfg.ConsumerGroup != "" {
		if err := sub.ensureGroup(ctx); err != nil {
			return nil, err
		}
		if err := sub.refreshCheckpoints(ctx); err != nil {
			return nil, err
		}
	}
	if sub.mode == AssignConsumerGroup {
		// A refusal (a missing permission) fails Subscribe; a passing
		// failure is retried by the heartbeat loop.
		if err := sub.heartbeat(ctx); err != nil {
			if !IsRetryable(err) || ctx.Err() != nil {
				return nil, err
			}
			sub.logBeatFailure(err)
		}
	}
	// The shards startable now are opened here, so that an unreadable
	// start position fails Subscribe; the checkpoints were just read.
	for _, info := range sub.startable(ctx) {
		st, err := sub.openShard(ctx, info, sub.checkpoints)
		if err != nil {
			return nil, err
		}
		sub.pending[info.ID] = st
	}
	if err := sub.initWatermark(); err != nil {
		return nil, err
	}
	return sub, nil
}

// initWatermark creates the subscription's Tracker with the shards it starts
// with and, with alignment, joins the alignment group.
func (sub *subscription) initWatermark() error {
	s := sub.s
	if s.cfg.Watermark == nil {
		return nil
	}
	w, err := newSubWatermark(s.cfg.Watermark)
	if err != nil {
		return fmt.Errorf("slspubsub: watermark of %s: %w", sub.topic, err)
	}
	for id := range sub.pending {
		if _, err := w.tracker.AddShard(id, time.Time{}); err != nil {
			return fmt.Errorf("slspubsub: watermark of %s: %w", sub.topic, err)
		}
	}
	if a := s.cfg.Watermark.Alignment; a != nil {
		member := s.memberName(a, sub.topic)
		if err := w.align(a, member, s.logger); err != nil {
			s.releaseMember(member)
			return fmt.Errorf("slspubsub: watermark alignment of %s: %w", sub.topic, err)
		}
	}
	sub.wm = w
	return nil
}

// closeWatermark leaves the alignment group; the subscription's workers
// have ended.
func (sub *subscription) closeWatermark() {
	if sub.wm == nil || sub.wm.aligner == nil {
		return
	}
	if err := sub.wm.aligner.Close(); err != nil {
		sub.s.fail("Watermark alignment group could not be left; other members count this one until it expires", err,
			watermill.LogFields{"logstore": sub.topic, "member": sub.wm.member})
	}
	sub.s.releaseMember(sub.wm.member)
}

// addWatermarkShard adds shard info to the tracker when its reading
// starts: a child at its parents' final watermark (the lowest), when every
// parent was finished here with one; otherwise at the tracker's watermark.
func (sub *subscription) addWatermarkShard(info ShardInfo) *shardWatermark {
	if sub.wm == nil {
		return nil
	}
	tr := sub.wm.tracker
	if sh := tr.Shard(info.ID); sh != nil && sh.State() != watermark.ShardFinished {
		return &shardWatermark{w: sub.wm, sh: sh} // added at Subscribe
	}
	sub.mu.Lock()
	layout := slices.Clone(sub.layout)
	sub.mu.Unlock()
	var initial time.Time
	for _, p := range directParents(info, layout) {
		f, ok := sub.finals[p]
		if !ok {
			initial = time.Time{}
			break
		}
		if initial.IsZero() || f.Before(initial) {
			initial = f
		}
	}
	if tr.Shard(info.ID) != nil {
		_ = tr.RemoveShard(info.ID) // a finished shard read again cannot happen; be safe
	}
	sh, err := tr.AddShard(info.ID, initial)
	if err != nil {
		sub.s.logger.Error("Watermark: shard cannot be tracked", err, watermill.LogFields{"logstore": sub.topic, "shard": info.ID})
		return nil
	}
	return &shardWatermark{w: sub.wm, sh: sh}
}

// endWatermarkShard records the end of a shard's reading in the tracker:
// finished (read to its end), or removed.
func (sub *subscription) endWatermarkShard(w *shardWorker) {
	if w.wm == nil {
		return
	}
	tr := w.wm.w.tracker
	if w.finished {
		if final, ok, err := tr.FinishShard(w.info.ID); err == nil && ok {
			w.final = final
		}
		return
	}
	_ = tr.RemoveShard(w.info.ID) // only unknown if never added
}

// directParents is parentsOf without the ancestors of other parents (a
// readonly shard that overlaps a later parent is that parent's ancestor).
func directParents(sh ShardInfo, layout []ShardInfo) []int {
	ps := parentsOf(sh, layout)
	byID := map[int]ShardInfo{}
	for _, l := range layout {
		byID[l.ID] = l
	}
	var out []int
	for _, p := range ps {
		ancestor := false
		for _, q := range ps {
			if q > p && byID[q].overlaps(byID[p]) {
				ancestor = true
				break
			}
		}
		if !ancestor {
			out = append(out, p)
		}
	}
	return out
}

// ensureGroup creates the consumer group (in order) when missing, and
// reports an existing one that is not in order.
func (sub *subscription) ensureGroup(ctx context.Context) error {
	s := sub.s
	timeout := int(s.cfg.HeartbeatTimeout / time.Second)
	g := sls.ConsumerGroup{ConsumerGroupName: s.cfg.ConsumerGroup, Timeout: timeout, InOrder: true}
	err := s.api.createConsumerGroup(ctx, sub.topic, g)
	var se *Error
	if err == nil || !errors.As(err, &se) || se.Code != CodeConsumerGroupAlreadyExist {
		return err
	}
	groups, err := s.api.listConsumerGroups(ctx, sub.topic)
	if err != nil {
		return err
	}
	for _, eg := range groups {
		if eg.ConsumerGroupName != s.cfg.ConsumerGroup {
			continue
		}
		if !eg.InOrder {
			s.logger.Error("SLS consumer group is not in order (order=false): SLS may hand out a child shard "+
				"before its parents are finished; this Subscriber still starts a shard only after its parents' "+
				"final checkpoints, but readers of other kinds in the group may not",
				nil, watermill.LogFields{"logstore": sub.topic, "consumer_group": eg.ConsumerGroupName})
		}
		if eg.Timeout > 0 {
			sub.groupTimeout = time.Duration(eg.Timeout) * time.Second
		}
	}
	return nil
}

// poke wakes the manager.
func (sub *subscription) poke() {
	select {
	case sub.events <- struct{}{}:
	default:
	}
}

// run is the manager loop. It closes out when the subscription ends: ctx
// ended, a bounded subscription read everything, or shards stopped on
// errors and nothing else is left to read.
func (sub *subscription) run(ctx context.Context) {
	s := sub.s
	commitStop, commitDone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(commitDone)
		sub.commitLoop(commitStop)
	}()
	var beat, rediscover <-chan time.Time
	if sub.mode == AssignConsumerGroup {
		t := time.NewTicker(s.cfg.HeartbeatInterval)
		defer t.Stop()
		beat = t.C
	}
	if !sub.bounded {
		t := time.NewTicker(s.cfg.RediscoveryInterval)
		defer t.Stop()
		rediscover = t.C
	}
	for {
		sub.reconcile(ctx)
		if sub.over() {
			break
		}
		select {
		case <-ctx.Done():
		case <-beat:
			if err := sub.heartbeat(ctx); err != nil && ctx.Err() == nil {
				sub.logBeatFailure(err)
			}
			continue
		case <-rediscover:
			sub.rediscover(ctx)
			continue
		case <-sub.events:
			continue
		}
		break
	}
	sub.mu.Lock()
	for _, w := range sub.workers {
		w.cancel()
	}
	sub.mu.Unlock()
	// Workers may take up to CloseTimeout to finish their LogGroups and
	// commit; keep heartbeating meanwhile, so the group does not drop this
	// member and refuse its final checkpoints.
	stopped := make(chan struct{})
	go func() {
		sub.workersWG.Wait()
		close(stopped)
	}()
	for waiting := true; waiting; {
		select {
		case <-stopped:
			waiting = false
		case <-beat:
			if err := sub.heartbeat(context.WithoutCancel(ctx)); err != nil {
				sub.logBeatFailure(err)
			}
		}
	}
	sub.reap()
	sub.closeWatermark()
	close(commitStop)
	<-commitDone
	if sub.mode == AssignConsumerGroup {
		sub.leave()
	}
	if sub.observer != nil {
		sub.observer.Ended()
	}
	close(sub.out)
}

// rediscover reads the shard list and checkpoints again; failures are
// logged and retried at the next interval.
func (sub *subscription) rediscover(ctx context.Context) {
	err := sub.discover(ctx)
	if err == nil && sub.s.cfg.ConsumerGroup != "" && sub.hasUnfinishedReadOnly() {
		err = sub.refreshCheckpoints(ctx)
	}
	if err != nil && ctx.Err() == nil {
		sub.s.logger.Error("SLS shard rediscovery failed, will retry", err, watermill.LogFields{"logstore": sub.topic})
	}
}

// discover reads the shard list (and, with AssignStatic, this instance's
// share of it).
func (sub *subscription) discover(ctx context.Context) error {
	shards, err := sub.s.api.listShards(ctx, sub.topic)
	if err != nil {
		return err
	}
	layout := make([]ShardInfo, len(shards))
	for i, sh := range shards {
		layout[i] = shardInfoFrom(sh)
	}
	sortShards(layout)
	if sub.mode == AssignStatic {
		ids, err := sub.s.cfg.ShardAssigner.Assign(layout, sub.s.cfg.StaticInstances, sub.s.cfg.StaticIndex)
		if err != nil {
			return fmt.Errorf("slspubsub: %T.Assign: %w", sub.s.cfg.ShardAssigner, err)
		}
		sub.static = make(map[int]bool, len(ids))
		for _, id := range ids {
			sub.static[id] = true
		}
	}
	sub.mu.Lock()
	if !sub.bounded || sub.layout == nil {
		sub.layout = layout
	} else {
		// Bounded: keep the shards of the first listing, with fresh states.
		for i, old := range sub.layout {
			if j := slices.IndexFunc(layout, func(n ShardInfo) bool { return n.ID == old.ID }); j >= 0 {
				sub.layout[i] = layout[j]
			}
		}
	}
	sub.mu.Unlock()
	return nil
}

func (sub *subscription) hasUnfinishedReadOnly() bool {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	for _, sh := range sub.layout {
		if sh.ReadOnly && !sub.finished[sh.ID] {
			return true
		}
	}
	return false
}

func (sub *subscription) refreshCheckpoints(ctx context.Context) error {
	m, err := sub.loadCheckpoints(ctx)
	if err == nil {
		sub.checkpoints = m
	}
	return err
}

// loadCheckpoints reads the consumer group's checkpoints by shard.
func (sub *subscription) loadCheckpoints(ctx context.Context) (map[int]string, error) {
	cps, err := sub.s.api.getCheckpoints(ctx, sub.topic, sub.s.cfg.ConsumerGroup)
	if err != nil {
		return nil, err
	}
	m := make(map[int]string, len(cps))
	for _, cp := range cps {
		if cp.CheckPoint != "" {
			m[cp.ShardID] = cp.CheckPoint
		}
	}
	return m, nil
}

// shardInfo returns the current listing of shard id.
func (sub *subscription) shardInfo(id int) (ShardInfo, bool) {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	for _, sh := range sub.layout {
		if sh.ID == id {
			return sh, true
		}
	}
	return ShardInfo{}, false
}

// heartbeat tells the consumer group which shards this process holds and
// records the ones it is assigned.
func (sub *subscription) heartbeat(ctx context.Context) error {
	s := sub.s
	sub.mu.Lock()
	held := make([]int, 0, len(sub.workers))
	for id := range sub.workers {
		held = append(held, id)
	}
	sub.mu.Unlock()
	slices.Sort(held)
	ctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	ids, err := s.api.heartbeat(ctx, sub.topic, s.cfg.ConsumerGroup, s.cfg.ConsumerName, held)
	if err != nil {
		return err
	}
	sub.lastBeat = time.Now()
	sub.beatFailures = 0
	sub.assigned = make(map[int]bool, len(ids))
	for _, id := range ids {
		sub.assigned[id] = true
	}
	return nil
}

func (sub *subscription) logBeatFailure(err error) {
	sub.beatFailures++
	fields := watermill.LogFields{"logstore": sub.topic, "consumer_group": sub.s.cfg.ConsumerGroup,
		"consumer": sub.s.cfg.ConsumerName, "failures": sub.beatFailures}
	sub.s.logger.Error("SLS consumer-group heartbeat failed, will retry", err, fields)
}

// fenced reports whether heartbeats failed for so long that SLS may hand
// this process's shards to others before the next one: it must not read
// any of them until a heartbeat succeeds again.
func (sub *subscription) fenced() bool {
	return time.Since(sub.lastBeat) > sub.groupTimeout-sub.s.cfg.HeartbeatInterval
}

// leave releases every shard with a last heartbeat holding none, so other
// members take them at once rather than after the timeout.
func (sub *subscription) leave() {
	ctx, cancel := context.WithTimeout(context.Background(), sub.s.cfg.RequestTimeout)
	defer cancel()
	s := sub.s
	if _, err := s.api.heartbeat(ctx, sub.topic, s.cfg.ConsumerGroup, s.cfg.ConsumerName, []int{}); err != nil {
		s.logger.Info("SLS consumer-group leave heartbeat failed; the group frees the shards after its timeout",
			watermill.LogFields{"logstore": sub.topic, "err": err})
	}
}

// wanted reports whether this process should read shard id now, by the
// assignment mode, ignoring the parent-first rule.
func (sub *subscription) wanted(id int) bool {
	if sub.finished[id] || sub.stopped[id] {
		return false
	}
	switch sub.mode {
	case AssignConsumerGroup:
		return sub.assigned[id] && !sub.fenced()
	case AssignStatic:
		return sub.static[id]
	}
	return true
}

// startable returns the wanted shards that are not running and whose
// parents are finished.
func (sub *subscription) startable(ctx context.Context) []ShardInfo {
	sub.mu.Lock()
	layout := slices.Clone(sub.layout)
	running := make(map[int]bool, len(sub.workers))
	for id := range sub.workers {
		running[id] = true
	}
	sub.mu.Unlock()
	var out []ShardInfo
	for _, sh := range layout {
		if running[sh.ID] || sub.pending[sh.ID] != nil || !sub.wanted(sh.ID) {
			continue
		}
		if sub.parentsFinished(ctx, sh, layout) {
			out = append(out, sh)
		}
	}
	return out
}

// parentsFinished applies the parent-first rule: every readonly shard
// created before sh whose range overlaps it must have been read to its
// end, here or, as its consumer-group checkpoint or the PositionStore
// shows, by another process.
func (sub *subscription) parentsFinished(ctx context.Context, sh ShardInfo, layout []ShardInfo) bool {
	for _, p := range parentsOf(sh, layout) {
		if sub.finished[p] {
			continue
		}
		done, err := sub.finishedElsewhere(ctx, p)
		if err != nil && ctx.Err() == nil {
			sub.s.logger.Error("SLS parent shard's progress unreadable, will retry", err,
				watermill.LogFields{"logstore": sub.topic, "shard": p})
		}
		if !done {
			return false
		}
		sub.finished[p] = true
	}
	return true
}

// finishedElsewhere reports whether readonly shard p was read to its end
// by any reader of the group: its consumer-group checkpoint is its end
// cursor, or the PositionStore holds the last log of its last LogGroup.
func (sub *subscription) finishedElsewhere(ctx context.Context, p int) (bool, error) {
	_, hasCheckpoint := sub.checkpoints[p]
	if !hasCheckpoint && sub.s.cfg.PositionStore == nil {
		return false, nil
	}
	end, err := sub.endCursor(ctx, p)
	if err != nil {
		return false, err
	}
	if cp, ok := sub.checkpoints[p]; ok {
		if v, ok := cursorToInt64(cp); ok && v >= end {
			return true, nil
		}
	}
	if sub.s.cfg.PositionStore == nil {
		return false, nil
	}
	pos, ok, err := sub.s.cfg.PositionStore.LoadPosition(ctx, sub.topic, p)
	if err != nil || !ok {
		return false, err
	}
	v, err := pos.CursorValue()
	if err != nil {
		return false, err
	}
	if v != end-1 {
		return v >= end, nil
	}
	// The stored log is in the shard's last group: is it that group's last?
	res, err := sub.s.api.pullLogs(ctx, sub.topic, p, pos.Cursor, cursorFromInt64(end), 1, sub.s.cfg.Compression)
	if err != nil {
		return false, err
	}
	groups, err := decodeLogGroupList(res.Data, nil)
	if err != nil || len(groups) != 1 {
		return false, err
	}
	return pos.Index >= len(groups[0].Logs)-1, nil
}

// endCursor returns the end cursor of readonly shard id (it no longer
// moves, so it is asked for once).
func (sub *subscription) endCursor(ctx context.Context, id int) (int64, error) {
	if v, ok := sub.ends[id]; ok {
		return v, nil
	}
	v, err := sub.s.api.cursorValue(ctx, sub.topic, id, "end")
	if err != nil {
		return 0, err
	}
	sub.ends[id] = v
	return v, nil
}

// reconcile reaps ended workers, stops the ones no longer wanted and starts
// the startable ones.
func (sub *subscription) reconcile(ctx context.Context) {
	sub.reap()
	if ctx.Err() != nil {
		return
	}
	sub.mu.Lock()
	for id, w := range sub.workers {
		if !w.stopping && !sub.wanted(id) {
			w.stopping = true
			w.cancel()
		}
	}
	sub.mu.Unlock()
	for id, st := range sub.pending {
		if !sub.wanted(id) {
			delete(sub.pending, id)
			if sub.wm != nil {
				_ = sub.wm.tracker.RemoveShard(id)
			}
			continue
		}
		info, _ := sub.shardInfo(id)
		sub.start(ctx, info, st)
		delete(sub.pending, id)
	}
	for _, info := range sub.startable(ctx) {
		sub.start(ctx, info, nil)
	}
}

// reap removes ended workers and records how they ended.
func (sub *subscription) reap() {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	for id, w := range sub.workers {
		select {
		case <-w.done:
		default:
			continue
		}
		delete(sub.workers, id)
		switch {
		case w.finished:
			sub.finished[id] = true
			if !w.final.IsZero() {
				sub.finals[id] = w.final
			}
		case w.ended:
			sub.stopped[id] = true
		case w.err != nil:
			sub.stopped[id] = true
			sub.failures++
		}
		if w.gone {
			sub.poke() // rediscover: the layout changed
		}
	}
}

// over reports whether the subscription has nothing left to do.
func (sub *subscription) over() bool {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	if len(sub.workers) > 0 || len(sub.pending) > 0 {
		return false
	}
	if sub.bounded {
		for _, sh := range sub.layout {
			if sub.wanted(sh.ID) && !sub.blockedForever(sh) {
				return false
			}
		}
		return true
	}
	if sub.failures == 0 {
		return false
	}
	for _, sh := range sub.layout {
		if sub.wanted(sh.ID) {
			return false
		}
	}
	return true
}

// blockedForever reports whether a parent of sh stopped (at a stop
// position, or on an error) before its end: sh can never start.
func (sub *subscription) blockedForever(sh ShardInfo) bool {
	for _, p := range parentsOf(sh, sub.layout) {
		if sub.stopped[p] {
			return true
		}
	}
	return false
}

// start runs a worker for shard info; st is its opened state, or nil to
// open it in the worker.
func (sub *subscription) start(ctx context.Context, info ShardInfo, st *shardState) {
	wctx, cancel := context.WithCancel(ctx)
	w := &shardWorker{info: info, cancel: cancel, done: make(chan struct{})}
	w.wm = sub.addWatermarkShard(info)
	sub.mu.Lock()
	sub.workers[info.ID] = w
	sub.mu.Unlock()
	sub.workersWG.Add(1)
	go func() {
		defer sub.workersWG.Done()
		defer sub.poke()
		defer close(w.done)
		defer sub.endWatermarkShard(w)
		defer cancel()
		sub.runWorker(wctx, w, st)
	}()
}

// openShard resolves where a shard is read from and builds its state.
// checkpoints are the consumer group's as read just now; nil reads them
// (a shard started later: a previous holder may have committed since).
func (sub *subscription) openShard(ctx context.Context, info ShardInfo, checkpoints map[int]string) (*shardState, error) {
	s := sub.s
	if checkpoints == nil && s.cfg.ConsumerGroup != "" {
		var err error
		if checkpoints, err = sub.loadCheckpoints(ctx); err != nil {
			return nil, fmt.Errorf("slspubsub: start position of %s shard %d: %w", sub.topic, info.ID, err)
		}
	}
	start, skip, err := s.startCursor(ctx, sub.topic, info.ID, checkpoints)
	if err != nil {
		return nil, fmt.Errorf("slspubsub: start position of %s shard %d: %w", sub.topic, info.ID, err)
	}
	end, err := s.stopCursor(ctx, sub.topic, info.ID)
	if err != nil {
		return nil, fmt.Errorf("slspubsub: stop position of %s shard %d: %w", sub.topic, info.ID, err)
	}
	tr := newAckTracker(start)
	r := &shardReader{
		api: s.api, cfg: &s.cfg, logger: s.logger, logstore: sub.topic, shard: info.ID,
		cursor: start, endCursor: end, skip: skip,
		tracker: tr, budget: newPrefetchBudget(s.cfg.PrefetchBytes),
		readOnly: func() bool {
			cur, ok := sub.shardInfo(info.ID)
			return ok && cur.ReadOnly
		},
	}
	return &shardState{id: info.ID, reader: r, tracker: tr, committed: -1}, nil
}

// runWorker reads one shard until it ends or ctx ends, then commits its
// final checkpoint.
func (sub *subscription) runWorker(ctx context.Context, w *shardWorker, st *shardState) {
	s := sub.s
	fields := watermill.LogFields{"logstore": sub.topic, "shard": w.info.ID}
	if st == nil {
		var err error
		st, err = sub.openWithRetry(ctx, w.info)
		if err != nil {
			w.gone = isShardGone(err)
			if !w.gone && ctx.Err() == nil {
				w.err = err
				s.fail("SLS shard stopped: cannot open it", err, fields)
			}
			return
		}
	}
	w.st.Store(st)
	s.logger.Debug("SLS shard reading", fields)

	batches := make(chan fetchedBatch, 1)
	st.reader.out = batches
	st.reader.wm = w.wm
	if w.wm != nil {
		w.wm.ctx = ctx // before the loops start: a held delivery stops with the worker
	}
	readerDone := make(chan error, 1)
	go func() { readerDone <- st.reader.run(ctx) }()
	d := delivery{sub: sub, st: st, results: make(chan ackResult, s.cfg.MaxInFlight), wm: w.wm}
	if w.wm != nil {
		idle := s.cfg.Watermark.Strategy.IdleTimeout
		if idle <= 0 {
			idle = watermark.DefaultIdleTimeout
		}
		t := time.NewTicker(max(idle/4, time.Millisecond))
		defer t.Stop()
		d.tick = t.C
	}
	d.run(ctx, batches)
	w.cancel() // stops the reader and the ack watchers
	for range batches {
		// wait for the reader to end
	}
	d.watchers.Wait()
	readErr := <-readerDone

	atEnd := errors.Is(readErr, errShardEnd) && st.tracker.drained()
	commitErr := sub.commitShard(st)
	switch {
	case commitErr == nil:
	case sub.mode == AssignConsumerGroup && isHandedOver(commitErr):
		// The group's hand-over, not a failure here: this member's
		// heartbeats lapsed and SLS gave the shard to another consumer,
		// which reads on from the group's last checkpoint.
		s.logger.Info("SLS consumer-group checkpoint refused: the shard is held by another consumer now; "+
			"logs acked here since the group's last checkpoint are delivered to it again",
			fields.Add(watermill.LogFields{"error": commitErr}))
	default:
		s.fail("SLS consumer-group checkpoint commit failed", commitErr, fields)
	}
	switch {
	case atEnd:
		info, _ := sub.shardInfo(w.info.ID)
		if info.ReadOnly && commitErr == nil && sub.reachedEnd(st) {
			w.finished = true
			s.logger.Debug("SLS readonly shard finished", fields)
		} else {
			w.ended = true
		}
	case readErr != nil && !errors.Is(readErr, errShardEnd):
		if isShardGone(readErr) {
			w.gone = true
			s.logger.Info("SLS shard is gone", fields)
			break
		}
		w.err = readErr
		s.fail("SLS shard stopped: fetch failed", readErr, fields)
	case d.failed:
		w.err = errors.New("delivery failed")
	}
}

// reachedEnd reports whether st was read and acked to the end of its
// (readonly) shard.
func (sub *subscription) reachedEnd(st *shardState) bool {
	ctx, cancel := context.WithTimeout(context.Background(), sub.s.cfg.RequestTimeout)
	defer cancel()
	end, err := st.reader.shardEnd(ctx)
	return err == nil && st.tracker.committed() >= end
}

// openWithRetry opens a shard, retrying retryable errors until ctx ends.
func (sub *subscription) openWithRetry(ctx context.Context, info ShardInfo) (*shardState, error) {
	pause := sub.s.cfg.FetchInterval
	for {
		st, err := sub.openShard(ctx, info, nil)
		if err == nil || !IsRetryable(err) || ctx.Err() != nil {
			return st, err
		}
		if !sleepCtx(ctx, jittered(pause)) {
			return nil, ctx.Err()
		}
		pause = min(pause*2, sub.s.cfg.MaxFetchInterval)
	}
}

// isShardGone reports an error saying the shard does not exist (expired,
// or the logstore's shards changed under us).
func isShardGone(err error) bool {
	var se *Error
	return errors.As(err, &se) && (se.Code == CodeShardNotExist || se.Code == codeShardNotExistCG)
}

// commitLoop commits consumer-group checkpoints every CommitInterval until
// stop closes. Workers commit their own final checkpoints.
func (sub *subscription) commitLoop(stop <-chan struct{}) {
	if sub.s.cfg.ConsumerGroup == "" {
		<-stop
		return
	}
	t := time.NewTicker(sub.s.cfg.CommitInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-stop:
			return
		}
		sub.mu.Lock()
		states := make([]*shardState, 0, len(sub.workers))
		for _, w := range sub.workers {
			if st := w.st.Load(); st != nil {
				states = append(states, st)
			}
		}
		sub.mu.Unlock()
		for _, st := range states {
			if err := sub.commitShard(st); err != nil {
				sub.s.logger.Error("SLS consumer-group checkpoint commit failed, will retry", err, sub.fields(st))
			}
		}
	}
}

// commitShard writes st's checkpoint when its committed position moved.
// In consumer-group mode SLS refuses it unless this process holds the
// shard. It uses its own timeout, not the subscription's context, so the
// final commit runs after the subscription was cancelled.
func (sub *subscription) commitShard(st *shardState) error {
	s := sub.s
	if s.cfg.ConsumerGroup == "" {
		return nil
	}
	st.commitMu.Lock()
	defer st.commitMu.Unlock()
	v := st.tracker.committed()
	if v == st.committed {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.RequestTimeout)
	defer cancel()
	force := sub.mode != AssignConsumerGroup
	err := s.api.updateCheckpoint(ctx, sub.topic, s.cfg.ConsumerGroup, s.cfg.ConsumerName, st.id, cursorFromInt64(v), force)
	if err != nil {
		return err
	}
	st.committed = v
	return nil
}

func (sub *subscription) fields(st *shardState) watermill.LogFields {
	return watermill.LogFields{"logstore": sub.topic, "shard": st.id}
}

// startCursor resolves where a shard is read from: the PositionStore, then
// the consumer-group checkpoint, then StartPosition. skip is the number of
// logs of the first group already applied.
func (s *Subscriber) startCursor(ctx context.Context, topic string, shard int, checkpoints map[int]string) (cursor int64, skip int, err error) {
	if s.cfg.PositionStore != nil {
		pos, ok, err := s.cfg.PositionStore.LoadPosition(ctx, topic, shard)
		if err != nil {
			return 0, 0, err
		}
		if ok {
			v, err := pos.CursorValue()
			return v, pos.Index + 1, err
		}
	}
	if cp, ok := checkpoints[shard]; ok {
		if v, ok := cursorToInt64(cp); ok {
			return v, 0, nil
		}
		return 0, 0, fmt.Errorf("invalid consumer-group checkpoint %q", cp)
	}
	from := "begin"
	switch s.cfg.StartPosition.Kind {
	case StartEnd:
		from = "end"
	case StartTime:
		from = strconv.FormatInt(s.cfg.StartPosition.Time.Unix(), 10)
	}
	v, err := s.api.cursorValue(ctx, topic, shard, from)
	return v, 0, err
}

// stopCursor returns the shard's end cursor for a bounded subscription, ""
// for an unbounded one.
func (s *Subscriber) stopCursor(ctx context.Context, topic string, shard int) (string, error) {
	switch s.cfg.StopPosition.Kind {
	case StopEnd:
		return s.api.getCursor(ctx, topic, shard, "end")
	case StopTime:
		return s.api.getCursor(ctx, topic, shard, strconv.FormatInt(s.cfg.StopPosition.Time.Unix(), 10))
	}
	return "", nil
}
