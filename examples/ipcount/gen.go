package main

import (
	"bytes"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/watermill-sls/watermill-sls/slspubsub"
)

// What the generator produces: nginx access logs of one web host per shard.
const (
	eventRate    = 400              // requests per second of event time, all hosts together
	distinctIPs  = 5000             // clients, drawn from a Zipf distribution (a few very busy ones)
	hostSkew     = 2 * time.Second  // host k's clock runs k*hostSkew behind host 0's
	maxReqTime   = 1500             // ms: a log is written when its request ends, so logs are this much out of order
	delayedShare = 0.002            // share of logs uploaded late (a host that lost its connection for a while)
	minDelay     = 30 * time.Second // how late a delayed upload arrives, at least
	maxDelay     = 60 * time.Second
)

// accessLog is one request as nginx logs it. Time is the event time: when the request started (nginx's
// $time_local), which is also the SLS log time.
type accessLog struct {
	Time        time.Time `json:"t"`
	Host        string    `json:"h"`
	IP          string    `json:"ip"`
	Request     string    `json:"r"`
	Status      int       `json:"s"`
	Bytes       int       `json:"b"`
	RequestTime float64   `json:"rt"`
	UserAgent   string    `json:"ua"`
	Run         string    `json:"run"`
	Delayed     bool      `json:"d,omitempty"` // uploaded late (minDelay to maxDelay after the request)
}

// cell is one (window, IP) count.
type cell struct {
	Window time.Time
	IP     string
}

// dataset is what the generator wrote: the logs of each host in upload order, and the truth computed directly
// from them.
type dataset struct {
	hosts   [][]accessLog // hosts[k] goes to shard k, in this order
	truth   map[cell]int64
	delayed int // logs uploaded late
	span    time.Duration
}

var (
	paths  = []string{"/", "/index.html", "/api/orders", "/api/cart", "/login", "/static/app.js", "/static/logo.png", "/search?q=sls"}
	agents = []string{"Mozilla/5.0 (X11; Linux x86_64) Firefox/132.0", "Mozilla/5.0 (Macintosh) Safari/605.1.15", "curl/8.5.0", "Go-http-client/1.1"}
)

// generate makes n access logs for shards hosts, starting at base. Half the hosts (the first) serve three
// times the traffic of the others, so their shards hold more logs per second of event time: read without
// alignment, the sparse shards would race ahead in event time. The logs of a host are in upload order: by the
// end of their request, plus a delay for the few delayed uploads. It is deterministic for a seed.
func generate(n, hosts int, base time.Time, seed uint64, run string) *dataset {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	zipf := rand.NewZipf(r, 1.1, 4, distinctIPs-1)
	ips := make([]string, distinctIPs)
	for i := range ips {
		ips[i] = fmt.Sprintf("%d.%d.%d.%d", 10+i%200, (i*37)%256, (i*101)%256, 1+i%254)
	}
	weights, total := make([]int, hosts), 0
	for k := range weights {
		weights[k] = 1
		if k < (hosts+1)/2 {
			weights[k] = 3
		}
		total += weights[k]
	}
	span := time.Duration(float64(n) / eventRate * float64(time.Second))
	d := &dataset{hosts: make([][]accessLog, hosts), truth: map[cell]int64{}, span: span}
	type pending struct {
		log    accessLog
		upload time.Time
	}
	made := 0
	for k := range hosts {
		count := n * weights[k] / total
		if k == hosts-1 {
			count = n - made
		}
		made += count
		host := fmt.Sprintf("web-%d", k+1)
		logs := make([]pending, 0, count)
		for i := range count {
			start := base.Add(time.Duration(float64(i)/float64(count)*float64(span)) - time.Duration(k)*hostSkew)
			reqMS := r.IntN(maxReqTime)
			l := accessLog{
				Time:        start,
				Host:        host,
				IP:          ips[zipf.Uint64()],
				Request:     "GET " + paths[r.IntN(len(paths))] + " HTTP/1.1",
				Status:      []int{200, 200, 200, 200, 200, 200, 304, 404, 500}[r.IntN(9)],
				Bytes:       200 + r.IntN(20000),
				RequestTime: float64(reqMS) / 1000,
				UserAgent:   agents[r.IntN(len(agents))],
				Run:         run,
			}
			upload := start.Add(time.Duration(reqMS) * time.Millisecond)
			if r.Float64() < delayedShare {
				l.Delayed = true
				upload = upload.Add(minDelay + time.Duration(r.Int64N(int64(maxDelay-minDelay))))
				d.delayed++
			}
			logs = append(logs, pending{l, upload})
			d.truth[cell{windowStart(l.Time), l.IP}]++
		}
		slices.SortStableFunc(logs, func(a, b pending) int { return a.upload.Compare(b.upload) })
		d.hosts[k] = make([]accessLog, len(logs))
		for i, p := range logs {
			d.hosts[k][i] = p.log
		}
	}
	return d
}

// windowStart is the start of the tumbling window holding t (windows start at multiples of windowSize since
// the Unix epoch, as in package watermark).
func windowStart(t time.Time) time.Time {
	ns := t.UnixNano()
	return time.Unix(0, ns-ns%int64(windowSize)).UTC()
}

// accessLogMarshaler writes an accessLog (the message payload, JSON) as a plain SLS log with nginx's field
// names, the way Logtail would collect it, with the request's start as the log time. Readers get it as a
// JSON object of its contents (slspubsub.DefaultMarshaler) and decode it with a slspubsub.Decoder.
type accessLogMarshaler struct{}

func (accessLogMarshaler) Marshal(_ string, msg *message.Message) (slspubsub.Record, error) {
	var l accessLog
	if err := json.Unmarshal(msg.Payload, &l); err != nil {
		return slspubsub.Record{}, fmt.Errorf("access log %s: %w", msg.UUID, err)
	}
	return slspubsub.Record{
		Topic:  "nginx-access",
		Source: l.Host,
		Log: slspubsub.Log{Time: l.Time, Contents: []slspubsub.Content{
			{Key: "remote_addr", Value: l.IP},
			{Key: "time_local", Value: l.Time.Format("02/Jan/2006:15:04:05 -0700")},
			{Key: "request", Value: l.Request},
			{Key: "status", Value: strconv.Itoa(l.Status)},
			{Key: "body_bytes_sent", Value: strconv.Itoa(l.Bytes)},
			{Key: "http_user_agent", Value: l.UserAgent},
			{Key: "request_time", Value: strconv.FormatFloat(l.RequestTime, 'f', 3, 64)},
			{Key: "host", Value: l.Host},
			{Key: "run", Value: l.Run},
		}},
	}, nil
}

// shardKeys returns, per shard, a partition key whose md5 lies in the shard's hash range, so that the
// Publisher writes each host's logs to its own shard.
func shardKeys(ranges []hashRange) ([]string, error) {
	keys := make([]string, len(ranges))
	for k, rg := range ranges {
		begin, err1 := hex.DecodeString(strings.ToLower(rg.begin))
		end, err2 := hex.DecodeString(strings.ToLower(rg.end))
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("shard %d: hash range %q-%q is not hex", rg.shard, rg.begin, rg.end)
		}
		for i := 0; keys[k] == ""; i++ {
			if i > 1_000_000 {
				return nil, fmt.Errorf("shard %d: no key found for hash range %q-%q", rg.shard, rg.begin, rg.end)
			}
			key := fmt.Sprintf("host-%d-%d", k, i)
			sum := md5.Sum([]byte(key))
			if bytes.Compare(sum[:], begin) >= 0 && bytes.Compare(sum[:], end) < 0 {
				keys[k] = key
			}
		}
	}
	return keys, nil
}

// hashRange is a shard's [begin, end) in SLS's hash space, as hex.
type hashRange struct {
	shard      int
	begin, end string
}
