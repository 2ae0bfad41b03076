package slspubsub

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	sls "github.com/aliyun/aliyun-log-go-sdk"
)

// Subscriber reads SLS logstores as Watermill topics (topic = logstore name).
//
// Each Subscribe reads every shard of the logstore (readwrite and readonly)
// with one fetch loop and one delivery loop per shard: messages of a shard
// are delivered in order, at most MaxInFlight of them un-acked at a time.
// Without a ConsumerGroup every subscription is independent and receives
// every message.
//
// Ack and Nack: a shard's committed position is its first log not yet
// acked; a LogGroup's cursor is committed (to the consumer group) only when
// all its logs are acked. Nack redelivers the message: with MaxInFlight 1
// nothing after it is delivered before it is acked; with more, it is
// redelivered after the messages already in flight.
//
// Errors: retryable fetch errors (network, 5xx, quota) are retried with
// backoff until Close. A non-retryable one (auth, a missing logstore) and a
// log rejected under UnmarshalErrorFail stop that shard: they are logged at
// Error level and Close returns them; a subscription whose every shard
// stopped closes its channel. A failed periodic checkpoint commit is logged
// and retried at the next interval; a failed final commit (when the
// subscription ends) is logged and returned by Close.
//
// Each message's Context is done once it is acked or nacked, or when the
// subscription ends.
//
// Shard ownership is "every shard" (one process reads all of them); the
// per-shard state (shardState: reader, ack tracker, committed cursor) is
// what an assignment mode will start and stop as shards come and go.
type Subscriber struct {
	cfg    SubscriberConfig
	logger watermill.LoggerAdapter
	api    *apiClient

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc

	mu     sync.Mutex
	closed bool
	errs   []error
	wg     sync.WaitGroup

	closeOnce sync.Once
}

var (
	_ message.Subscriber           = (*Subscriber)(nil)
	_ message.SubscribeInitializer = (*Subscriber)(nil)
)

// NewSubscriber validates config and returns a Subscriber. A nil logger
// logs nothing.
func NewSubscriber(config SubscriberConfig, logger watermill.LoggerAdapter) (*Subscriber, error) {
	config.setDefaults()
	if err := config.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = watermill.NopLogger{}
	}
	api, err := newAPIClient(config.ClientConfig)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Subscriber{cfg: config, logger: logger, api: api, ctx: ctx, cancel: cancel}, nil
}

// errSubscriberClosed is returned by Subscribe after Close.
var errSubscriberClosed = errors.New("slspubsub: subscriber closed")

// Subscribe reads logstore topic. The channel is closed when ctx ends, on
// Close, when every shard stopped on an error (see Subscriber), or, with a
// StopPosition, when every shard reached it and every message read was
// acked. Subscribe fails when the shards or their start positions cannot be
// read.
func (s *Subscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, errSubscriberClosed
	}
	s.wg.Add(1) // under mu: Close cannot be waiting yet
	s.mu.Unlock()

	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(s.ctx, cancel)
	sub, err := s.newSubscription(ctx, topic)
	if err != nil {
		stop()
		cancel()
		s.wg.Done()
		return nil, err
	}
	go func() {
		defer s.wg.Done()
		defer stop()
		defer cancel()
		sub.run(ctx)
	}()
	return sub.out, nil
}

// SubscribeInitialize creates logstore topic when InitializeLogStore is set
// (an existing one is fine), else checks that it exists.
func (s *Subscriber) SubscribeInitialize(topic string) error {
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.RequestTimeout)
	defer cancel()
	if !s.cfg.InitializeLogStore {
		return s.api.getLogStore(ctx, topic)
	}
	err := s.api.createLogStore(ctx, topic, s.cfg.LogStoreTTLDays, s.cfg.LogStoreShards)
	var se *Error
	if errors.As(err, &se) && se.Code == CodeLogStoreAlreadyExist {
		return nil
	}
	return err
}

// Close stops every subscription, commits the consumer-group checkpoints of
// what was acked, waits for every goroutine and returns the errors that
// stopped shards (see Subscriber). It is safe to call more than once.
func (s *Subscriber) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		s.cancel()
		s.wg.Wait()
		s.api.close()
	})
	s.mu.Lock()
	defer s.mu.Unlock()
	return errors.Join(s.errs...)
}

// fail records err for Close and logs it.
func (s *Subscriber) fail(msg string, err error, fields watermill.LogFields) {
	s.logger.Error(msg, err, fields)
	s.mu.Lock()
	s.errs = append(s.errs, err)
	s.mu.Unlock()
}

// subscription is one Subscribe call.
type subscription struct {
	s      *Subscriber
	topic  string
	out    chan *message.Message
	shards []*shardState
}

// shardState is what the loops of one shard share.
type shardState struct {
	id        int
	reader    *shardReader
	tracker   *ackTracker
	committed int64 // last committed cursor value, -1 when none
}

func (s *Subscriber) newSubscription(ctx context.Context, topic string) (*subscription, error) {
	shards, err := s.api.listShards(ctx, topic)
	if err != nil {
		return nil, err
	}
	checkpoints, err := s.loadCheckpoints(ctx, topic)
	if err != nil {
		return nil, err
	}
	sub := &subscription{s: s, topic: topic, out: make(chan *message.Message)}
	for _, sh := range shards {
		st, err := s.newShardState(ctx, topic, sh.ShardID, checkpoints)
		if err != nil {
			return nil, err
		}
		sub.shards = append(sub.shards, st)
	}
	return sub, nil
}

// loadCheckpoints creates the consumer group when missing and returns its
// checkpoints by shard; nil without a ConsumerGroup.
func (s *Subscriber) loadCheckpoints(ctx context.Context, topic string) (map[int]string, error) {
	if s.cfg.ConsumerGroup == "" {
		return nil, nil
	}
	g := sls.ConsumerGroup{ConsumerGroupName: s.cfg.ConsumerGroup, Timeout: 60, InOrder: true}
	var se *Error
	if err := s.api.createConsumerGroup(ctx, topic, g); err != nil &&
		!(errors.As(err, &se) && se.Code == CodeConsumerGroupAlreadyExist) {
		return nil, err
	}
	cps, err := s.api.getCheckpoints(ctx, topic, s.cfg.ConsumerGroup)
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

func (s *Subscriber) newShardState(ctx context.Context, topic string, shard int, checkpoints map[int]string) (*shardState, error) {
	start, skip, err := s.startCursor(ctx, topic, shard, checkpoints)
	if err != nil {
		return nil, fmt.Errorf("slspubsub: start position of %s shard %d: %w", topic, shard, err)
	}
	end, err := s.stopCursor(ctx, topic, shard)
	if err != nil {
		return nil, fmt.Errorf("slspubsub: stop position of %s shard %d: %w", topic, shard, err)
	}
	tr := newAckTracker(start)
	r := &shardReader{
		api: s.api, cfg: &s.cfg, logger: s.logger, logstore: topic, shard: shard,
		cursor: start, endCursor: end, skip: skip,
		tracker: tr, budget: newPrefetchBudget(s.cfg.PrefetchBytes),
	}
	return &shardState{id: shard, reader: r, tracker: tr, committed: -1}, nil
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
	c, err := s.api.getCursor(ctx, topic, shard, from)
	if err != nil {
		return 0, 0, err
	}
	v, ok := cursorToInt64(c)
	if !ok {
		return 0, 0, fmt.Errorf("invalid cursor %q", c)
	}
	return v, 0, nil
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

// run starts the loops of every shard and, with a consumer group, the commit
// loop; it closes out when every shard's delivery loop ended.
func (sub *subscription) run(ctx context.Context) {
	var shardsWG sync.WaitGroup
	for _, st := range sub.shards {
		batches := make(chan fetchedBatch, 1)
		st.reader.out = batches
		shardCtx, cancelShard := context.WithCancel(ctx)
		shardsWG.Add(2)
		go func() {
			defer shardsWG.Done()
			err := st.reader.run(shardCtx)
			if err != nil && !errors.Is(err, errShardEnd) {
				sub.s.fail("SLS shard stopped: fetch failed", err, sub.fields(st))
			}
		}()
		go func() {
			defer shardsWG.Done()
			d := delivery{sub: sub, st: st, results: make(chan ackResult, sub.s.cfg.MaxInFlight)}
			d.run(shardCtx, batches)
			cancelShard() // stops the reader and the ack watchers
			for range batches {
				// wait for the reader to end
			}
			d.watchers.Wait()
		}()
	}
	commitDone := make(chan struct{})
	commitStop := make(chan struct{})
	go func() {
		defer close(commitDone)
		sub.commitLoop(commitStop)
	}()
	shardsWG.Wait()
	close(commitStop)
	<-commitDone
	close(sub.out)
}

func (sub *subscription) fields(st *shardState) watermill.LogFields {
	return watermill.LogFields{"logstore": sub.topic, "shard": st.id}
}

// commitLoop commits consumer-group checkpoints every CommitInterval and once
// more when stop closes.
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
			sub.commit(false)
		case <-stop:
			sub.commit(true)
			return
		}
	}
}

// commit writes the checkpoint of every shard whose committed position
// moved. It uses its own timeout, not the subscription's context, so the
// final commit runs after the subscription was cancelled.
func (sub *subscription) commit(final bool) {
	s := sub.s
	for _, st := range sub.shards {
		v := st.tracker.committed()
		if v == st.committed {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.RequestTimeout)
		err := s.api.updateCheckpoint(ctx, sub.topic, s.cfg.ConsumerGroup, s.cfg.ConsumerName, st.id, cursorFromInt64(v), true)
		cancel()
		switch {
		case err == nil:
			st.committed = v
		case final:
			s.fail("SLS consumer-group checkpoint commit failed", err, sub.fields(st))
		default:
			s.logger.Error("SLS consumer-group checkpoint commit failed, will retry", err, sub.fields(st))
		}
	}
}

// ackResult is how a delivered message was settled.
type ackResult struct {
	msg   *message.Message
	pos   Position
	acked bool
}

// delivery is the delivery loop of one shard.
type delivery struct {
	sub      *subscription
	st       *shardState
	results  chan ackResult // capacity MaxInFlight: watchers never block
	inFlight int
	watchers sync.WaitGroup // one per in-flight message
}

// run delivers batches in order until they end (and every message is
// settled) or ctx ends. While waiting for data it still handles acks and
// nacks, so a nacked message is redelivered at once.
func (d *delivery) run(ctx context.Context, batches <-chan fetchedBatch) {
	for batches != nil {
		select {
		case b, ok := <-batches:
			if !ok {
				batches = nil
				break
			}
			done := d.deliverBatch(ctx, b)
			d.st.reader.budget.release(b.size)
			if !done {
				return
			}
		case r := <-d.results:
			if !d.handle(ctx, r) {
				return
			}
		case <-ctx.Done():
			return
		}
	}
	for d.inFlight > 0 {
		if !d.settle(ctx) {
			return
		}
	}
}

// deliverBatch delivers every log of b; false means stop the shard.
func (d *delivery) deliverBatch(ctx context.Context, b fetchedBatch) bool {
	s := d.sub.s
	shardText := strconv.Itoa(d.st.id)
	for gi := range b.groups {
		g := &b.groups[gi]
		cursor := b.first + int64(gi)
		pos := Position{Shard: d.st.id, Cursor: cursorFromInt64(cursor)}
		shared := newGroupShared(g, shardText, pos.Cursor)
		for li := range g.Logs {
			if gi == 0 && li < b.skip {
				continue
			}
			pos.Index = li
			in := ReceivedLog{Project: s.cfg.Project, Logstore: d.sub.topic, Group: g, Log: &g.Logs[li], Position: pos, shared: shared}
			msg, err := s.cfg.Unmarshaler.Unmarshal(in)
			if err == nil && msg == nil {
				err = fmt.Errorf("slspubsub: %T returned no message for position %s", s.cfg.Unmarshaler, pos)
			}
			if err != nil {
				fields := d.sub.fields(d.st).Add(watermill.LogFields{"position": pos.String()})
				if s.cfg.OnUnmarshalError == UnmarshalErrorFail {
					s.fail("SLS log cannot be unmarshaled; shard stopped", err, fields)
					return false
				}
				s.logger.Error("SLS log cannot be unmarshaled; delivered raw", err, fields)
				msg = unmarshalForeign(in)
				msg.Metadata.Set(MetadataUnmarshalError, err.Error())
			}
			if !d.send(ctx, msg, pos) {
				return false
			}
		}
	}
	return true
}

// send delivers msg once fewer than MaxInFlight messages are in flight.
// With MaxInFlight 1 it waits for the ack itself (no goroutine per message)
// and sends a nacked message again at once; with more, a watcher goroutine
// per message reports to the delivery loop.
func (d *delivery) send(ctx context.Context, msg *message.Message, pos Position) bool {
	maxInFlight := d.sub.s.cfg.MaxInFlight
	for d.inFlight >= maxInFlight {
		if !d.settle(ctx) {
			return false
		}
	}
	for {
		// The message's context ends when it is acked or nacked, as in
		// watermill-kafka, or when the subscription ends.
		msgCtx := newMsgContext(ctx)
		cancel := msgCtx.end
		msg.SetContext(msgCtx)
		select {
		case d.sub.out <- msg:
		case <-ctx.Done():
			cancel()
			return false
		}
		if maxInFlight > 1 {
			d.inFlight++
			d.watchers.Add(1)
			go func() {
				defer d.watchers.Done()
				defer cancel()
				if settled, acked := d.await(ctx, msg, pos); settled {
					d.results <- ackResult{msg: msg, pos: pos, acked: acked}
				}
			}()
			return true
		}
		settled, acked := d.await(ctx, msg, pos)
		cancel()
		if !settled {
			return false
		}
		if acked {
			return true
		}
		msg = msg.Copy()
	}
}

// await waits until msg is acked or nacked (settled) or ctx ends. Acks are
// tracked here, so that none is lost when the subscription ends right after
// it, and one that came before the end still counts.
func (d *delivery) await(ctx context.Context, msg *message.Message, pos Position) (settled, acked bool) {
	select {
	case <-msg.Acked():
		d.ack(pos)
		return true, true
	case <-msg.Nacked():
		return true, false
	case <-ctx.Done():
		select {
		case <-msg.Acked():
			d.ack(pos)
		default:
		}
		return false, false
	}
}

func (d *delivery) ack(pos Position) {
	v, _ := pos.CursorValue()
	d.st.tracker.ack(v, pos.Index)
}

// settle waits for one in-flight message to be acked or nacked; a nacked one
// is sent again.
func (d *delivery) settle(ctx context.Context) bool {
	select {
	case r := <-d.results:
		return d.handle(ctx, r)
	case <-ctx.Done():
		return false
	}
}

// handle accounts for a settled message, sending a nacked one again.
func (d *delivery) handle(ctx context.Context, r ackResult) bool {
	d.inFlight--
	if !r.acked {
		return d.send(ctx, r.msg.Copy(), r.pos)
	}
	return true
}
