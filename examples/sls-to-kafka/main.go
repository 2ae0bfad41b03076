// Command sls-to-kafka copies an SLS logstore into a Kafka topic exactly
// once: each Kafka transaction carries a batch of output records and the
// SLS positions they came from, and a restart resumes after the last
// committed positions, so a crash anywhere neither loses nor duplicates a
// record for read_committed readers.
//
// Without flags it runs everything in process: the SLS emulator (slstest)
// and a Kafka cluster (kfake). It writes logs to the "events" logstore,
// copies them to the "events" topic in two runs (the first stopped
// midway), and reads the topic back with read_committed to count
// duplicates and losses. With -endpoint/-project (credentials in
// ALIBABA_CLOUD_ACCESS_KEY_ID / ALIBABA_CLOUD_ACCESS_KEY_SECRET) and
// -brokers it copies a real logstore into real brokers, until interrupted.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/watermill-sls/watermill-sls/exactlyonce"
	"github.com/watermill-sls/watermill-sls/slspubsub"
	"github.com/watermill-sls/watermill-sls/slspubsub/slstest"
)

const (
	logstore       = "events"
	outputTopic    = "events"
	positionsTopic = "events-positions"
)

func main() {
	endpoint := flag.String("endpoint", "", "SLS endpoint (empty: an in-process emulator and Kafka cluster)")
	project := flag.String("project", "sls-to-kafka", "SLS project")
	brokers := flag.String("brokers", "", "Kafka brokers, comma separated (with -endpoint)")
	logs := flag.Int("logs", 20000, "logs to write first (in-process mode)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	logger := watermill.NewSlogLogger(nil)
	if *endpoint != "" {
		cfg := slspubsub.ClientConfig{
			Endpoint: *endpoint, Project: *project,
			AccessKeyID:     os.Getenv("ALIBABA_CLOUD_ACCESS_KEY_ID"),
			AccessKeySecret: os.Getenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET"),
		}
		if err := copyLogs(ctx, cfg, strings.Split(*brokers, ","), logger); err != nil && !errors.Is(err, context.Canceled) {
			log.Fatal(err)
		}
		return
	}
	res, err := demo(ctx, *logs, logger)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("logs written %d; records in Kafka (read_committed) %d: duplicates %d, missing %d\n",
		res.written, res.read, res.duplicates, res.missing)
}

type result struct{ written, read, duplicates, missing int }

// demo runs the whole pipeline in process and checks the output.
func demo(ctx context.Context, n int, logger watermill.LoggerAdapter) (result, error) {
	srv, err := slstest.NewServer()
	if err != nil {
		return result{}, err
	}
	defer srv.Close()
	if err := srv.CreateLogStore("sls-to-kafka", logstore, 4); err != nil {
		return result{}, err
	}
	cfg := slspubsub.ClientConfig{
		Endpoint: srv.Endpoint(), Project: "sls-to-kafka",
		AccessKeyID: slstest.DefaultAccessKeyID, AccessKeySecret: slstest.DefaultAccessKeySecret,
		HTTPClient: srv.HTTPClient(),
	}
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(4, outputTopic), kfake.SeedTopics(1, positionsTopic))
	if err != nil {
		return result{}, err
	}
	defer cluster.Close()
	brokers := cluster.ListenAddrs()
	if err := compactPositions(ctx, brokers); err != nil {
		return result{}, err
	}
	if err := writeLogs(cfg, n); err != nil {
		return result{}, err
	}

	// A first run stopped after a moment (gracefully here; exactlyonce's
	// crash tests kill the process instead); the second one resumes from
	// what the first committed.
	first, cancel := context.WithTimeout(ctx, time.Second)
	err = copyLogs(first, cfg, brokers, logger)
	cancel()
	if err != nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
		return result{}, err
	}
	second, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- copyLogs(second, cfg, brokers, logger) }()
	counts, err := readBack(ctx, brokers, n)
	cancel()
	if copyErr := <-done; copyErr != nil && !errors.Is(copyErr, context.Canceled) {
		return result{}, copyErr
	}
	if err != nil {
		return result{}, err
	}
	res := result{written: n}
	for i := range n {
		c := counts[fmt.Sprintf("log-%06d", i)]
		res.read += c
		switch {
		case c == 0:
			res.missing++
		case c > 1:
			res.duplicates += c - 1
		}
	}
	return res, nil
}

// copyLogs runs the pipeline until ctx ends: a Subscriber resuming from the
// sink's committed positions, a router, and the sink's handler.
func copyLogs(ctx context.Context, cfg slspubsub.ClientConfig, brokers []string, logger watermill.LoggerAdapter) error {
	sink, err := exactlyonce.NewKafkaSink(exactlyonce.KafkaSinkConfig{
		Brokers:         brokers,
		Consumer:        "sls-to-kafka",
		TransactionalID: "sls-to-kafka-0", // stable: a restart fences a previous instance
		PositionsTopic:  positionsTopic,
		OutputTopic:     outputTopic,
	}, logger)
	if err != nil {
		return err
	}
	defer sink.Close()
	sub, err := slspubsub.NewSubscriber(slspubsub.SubscriberConfig{
		ClientConfig:  cfg,
		MaxInFlight:   64, // several logs per shard in one transaction: needs the decorator below
		PositionStore: sink.PositionStore(),
	}, logger)
	if err != nil {
		return err
	}
	position := exactlyonce.SLSPositionOf(logstore)
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 10 * time.Second}, logger)
	if err != nil {
		return err
	}
	router.AddSubscriberDecorators(sink.SubscriberDecorator(position))
	router.AddConsumerHandler("to-kafka", logstore, sub, sink.Handler(func(msg *message.Message) ([]*message.Message, error) {
		return []*message.Message{message.NewMessage(msg.UUID, msg.Payload)}, nil
	}, position))
	return router.Run(ctx)
}

func writeLogs(cfg slspubsub.ClientConfig, n int) error {
	pub, err := slspubsub.NewPublisher(slspubsub.PublisherConfig{ClientConfig: cfg}, nil)
	if err != nil {
		return err
	}
	defer pub.Close()
	for start := 0; start < n; start += 1000 {
		var msgs []*message.Message
		for i := start; i < min(start+1000, n); i++ {
			msgs = append(msgs, message.NewMessage(fmt.Sprintf("log-%06d", i), []byte(fmt.Sprintf(`{"n":%d}`, i))))
		}
		if err := pub.Publish(logstore, msgs...); err != nil {
			return err
		}
	}
	return nil
}

// compactPositions makes the positions topic compacted, as it should be.
func compactPositions(ctx context.Context, brokers []string) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		return err
	}
	defer cl.Close()
	v := "compact"
	_, err = kadm.NewClient(cl).AlterTopicConfigs(ctx, []kadm.AlterConfig{{Name: "cleanup.policy", Value: &v}}, positionsTopic)
	return err
}

// readBack reads the output topic with read_committed until it holds n
// records (or ctx ends), and counts them by UUID (watermill-kafka's
// marshaler puts it in the "_watermill_message_uuid" header).
func readBack(ctx context.Context, brokers []string, n int) (map[string]int, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(outputTopic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	counts := map[string]int{}
	total := 0
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if total >= n {
			// One more short poll, so that records beyond n (duplicates) show.
			deadline = time.Now().Add(time.Second)
		}
		fctx, cancel := context.WithDeadline(ctx, deadline)
		fs := cl.PollFetches(fctx)
		expired := fctx.Err() != nil
		cancel()
		fs.EachRecord(func(r *kgo.Record) {
			for _, h := range r.Headers {
				if h.Key == "_watermill_message_uuid" {
					counts[string(h.Value)]++
					total++
				}
			}
		})
		if expired {
			if total >= n {
				return counts, nil
			}
			return counts, fmt.Errorf("read %d of %d records: %w", total, n, context.DeadlineExceeded)
		}
	}
}
