// Command join joins two logstores in event time: orders and payments
// arrive in different logstores, each with its own shards, and are matched
// by order id in one-minute event-time windows. During a backfill the
// payments logstore has shards with ten times the events of the others, so
// without alignment the sparse shards race ahead, the watermark closes
// windows before the dense shards' payments arrive, and matches are lost.
// With both Subscribers aligned in one group (MaxDrift 30 s) nothing is
// lost.
//
// It runs on the SLS emulator in process: it writes -minutes of orders and
// payments, reads both logstores to their end with and without alignment,
// and prints what each run matched and lost.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"strconv"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	sls "github.com/aliyun/aliyun-log-go-sdk"
	"github.com/gogo/protobuf/proto"

	"github.com/watermill-sls/watermill-sls/slspubsub"
	"github.com/watermill-sls/watermill-sls/slspubsub/slstest"
	"github.com/watermill-sls/watermill-sls/watermark"
)

const (
	project  = "shop"
	orders   = "orders"
	payments = "payments"
	shards   = 4
	maxDrift = 30 * time.Second
)

func main() {
	minutes := flag.Int("minutes", 5, "minutes of event time to generate")
	flag.Parse()
	srv, cfg, n, err := setup(*minutes)
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	for _, aligned := range []bool{false, true} {
		res, err := join(context.Background(), cfg, aligned)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("aligned=%-5v orders %d, matched %d, lost %d, late events %d\n", aligned, n, res.matched, n-res.matched, res.late)
	}
}

// setup starts the emulator and writes the orders and payments; it returns
// the number of orders.
func setup(minutes int) (*slstest.Server, slspubsub.ClientConfig, int, error) {
	srv, err := slstest.NewServer()
	if err != nil {
		return nil, slspubsub.ClientConfig{}, 0, err
	}
	cfg := slspubsub.ClientConfig{
		Endpoint: srv.Endpoint(), Project: project,
		AccessKeyID: slstest.DefaultAccessKeyID, AccessKeySecret: slstest.DefaultAccessKeySecret,
		HTTPClient: srv.HTTPClient(),
	}
	for _, ls := range []string{orders, payments} {
		if err := srv.CreateLogStore(project, ls, shards); err != nil {
			_ = srv.Close()
			return nil, cfg, 0, err
		}
	}
	base := time.Date(2026, 11, 21, 8, 0, 0, 0, time.UTC)
	perShard := minutes * 60 // one order per second per shard
	for shard := range shards {
		offset := time.Duration(shard) * 250 * time.Millisecond
		var ords, pays []*sls.Log
		for i := range perShard {
			at := base.Add(offset + time.Duration(i)*time.Second)
			id := fmt.Sprintf("o%d-%d", shard, i)
			ords = append(ords, event(at, "order", id))
			pays = append(pays, event(at.Add(100*time.Millisecond), "payment", id))
			if shard < 2 { // dense shards: nine more events in each second
				for j := 1; j < 10; j++ {
					pays = append(pays, event(at.Add(100*time.Millisecond+time.Duration(j)*90*time.Millisecond), "refund-check", id))
				}
			}
		}
		for ls, logs := range map[string][]*sls.Log{orders: ords, payments: pays} {
			for start := 0; start < len(logs); start += 5 { // small LogGroups, as a busy producer writes them
				g := &sls.LogGroup{Topic: proto.String(ls), Logs: logs[start:min(start+5, len(logs))]}
				if _, err := srv.AppendLogGroup(project, ls, shard, g); err != nil {
					_ = srv.Close()
					return nil, cfg, 0, err
				}
			}
		}
	}
	return srv, cfg, shards * perShard, nil
}

func event(at time.Time, kind, orderID string) *sls.Log {
	l := &sls.Log{Time: proto.Uint32(uint32(at.Unix())), TimeNs: proto.Uint32(uint32(at.Nanosecond()))}
	for _, kv := range [][2]string{{"kind", kind}, {"order_id", orderID}, {"amount", strconv.Itoa(len(orderID))}} {
		l.Contents = append(l.Contents, &sls.LogContent{Key: proto.String(kv[0]), Value: proto.String(kv[1])})
	}
	return l
}

type result struct{ matched, late int }

// event fields, decoded from a log's contents.
type joinEvent struct {
	Kind    string `sls:"kind"`
	OrderID string `sls:"order_id"`
}

// join reads both logstores to their end into one-minute windows keyed by
// order id and counts the windows that saw an order and its payment.
func join(ctx context.Context, cfg slspubsub.ClientConfig, aligned bool) (result, error) {
	var coord watermark.Coordinator
	if aligned {
		coord = watermark.NewInProcessCoordinator()
	}
	windows, err := watermark.NewWindows[string, byte, byte](watermark.WindowConfig{
		Size: time.Minute, AllowedLateness: maxDrift + 10*time.Second,
	}, func(acc, side byte) byte { return acc | side })
	if err != nil {
		return result{}, err
	}
	var mu sync.Mutex
	var res result
	count := func(rs []watermark.WindowResult[string, byte]) {
		mu.Lock()
		defer mu.Unlock()
		for _, r := range rs {
			if r.Value == 3 {
				res.matched++
			}
		}
	}
	var decoder slspubsub.Decoder
	handle := func(m *message.Message) error {
		var e joinEvent
		if err := decoder.DecodeMessage(m, &e); err != nil {
			return err
		}
		f, err := slspubsub.LogFieldsFromMessage(m)
		if err != nil {
			return err
		}
		side := map[string]byte{"order": 1, "payment": 2}[e.Kind]
		if side != 0 && windows.Add(e.OrderID, f.Time, side) {
			mu.Lock()
			res.late++ // too late for its window: reported, not silently dropped
			mu.Unlock()
		}
		count(windows.AdvanceFromMessage(m))
		return nil
	}

	errs := make(chan error, 4)
	var wg sync.WaitGroup
	for _, ls := range []string{orders, payments} {
		wcfg := &slspubsub.WatermarkConfig{Strategy: watermark.Strategy{IdleTimeout: 5 * time.Second}}
		if aligned {
			wcfg.Alignment = &slspubsub.AlignmentConfig{Group: "orders-payments", MaxDrift: maxDrift, Coordinator: coord}
		}
		sub, err := slspubsub.NewSubscriber(slspubsub.SubscriberConfig{
			ClientConfig: cfg,
			FetchCount:   2, // small answers: watermarks move in small steps
			StopPosition: slspubsub.StopAtEnd(),
			Watermark:    wcfg,
		}, nil)
		if err != nil {
			return result{}, err
		}
		ch, err := sub.Subscribe(ctx, ls)
		if err != nil {
			return result{}, err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for m := range ch {
				if err := handle(m); err != nil {
					errs <- err
					m.Nack()
					break
				}
				m.Ack()
			}
			if err := sub.Close(); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-errs:
		return result{}, err
	default:
	}
	count(windows.Flush())
	return res, nil
}
