package slspubsub

import (
	"encoding/base64"
	"math"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
)

// ptCursor encodes v like the SDK's encodeCursor.
func ptCursor(v int64) string {
	return base64.StdEncoding.EncodeToString([]byte(strconv.FormatInt(v, 10)))
}

// ptSDKDecode decodes c like the SDK's decodeCursor.
func ptSDKDecode(c string) (int64, bool) {
	b, err := base64.StdEncoding.DecodeString(c)
	if err != nil {
		return 0, false
	}
	v, err := strconv.ParseInt(string(b), 10, 64)
	return v, err == nil
}

func TestCursorToInt64(t *testing.T) {
	for _, v := range []int64{0, 1, 9, 10, 99, 100, 1_600_000_000_000_000_000, math.MaxInt64, math.MinInt64, -1, -10} {
		c := ptCursor(v)
		got, ok := cursorToInt64(c)
		if !ok || got != v {
			t.Errorf("cursorToInt64(%q) = %d, %v; want %d", c, got, ok, v)
		}
	}
	for _, c := range []string{
		"", "M", "MQ", "MQ=", "MQ===", "=MQ=", "MQ==MQ==", "M=Q=", "MTA", "MT!=",
		base64.StdEncoding.EncodeToString([]byte("9223372036854775808")),  // MaxInt64+1
		base64.StdEncoding.EncodeToString([]byte("-9223372036854775809")), // MinInt64-1
		base64.StdEncoding.EncodeToString([]byte("99999999999999999999")),
		base64.StdEncoding.EncodeToString([]byte("1_000")),
		base64.StdEncoding.EncodeToString([]byte("12a")),
		base64.StdEncoding.EncodeToString([]byte("-")),
		base64.StdEncoding.EncodeToString([]byte(" 1")),
		base64.URLEncoding.EncodeToString([]byte("\xfb\xff")),
		base64.RawStdEncoding.EncodeToString([]byte("1")),
	} {
		if v, ok := cursorToInt64(c); ok {
			t.Errorf("cursorToInt64(%q) = %d, want failure", c, v)
		}
		if _, ok := ptSDKDecode(c); ok {
			t.Errorf("test case %q: the SDK decodes it", c)
		}
	}
	// Forms the SDK accepts too: sign, leading zeros.
	for s, want := range map[string]int64{"+5": 5, "007": 7, "-0": 0, "00000000000000000000000000000000000042": 42} {
		c := base64.StdEncoding.EncodeToString([]byte(s))
		if got, ok := cursorToInt64(c); !ok || got != want {
			t.Errorf("cursorToInt64(%q) = %d, %v; want %d", c, got, ok, want)
		}
	}
}

func FuzzCursorToInt64(f *testing.F) {
	for _, v := range []int64{0, 9, 10, math.MaxInt64, math.MinInt64, 1_600_000_000_000_000_123} {
		f.Add(ptCursor(v))
	}
	f.Add("MQ=")
	f.Add("")
	f.Fuzz(func(t *testing.T, c string) {
		got, ok := cursorToInt64(c)
		want, wantOK := ptSDKDecode(c)
		if strings.ContainsAny(c, "\r\n") || len(c) > 64 {
			// Accepted by base64.StdEncoding (which skips line breaks), not by
			// us: cursors never hold them, nor 48 digits.
			if ok && (!wantOK || got != want) {
				t.Fatalf("cursorToInt64(%q) = %d, true; SDK: %d, %v", c, got, want, wantOK)
			}
			return
		}
		if ok != wantOK || (ok && got != want) {
			t.Fatalf("cursorToInt64(%q) = %d, %v; SDK: %d, %v", c, got, ok, want, wantOK)
		}
	})
}

func TestPositionCompare(t *testing.T) {
	c := ptCursor
	tests := []struct {
		p, q Position
		want int
	}{
		{Position{1, c(9), 0}, Position{1, c(10), 0}, -1}, // "OQ==" > "MTA=" as strings
		{Position{1, c(10), 0}, Position{1, c(9), 5}, 1},
		{Position{1, c(99), 3}, Position{1, c(100), 0}, -1},
		{Position{1, c(5), 2}, Position{1, c(5), 10}, -1}, // index 2 before 10
		{Position{1, c(5), 10}, Position{1, c(5), 2}, 1},
		{Position{1, c(5), 4}, Position{1, c(5), 4}, 0},
		{Position{0, c(1_600_000_000_000_000_009), 0}, Position{0, c(1_600_000_000_000_000_010), 0}, -1},
		{Position{0, c(-1), 0}, Position{0, c(0), 0}, -1},
		{Position{0, c(math.MaxInt64), 0}, Position{0, c(math.MinInt64), 0}, 1},
		{Position{0, "MDA3", 1}, Position{0, "Nw==", 1}, 0}, // "007" and "7": same cursor value
	}
	for _, tt := range tests {
		got, err := tt.p.Compare(tt.q)
		if err != nil || got != tt.want {
			t.Errorf("%v.Compare(%v) = %d, %v; want %d", tt.p, tt.q, got, err, tt.want)
		}
		back, err := tt.q.Compare(tt.p)
		if err != nil || back != -tt.want {
			t.Errorf("%v.Compare(%v) = %d, %v; want %d", tt.q, tt.p, back, err, -tt.want)
		}
	}
	for _, tt := range []struct{ p, q Position }{
		{Position{1, c(1), 0}, Position{2, c(1), 0}},
		{Position{1, "bad", 0}, Position{1, c(1), 0}},
		{Position{1, c(1), 0}, Position{1, "", 0}},
		{Position{1, "bad", 0}, Position{1, "bad", 0}},
	} {
		if got, err := tt.p.Compare(tt.q); err == nil {
			t.Errorf("%v.Compare(%v) = %d, want an error", tt.p, tt.q, got)
		}
	}
}

func TestPositionTotalOrder(t *testing.T) {
	// Sorting by Compare gives numeric cursor order, then index order.
	var ps []Position
	for _, v := range []int64{100, 9, 10, 1, 11, 99, 0} {
		for _, i := range []int{10, 2, 0, 1} {
			ps = append(ps, Position{Shard: 4, Cursor: ptCursor(v), Index: i})
		}
	}
	slices.SortFunc(ps, func(a, b Position) int {
		n, err := a.Compare(b)
		if err != nil {
			t.Fatal(err)
		}
		return n
	})
	for i := 1; i < len(ps); i++ {
		a, _ := ps[i-1].CursorValue()
		b, _ := ps[i].CursorValue()
		if a > b || (a == b && ps[i-1].Index >= ps[i].Index) {
			t.Fatalf("not sorted at %d: %v then %v", i, ps[i-1], ps[i])
		}
	}
}

func TestPositionStringParse(t *testing.T) {
	p := Position{Shard: 3, Cursor: ptCursor(1_600_000_000_000_000_123), Index: 7}
	s := p.String()
	if want := "3:" + p.Cursor + ":7"; s != want {
		t.Errorf("String() = %q, want %q", s, want)
	}
	got, err := ParsePosition(s)
	if err != nil || got != p {
		t.Errorf("ParsePosition(%q) = %v, %v", s, got, err)
	}
	for _, bad := range []string{"", "3", "3:MQ==", "x:MQ==:1", "3:MQ==:x", "-1:MQ==:1", "3:MQ==:-1", "+3:MQ==:1", "3::1", "3:bad:1", "3:MQ==:1:2"} {
		if p, err := ParsePosition(bad); err == nil {
			t.Errorf("ParsePosition(%q) = %v, want an error", bad, p)
		}
	}
}

func TestPositionFromMessage(t *testing.T) {
	p := Position{Shard: 2, Cursor: ptCursor(42), Index: 5}
	msg := message.NewMessage("id", nil)
	setPosition(msg.Metadata, p)
	got, err := PositionFromMessage(msg)
	if err != nil || got != p {
		t.Fatalf("PositionFromMessage = %v, %v; want %v", got, err, p)
	}
	tests := []struct {
		key, value string // value "" with delete: missing key
		remove     bool
	}{
		{key: MetadataShard, remove: true},
		{key: MetadataCursor, remove: true},
		{key: MetadataIndex, remove: true},
		{key: MetadataShard, value: "x"},
		{key: MetadataShard, value: "-1"},
		{key: MetadataShard, value: ""},
		{key: MetadataCursor, value: "not a cursor"},
		{key: MetadataCursor, value: ""},
		{key: MetadataIndex, value: "1.5"},
		{key: MetadataIndex, value: "+1"},
	}
	for _, tt := range tests {
		msg := message.NewMessage("id", nil)
		setPosition(msg.Metadata, p)
		if tt.remove {
			delete(msg.Metadata, tt.key)
		} else {
			msg.Metadata[tt.key] = tt.value
		}
		_, err := PositionFromMessage(msg)
		if err == nil || !strings.Contains(err.Error(), tt.key) {
			t.Errorf("%s=%q (removed %v): error %v, want one naming the key", tt.key, tt.value, tt.remove, err)
		}
	}
	if _, err := PositionFromMessage(nil); err == nil {
		t.Error("PositionFromMessage(nil) succeeded")
	}
}

func TestPositionCompareDoesNotAllocate(t *testing.T) {
	p := Position{Shard: 1, Cursor: ptCursor(1_600_000_000_000_000_009), Index: 3}
	q := Position{Shard: 1, Cursor: ptCursor(1_600_000_000_000_000_010), Index: 0}
	if n := testing.AllocsPerRun(100, func() {
		if _, err := p.Compare(q); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("Compare allocates %v times per call", n)
	}
}

func BenchmarkCursorToInt64(b *testing.B) {
	c := ptCursor(1_600_000_000_000_000_123)
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := cursorToInt64(c); !ok {
			b.Fatal("decode failed")
		}
	}
}

func BenchmarkCursorSDKDecode(b *testing.B) {
	c := ptCursor(1_600_000_000_000_000_123)
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := ptSDKDecode(c); !ok {
			b.Fatal("decode failed")
		}
	}
}

func BenchmarkPositionCompare(b *testing.B) {
	p := Position{Shard: 1, Cursor: ptCursor(1_600_000_000_000_000_009), Index: 3}
	q := Position{Shard: 1, Cursor: ptCursor(1_600_000_000_000_000_010), Index: 0}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := p.Compare(q); err != nil {
			b.Fatal(err)
		}
	}
}

func TestCursorFromInt64(t *testing.T) {
	for _, v := range []int64{0, 1, -1, 9, 10, 1_600_000_000_000_000_000, math.MaxInt64, math.MinInt64} {
		c := cursorFromInt64(v)
		if want := ptCursor(v); c != want {
			t.Errorf("cursorFromInt64(%d) = %q, want %q", v, c, want)
		}
		if back, ok := cursorToInt64(c); !ok || back != v {
			t.Errorf("cursorToInt64(%q) = %d, %v", c, back, ok)
		}
	}
	if n := testing.AllocsPerRun(100, func() { _ = cursorFromInt64(1_600_000_000_000_000_000) }); n != 1 {
		t.Errorf("cursorFromInt64 allocates %v times, want 1", n)
	}
}
