package slspubsub

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

type dtLevel int

type dtName string

// dtUpper implements encoding.TextUnmarshaler on its pointer.
type dtUpper string

func (u *dtUpper) UnmarshalText(b []byte) error {
	if strings.ContainsRune(string(b), '!') {
		return errors.New("no shouting")
	}
	*u = dtUpper(strings.ToUpper(string(b)))
	return nil
}

type dtInner struct {
	Region string `sls:"region"`
	Note   string
}

type dtAll struct {
	dtInner
	S    string        `sls:"s"`
	N    dtName        `sls:"n"`
	B    bool          `sls:"b"`
	I    int           `sls:"i"`
	I8   int8          `sls:"i8"`
	I16  int16         `sls:"i16"`
	I32  int32         `sls:"i32"`
	I64  int64         `sls:"i64"`
	L    dtLevel       `sls:"l"`
	U    uint          `sls:"u"`
	U8   uint8         `sls:"u8"`
	U16  uint16        `sls:"u16"`
	U32  uint32        `sls:"u32"`
	U64  uint64        `sls:"u64"`
	UP   uintptr       `sls:"up"`
	F32  float32       `sls:"f32"`
	F64  float64       `sls:"f64"`
	D    time.Duration `sls:"d"`
	T    time.Time     `sls:"t"`
	Day  time.Time     `sls:"day,date"`
	Hour time.Time     `sls:"hour,layout=2006-01-02T15"`
	RFC  time.Time     `sls:"rfc,layout=Mon, 02 Jan 2006 15:04:05 MST"`
	Ux   time.Time     `sls:"ux,layout=unix"`
	Ums  time.Time     `sls:"ums,layout=unixms"`
	Uus  time.Time     `sls:"uus,layout=unixus"`
	Uns  time.Time     `sls:"uns,layout=unixns"`
	Up   dtUpper       `sls:"up_text"`
	IP   netip.Addr    `sls:"ip"`
	Skip string        `sls:"-"`
	Free string        // untagged

	PS   *string        `sls:"ps"`
	PB   *bool          `sls:"pb"`
	PI   *int           `sls:"pi"`
	PI8  *int8          `sls:"pi8"`
	PU16 *uint16        `sls:"pu16"`
	PF   *float64       `sls:"pf"`
	PD   *time.Duration `sls:"pd"`
	PT   *time.Time     `sls:"pt"`
	PDay *time.Time     `sls:"pday,date"`
	PUp  *dtUpper       `sls:"pup"`
	PIP  *netip.Addr    `sls:"pip"`
}

func dtContents(kv ...string) []Content {
	var cs []Content
	for i := 0; i < len(kv); i += 2 {
		cs = append(cs, Content{Key: kv[i], Value: kv[i+1]})
	}
	return cs
}

func dtPtr[T any](v T) *T { return &v }

func TestDecodeEveryType(t *testing.T) {
	contents := dtContents(
		"region", "cn-hangzhou",
		"s", "text, with \"quotes\"", "n", "name", "b", "true",
		"i", "-42", "i8", "-128", "i16", "32767", "i32", "-2147483648", "i64", "9223372036854775807", "l", "3",
		"u", "42", "u8", "255", "u16", "65535", "u32", "4294967295", "u64", "18446744073709551615", "up", "7",
		"f32", "1.5", "f64", "-2.25e-3", "d", "1h2m3.5s",
		"t", "2024-05-06T07:08:09.123456789+02:00",
		"day", "2024-05-06",
		"hour", "2024-05-06T07",
		"rfc", "Mon, 06 May 2024 07:08:09 UTC",
		"ux", "1700000000.25", "ums", "1700000000123", "uus", "1700000000123456", "uns", "1700000000123456789",
		"up_text", "abc", "ip", "10.0.0.1",
		"Skip", "x", "-", "x", "Free", "x", "unknown", "ignored",
		"ps", "p", "pb", "false", "pi", "7", "pi8", "-8", "pu16", "16", "pf", "0.5", "pd", "250ms",
		"pt", "2024-05-06 07:08:09", "pday", "2024-05-07", "pup", "def", "pip", "::1",
	)
	var got dtAll
	if err := Decode(contents, &got); err != nil {
		t.Fatal(err)
	}
	want := dtAll{
		dtInner: dtInner{Region: "cn-hangzhou"},
		S:       "text, with \"quotes\"", N: "name", B: true,
		I: -42, I8: math.MinInt8, I16: math.MaxInt16, I32: math.MinInt32, I64: math.MaxInt64, L: 3,
		U: 42, U8: math.MaxUint8, U16: math.MaxUint16, U32: math.MaxUint32, U64: math.MaxUint64, UP: 7,
		F32: 1.5, F64: -2.25e-3, D: time.Hour + 2*time.Minute + 3500*time.Millisecond,
		T:    time.Date(2024, 5, 6, 5, 8, 9, 123456789, time.UTC),
		Day:  time.Date(2024, 5, 6, 0, 0, 0, 0, time.UTC),
		Hour: time.Date(2024, 5, 6, 7, 0, 0, 0, time.UTC),
		RFC:  time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC),
		Ux:   time.Unix(1700000000, 250_000_000),
		Ums:  time.UnixMilli(1700000000123),
		Uus:  time.UnixMicro(1700000000123456),
		Uns:  time.Unix(0, 1700000000123456789),
		Up:   "ABC", IP: netip.MustParseAddr("10.0.0.1"),
		PS: dtPtr("p"), PB: dtPtr(false), PI: dtPtr(7), PI8: dtPtr[int8](-8), PU16: dtPtr[uint16](16), PF: dtPtr(0.5),
		PD: dtPtr(250 * time.Millisecond), PT: dtPtr(time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)),
		PDay: dtPtr(time.Date(2024, 5, 7, 0, 0, 0, 0, time.UTC)), PUp: dtPtr(dtUpper("DEF")), PIP: dtPtr(netip.MustParseAddr("::1")),
	}
	dtCompare(t, got, want)
}

// dtCompare compares field by field, times with Equal.
func dtCompare(t *testing.T, got, want dtAll) {
	t.Helper()
	if got.dtInner != want.dtInner {
		t.Errorf("dtInner = %+v, want %+v", got.dtInner, want.dtInner)
	}
	gv, wv := reflect.ValueOf(got), reflect.ValueOf(want)
	for i := range gv.NumField() {
		name := gv.Type().Field(i).Name
		if !gv.Type().Field(i).IsExported() {
			continue
		}
		g, w := gv.Field(i).Interface(), wv.Field(i).Interface()
		if gt, ok := g.(time.Time); ok {
			if !gt.Equal(w.(time.Time)) {
				t.Errorf("%s = %v, want %v", name, gt, w)
			}
			continue
		}
		if gt, ok := g.(*time.Time); ok {
			wt := w.(*time.Time)
			if (gt == nil) != (wt == nil) || (gt != nil && !gt.Equal(*wt)) {
				t.Errorf("%s = %v, want %v", name, gt, wt)
			}
			continue
		}
		if !reflect.DeepEqual(g, w) {
			t.Errorf("%s = %#v, want %#v", name, g, w)
		}
	}
}

func TestDecodeEmptyValues(t *testing.T) {
	full := dtAll{
		dtInner: dtInner{Region: "r", Note: "n"},
		S:       "s", B: true, I: 1, U8: 1, F64: 1, D: 1, T: time.Now(), Up: "X", IP: netip.MustParseAddr("1.2.3.4"),
		PS: dtPtr("p"), PI: dtPtr(1), PT: dtPtr(time.Now()), PUp: dtPtr(dtUpper("Y")), PIP: dtPtr(netip.Addr{}),
		Skip: "skip", Free: "free",
	}
	var cs []Content
	for _, k := range []string{"region", "s", "b", "i", "u8", "f64", "d", "t", "up_text", "ip", "ps", "pi", "pt", "pup", "pip"} {
		cs = append(cs, Content{Key: k})
	}
	got := full
	if err := Decode(cs, &got); err != nil {
		t.Fatal(err)
	}
	want := dtAll{dtInner: dtInner{Note: "n"}, Skip: "skip", Free: "free"}
	dtCompare(t, got, want)
}

func TestDecodeLeavesAbsentAndUntaggedFields(t *testing.T) {
	got := dtAll{S: "keep", I: 5, PS: dtPtr("keep"), Free: "free", Skip: "skip"}
	if err := Decode(dtContents("b", "1", "Free", "x", "Skip", "x"), &got); err != nil {
		t.Fatal(err)
	}
	if got.S != "keep" || got.I != 5 || *got.PS != "keep" || got.Free != "free" || got.Skip != "skip" || !got.B {
		t.Errorf("got %+v", got)
	}
}

func TestDecodeLastDuplicateWins(t *testing.T) {
	var got struct {
		A int `sls:"a"`
	}
	if err := Decode(dtContents("a", "1", "a", "2"), &got); err != nil || got.A != 2 {
		t.Errorf("got %d, %v; want 2", got.A, err)
	}
}

func TestDecodeErrors(t *testing.T) {
	tests := []struct {
		key, value, field, typ string
		is                     error
	}{
		{"b", "yes", "B", "bool", strconv.ErrSyntax},
		{"i", "1.0", "I", "int", strconv.ErrSyntax},
		{"i", " 1", "I", "int", strconv.ErrSyntax},
		{"i", "0x10", "I", "int", strconv.ErrSyntax},
		{"i8", "128", "I8", "int8", strconv.ErrRange},
		{"i8", "-129", "I8", "int8", strconv.ErrRange},
		{"i16", "32768", "I16", "int16", strconv.ErrRange},
		{"i32", "2147483648", "I32", "int32", strconv.ErrRange},
		{"i64", "9223372036854775808", "I64", "int64", strconv.ErrRange},
		{"l", "high", "L", "slspubsub.dtLevel", strconv.ErrSyntax},
		{"u", "-1", "U", "uint", strconv.ErrSyntax},
		{"u8", "256", "U8", "uint8", strconv.ErrRange},
		{"u16", "65536", "U16", "uint16", strconv.ErrRange},
		{"u32", "4294967296", "U32", "uint32", strconv.ErrRange},
		{"u64", "18446744073709551616", "U64", "uint64", strconv.ErrRange},
		{"f32", "1e39", "F32", "float32", strconv.ErrRange},
		{"f64", "1e309", "F64", "float64", strconv.ErrRange},
		{"f64", "one", "F64", "float64", strconv.ErrSyntax},
		{"d", "5", "D", "time.Duration", nil},
		{"t", "2024-05-06", "T", "time.Time", nil},
		{"t", "1700000000", "T", "time.Time", nil},
		{"day", "2024-05-06T00:00:00Z", "Day", "time.Time", nil},
		{"hour", "2024-05-06 07", "Hour", "time.Time", nil},
		{"ux", "17e8", "Ux", "time.Time", nil},
		{"ux", "1.", "Ux", "time.Time", nil},
		{"ux", "1.0000000001", "Ux", "time.Time", nil},
		{"ums", "1.5", "Ums", "time.Time", nil},
		{"up_text", "hi!", "Up", "slspubsub.dtUpper", nil},
		{"ip", "10.0.0.256", "IP", "netip.Addr", nil},
		{"region", "", "", "", nil}, // not an error: placeholder skipped below
		{"pi8", "300", "PI8", "*int8", strconv.ErrRange},
		{"pt", "noon", "PT", "*time.Time", nil},
		{"pup", "!", "PUp", "*slspubsub.dtUpper", nil},
	}
	for _, tt := range tests {
		if tt.field == "" {
			continue
		}
		t.Run(tt.key+"="+tt.value, func(t *testing.T) {
			var v dtAll
			err := Decode(dtContents("s", "before", tt.key, tt.value, "n", "after"), &v)
			var de *DecodeError
			if !errors.As(err, &de) {
				t.Fatalf("error %v, want a *DecodeError", err)
			}
			if de.Field != tt.field || de.Key != tt.key || de.Value != tt.value || de.Type != tt.typ {
				t.Errorf("DecodeError{Field %q, Key %q, Value %q, Type %q}, want %q %q %q %q",
					de.Field, de.Key, de.Value, de.Type, tt.field, tt.key, tt.value, tt.typ)
			}
			for _, s := range []string{tt.field, strconv.Quote(tt.key), strconv.Quote(tt.value), tt.typ} {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not name %s", err, s)
				}
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %v is not %v", err, tt.is)
			}
			if v.S != "before" || v.N != "" {
				t.Errorf("fields before the error must be set, after it not: S=%q N=%q", v.S, v.N)
			}
			if strings.HasPrefix(tt.field, "P") && !reflect.ValueOf(v).FieldByName(tt.field).IsNil() {
				t.Errorf("pointer field %s set despite the error", tt.field)
			}
		})
	}
}

func TestDecodeErrorMessage(t *testing.T) {
	long := strings.Repeat("é", 100) // 200 bytes
	err := &DecodeError{Field: "Age", Key: "age", Value: long, Type: "int", Err: &strconv.NumError{Func: "ParseInt", Num: long, Err: strconv.ErrSyntax}}
	msg := err.Error()
	if strings.Count(msg, "é") != 64 || !strings.Contains(msg, `..."`) || !strings.HasSuffix(msg, "invalid syntax") {
		t.Errorf("message %q: want the value cut at a rune boundary and the bare cause", msg)
	}
	want := `slspubsub: decode key "age" value "x" into field Age (int): value out of range`
	e2 := &DecodeError{Field: "Age", Key: "age", Value: "x", Type: "int", Err: &strconv.NumError{Func: "ParseInt", Num: "x", Err: strconv.ErrRange}}
	if e2.Error() != want {
		t.Errorf("message %q, want %q", e2.Error(), want)
	}
}

func TestDecoderLayoutsAndLocation(t *testing.T) {
	shanghai := time.FixedZone("CST", 8*3600)
	type row struct {
		T   time.Time  `sls:"t"`
		Day time.Time  `sls:"day,date"`
		PT  *time.Time `sls:"pt"`
		Ms  time.Time  `sls:"ms,layout=unixms"`
	}
	d := Decoder{
		TimeLayouts: []string{"02/01/2006 15:04", LayoutUnix},
		DateLayouts: []string{"20060102", "2006/01/02"},
		Location:    shanghai,
	}
	var got row
	err := d.Decode(dtContents("t", "06/05/2024 07:08", "day", "2024/05/06", "pt", "1700000000", "ms", "1700000000123"), &got)
	if err != nil {
		t.Fatal(err)
	}
	if want := time.Date(2024, 5, 6, 7, 8, 0, 0, shanghai); !got.T.Equal(want) || got.T.Location() != shanghai {
		t.Errorf("T = %v, want %v in the Decoder's location", got.T, want)
	}
	if want := time.Date(2024, 5, 6, 0, 0, 0, 0, shanghai); !got.Day.Equal(want) {
		t.Errorf("Day = %v, want %v", got.Day, want)
	}
	if !got.PT.Equal(time.Unix(1700000000, 0)) || got.PT.Location() != shanghai {
		t.Errorf("PT = %v", got.PT)
	}
	if !got.Ms.Equal(time.UnixMilli(1700000000123)) {
		t.Errorf("Ms = %v", got.Ms)
	}
	// Layouts with a zone keep it; the default Decoder reads zone-less
	// times in UTC.
	var r2 row
	if err := Decode(dtContents("t", "2024-05-06 07:08:09.5", "day", "2024-05-06"), &r2); err != nil {
		t.Fatal(err)
	}
	if want := time.Date(2024, 5, 6, 7, 8, 9, 500_000_000, time.UTC); !r2.T.Equal(want) || r2.T.Location() != time.UTC {
		t.Errorf("T = %v, want %v", r2.T, want)
	}
	// Layouts the Decoder does not have fail with an error listing them.
	err = d.Decode(dtContents("t", "2024-05-06T07:08:09Z"), &got)
	if err == nil || !strings.Contains(err.Error(), "02/01/2006 15:04") {
		t.Errorf("error %v, want one listing the layouts", err)
	}
}

func TestParseUnixLayouts(t *testing.T) {
	tests := []struct {
		layout, in string
		want       time.Time
	}{
		{LayoutUnix, "0", time.Unix(0, 0)},
		{LayoutUnix, "-1", time.Unix(-1, 0)},
		{LayoutUnix, "-1.5", time.Unix(-1, -500_000_000)},
		{LayoutUnix, "1700000000.000000001", time.Unix(1700000000, 1)},
		{LayoutUnixMilli, "-1", time.Unix(0, -1_000_000)},
		{LayoutUnixMicro, "1", time.Unix(0, 1000)},
		{LayoutUnixNano, "-9223372036854775808", time.Unix(0, math.MinInt64)},
	}
	for _, tt := range tests {
		got, err := parseTimeLayout(tt.layout, tt.in, time.UTC)
		if err != nil || !got.Equal(tt.want) {
			t.Errorf("parseTimeLayout(%s, %s) = %v, %v; want %v", tt.layout, tt.in, got, err, tt.want)
		}
	}
	for _, tt := range []struct{ layout, in string }{
		{LayoutUnix, "1e9"}, {LayoutUnix, ".5"}, {LayoutUnix, "1.x"}, {LayoutUnix, "1.-5"},
		{LayoutUnixMilli, "1.0"}, {LayoutUnixNano, "99999999999999999999"},
	} {
		if got, err := parseTimeLayout(tt.layout, tt.in, time.UTC); err == nil {
			t.Errorf("parseTimeLayout(%s, %s) = %v, want an error", tt.layout, tt.in, got)
		}
	}
}

func TestDecodeBadTargets(t *testing.T) {
	var s struct {
		A int `sls:"a"`
	}
	var nilPtr *struct{}
	for _, v := range []any{nil, s, &s.A, nilPtr, "x", map[string]string{}} {
		err := Decode(dtContents("a", "1"), v)
		if err == nil || !strings.Contains(err.Error(), "non-nil pointer to a struct") {
			t.Errorf("Decode(%T): error %v", v, err)
		}
	}
	tests := []struct {
		v    any
		want string
	}{
		{&struct {
			C chan int `sls:"c"`
		}{}, "unsupported type chan int"},
		{&struct {
			P **int `sls:"p"`
		}{}, "unsupported type **int"},
		{&struct {
			S []string `sls:"s"`
		}{}, "unsupported type []string"},
		{&struct {
			N struct{ X int } `sls:"n"`
		}{}, "unsupported type"},
		{&struct {
			I int `sls:"i,date"`
		}{}, "need a time.Time field"},
		{&struct {
			I int `sls:"i,layout=2006"`
		}{}, "need a time.Time field"},
		{&struct {
			T time.Time `sls:"t,date,layout=2006"`
		}{}, "exclude each other"},
		{&struct {
			T time.Time `sls:"t,bogus"`
		}{}, `unknown tag option "bogus"`},
		{&struct {
			T time.Time `sls:"t,layout="`
		}{}, "empty layout"},
		{&struct {
			A int `sls:",date"`
		}{}, "empty key"},
		{&struct {
			a int `sls:"a"`
		}{}, "not exported"},
		{&struct {
			A int `sls:"k"`
			B int `sls:"k"`
		}{}, `fields A and B both have key "k"`},
	}
	for _, tt := range tests {
		err := Decode(nil, tt.v)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Decode(%T): error %v, want one containing %q", tt.v, err, tt.want)
		}
		// The plan error is cached and returned again.
		if err2 := Decode(nil, tt.v); err2 == nil || err2.Error() != err.Error() {
			t.Errorf("second Decode(%T): %v", tt.v, err2)
		}
	}
	_ = s
}

func TestDecodeMessage(t *testing.T) {
	type row struct {
		Method string `sls:"method"`
		Status int    `sls:"status"`
		Path   string `sls:"path"`
	}
	// A foreign log through DefaultMarshaler, then decoded from the message.
	g := &LogGroup{Logs: []Log{{Time: time.Unix(1, 0), Contents: dtContents(
		"method", "GET", "status", "404", "path", "/a\"b\\<c>\u2028", "extra", "x")}}}
	msg, err := DefaultMarshaler{}.Unmarshal(mtReceived(g, 0, mtPosition))
	if err != nil {
		t.Fatal(err)
	}
	var got row
	if err := (&Decoder{}).DecodeMessage(msg, &got); err != nil {
		t.Fatal(err)
	}
	if want := (row{"GET", 404, "/a\"b\\<c>\u2028"}); got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
	// The same from the contents.
	var direct row
	if err := Decode(g.Logs[0].Contents, &direct); err != nil || direct != got {
		t.Errorf("Decode = %+v, %v", direct, err)
	}

	// A value that does not parse: the *DecodeError as it is.
	bad := message.NewMessage("id", []byte(`{"status":"four"}`))
	err = (&Decoder{}).DecodeMessage(bad, &got)
	var de *DecodeError
	if !errors.As(err, &de) || de.Key != "status" || de.Value != "four" {
		t.Errorf("error %v, want a *DecodeError", err)
	}
	// Payloads that are not a JSON object of strings.
	for _, p := range []string{``, `[]`, `{"status":404}`, `{"a":"b"`, "not json"} {
		err := (&Decoder{}).DecodeMessage(message.NewMessage("msg-1", []byte(p)), &got)
		if err == nil || errors.As(err, &de) || !strings.Contains(err.Error(), "msg-1") {
			t.Errorf("payload %q: error %v, want one naming the message", p, err)
		}
	}
	if err := (&Decoder{}).DecodeMessage(nil, &got); err == nil {
		t.Error("DecodeMessage(nil) succeeded")
	}
	if err := (&Decoder{}).DecodeMessage(message.NewMessage("id", []byte(`{}`)), got); err == nil {
		t.Error("DecodeMessage into a non-pointer succeeded")
	}
}

func TestDecodeNilDecoder(t *testing.T) {
	var d *Decoder
	var v struct {
		T time.Time `sls:"t"`
	}
	if err := d.Decode(dtContents("t", "2024-01-02T03:04:05Z"), &v); err != nil || v.T.IsZero() {
		t.Errorf("nil *Decoder: %v, %v", v.T, err)
	}
}

func TestDecodeConcurrentPlans(t *testing.T) {
	// Many goroutines decoding a new type at once (run with -race).
	type fresh struct {
		A int    `sls:"a"`
		B string `sls:"b"`
	}
	errs := make(chan error, 8)
	for i := range 8 {
		go func() {
			var v fresh
			err := Decode(dtContents("a", strconv.Itoa(i), "b", "x"), &v)
			if err == nil && (v.A != i || v.B != "x") {
				err = fmt.Errorf("goroutine %d decoded %+v", i, v)
			}
			errs <- err
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}
