// Command quickstart is the README's quick start: it publishes one message to
// an SLS logstore and consumes the logstore in a consumer group, printing
// each message, until interrupted.
//
// Without flags it starts the SLS emulator (slstest) in process with an
// "app-log" logstore of 2 shards. With -endpoint and -project (and
// credentials in ALIBABA_CLOUD_ACCESS_KEY_ID and
// ALIBABA_CLOUD_ACCESS_KEY_SECRET, as the SDK names them) it runs against a
// real SLS project whose "app-log" logstore exists.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/watermill-sls/watermill-sls/slspubsub"
	"github.com/watermill-sls/watermill-sls/slspubsub/slstest"
)

func main() {
	endpoint := flag.String("endpoint", "", "SLS endpoint, e.g. cn-hangzhou.log.aliyuncs.com (empty: an in-process emulator)")
	project := flag.String("project", "my-project", "SLS project")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	cfg := slspubsub.ClientConfig{
		Endpoint:        *endpoint,
		Project:         *project,
		AccessKeyID:     os.Getenv("ALIBABA_CLOUD_ACCESS_KEY_ID"),
		AccessKeySecret: os.Getenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET"),
	}
	if *endpoint == "" {
		srv, err := emulator(*project)
		if err != nil {
			log.Fatal(err)
		}
		defer srv.Close()
		cfg.Endpoint, cfg.HTTPClient = srv.Endpoint(), srv.HTTPClient()
		cfg.AccessKeyID, cfg.AccessKeySecret = slstest.DefaultAccessKeyID, slstest.DefaultAccessKeySecret
	}
	fmt.Println("consuming app-log; Ctrl-C to stop")
	if err := run(ctx, cfg, os.Stdout); err != nil {
		log.Fatal(err)
	}
}

// emulator starts an SLS emulator with project/app-log (2 shards).
func emulator(project string) (*slstest.Server, error) {
	srv, err := slstest.NewServer()
	if err != nil {
		return nil, err
	}
	if err := srv.CreateLogStore(project, "app-log", 2); err != nil {
		_ = srv.Close()
		return nil, err
	}
	return srv, nil
}

// run is the README's quick start, line for line (main_test.go checks that).
func run(ctx context.Context, cfg slspubsub.ClientConfig, out io.Writer) error {
	pub, err := slspubsub.NewPublisher(slspubsub.PublisherConfig{ClientConfig: cfg}, nil)
	if err != nil {
		return err
	}
	defer pub.Close()
	msg := message.NewMessage(watermill.NewUUID(), []byte(`{"user":"ada","action":"login"}`))
	if err := pub.Publish("app-log", msg); err != nil { // nil: SLS has stored it
		return err
	}

	sub, err := slspubsub.NewSubscriber(slspubsub.SubscriberConfig{
		ClientConfig:  cfg,
		ConsumerGroup: "quickstart", // more processes in the group share the shards
		StartPosition: slspubsub.StartAtBegin(),
	}, nil)
	if err != nil {
		return err
	}
	defer sub.Close()
	messages, err := sub.Subscribe(ctx, "app-log")
	if err != nil {
		return err
	}
	for msg := range messages { // until ctx is cancelled
		fmt.Fprintf(out, "%s (shard %s)\n", msg.Payload, msg.Metadata.Get(slspubsub.MetadataShard))
		msg.Ack()
	}
	return nil
}
