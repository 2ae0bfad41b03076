package slspubsub_test

import (
	"context"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	sls "github.com/aliyun/aliyun-log-go-sdk"
	"github.com/gogo/protobuf/proto"

	"github.com/watermill-sls/watermill-sls/slspubsub"
	"github.com/watermill-sls/watermill-sls/slspubsub/slstest"
)

// A bounded backfill: read a logstore from its beginning to its end as of
// Subscribe, ack each message, and stop. The emulator stands in for SLS.
func ExampleSubscriber() {
	srv, err := slstest.NewServer()
	if err != nil {
		panic(err)
	}
	defer srv.Close()
	if err := srv.CreateLogStore("my-project", "app-log", 1); err != nil {
		panic(err)
	}
	cfg := slspubsub.ClientConfig{
		Endpoint: srv.Endpoint(), Project: "my-project", // e.g. "cn-hangzhou.log.aliyuncs.com"
		AccessKeyID: slstest.DefaultAccessKeyID, AccessKeySecret: slstest.DefaultAccessKeySecret,
		HTTPClient: srv.HTTPClient(),
	}
	pub, err := slspubsub.NewPublisher(slspubsub.PublisherConfig{ClientConfig: cfg}, nil)
	if err != nil {
		panic(err)
	}
	defer pub.Close()
	for _, p := range []string{"first", "second", "third"} {
		if err := pub.Publish("app-log", message.NewMessage(watermill.NewUUID(), []byte(p))); err != nil {
			panic(err)
		}
	}

	sub, err := slspubsub.NewSubscriber(slspubsub.SubscriberConfig{
		ClientConfig:  cfg,
		StartPosition: slspubsub.StartAtBegin(),
		StopPosition:  slspubsub.StopAtEnd(), // the channel closes once everything is read and acked
	}, nil)
	if err != nil {
		panic(err)
	}
	defer sub.Close()
	messages, err := sub.Subscribe(context.Background(), "app-log")
	if err != nil {
		panic(err)
	}
	for msg := range messages {
		pos, _ := slspubsub.PositionFromMessage(msg)
		fmt.Printf("%s (shard %d, index %d)\n", msg.Payload, pos.Shard, pos.Index)
		msg.Ack()
	}
	// Output:
	// first (shard 0, index 0)
	// second (shard 0, index 0)
	// third (shard 0, index 0)
}

// Logs written by other clients (the SDK, Logtail) arrive with a JSON object
// of their contents as payload; a Decoder turns it into a struct, parsing
// the types, and names the field and value that do not parse.
func ExampleDecoder_DecodeMessage() {
	srv, err := slstest.NewServer()
	if err != nil {
		panic(err)
	}
	defer srv.Close()
	if err := srv.CreateLogStore("my-project", "access-log", 1); err != nil {
		panic(err)
	}
	// A LogGroup as another client writes it.
	group := &sls.LogGroup{Topic: proto.String("nginx"), Logs: []*sls.Log{
		accessLog("10.0.0.7", "200", "0.012", "2026-11-21T08:00:00Z"),
		accessLog("10.0.0.9", "50x", "0.300", "2026-11-21T08:00:01Z"),
	}}
	if _, err := srv.AppendLogGroup("my-project", "access-log", 0, group); err != nil {
		panic(err)
	}

	sub, err := slspubsub.NewSubscriber(slspubsub.SubscriberConfig{
		ClientConfig: slspubsub.ClientConfig{
			Endpoint: srv.Endpoint(), Project: "my-project",
			AccessKeyID: slstest.DefaultAccessKeyID, AccessKeySecret: slstest.DefaultAccessKeySecret,
			HTTPClient: srv.HTTPClient(),
		},
		StopPosition: slspubsub.StopAtEnd(),
	}, nil)
	if err != nil {
		panic(err)
	}
	defer sub.Close()
	messages, err := sub.Subscribe(context.Background(), "access-log")
	if err != nil {
		panic(err)
	}
	type access struct {
		IP      string    `sls:"ip"`
		Status  int       `sls:"status"`
		Seconds float64   `sls:"request_time"`
		At      time.Time `sls:"time"`
	}
	var d slspubsub.Decoder
	for msg := range messages {
		var a access
		if err := d.DecodeMessage(msg, &a); err != nil {
			fmt.Println("error:", err)
		} else {
			fmt.Printf("%s %d %.3fs at %s (topic %s)\n", a.IP, a.Status, a.Seconds, a.At.Format(time.TimeOnly), msg.Metadata.Get(slspubsub.MetadataTopic))
		}
		msg.Ack()
	}
	// Output:
	// 10.0.0.7 200 0.012s at 08:00:00 (topic nginx)
	// error: slspubsub: decode key "status" value "50x" into field Status (int): invalid syntax
}

func accessLog(ip, status, seconds, at string) *sls.Log {
	l := &sls.Log{Time: proto.Uint32(uint32(time.Now().Unix()))}
	for _, kv := range [][2]string{{"ip", ip}, {"status", status}, {"request_time", seconds}, {"time", at}} {
		l.Contents = append(l.Contents, &sls.LogContent{Key: proto.String(kv[0]), Value: proto.String(kv[1])})
	}
	return l
}
