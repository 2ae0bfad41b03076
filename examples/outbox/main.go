// Command outbox is a small order service with a transactional outbox: an
// HTTP endpoint stores an order and its "OrderCreated" events in one
// PostgreSQL transaction, and relays deliver the events to SLS (for
// analytics) and to Kafka (for other services). An order and its events
// commit together or not at all, whatever crashes when.
//
// Without flags everything runs in process: the SLS emulator, a Kafka
// cluster (kfake) and a throwaway PostgreSQL started from the system's
// binaries (or DATABASE_URL). It serves on -listen, posts -orders orders to
// itself, waits until the relays delivered every event, counts them in SLS
// and Kafka, and exits. With -orders 0 it keeps serving:
//
//	curl -XPOST localhost:8080/orders -d '{"customer":"c-1","amount":12.5}'
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/watermill-sls/watermill-sls/internal/pgcluster"
	"github.com/watermill-sls/watermill-sls/outbox"
	"github.com/watermill-sls/watermill-sls/slspubsub"
	"github.com/watermill-sls/watermill-sls/slspubsub/slstest"
)

const (
	project    = "order-service"
	eventTopic = "order-events" // the SLS logstore and the Kafka topic
)

// Two outbox tables, one per destination, each with its relay.
var (
	slsOutbox   = outbox.Table{Name: "outbox_sls"}
	kafkaOutbox = outbox.Table{Name: "outbox_kafka"}
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8080", "HTTP address of the order service")
	orders := flag.Int("orders", 200, "orders to post to the service, then check and exit (0: serve until interrupted)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	res, err := run(ctx, *listen, *orders, watermill.NewSlogLogger(nil))
	if err != nil && !errors.Is(err, context.Canceled) {
		log.Fatal(err)
	}
	if *orders > 0 {
		fmt.Printf("orders posted %d (%d refused); events in SLS %d, in Kafka %d\n", res.posted, res.refused, res.sls, res.kafka)
	}
}

type result struct{ posted, refused, sls, kafka int }

// env is what the service runs against.
type env struct {
	db      *pgxpool.Pool
	sls     slspubsub.ClientConfig
	brokers []string
	close   func()
}

func newEnv(ctx context.Context) (*env, error) {
	e := &env{}
	var closers []func()
	e.close = func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}
	url := os.Getenv("DATABASE_URL")
	if url == "" {
		c, err := pgcluster.Start(ctx)
		if err != nil {
			return nil, fmt.Errorf("start PostgreSQL (or set DATABASE_URL): %w", err)
		}
		closers = append(closers, func() { _ = c.Stop() })
		url = c.URL()
	}
	db, err := pgxpool.New(ctx, url)
	if err != nil {
		e.close()
		return nil, err
	}
	closers = append(closers, db.Close)
	e.db = db
	srv, err := slstest.NewServer()
	if err != nil {
		e.close()
		return nil, err
	}
	closers = append(closers, func() { _ = srv.Close() })
	if err := srv.CreateLogStore(project, eventTopic, 2); err != nil {
		e.close()
		return nil, err
	}
	e.sls = slspubsub.ClientConfig{
		Endpoint: srv.Endpoint(), Project: project,
		AccessKeyID: slstest.DefaultAccessKeyID, AccessKeySecret: slstest.DefaultAccessKeySecret,
		HTTPClient: srv.HTTPClient(),
	}
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, eventTopic))
	if err != nil {
		e.close()
		return nil, err
	}
	closers = append(closers, cluster.Close)
	e.brokers = cluster.ListenAddrs()
	return e, nil
}

func run(ctx context.Context, listen string, orders int, logger watermill.LoggerAdapter) (result, error) {
	e, err := newEnv(ctx)
	if err != nil {
		return result{}, err
	}
	defer e.close()
	if _, err := e.db.Exec(ctx, `CREATE TABLE IF NOT EXISTS orders (
		id bigserial PRIMARY KEY, customer text NOT NULL, amount numeric NOT NULL CHECK (amount > 0))`); err != nil {
		return result{}, err
	}
	for _, t := range []outbox.Table{slsOutbox, kafkaOutbox} {
		if err := t.Migrate(ctx, e.db); err != nil {
			return result{}, err
		}
	}

	relayCtx, stopRelays := context.WithCancel(ctx)
	defer stopRelays()
	var wg sync.WaitGroup
	relayErrs := make(chan error, 2)
	relays, closeDest, err := newRelays(e, logger)
	if err != nil {
		return result{}, err
	}
	defer closeDest()
	for _, r := range relays {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := r.Run(relayCtx); err != nil && !errors.Is(err, context.Canceled) {
				relayErrs <- err
			}
		}()
	}
	defer wg.Wait()
	defer stopRelays()

	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return result{}, err
	}
	server := &http.Server{Handler: ordersHandler(e.db), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = server.Serve(ln) }()
	defer server.Close()
	if orders == 0 {
		<-ctx.Done()
		return result{}, ctx.Err()
	}
	res := postOrders(ctx, "http://"+ln.Addr().String(), orders)
	want := res.posted - res.refused
	res.sls, res.kafka, err = awaitEvents(ctx, e, want, relayErrs)
	return res, err
}

// newRelays returns one relay per destination: SLS through slspubsub's
// Publisher, Kafka through watermill-kafka's.
func newRelays(e *env, logger watermill.LoggerAdapter) ([]*outbox.Relay, func(), error) {
	slsPub, err := slspubsub.NewPublisher(slspubsub.PublisherConfig{ClientConfig: e.sls}, logger)
	if err != nil {
		return nil, nil, err
	}
	kafkaPub, err := kafka.NewPublisher(kafka.PublisherConfig{
		Brokers: e.brokers, Marshaler: kafka.DefaultMarshaler{}, OverwriteSaramaConfig: saramaConfig(),
	}, logger)
	if err != nil {
		_ = slsPub.Close()
		return nil, nil, err
	}
	closeDest := func() { _ = slsPub.Close(); _ = kafkaPub.Close() }
	var relays []*outbox.Relay
	for table, pub := range map[outbox.Table]message.Publisher{slsOutbox: slsPub, kafkaOutbox: kafkaPub} {
		r, err := outbox.NewRelay(e.db, outbox.RelayConfig{Table: table, Publisher: pub}, logger)
		if err != nil {
			closeDest()
			return nil, nil, err
		}
		relays = append(relays, r)
	}
	return relays, closeDest, nil
}

func saramaConfig() *sarama.Config {
	c := kafka.DefaultSaramaSyncPublisherConfig()
	c.Version = sarama.V2_8_0_0
	return c
}

// orderRequest is the body of POST /orders.
type orderRequest struct {
	Customer string  `json:"customer"`
	Amount   float64 `json:"amount"`
}

// ordersHandler stores an order and its OrderCreated event for each
// destination in one transaction; an order the database refuses (a
// non-positive amount) leaves no event behind.
func ordersHandler(db *pgxpool.Pool) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /orders", func(w http.ResponseWriter, r *http.Request) {
		var req orderRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Customer == "" {
			http.Error(w, "body must be {\"customer\":..., \"amount\":...}", http.StatusBadRequest)
			return
		}
		var id int64
		err := pgx.BeginFunc(r.Context(), db, func(tx pgx.Tx) error {
			if err := tx.QueryRow(r.Context(), `INSERT INTO orders (customer, amount) VALUES ($1, $2) RETURNING id`,
				req.Customer, req.Amount).Scan(&id); err != nil {
				return err
			}
			event, err := json.Marshal(map[string]any{"type": "OrderCreated", "order": id, "customer": req.Customer, "amount": req.Amount})
			if err != nil {
				return err
			}
			for _, table := range []outbox.Table{slsOutbox, kafkaOutbox} {
				pub, err := outbox.NewPublisher(tx, outbox.PublisherConfig{Table: table})
				if err != nil {
					return err
				}
				msg := message.NewMessage(watermill.NewUUID(), event)
				msg.Metadata.Set(outbox.DefaultOrderingKeyMetadata, req.Customer) // a customer's events in order
				if err := pub.Publish(eventTopic, msg); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			http.Error(w, "order refused: "+err.Error(), http.StatusUnprocessableEntity)
			return
		}
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, "{\"id\":%d}\n", id)
	})
	return mux
}

// postOrders posts n orders, every 20th with a negative amount (refused).
func postOrders(ctx context.Context, base string, n int) result {
	res := result{posted: n}
	for i := range n {
		amount := float64(i%40) + 1
		if i%20 == 19 {
			amount = -amount
		}
		body, _ := json.Marshal(orderRequest{Customer: fmt.Sprintf("c-%d", i%7), Amount: amount})
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/orders", bytes.NewReader(body))
		if err != nil {
			res.refused++
			continue
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != http.StatusCreated {
			res.refused++
		}
		if resp != nil {
			_ = resp.Body.Close()
		}
	}
	return res
}

// awaitEvents waits until both destinations hold want events.
func awaitEvents(ctx context.Context, e *env, want int, relayErrs <-chan error) (slsCount, kafkaCount int, err error) {
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		if slsCount, err = countSLS(ctx, e); err != nil {
			return 0, 0, err
		}
		if kafkaCount, err = countKafka(ctx, e); err != nil {
			return 0, 0, err
		}
		if slsCount >= want && kafkaCount >= want {
			return slsCount, kafkaCount, nil
		}
		select {
		case err := <-relayErrs:
			return slsCount, kafkaCount, err
		case <-ctx.Done():
			return slsCount, kafkaCount, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return slsCount, kafkaCount, fmt.Errorf("only %d events in SLS and %d in Kafka of %d after 2 minutes", slsCount, kafkaCount, want)
}

// countSLS reads the logstore from its beginning to its current end.
func countSLS(ctx context.Context, e *env) (int, error) {
	sub, err := slspubsub.NewSubscriber(slspubsub.SubscriberConfig{ClientConfig: e.sls, StopPosition: slspubsub.StopAtEnd()}, nil)
	if err != nil {
		return 0, err
	}
	ch, err := sub.Subscribe(ctx, eventTopic)
	if err != nil {
		return 0, err
	}
	n := 0
	for msg := range ch {
		n++
		msg.Ack()
	}
	return n, sub.Close()
}

// countKafka reads the topic from its beginning to its current end.
func countKafka(ctx context.Context, e *env) (int, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.brokers...), kgo.ConsumeTopics(eventTopic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	n := 0
	for {
		pctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		fs := cl.PollFetches(pctx)
		done := pctx.Err() != nil
		cancel()
		n += fs.NumRecords()
		if done {
			return n, ctx.Err()
		}
	}
}
