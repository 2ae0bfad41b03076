package slspubsub

import (
	"context"
	"errors"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/tests"
	"github.com/watermill-sls/watermill-sls/internal/testutil"
)

// initPublisher is the Publisher plus what an application does before it
// writes to a logstore: create it. Some suite tests publish to a topic no
// subscriber has initialized yet.
type initPublisher struct {
	*Publisher
	mu     sync.Mutex
	inited map[string]bool
}

func (p *initPublisher) Publish(topic string, msgs ...*message.Message) error {
	p.mu.Lock()
	if !p.inited[topic] {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := p.api.createLogStore(ctx, topic, 1, 2)
		cancel()
		var se *Error
		if err != nil && !(errors.As(err, &se) && se.Code == CodeLogStoreAlreadyExist) {
			p.mu.Unlock()
			return err
		}
		p.inited[topic] = true
	}
	p.mu.Unlock()
	return p.Publisher.Publish(topic, msgs...)
}

// pstConstructor pairs the Subscriber (in consumer group group, "" for
// none) with the Publisher; hashKey, when set, routes every message to one
// shard.
func pstConstructor(env *testutil.SLSEnv, hashKey, group string) func(t *testing.T) (message.Publisher, message.Subscriber) {
	return func(t *testing.T) (message.Publisher, message.Subscriber) {
		pc := PublisherConfig{ClientConfig: testConfig(env)}
		if hashKey != "" {
			pc.HashKey = func(string, *message.Message) (string, error) { return hashKey, nil }
		}
		pub, err := NewPublisher(pc, watermill.NopLogger{})
		if err != nil {
			t.Fatal(err)
		}
		sub, err := NewSubscriber(SubscriberConfig{
			ClientConfig:       testConfig(env),
			FetchInterval:      5 * time.Millisecond,
			MaxFetchInterval:   50 * time.Millisecond,
			ConsumerGroup:      group,
			CommitInterval:     100 * time.Millisecond,
			InitializeLogStore: true,
			// A closed member stays in the group until the timeout: a short
			// one lets the next subscriber of the group take over quickly.
			HeartbeatInterval:   200 * time.Millisecond,
			HeartbeatTimeout:    3 * time.Second,
			RediscoveryInterval: 200 * time.Millisecond,
			CloseTimeout:        time.Second,
		}, watermill.NopLogger{})
		if err != nil {
			t.Fatal(err)
		}
		return &initPublisher{Publisher: pub, inited: map[string]bool{}}, sub
	}
}

func pstTopic(tctx tests.TestContext) string {
	return "t-" + strings.ReplaceAll(string(tctx.TestID), "_", "-")
}

// TestPubSub runs Watermill's universal suite.
//
// Subscribers sharing a consumer group share its shards (SLS assigns them
// by heartbeat), so ConsumerGroups is true. The constructors use one
// consumer group, "test", so that a new subscriber continues where a closed
// one stopped (Persistent); for the same reason a new subscriber of that
// group does not receive old messages, which is checked without a group
// below.
func TestPubSub(t *testing.T) {
	env := testutil.SLS(t)
	if err := env.Server.CreateProject(testProject, ""); err != nil {
		t.Fatal(err)
	}
	features := tests.Features{
		ConsumerGroups:    true,
		Persistent:        true,
		GenerateTopicFunc: pstTopic,
	}
	groups := func(hashKey string) tests.ConsumerGroupPubSubConstructor {
		return func(t *testing.T, group string) (message.Publisher, message.Subscriber) {
			return pstConstructor(env, hashKey, group)(t)
		}
	}
	t.Run("two shards", func(t *testing.T) {
		tests.TestPubSub(t, features, pstConstructor(env, "", "test"), groups(""))
	})
	t.Run("one hash key", func(t *testing.T) {
		f := features
		f.GuaranteedOrder = true
		tests.TestPubSub(t, f, pstConstructor(env, "one key", "test"), groups("one key"))
	})
	t.Run("without group", func(t *testing.T) {
		f := tests.Features{NewSubscriberReceivesOldMessages: true, GenerateTopicFunc: pstTopic}
		tests.TestNewSubscriberReceivesOldMessages(t, tests.TestContext{TestID: tests.NewTestID(), Features: f},
			pstConstructor(env, "", ""))
	})
}

// TestPubSubStress runs the universal suite several times in parallel, as
// watermill's stress test does: 2 rounds in make test, 10 under make soak,
// or STRESS_TEST_COUNT when set.
func TestPubSubStress(t *testing.T) {
	if os.Getenv("STRESS_TEST_COUNT") == "" {
		t.Setenv("STRESS_TEST_COUNT", strconv.Itoa(testutil.SoakOr(2, 10)))
	}
	env := testutil.SLS(t)
	if err := env.Server.CreateProject(testProject, ""); err != nil {
		t.Fatal(err)
	}
	features := tests.Features{Persistent: true, GuaranteedOrder: true, GenerateTopicFunc: pstTopic}
	tests.TestPubSubStressTest(t, features, pstConstructor(env, "one key", "test"), nil)
}
