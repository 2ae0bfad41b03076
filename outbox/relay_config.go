package outbox

import (
	"errors"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

// RelayConfig configures a Relay. Zero values mean the documented defaults; NewRelay fills them in and
// validates the result.
type RelayConfig struct {
	// Table is the outbox table (default: DefaultTableName).
	Table Table

	// Publisher is the destination: every row is published to its topic through it (at-least-once). Rows of a
	// batch go in as few Publish calls as MaxMessagesPerPublish allows, one topic per call, each ordering key's
	// rows in id order within a call and a key in one call at a time; calls run concurrently (up to
	// MaxConcurrentPublishes), so it must be safe for concurrent use, as every Watermill Publisher is, and it
	// must write one call's messages of a key in call order (gochannel, watermill-kafka and slspubsub with a
	// HashKey do; set MaxMessagesPerPublish to 1 for one that does not). When a call of several rows fails, its
	// rows are published again one per call, so that the failure counts against its row only; rows the failed
	// call did write are then written twice. The Relay does not close it. Exactly one of Publisher and
	// TransactionalPublisher is required. A destination with idempotent writes keyed by SequenceKey and
	// SequenceID makes it exactly once (see the package documentation, "Exactly once into SLS").
	Publisher message.Publisher

	// TransactionalPublisher is the exactly-once destination (see TransactionalPublisher and the outboxkafka
	// package): each claimed batch is published in one transaction with the relay's progress, and rows are
	// marked delivered after it commits. Requires Name.
	TransactionalPublisher TransactionalPublisher

	// Name identifies the relay in logs and, with TransactionalPublisher, owns claimed rows until they are
	// marked: a restarted relay must keep its name to recover its last batch, and two running relays must never
	// share one. At most 200 bytes. Default: empty (allowed only without TransactionalPublisher).
	Name string

	// BatchSize is the most rows one claim takes (and one transaction of the relay holds). A larger batch
	// costs fewer round trips per row; a relay that crashes publishes its batch again. Default: 500. At most
	// 100 000.
	BatchSize int

	// Workers is how many batches the relay works on at once, each in its own transaction on its own pool
	// connection, as that many relays would: while one worker publishes its batch, another claims and
	// publishes other keys (a key is in one batch at a time, see the package documentation), so one slow
	// batch does not hold back the rows of every key. Size the pool for Workers connections plus one for
	// LISTEN. Must be 1 with TransactionalPublisher (its default there). Default: 2.
	Workers int

	// MaxMessagesPerPublish is the most rows (messages) one Publish call carries (with Publisher; see there).
	// 1 publishes one row per call. Default: 100.
	MaxMessagesPerPublish int

	// MaxConcurrentPublishes bounds the Publish calls in flight for one batch: ordering keys of a batch are
	// published concurrently, each key's rows one after another. Default: 16.
	MaxConcurrentPublishes int

	// PublishTimeout bounds the Publish calls of one batch (through the messages' contexts). Default: 30 s.
	PublishTimeout time.Duration

	// PollInterval is how long the relay waits for a notification before it looks at the table anyway.
	// With notifications it is only a fallback (missed notifications, rows whose retry time came); with
	// DisableListen it is the latency. Default: 1 s.
	PollInterval time.Duration

	// DisableListen turns LISTEN/NOTIFY off: the relay polls only. Use it behind poolers that do not keep a
	// session (PgBouncer in transaction mode). Without it, the relay takes one connection out of the pool for
	// LISTEN for as long as Run runs (size the pool for it: claims need a second one). Default: false.
	DisableListen bool

	// MaxAttempts is how many failed publish attempts park a row. A parked row is not relayed again until
	// Requeue, and it holds back every later row of its ordering key. Default: 10.
	MaxAttempts int

	// RetryInitialBackoff is the wait before a failed row's first retry; each further failure doubles it (with
	// up to 25% random jitter) up to RetryMaxBackoff. Default: 1 s.
	RetryInitialBackoff time.Duration
	// RetryMaxBackoff caps the wait between retries. Default: 5 minutes.
	RetryMaxBackoff time.Duration

	// Retention is how long delivered rows are kept before the relay deletes them. Negative keeps them
	// forever. Default: 24 hours.
	Retention time.Duration
	// DeleteOnDelivery deletes each row in the transaction that marks it delivered, instead of keeping it
	// for Retention: the cheapest way to relay (an UPDATE writes a new row version and index entries, a DELETE
	// only marks the row), for deployments that need no record of delivered rows. Parked rows are kept either
	// way. Retention still deletes delivered rows left by relays without it. Default: false.
	DeleteOnDelivery bool

	// RetentionInterval is how often the relay deletes expired rows. Default: 1 minute.
	RetentionInterval time.Duration

	// ShutdownTimeout bounds how long Run, once its context is cancelled, keeps publishing the batch it holds;
	// after it the batch is abandoned (its rows are released to be relayed again). Default: 30 s.
	ShutdownTimeout time.Duration

	// ErrorBackoff is the wait after a failed database operation before the next try. Default: 1 s.
	ErrorBackoff time.Duration

	// Metrics receives counts and lag. Default: no metrics.
	Metrics Metrics
}

// maxBatchSize bounds RelayConfig.BatchSize: a claim's ids travel as one array parameter, and its rows are
// held in memory.
const maxBatchSize = 100_000

func (c *RelayConfig) setDefaults() {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	defD := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	def(&c.BatchSize, 500)
	if c.TransactionalPublisher != nil {
		def(&c.Workers, 1)
	}
	def(&c.Workers, 2)
	def(&c.MaxMessagesPerPublish, 100)
	def(&c.MaxConcurrentPublishes, 16)
	def(&c.MaxAttempts, 10)
	defD(&c.PublishTimeout, 30*time.Second)
	defD(&c.PollInterval, time.Second)
	defD(&c.RetryInitialBackoff, time.Second)
	defD(&c.RetryMaxBackoff, 5*time.Minute)
	defD(&c.Retention, 24*time.Hour)
	defD(&c.RetentionInterval, time.Minute)
	defD(&c.ShutdownTimeout, 30*time.Second)
	defD(&c.ErrorBackoff, time.Second)
	if c.Metrics == nil {
		c.Metrics = NopMetrics{}
	}
}

// Validate reports every invalid field, each named, in one error. Call it after the defaults are set
// (NewRelay does).
func (c RelayConfig) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{field}, args...)...))
	}
	if err := c.Table.Validate(); err != nil {
		errs = append(errs, err)
	}
	switch {
	case c.Publisher == nil && c.TransactionalPublisher == nil:
		bad("Publisher", "is nil (set Publisher or TransactionalPublisher)")
	case c.Publisher != nil && c.TransactionalPublisher != nil:
		bad("TransactionalPublisher", "is set together with Publisher; set one")
	}
	if c.TransactionalPublisher != nil && c.Name == "" {
		bad("Name", "is empty; TransactionalPublisher requires a stable relay name")
	}
	if len(c.Name) > 200 {
		bad("Name", "is %d bytes long, more than 200", len(c.Name))
	}
	positive := map[string]int{"BatchSize": c.BatchSize, "Workers": c.Workers, "MaxMessagesPerPublish": c.MaxMessagesPerPublish,
		"MaxConcurrentPublishes": c.MaxConcurrentPublishes, "MaxAttempts": c.MaxAttempts}
	for _, f := range []string{"BatchSize", "Workers", "MaxMessagesPerPublish", "MaxConcurrentPublishes", "MaxAttempts"} {
		if positive[f] < 1 {
			bad(f, "%d is not positive", positive[f])
		}
	}
	if c.TransactionalPublisher != nil && c.Workers > 1 {
		bad("Workers", "is %d; it must be 1 with TransactionalPublisher (one transactional producer per relay Name)", c.Workers)
	}
	if c.BatchSize > maxBatchSize {
		bad("BatchSize", "%d is more than %d", c.BatchSize, maxBatchSize)
	}
	durations := []struct {
		name string
		d    time.Duration
	}{
		{"PublishTimeout", c.PublishTimeout}, {"PollInterval", c.PollInterval},
		{"RetryInitialBackoff", c.RetryInitialBackoff}, {"RetryMaxBackoff", c.RetryMaxBackoff},
		{"RetentionInterval", c.RetentionInterval}, {"ShutdownTimeout", c.ShutdownTimeout},
		{"ErrorBackoff", c.ErrorBackoff},
	}
	for _, d := range durations {
		if d.d <= 0 {
			bad(d.name, "%v is not positive", d.d)
		}
	}
	if c.RetryMaxBackoff < c.RetryInitialBackoff {
		bad("RetryMaxBackoff", "%v is less than RetryInitialBackoff %v", c.RetryMaxBackoff, c.RetryInitialBackoff)
	}
	if c.Metrics == nil {
		bad("Metrics", "is nil")
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("outbox: invalid RelayConfig: %w", errors.Join(errs...))
}
