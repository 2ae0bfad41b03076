package slstest_test

import (
	"fmt"
	"log"
	"strings"
	"sync"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/watermill-sls/watermill-sls/slspubsub"
	"github.com/watermill-sls/watermill-sls/slspubsub/slstest"
)

// A test of code that writes to SLS, with the emulator in process: the first
// two PutLogs requests are answered 503 ServerBusy, the Publisher retries, and
// the test inspects what the server stored.
func Example() {
	var mu sync.Mutex
	var answers []string // what the server answered each PutLogs request
	srv, err := slstest.NewServer(slstest.WithRequestObserver(func(r slstest.RequestInfo) {
		if r.Op == slstest.OpPutLogs {
			mu.Lock()
			answers = append(answers, fmt.Sprint(r.Status, " ", r.ErrorCode))
			mu.Unlock()
		}
	}))
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	if err := srv.CreateLogStore("my-project", "app-log", 2); err != nil {
		log.Fatal(err)
	}
	srv.InjectFault(slstest.Fault{Op: slstest.OpPutLogs, Status: 503, Code: "ServerBusy", Times: 2})

	pub, err := slspubsub.NewPublisher(slspubsub.PublisherConfig{ClientConfig: slspubsub.ClientConfig{
		Endpoint:        srv.Endpoint(),
		Project:         "my-project",
		AccessKeyID:     slstest.DefaultAccessKeyID,
		AccessKeySecret: slstest.DefaultAccessKeySecret,
		HTTPClient:      srv.HTTPClient(),
	}}, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer pub.Close()
	err = pub.Publish("app-log",
		message.NewMessage("1", []byte("login")),
		message.NewMessage("2", []byte("logout")))
	fmt.Println("publish error:", err)

	shards, err := srv.Shards("my-project", "app-log")
	if err != nil {
		log.Fatal(err)
	}
	stored := 0
	for _, sh := range shards {
		groups, err := srv.LogGroups("my-project", "app-log", sh.ShardID)
		if err != nil {
			log.Fatal(err)
		}
		for _, g := range groups {
			stored += len(g.Group.Logs)
		}
	}
	fmt.Println("logs stored:", stored)
	mu.Lock()
	fmt.Println("PutLogs answers:", strings.Join(answers, ", "))
	mu.Unlock()
	// Output:
	// publish error: <nil>
	// logs stored: 2
	// PutLogs answers: 503 ServerBusy, 503 ServerBusy, 200
}
