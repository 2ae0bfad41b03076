package slspubsub

import (
	"encoding/json"
	"strconv"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

// dbAccess is a typical access-log row.
type dbAccess struct {
	IP      string        `sls:"ip"`
	Method  string        `sls:"method"`
	Path    string        `sls:"path"`
	Status  int           `sls:"status"`
	Bytes   int64         `sls:"bytes"`
	Latency time.Duration `sls:"latency"`
	UA      string        `sls:"ua"`
	Time    time.Time     `sls:"time"`
}

func BenchmarkDecode(b *testing.B) {
	contents := mtBenchGroup().Logs[0].Contents
	var d Decoder
	var v dbAccess
	b.ReportAllocs()
	for b.Loop() {
		if err := d.Decode(contents, &v); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "logs/s")
}

func BenchmarkDecodePointers(b *testing.B) {
	type row struct {
		Status *int    `sls:"status"`
		Bytes  *int64  `sls:"bytes"`
		Path   *string `sls:"path"`
	}
	contents := mtBenchGroup().Logs[0].Contents
	var v row
	b.ReportAllocs()
	for b.Loop() {
		if err := Decode(contents, &v); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeMessage(b *testing.B) {
	g := mtBenchGroup()
	msg, err := DefaultMarshaler{}.Unmarshal(mtReceived(g, 0, mtPosition))
	if err != nil {
		b.Fatal(err)
	}
	var d Decoder
	var v dbAccess
	b.ReportAllocs()
	for b.Loop() {
		if err := d.DecodeMessage(msg, &v); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "logs/s")
}

// BenchmarkDecodeMessageEncodingJSON is the baseline DecodeMessage replaces:
// encoding/json into a map, then strconv by hand.
func BenchmarkDecodeMessageEncodingJSON(b *testing.B) {
	g := mtBenchGroup()
	msg, err := DefaultMarshaler{}.Unmarshal(mtReceived(g, 0, mtPosition))
	if err != nil {
		b.Fatal(err)
	}
	var v dbAccess
	b.ReportAllocs()
	for b.Loop() {
		decodeWithEncodingJSON(b, msg, &v)
	}
}

func decodeWithEncodingJSON(b *testing.B, msg *message.Message, v *dbAccess) {
	var m map[string]string
	if err := json.Unmarshal(msg.Payload, &m); err != nil {
		b.Fatal(err)
	}
	var err error
	v.IP, v.Method, v.Path, v.UA = m["ip"], m["method"], m["path"], m["ua"]
	if v.Status, err = strconv.Atoi(m["status"]); err != nil {
		b.Fatal(err)
	}
	if v.Bytes, err = strconv.ParseInt(m["bytes"], 10, 64); err != nil {
		b.Fatal(err)
	}
	if v.Latency, err = time.ParseDuration(m["latency"]); err != nil {
		b.Fatal(err)
	}
	if v.Time, err = time.Parse(time.RFC3339Nano, m["time"]); err != nil {
		b.Fatal(err)
	}
}
