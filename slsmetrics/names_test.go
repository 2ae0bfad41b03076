package slsmetrics_test

import (
	"errors"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/watermill-sls/watermill-sls/exactlyonce"
	"github.com/watermill-sls/watermill-sls/internal/testutil"
	"github.com/watermill-sls/watermill-sls/outbox"
	"github.com/watermill-sls/watermill-sls/slsmetrics"
	"github.com/watermill-sls/watermill-sls/slspubsub"
)

// documented is one row of the metric table in doc.go.
type documented struct {
	kind   string
	labels []string
}

var docRow = regexp.MustCompile(`^//\t(watermill_sls_\S+)\s+(counter|gauge|histogram)\s+(.+?)\s{2,}\S`)

// docTable reads the metric table of doc.go.
func docTable(t *testing.T) map[string]documented {
	t.Helper()
	src, err := os.ReadFile("doc.go")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]documented{}
	for _, line := range strings.Split(string(src), "\n") {
		m := docRow.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		var labels []string
		if m[3] != "-" {
			for _, l := range strings.Split(m[3], ",") {
				labels = append(labels, strings.TrimSpace(l))
			}
		}
		if _, dup := out[m[1]]; dup {
			t.Errorf("doc.go documents %s twice", m[1])
		}
		out[m[1]] = documented{kind: m[2], labels: labels}
	}
	return out
}

var descRE = regexp.MustCompile(`fqName: "([^"]+)".*variableLabels: \{([^}]*)\}`)

// TestMetricNamesDocumented registers every metric of the package and checks that the names, label names and
// types are exactly the ones the package documentation's table lists.
func TestMetricNamesDocumented(t *testing.T) {
	doc := docTable(t)
	if len(doc) < 30 {
		t.Fatalf("doc.go table has %d rows; the parser or the table is broken", len(doc))
	}
	reg := prometheus.NewRegistry()
	pm, err := slsmetrics.NewPublisherMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	sm, err := slsmetrics.NewSubscriberMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	hm, err := slsmetrics.NewHandlerMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	rm, err := slsmetrics.NewRelayMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	env := slsEnv(t, nil, "names", 1)
	sub, err := slspubsub.NewSubscriber(slspubsub.SubscriberConfig{ClientConfig: clientConfig(env)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Close() })
	sc, err := slsmetrics.NewSubscriberCollector(reg, sub, []string{"names"})
	if err != nil {
		t.Fatal(err)
	}
	oc, err := slsmetrics.NewOutboxCollector(reg, testutil.Postgres(t), outbox.Table{})
	if err != nil {
		t.Fatal(err)
	}

	brokers := testutil.Kafka(t, "eo-positions", "out")
	sink, err := exactlyonce.NewKafkaSink(exactlyonce.KafkaSinkConfig{Brokers: brokers, Consumer: "c",
		TransactionalID: "c-0", PositionsTopic: "eo-positions", OutputTopic: "out"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sink.Close() })
	kc, err := slsmetrics.NewKafkaSinkCollector(reg, sink, "c-0")
	if err != nil {
		t.Fatal(err)
	}

	// Names and labels, from the descriptors of everything registered.
	registered := map[string][]string{}
	ch := make(chan *prometheus.Desc, 100)
	for _, c := range []interface{ Describe(chan<- *prometheus.Desc) }{sc, oc, kc} {
		c.Describe(ch)
	}
	close(ch)
	for d := range ch {
		addDesc(t, registered, d)
	}
	// The observers' metrics have series once observed; a Gather then gives their descriptors and types.
	err = errors.New("injected")
	pm.PutLogs(slspubsub.PutLogsStats{Logstore: "names", Logs: 1, Bytes: 10, Attempt: 1, Duration: time.Millisecond})
	pm.PutLogsRetry("names", 1, err)
	sm.PullLogs(slspubsub.PullLogsStats{Logstore: "names", LogGroups: 1, RawBytes: 10, Duration: time.Millisecond})
	sm.PullLogs(slspubsub.PullLogsStats{Logstore: "names", Err: err, Retried: true})
	sm.LogsFetched("names", 0, 1)
	sm.AlignmentWait("names", 0, time.Millisecond)
	hm.Transaction(exactlyonce.TransactionStats{Consumer: "c", Messages: 3, Applied: 1, Skipped: 1, Failed: 1})
	rm.Relayed("t", time.Second)
	rm.Failed("t", 1, err)
	rm.Parked("t", 1, err)
	rm.Error(err)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	types := map[string]string{}
	for _, mf := range mfs {
		types[mf.GetName()] = strings.ToLower(mf.GetType().String())
		if _, ok := registered[mf.GetName()]; !ok {
			registered[mf.GetName()] = seriesLabels(mf)
		}
	}

	for name, labels := range registered {
		d, ok := doc[name]
		if !ok {
			t.Errorf("%s is registered but not documented in doc.go", name)
			continue
		}
		if !slices.Equal(sorted(labels), sorted(d.labels)) {
			t.Errorf("%s has labels %v, doc.go says %v", name, labels, d.labels)
		}
		if typ, ok := types[name]; ok && typ != d.kind {
			t.Errorf("%s is a %s, doc.go says %s", name, typ, d.kind)
		}
	}
	for name := range doc {
		if _, ok := registered[name]; !ok {
			t.Errorf("%s is documented in doc.go but not registered", name)
		}
	}
	t.Logf("%d metrics documented and registered", len(registered))
}

func addDesc(t *testing.T, to map[string][]string, d *prometheus.Desc) {
	t.Helper()
	m := descRE.FindStringSubmatch(d.String())
	if m == nil {
		t.Fatalf("cannot read descriptor %s", d)
	}
	var labels []string
	if m[2] != "" {
		labels = strings.Split(m[2], ",")
	}
	to[m[1]] = labels
}

// seriesLabels returns the label names of a family's first series (sorted by name, as client_golang keeps
// them).
func seriesLabels(mf *dto.MetricFamily) []string {
	var out []string
	for _, l := range mf.GetMetric()[0].GetLabel() {
		out = append(out, l.GetName())
	}
	return out
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}
