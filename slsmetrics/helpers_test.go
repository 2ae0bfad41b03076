package slsmetrics_test

import (
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/watermill-sls/watermill-sls/internal/testutil"
	"github.com/watermill-sls/watermill-sls/slspubsub"
	"github.com/watermill-sls/watermill-sls/slspubsub/slstest"
)

func TestMain(m *testing.M) { testutil.Main(m) }

const testProject = "metrics"

// families is one Gather of a registry, by metric name.
type families map[string]*dto.MetricFamily

func gather(t testing.TB, reg *prometheus.Registry) families {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	out := families{}
	for _, mf := range mfs {
		out[mf.GetName()] = mf
	}
	return out
}

// matches reports whether m carries every label of kv (name, value pairs).
func matches(m *dto.Metric, kv []string) bool {
	for i := 0; i+1 < len(kv); i += 2 {
		found := false
		for _, l := range m.GetLabel() {
			if l.GetName() == kv[i] && l.GetValue() == kv[i+1] {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// sum adds the values of the series of name that carry the labels kv: counter and gauge values, a histogram's
// sample sum. n is how many series matched.
func (f families) sum(name string, kv ...string) (v float64, n int) {
	mf := f[name]
	if mf == nil {
		return 0, 0
	}
	for _, m := range mf.GetMetric() {
		if !matches(m, kv) {
			continue
		}
		n++
		switch {
		case m.Counter != nil:
			v += m.GetCounter().GetValue()
		case m.Gauge != nil:
			v += m.GetGauge().GetValue()
		case m.Histogram != nil:
			v += m.GetHistogram().GetSampleSum()
		}
	}
	return v, n
}

// count adds the sample counts of the histogram series of name that carry the labels kv.
func (f families) count(name string, kv ...string) uint64 {
	var c uint64
	if mf := f[name]; mf != nil {
		for _, m := range mf.GetMetric() {
			if matches(m, kv) && m.Histogram != nil {
				c += m.GetHistogram().GetSampleCount()
			}
		}
	}
	return c
}

// series returns the label sets of name's series, formatted, for failure messages.
func (f families) series(name string) string {
	mf := f[name]
	if mf == nil {
		return name + ": no series"
	}
	var out []string
	for _, m := range mf.GetMetric() {
		var ls []string
		for _, l := range m.GetLabel() {
			ls = append(ls, l.GetName()+"="+l.GetValue())
		}
		v, _ := families{name: &dto.MetricFamily{Metric: []*dto.Metric{m}}}.sum(name)
		out = append(out, "{"+strings.Join(ls, ",")+"} "+strconv.FormatFloat(v, 'g', -1, 64))
	}
	sort.Strings(out)
	return name + ": " + strings.Join(out, "; ")
}

// shiftedClock is an emulator clock that can be set back, so that LogGroups written meanwhile carry an old
// receive time (cursor time).
type shiftedClock struct{ back atomic.Int64 }

func (c *shiftedClock) now() time.Time          { return time.Now().Add(-time.Duration(c.back.Load())) }
func (c *shiftedClock) setBack(d time.Duration) { c.back.Store(int64(d)) }

// slsEnv starts an emulator with clock and creates logstore with shards.
func slsEnv(t *testing.T, clock *shiftedClock, logstore string, shards int) *testutil.SLSEnv {
	t.Helper()
	var opts []slstest.Option
	if clock != nil {
		opts = append(opts, slstest.WithClock(clock.now))
	}
	env := testutil.SLS(t, opts...)
	env.LogStore(t, testProject, logstore, shards)
	return env
}

func clientConfig(env *testutil.SLSEnv) slspubsub.ClientConfig {
	return slspubsub.ClientConfig{Endpoint: env.Endpoint, Project: testProject, AccessKeyID: env.AccessKeyID,
		AccessKeySecret: env.AccessKeySecret, HTTPClient: env.HTTPClient}
}

// deadlinePoll is testutil.Poll with the package's deadline (20 s).
func deadlinePoll(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	if !testutil.Poll(t, 20*time.Second, what, cond) {
		t.FailNow()
	}
}
