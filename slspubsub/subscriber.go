package slspubsub

import (
	"context"
	"errors"
	"strconv"
	"sync"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
)

// Subscriber reads SLS logstores as Watermill topics (topic = logstore name).
//
// Which shards a subscription reads is its Assignment: every shard
// (AssignAllShards, one process), the shards SLS assigns to this process
// in a consumer group (AssignConsumerGroup, the scale-out mode: run more
// processes with the same ConsumerGroup), or a static share among N
// processes (AssignStatic). Each shard read has one fetch loop and one
// delivery loop: messages of a shard are delivered in order, at most
// MaxInFlight of them un-acked at a time. Without a ConsumerGroup every
// subscription is independent and receives every message.
//
// Shard lifecycle: the shard list is read again every RediscoveryInterval,
// so splits and merges are followed without a restart. A readonly shard is
// read to its end and its final checkpoint committed (SLS then marks it
// over). Parent first, in every mode: a shard starts only once every
// readonly shard created before it whose hash range overlaps its own was
// read to its end (here, or by another process as its consumer-group
// checkpoint shows), so messages of one hash key stay in order across
// splits and merges.
//
// Consumer groups: the Subscriber heartbeats every HeartbeatInterval with
// the shards it holds. A shard SLS takes away is stopped: what was
// prefetched is dropped (never acked), messages in flight get CloseTimeout
// to be acked, its checkpoint is committed, and only then is it left out of
// the next heartbeat, so SLS hands it on at the committed position. When
// heartbeats fail for HeartbeatTimeout minus HeartbeatInterval, the
// Subscriber stops fetching every shard until a heartbeat succeeds, before
// SLS can give them to another member.
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
// Error level and Close returns them; a subscription with nothing left to
// read but shards stopped on errors closes its channel. A failed periodic
// checkpoint commit is logged and retried at the next interval; a failed
// final commit (when a shard's reading ends) is logged and returned by
// Close.
//
// Each message's Context is done once it is acked or nacked, or when the
// reading of its shard ends.
//
// Watermarks: with SubscriberConfig.Watermark set, each subscription tracks
// event-time watermarks per shard, stamps each delivered message with the
// subscription's watermark (watermark.MetadataKey), exposes them (Watermark,
// ShardWatermarks, ShardWatermarkStatus) and, with alignment, keeps fast
// shards from running ahead of slow ones (see WatermarkConfig).
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
	subs   map[string][]*subscription // running subscriptions by topic
	// members are the alignment member names in use.
	members map[string]bool

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
	return s.SubscribeObserved(ctx, topic, nil)
}

// DeliveryObserver sees the messages of a subscription as the Subscriber
// delivers them (SubscribeObserved).
type DeliveryObserver interface {
	// Observe is called for each message just before it goes to the
	// subscription's channel, on the goroutine that delivers its shard: the
	// calls for one shard's messages come one after another in the order the
	// shard delivers them (a message sent again after a nack is a new
	// message, observed again); calls for different shards run concurrently.
	// The message's context and metadata are complete (position,
	// watermark). Observe may replace the context with one derived from it
	// (msg.SetContext); it must not block: the shard's delivery waits for it.
	Observe(msg *message.Message)
	// Ended is called once, after the last Observe call, when the
	// subscription stopped delivering, just before its channel is closed.
	Ended()
}

// SubscribeObserved is Subscribe with o seeing each message as it is
// delivered (see DeliveryObserver). It lets a wrapper see every delivered
// message in order without a goroutine of its own between the Subscriber and
// its consumer; the exactlyonce handlers' ordering wrapper uses it. When it
// returns an error, o is not called at all. A nil o is Subscribe.
func (s *Subscriber) SubscribeObserved(ctx context.Context, topic string, o DeliveryObserver) (<-chan *message.Message, error) {
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
	sub.observer = o
	s.register(sub)
	go func() {
		defer s.wg.Done()
		defer stop()
		defer cancel()
		defer s.unregister(sub)
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

// register records a running subscription (for the watermark accessors).
func (s *Subscriber) register(sub *subscription) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.subs == nil {
		s.subs = map[string][]*subscription{}
	}
	s.subs[sub.topic] = append(s.subs[sub.topic], sub)
}

func (s *Subscriber) unregister(sub *subscription) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.subs[sub.topic]
	for i, x := range l {
		if x == sub {
			l = append(l[:i:i], l[i+1:]...)
			break
		}
	}
	if len(l) == 0 {
		delete(s.subs, sub.topic)
	} else {
		s.subs[sub.topic] = l
	}
}

// memberName reserves the alignment member name of a subscription to topic:
// "<Member or ConsumerName>/<topic>", with "#n" for further concurrent
// subscriptions of topic.
func (s *Subscriber) memberName(a *AlignmentConfig, topic string) string {
	base := a.Member
	if base == "" {
		base = s.cfg.ConsumerName
	}
	base += "/" + topic
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.members == nil {
		s.members = map[string]bool{}
	}
	name := base
	for n := 2; s.members[name]; n++ {
		name = base + "#" + strconv.Itoa(n)
	}
	s.members[name] = true
	return name
}

func (s *Subscriber) releaseMember(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.members, name)
}
