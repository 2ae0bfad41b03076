package watermark

import (
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

func sum(acc, v int) int { return acc + v }

func newSumWindows(t *testing.T, cfg WindowConfig) *Windows[string, int, int] {
	t.Helper()
	w, err := NewWindows[string, int, int](cfg, sum)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// results renders fired windows as "key@start-end=value/count", sorted.
func results(rs []WindowResult[string, int]) []string {
	out := make([]string, 0, len(rs))
	for _, r := range rs {
		out = append(out, fmt.Sprintf("%s@%v-%v=%d/%d", r.Key, r.Start.Sub(base), r.End.Sub(base), r.Value, r.Count))
	}
	sort.Strings(out)
	return out
}

func wantResults(t *testing.T, got []WindowResult[string, int], want ...string) {
	t.Helper()
	g := results(got)
	sort.Strings(want)
	if strings.Join(g, " ") != strings.Join(want, " ") {
		t.Fatalf("fired %v, want %v", g, want)
	}
}

func TestWindowConfigValidateNamesFields(t *testing.T) {
	err := WindowConfig{Size: time.Second, Slide: 2 * time.Second, Offset: -1, AllowedLateness: -1}.Validate()
	for _, f := range []string{"Slide", "Offset", "AllowedLateness"} {
		if err == nil || !strings.Contains(err.Error(), f) {
			t.Errorf("Validate error %v does not name %s", err, f)
		}
	}
	if err := (WindowConfig{}).Validate(); err == nil || !strings.Contains(err.Error(), "Size") {
		t.Errorf("zero Size: %v", err)
	}
	if _, err := NewWindows[string, int, int](WindowConfig{Size: time.Second}, nil); err == nil {
		t.Error("nil aggregate accepted")
	}
}

// base is aligned to whole minutes, so windows of 10 s start at base + k*10s.
func TestTumblingWindowsFireAtEndPlusLateness(t *testing.T) {
	var lates []LateEvent
	var mu sync.Mutex
	w := newSumWindows(t, WindowConfig{Size: 10 * time.Second, AllowedLateness: 5 * time.Second, OnLate: func(e LateEvent) {
		mu.Lock()
		lates = append(lates, e)
		mu.Unlock()
	}})
	w.Add("a", at(1*time.Second), 1)
	w.Add("a", at(9*time.Second), 2)
	w.Add("b", at(5*time.Second), 10)
	w.Add("a", at(10*time.Second), 100) // next window: [10s, 20s)
	wantResults(t, w.Advance(at(10*time.Second)))
	// Within the allowed lateness: still aggregated.
	if late := w.Add("a", at(3*time.Second), 4); late {
		t.Fatal("event within the allowed lateness reported late")
	}
	wantResults(t, w.Advance(at(15*time.Second-time.Nanosecond)))
	wantResults(t, w.Advance(at(15*time.Second)), "a@0s-10s=7/3", "b@0s-10s=10/1")
	// After the window fired: late, counted, reported, not aggregated.
	if late := w.Add("a", at(2*time.Second), 1000); !late {
		t.Fatal("event for a fired window not reported late")
	}
	wantResults(t, w.Advance(at(14*time.Second))) // the watermark does not go back
	wantResults(t, w.Advance(at(25*time.Second)), "a@10s-20s=100/1")
	st := w.Stats()
	if st.Late != 1 || st.Added != 5 || st.Fired != 3 || st.Open != 0 {
		t.Fatalf("stats %+v", st)
	}
	if len(lates) != 1 || lates[0].Key != "a" || !lates[0].EventTime.Equal(at(2*time.Second)) || !lates[0].Watermark.Equal(at(15*time.Second)) {
		t.Fatalf("OnLate got %+v", lates)
	}
	if wm, ok := w.Watermark(); !ok || !wm.Equal(at(25*time.Second)) {
		t.Fatalf("Watermark %v %v", wm.Sub(base), ok)
	}
}

func TestSlidingWindows(t *testing.T) {
	w := newSumWindows(t, WindowConfig{Size: 30 * time.Second, Slide: 10 * time.Second})
	w.Add("k", at(25*time.Second), 1) // windows [0,30) [10,40) [20,50)
	w.Add("k", at(5*time.Second), 10) // windows [-20,10) [-10,20) [0,30)
	wantResults(t, w.Advance(at(20*time.Second)), "k@-20s-10s=10/1", "k@-10s-20s=10/1")
	// Partly late: [0,30) still open, [-10,20) fired.
	if late := w.Add("k", at(15*time.Second), 100); late {
		t.Fatal("event with an open window reported late")
	}
	if st := w.Stats(); st.PartlyLate != 1 || st.Late != 0 {
		t.Fatalf("stats %+v", st)
	}
	wantResults(t, w.Advance(at(time.Hour)), "k@0s-30s=111/3", "k@10s-40s=101/2", "k@20s-50s=1/1")
}

func TestWindowsOffsetAndNegativeTimes(t *testing.T) {
	w := newSumWindows(t, WindowConfig{Size: 10 * time.Second, Offset: 3 * time.Second})
	w.Add("k", at(2*time.Second), 1) // [-7s, 3s)
	w.Add("k", at(3*time.Second), 2) // [3s, 13s)
	old := time.Unix(-15, 0)         // before the epoch: windows still aligned
	w.Add("old", old, 5)
	got := w.Flush()
	wantResults(t, got, "k@-7s-3s=1/1", "k@3s-13s=2/1", fmt.Sprintf("old@%v-%v=5/1", time.Unix(-17, 0).Sub(base), time.Unix(-7, 0).Sub(base)))
}

func TestWindowsFromMessagesInParallelHandlers(t *testing.T) {
	w := newSumWindows(t, WindowConfig{Size: time.Minute})
	const handlers, perHandler = 8, 500
	var wg sync.WaitGroup
	var mu sync.Mutex
	var fired []WindowResult[string, int]
	for h := range handlers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perHandler {
				et := at(time.Duration(i) * time.Second)
				msg := message.NewMessage(fmt.Sprint(h, i), nil)
				SetOnMessage(msg, et.Add(-time.Minute)) // a watermark one minute behind
				w.Add(fmt.Sprint("k", h%2), et, 1)
				rs := w.AdvanceFromMessage(msg)
				mu.Lock()
				fired = append(fired, rs...)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	fired = append(fired, w.Flush()...)
	total := 0
	for _, r := range fired {
		total += r.Value
	}
	st := w.Stats()
	if int64(total)+st.Late != handlers*perHandler {
		t.Fatalf("fired %d + late %d != %d events", total, st.Late, handlers*perHandler)
	}
	if st.Open != 0 || w.AdvanceFromMessage(message.NewMessage("x", nil)) != nil {
		t.Fatalf("stats %+v", st)
	}
	t.Logf("%d results, %d events aggregated, %d late", len(fired), total, st.Late)
}
