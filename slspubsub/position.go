package slspubsub

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/ThreeDotsLabs/watermill/message"
)

// Position is where a log was read from: a shard, the cursor of the LogGroup
// that holds the log, and the index of the log in that group.
//
// Positions of one shard are totally ordered: first by the cursor's value,
// then by Index (see Compare). Positions of different shards are not
// comparable. Every message delivered by the Subscriber carries its position
// in metadata (MetadataShard, MetadataCursor, MetadataIndex); read it back
// with PositionFromMessage.
type Position struct {
	// Shard is the SLS shard id.
	Shard int
	// Cursor is the cursor of the LogGroup the log belongs to, as SLS spells
	// it: standard base64 of a decimal int64 that grows by one per LogGroup.
	Cursor string
	// Index is the index of the log in its LogGroup, from 0.
	Index int
}

// Compare orders p and q within a shard. It returns -1 when p comes before q,
// 0 when they are the same position and +1 when p comes after q.
//
// Cursors are compared by their decoded int64 values, never as strings (the
// cursor of value 10 follows the cursor of value 9 although "MTA=" sorts
// before "OQ=="). It returns an error when the shards differ or when a cursor
// does not decode; it does not allocate otherwise.
func (p Position) Compare(q Position) (int, error) {
	if p.Shard != q.Shard {
		return 0, fmt.Errorf("slspubsub: cannot compare positions of different shards (%d and %d)", p.Shard, q.Shard)
	}
	a, ok := cursorToInt64(p.Cursor)
	if !ok {
		return 0, fmt.Errorf("slspubsub: compare positions: invalid cursor %q", p.Cursor)
	}
	b, ok := cursorToInt64(q.Cursor)
	if !ok {
		return 0, fmt.Errorf("slspubsub: compare positions: invalid cursor %q", q.Cursor)
	}
	switch {
	case a < b:
		return -1, nil
	case a > b:
		return 1, nil
	case p.Index < q.Index:
		return -1, nil
	case p.Index > q.Index:
		return 1, nil
	}
	return 0, nil
}

// CursorValue returns the int64 the cursor encodes (cursors of one shard
// grow by one per LogGroup), or an error when the cursor is not standard
// base64 of a decimal int64.
func (p Position) CursorValue() (int64, error) {
	v, ok := cursorToInt64(p.Cursor)
	if !ok {
		return 0, fmt.Errorf("slspubsub: invalid cursor %q", p.Cursor)
	}
	return v, nil
}

// String formats p as "<shard>:<cursor>:<index>", e.g. "3:MTUwMDAwMDAwMA==:7".
// ParsePosition reads it back. (Base64 has no ':', so the form is
// unambiguous.)
func (p Position) String() string {
	b := make([]byte, 0, 24+len(p.Cursor))
	b = strconv.AppendInt(b, int64(p.Shard), 10)
	b = append(b, ':')
	b = append(b, p.Cursor...)
	b = append(b, ':')
	b = strconv.AppendInt(b, int64(p.Index), 10)
	return string(b)
}

// ParsePosition parses the form Position.String produces. The shard and the
// index must be non-negative decimal integers and the cursor must decode
// (see Position.CursorValue).
func ParsePosition(s string) (Position, error) {
	shard, rest, ok1 := strings.Cut(s, ":")
	cursor, index, ok2 := strings.Cut(rest, ":")
	if !ok1 || !ok2 {
		return Position{}, fmt.Errorf("slspubsub: parse position %q: want <shard>:<cursor>:<index>", s)
	}
	var p Position
	var err error
	if p.Shard, err = parseNonNegative(shard); err != nil {
		return Position{}, fmt.Errorf("slspubsub: parse position %q: shard: %w", s, err)
	}
	if p.Index, err = parseNonNegative(index); err != nil {
		return Position{}, fmt.Errorf("slspubsub: parse position %q: index: %w", s, err)
	}
	if _, ok := cursorToInt64(cursor); !ok {
		return Position{}, fmt.Errorf("slspubsub: parse position %q: invalid cursor %q", s, cursor)
	}
	p.Cursor = cursor
	return p, nil
}

// PositionFromMessage returns the position of a message delivered by the
// Subscriber, read from its metadata (MetadataShard, MetadataCursor,
// MetadataIndex). The error names the key that is missing or invalid.
func PositionFromMessage(msg *message.Message) (Position, error) {
	if msg == nil {
		return Position{}, errors.New("slspubsub: position of a nil message")
	}
	var p Position
	var err error
	if p.Shard, err = positionInt(msg, MetadataShard); err != nil {
		return Position{}, err
	}
	cursor, ok := msg.Metadata[MetadataCursor]
	if !ok {
		return Position{}, fmt.Errorf("slspubsub: message %s has no metadata %s", msg.UUID, MetadataCursor)
	}
	if _, ok := cursorToInt64(cursor); !ok {
		return Position{}, fmt.Errorf("slspubsub: message %s: metadata %s: invalid cursor %q", msg.UUID, MetadataCursor, cursor)
	}
	p.Cursor = cursor
	if p.Index, err = positionInt(msg, MetadataIndex); err != nil {
		return Position{}, err
	}
	return p, nil
}

func positionInt(msg *message.Message, key string) (int, error) {
	s, ok := msg.Metadata[key]
	if !ok {
		return 0, fmt.Errorf("slspubsub: message %s has no metadata %s", msg.UUID, key)
	}
	n, err := parseNonNegative(s)
	if err != nil {
		return 0, fmt.Errorf("slspubsub: message %s: metadata %s: %w", msg.UUID, key, err)
	}
	return n, nil
}

func parseNonNegative(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || s[0] < '0' || s[0] > '9' {
		return 0, fmt.Errorf("%q is not a non-negative decimal integer", s)
	}
	return n, nil
}

// setPosition writes p into the position metadata keys of md.
func setPosition(md message.Metadata, p Position) {
	md[MetadataShard] = strconv.Itoa(p.Shard)
	md[MetadataCursor] = p.Cursor
	md[MetadataIndex] = strconv.Itoa(p.Index)
}

// base64Std maps a byte of the standard base64 alphabet to its 6-bit value;
// 0xff marks every other byte.
var base64Std = func() (t [256]byte) {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	for i := range t {
		t[i] = 0xff
	}
	for i := 0; i < len(alphabet); i++ {
		t[alphabet[i]] = byte(i)
	}
	return t
}()

// cursorToInt64 decodes a cursor (standard, padded base64 of a decimal int64,
// as the SDK's encodeCursor writes it) without allocating. It accepts what
// base64.StdEncoding.DecodeString followed by strconv.ParseInt(s, 10, 64)
// accepts, except line breaks inside the base64 text and texts of more than
// 48 bytes (which can only be an int64 with many leading zeros).
func cursorToInt64(c string) (int64, bool) {
	// The longest int64 text ("-9223372036854775808") has 20 bytes, 28 base64
	// characters; leave room for leading zeros, which ParseInt accepts.
	if len(c) == 0 || len(c)%4 != 0 || len(c) > 64 {
		return 0, false
	}
	var buf [48]byte
	n := 0
	for i := 0; i < len(c); i += 4 {
		last := i+4 == len(c)
		a, b, cc, d := base64Std[c[i]], base64Std[c[i+1]], base64Std[c[i+2]], base64Std[c[i+3]]
		if a == 0xff || b == 0xff {
			return 0, false
		}
		buf[n] = a<<2 | b>>4
		n++
		if c[i+2] == '=' { // "xx==": one byte, at the end only
			if !last || c[i+3] != '=' {
				return 0, false
			}
			break
		}
		if cc == 0xff {
			return 0, false
		}
		buf[n] = b<<4 | cc>>2
		n++
		if c[i+3] == '=' { // "xxx=": two bytes, at the end only
			if !last {
				return 0, false
			}
			break
		}
		if d == 0xff {
			return 0, false
		}
		buf[n] = cc<<6 | d
		n++
	}
	return parseDecimalInt64(buf[:n])
}

// parseDecimalInt64 is strconv.ParseInt(string(b), 10, 64) without the
// allocation: an optional sign, then one or more ASCII digits.
func parseDecimalInt64(b []byte) (int64, bool) {
	neg := false
	if len(b) > 0 && (b[0] == '+' || b[0] == '-') {
		neg = b[0] == '-'
		b = b[1:]
	}
	if len(b) == 0 {
		return 0, false
	}
	var u uint64
	for _, ch := range b {
		if ch < '0' || ch > '9' || u > (1<<63)/10 {
			return 0, false
		}
		u = u*10 + uint64(ch-'0')
		if u > 1<<63 {
			return 0, false
		}
	}
	if neg {
		return -int64(u), true // u == 1<<63 converts and negates to MinInt64
	}
	if u == 1<<63 {
		return 0, false
	}
	return int64(u), true
}

// cursorFromInt64 encodes v as SLS cursors are spelled (the SDK's
// encodeCursor): standard base64 of its decimal form. cursorToInt64 reverses
// it. The cursor of the i-th LogGroup of a PullLogs answer is the request's
// cursor value plus i.
func cursorFromInt64(v int64) string {
	var digits [20]byte
	d := strconv.AppendInt(digits[:0], v, 10)
	var out [28]byte
	base64.StdEncoding.Encode(out[:], d)
	return string(out[:base64.StdEncoding.EncodedLen(len(d))])
}
