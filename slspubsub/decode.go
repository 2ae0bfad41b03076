package slspubsub

import (
	"encoding"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/ThreeDotsLabs/watermill/message"
)

// Pseudo-layouts for numeric epoch times, usable in Decoder.TimeLayouts and in
// a field's layout= option. LayoutUnix accepts whole or fractional seconds
// ("1700000000", "1700000000.25"); the others accept whole numbers only.
// Negative values are before 1970.
const (
	LayoutUnix      = "unix"
	LayoutUnixMilli = "unixms"
	LayoutUnixMicro = "unixus"
	LayoutUnixNano  = "unixns"
)

// Default layouts of a Decoder. Changing them changes every Decoder without
// layouts of its own; set Decoder.TimeLayouts and DateLayouts instead.
var (
	// DefaultTimeLayouts are tried in order for time.Time fields without a
	// layout option: RFC 3339 with or without fractional seconds, and
	// "2006-01-02 15:04:05" (optionally with fractional seconds) in the
	// Decoder's Location. Epoch numbers are not guessed (is 1700000000000
	// seconds or milliseconds?): ask for them with LayoutUnix and friends.
	DefaultTimeLayouts = []string{time.RFC3339Nano, time.DateTime}
	// DefaultDateLayouts are tried for fields with the date option.
	DefaultDateLayouts = []string{time.DateOnly}
)

// Decoder decodes a log's contents into a struct, by field tags:
//
//	type Access struct {
//		IP      string         `sls:"ip"`
//		Status  int            `sls:"status"`
//		Latency *time.Duration `sls:"latency"`
//		At      time.Time      `sls:"ts,layout=unixms"`
//		Day     time.Time      `sls:"day,date"`
//		Note    string         // untagged: never touched
//	}
//
// The tag is `sls:"<key>[,date][,layout=<layout>]"`; layout= takes the rest of
// the tag, commas included, so it comes last. "-" skips the field. date
// parses with DateLayouts, layout= with that one layout (a Go layout or a
// LayoutUnix pseudo-layout), otherwise TimeLayouts apply. Layouts without a
// zone are read in Location.
//
// Field types: string, bool, every int and uint size (range-checked), float32
// and float64, time.Time, time.Duration (time.ParseDuration syntax), types
// implementing encoding.TextUnmarshaler (on the pointer), named types of
// those kinds, and a pointer to any of these. Values are parsed as they are
// (no trimming); integers are decimal; bools follow strconv.ParseBool.
//
// For each content whose key is a field's tag: an empty value sets the zero
// value (nil for a pointer field); any other value is parsed, and one that
// does not parse stops Decode with a *DecodeError naming the field, the key
// and the value (fields set before it keep their values). When a key appears
// more than once the last value wins. Keys no field asks for are ignored and
// fields whose key is absent are left as they are. Tagged fields of embedded
// (anonymous, non-pointer) structs are included.
//
// The zero value is ready to use; a Decoder must not be changed while in use
// and is safe for concurrent use. Per-type plans are cached, so decoding does
// not re-inspect the struct each time.
type Decoder struct {
	// TimeLayouts are tried in order for time.Time fields without an option;
	// nil means DefaultTimeLayouts.
	TimeLayouts []string
	// DateLayouts are tried in order for time.Time fields with the date
	// option; nil means DefaultDateLayouts.
	DateLayouts []string
	// Location is where times without a zone are; nil means UTC.
	Location *time.Location
}

// DecodeError reports a value that does not parse into its field.
type DecodeError struct {
	// Field is the Go field name (dotted through embedded structs).
	Field string
	// Key is the content key.
	Key string
	// Value is the value that did not parse.
	Value string
	// Type is the field's Go type, e.g. "int8" or "*time.Time".
	Type string
	// Err is the cause (e.g. a *strconv.NumError, so errors.Is(err,
	// strconv.ErrRange) reports an overflow).
	Err error
}

// Error names the field, the key and the value (cut at 128 bytes).
func (e *DecodeError) Error() string {
	v := e.Value
	if len(v) > 128 {
		cut := 128
		for cut > 0 && !utf8.RuneStart(v[cut]) {
			cut--
		}
		v = v[:cut] + "..."
	}
	cause := e.Err
	var ne *strconv.NumError
	if errors.As(cause, &ne) {
		cause = ne.Err
	}
	return fmt.Sprintf("slspubsub: decode key %q value %q into field %s (%s): %v", e.Key, v, e.Field, e.Type, cause)
}

// Unwrap returns Err.
func (e *DecodeError) Unwrap() error { return e.Err }

var defaultDecoder Decoder

// Decode decodes contents into v with a zero Decoder (default layouts, UTC).
func Decode(contents []Content, v any) error {
	return defaultDecoder.Decode(contents, v)
}

// Decode decodes contents into the struct v points to; see Decoder. v must
// be a non-nil pointer to a struct. A nil *Decoder acts as the zero Decoder.
func (d *Decoder) Decode(contents []Content, v any) error {
	if d == nil {
		d = &defaultDecoder
	}
	plan, rv, err := planFor(v)
	if err != nil {
		return err
	}
	for i := range contents {
		c := &contents[i]
		if f := plan.byKey[c.Key]; f != nil {
			if err := d.setField(f, rv, c.Value); err != nil {
				return err
			}
		}
	}
	return nil
}

// DecodeMessage decodes the payload of msg, a JSON object of string values
// (what DefaultMarshaler makes of a log written by another client), into the
// struct v points to, like Decode does with the contents. A nil *Decoder acts
// as the zero Decoder.
func (d *Decoder) DecodeMessage(msg *message.Message, v any) error {
	if msg == nil {
		return errors.New("slspubsub: decode a nil message")
	}
	if d == nil {
		d = &defaultDecoder
	}
	plan, rv, err := planFor(v)
	if err != nil {
		return err
	}
	err = jsonScanObject(string(msg.Payload), func(k, val string) error {
		if f := plan.byKey[k]; f != nil {
			return d.setField(f, rv, val)
		}
		return nil
	})
	if _, isDecodeErr := err.(*DecodeError); err != nil && !isDecodeErr { // errors.As would make err escape
		return fmt.Errorf("slspubsub: decode message %s: payload is not a JSON object of strings: %w", msg.UUID, err)
	}
	return err
}

func (d *Decoder) setField(f *decodeField, root reflect.Value, value string) error {
	fv := root.FieldByIndex(f.index)
	if value == "" {
		fv.SetZero()
		return nil
	}
	if f.ptr {
		p := reflect.New(f.elem)
		if err := d.parseInto(f, p.Elem(), value); err != nil {
			return err
		}
		fv.Set(p)
		return nil
	}
	return d.parseInto(f, fv, value)
}

func (d *Decoder) parseInto(f *decodeField, fv reflect.Value, s string) error {
	var err error
	switch f.kind {
	case decodeKindString:
		fv.SetString(s)
	case decodeKindBool:
		var b bool
		if b, err = strconv.ParseBool(s); err == nil {
			fv.SetBool(b)
		}
	case decodeKindInt:
		var n int64
		if n, err = strconv.ParseInt(s, 10, f.bits); err == nil {
			fv.SetInt(n)
		}
	case decodeKindUint:
		var n uint64
		if n, err = strconv.ParseUint(s, 10, f.bits); err == nil {
			fv.SetUint(n)
		}
	case decodeKindFloat:
		var x float64
		if x, err = strconv.ParseFloat(s, f.bits); err == nil {
			fv.SetFloat(x)
		}
	case decodeKindDuration:
		var dur time.Duration
		if dur, err = time.ParseDuration(s); err == nil {
			fv.SetInt(int64(dur))
		}
	case decodeKindTime:
		var t time.Time
		if t, err = d.parseTime(f, s); err == nil {
			*fv.Addr().Interface().(*time.Time) = t // fv.Set would box t
		}
	case decodeKindText:
		err = fv.Addr().Interface().(encoding.TextUnmarshaler).UnmarshalText([]byte(s))
	}
	if err != nil {
		return &DecodeError{Field: f.name, Key: f.key, Value: s, Type: f.typeName, Err: err}
	}
	return nil
}

func (d *Decoder) parseTime(f *decodeField, s string) (time.Time, error) {
	layouts := f.layouts
	if layouts == nil {
		if f.date {
			layouts = d.DateLayouts
			if layouts == nil {
				layouts = DefaultDateLayouts
			}
		} else {
			layouts = d.TimeLayouts
			if layouts == nil {
				layouts = DefaultTimeLayouts
			}
		}
	}
	loc := d.Location
	if loc == nil {
		loc = time.UTC
	}
	var firstErr error
	for _, layout := range layouts {
		t, err := parseTimeLayout(layout, s, loc)
		if err == nil {
			return t, nil
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	if len(layouts) == 1 {
		return time.Time{}, firstErr
	}
	return time.Time{}, fmt.Errorf("matches none of the layouts %q", layouts)
}

func parseTimeLayout(layout, s string, loc *time.Location) (time.Time, error) {
	var unit int64
	switch layout {
	case LayoutUnix:
		return parseUnixSeconds(s, loc)
	case LayoutUnixMilli:
		unit = int64(time.Millisecond)
	case LayoutUnixMicro:
		unit = int64(time.Microsecond)
	case LayoutUnixNano:
		unit = 1
	default:
		return time.ParseInLocation(layout, s, loc)
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("not an integer of %s", layout)
	}
	return time.Unix(n/(int64(time.Second)/unit), n%(int64(time.Second)/unit)*unit).In(loc), nil
}

// parseUnixSeconds parses "<seconds>[.<fraction>]" exactly (no float
// rounding), up to nanoseconds.
func parseUnixSeconds(s string, loc *time.Location) (time.Time, error) {
	whole, frac, hasFrac := strings.Cut(s, ".")
	sec, err := strconv.ParseInt(whole, 10, 64)
	if err != nil || (hasFrac && (frac == "" || len(frac) > 9)) {
		return time.Time{}, errors.New("not unix seconds")
	}
	var ns int64
	for i := 0; i < 9; i++ {
		ns *= 10
		if i < len(frac) {
			c := frac[i]
			if c < '0' || c > '9' {
				return time.Time{}, errors.New("not unix seconds")
			}
			ns += int64(c - '0')
		}
	}
	if len(whole) > 0 && whole[0] == '-' {
		ns = -ns
	}
	return time.Unix(sec, ns).In(loc), nil
}

type decodeKind uint8

const (
	decodeKindString decodeKind = iota
	decodeKindBool
	decodeKindInt
	decodeKindUint
	decodeKindFloat
	decodeKindDuration
	decodeKindTime
	decodeKindText
)

// decodeField is how one tagged field is decoded.
type decodeField struct {
	name     string // Go field name
	key      string // content key
	typeName string
	index    []int
	kind     decodeKind
	bits     int  // for ints, uints and floats
	ptr      bool // the field is a pointer to elem
	elem     reflect.Type
	date     bool
	layouts  []string // from layout=; nil for the Decoder's
}

// decodePlan is the decoding plan of one struct type.
type decodePlan struct {
	byKey map[string]*decodeField
	err   error
}

var decodePlans sync.Map // reflect.Type -> *decodePlan

func planFor(v any) (*decodePlan, reflect.Value, error) {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() || rv.Elem().Kind() != reflect.Struct {
		return nil, reflect.Value{}, fmt.Errorf("slspubsub: decode: want a non-nil pointer to a struct, got %T", v)
	}
	rv = rv.Elem()
	t := rv.Type()
	if p, ok := decodePlans.Load(t); ok {
		sp := p.(*decodePlan)
		return sp, rv, sp.err
	}
	sp := buildPlan(t)
	p, _ := decodePlans.LoadOrStore(t, sp)
	sp = p.(*decodePlan)
	return sp, rv, sp.err
}

func buildPlan(t reflect.Type) *decodePlan {
	sp := &decodePlan{byKey: make(map[string]*decodeField)}
	sp.err = addFields(sp, t, nil, "")
	if sp.err != nil {
		sp.err = fmt.Errorf("slspubsub: decode into %s: %w", t, sp.err)
	}
	return sp
}

func addFields(sp *decodePlan, t reflect.Type, index []int, prefix string) error {
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		tag, tagged := sf.Tag.Lookup("sls")
		idx := append(append([]int(nil), index...), i)
		if !tagged {
			if sf.Anonymous && sf.Type.Kind() == reflect.Struct {
				if err := addFields(sp, sf.Type, idx, prefix+sf.Name+"."); err != nil {
					return err
				}
			}
			continue
		}
		if tag == "-" {
			continue
		}
		f, err := planField(sf, tag)
		if err != nil {
			return fmt.Errorf("field %s%s: %w", prefix, sf.Name, err)
		}
		if !sf.IsExported() {
			return fmt.Errorf("field %s%s: tagged but not exported", prefix, sf.Name)
		}
		f.name, f.index = prefix+sf.Name, idx
		if other, dup := sp.byKey[f.key]; dup {
			return fmt.Errorf("fields %s and %s both have key %q", other.name, f.name, f.key)
		}
		sp.byKey[f.key] = f
	}
	return nil
}

var (
	reflectTypeTime            = reflect.TypeFor[time.Time]()
	reflectTypeDuration        = reflect.TypeFor[time.Duration]()
	reflectTypeTextUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()
)

func planField(sf reflect.StructField, tag string) (*decodeField, error) {
	f := &decodeField{typeName: sf.Type.String()}
	key, opts, _ := strings.Cut(tag, ",")
	if key == "" {
		return nil, errors.New(`empty key in tag sls:"` + tag + `"`)
	}
	f.key = key
	for opts != "" {
		if layout, ok := strings.CutPrefix(opts, "layout="); ok {
			if layout == "" {
				return nil, errors.New("empty layout= option")
			}
			f.layouts = []string{layout}
			break
		}
		var opt string
		opt, opts, _ = strings.Cut(opts, ",")
		switch opt {
		case "date":
			f.date = true
		default:
			return nil, fmt.Errorf("unknown tag option %q", opt)
		}
	}
	t := sf.Type
	if t.Kind() == reflect.Pointer {
		f.ptr, t = true, t.Elem()
	}
	f.elem = t
	if err := planKind(f, t); err != nil {
		return nil, err
	}
	if (f.date || f.layouts != nil) && f.kind != decodeKindTime {
		return nil, fmt.Errorf("options date and layout= need a time.Time field, not %s", f.typeName)
	}
	if f.date && f.layouts != nil {
		return nil, errors.New("options date and layout= exclude each other")
	}
	return f, nil
}

func planKind(f *decodeField, t reflect.Type) error {
	switch {
	case t == reflectTypeTime:
		f.kind = decodeKindTime
		return nil
	case t == reflectTypeDuration:
		f.kind = decodeKindDuration
		return nil
	case reflect.PointerTo(t).Implements(reflectTypeTextUnmarshaler):
		f.kind = decodeKindText
		return nil
	}
	switch t.Kind() {
	case reflect.String:
		f.kind = decodeKindString
	case reflect.Bool:
		f.kind = decodeKindBool
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		f.kind, f.bits = decodeKindInt, t.Bits()
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		f.kind, f.bits = decodeKindUint, t.Bits()
	case reflect.Float32, reflect.Float64:
		f.kind, f.bits = decodeKindFloat, t.Bits()
	default:
		return fmt.Errorf("unsupported type %s", f.typeName)
	}
	return nil
}
