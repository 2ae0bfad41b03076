package slspubsub

import (
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
)

// Record is what a Watermill message becomes on its way to SLS: one log plus
// the LogGroup attributes it must be written with. The Publisher batches
// records with equal Topic, Source and Tags into one LogGroup.
type Record struct {
	// Log is the log to write: its time and contents.
	Log Log
	// Topic is the LogGroup topic ("" for none).
	Topic string
	// Source is the LogGroup source ("" for none).
	Source string
	// Tags are the LogGroup tags, sorted by key, keys unique.
	Tags []Content
}

// Marshaler turns a Watermill message into the record written to logstore.
// Implementations must not keep msg, and must be safe for concurrent use.
type Marshaler interface {
	Marshal(logstore string, msg *message.Message) (Record, error)
}

// ReceivedLog is one log read from SLS, with where it was read from.
// Group and Log point into the fetched data; an Unmarshaler must not modify
// them nor keep them after it returns, but the strings they hold are immutable
// and may be kept.
type ReceivedLog struct {
	// Project and Logstore are where the log was read from.
	Project, Logstore string
	// Group is the LogGroup that holds Log.
	Group *LogGroup
	// Log is the log itself.
	Log *Log
	// Position is the log's shard, its group's cursor and its index there.
	Position Position

	// shared, set by the Subscriber, is what the logs of Group share.
	shared *groupShared
}

// SetMetadata writes the SLS fields of the log (MetadataTopic, MetadataSource
// and MetadataMachineUUID when not empty, MetadataTime, one MetadataTagPrefix
// key per tag) and its position (MetadataShard, MetadataCursor,
// MetadataIndex) into md, as DefaultMarshaler does. Custom Unmarshalers call
// it so PositionFromMessage and LogFieldsFromMessage work on their messages.
func (in ReceivedLog) SetMetadata(md message.Metadata) {
	if in.shared != nil {
		maps.Copy(md, in.shared.base)
		md[MetadataTime] = in.shared.timeText(in.Log.Time)
		md[MetadataIndex] = indexText(in.Position.Index)
		return
	}
	setLogFields(md, in.Group, in.Log)
	setPosition(md, in.Position)
}

// Unmarshaler turns a received log into a Watermill message. It must be safe
// for concurrent use, and should give the message the SLS metadata
// (ReceivedLog.SetMetadata). An error is reported to the Subscriber, which
// applies its policy for logs that cannot be unmarshaled; it never skips one
// silently.
type Unmarshaler interface {
	Unmarshal(in ReceivedLog) (*message.Message, error)
}

// MarshalerUnmarshaler is both a Marshaler and an Unmarshaler.
type MarshalerUnmarshaler interface {
	Marshaler
	Unmarshaler
}

// Contents DefaultMarshaler writes. A "_encoding" key is present, with the
// value "base64", only when the field's value is the standard base64 of the
// original bytes; SLS rejects values that are not valid UTF-8.
const (
	contentUUID             = "wm_uuid"
	contentUUIDEncoding     = "wm_uuid_encoding"
	contentPayload          = "wm_payload"
	contentPayloadEncoding  = "wm_payload_encoding"
	contentMetadata         = "wm_metadata"
	contentMetadataEncoding = "wm_metadata_encoding"
	encodingBase64          = "base64"
)

// DefaultMarshaler is the Marshaler and Unmarshaler the Publisher and the
// Subscriber use unless told otherwise. The zero value is ready to use and
// safe for concurrent use.
//
// # Marshal
//
// A message becomes one log whose contents are:
//   - "wm_uuid": the message UUID (possibly "");
//   - "wm_payload": the payload as it is when it is valid UTF-8, else its
//     standard base64 together with "wm_payload_encoding": "base64";
//   - "wm_metadata": a JSON object of the metadata that is not mapped to an
//     SLS field, keys sorted; omitted when there is none. A UUID or metadata
//     that is not valid UTF-8 is stored in base64 the same way
//     ("wm_uuid_encoding", "wm_metadata_encoding").
//
// Metadata keys mapped to SLS fields: MetadataTopic to Record.Topic,
// MetadataSource to Record.Source, MetadataTime (RFC 3339) to the log time
// (time.Now() when absent), each MetadataTagPrefix key to a tag. Their values
// must be valid UTF-8 and the time must lie between 1970 and 2106; otherwise
// Marshal fails with an error naming the key and the value. Every other key
// starting with MetadataReservedPrefix is dropped: MetadataMachineUUID and
// the position keys (MetadataShard, MetadataCursor, MetadataIndex) describe
// where a message was read from, and a message read from one logstore and
// published to another must not carry them.
//
// # Unmarshal
//
// A log with a "wm_uuid" content (written by DefaultMarshaler) becomes the
// original message: same UUID, same payload bytes, same metadata. The
// payload is never nil: a nil and an empty payload both come back as an
// empty, non-nil slice. Unmarshal then adds, as to every message it returns,
// the SLS fields and the position (see ReceivedLog.SetMetadata):
// MetadataTopic, MetadataSource and MetadataMachineUUID when not empty,
// MetadataTime always, one MetadataTagPrefix key per tag, MetadataShard,
// MetadataCursor and MetadataIndex. StripReservedMetadata removes them (and
// the keys the original message had in that namespace) to compare a
// received message with the published one.
//
// Any other log (written by the SDK's producer, Logtail, other clients)
// becomes a message whose payload is a JSON object of the log's contents,
// key to value as strings, in the order of the contents; for a key that
// appears more than once the last value wins, at the place of its last
// occurrence. Strings are escaped like encoding/json with SetEscapeHTML(false)
// ('<', '>' and '&' stay as they are; control characters, U+2028 and U+2029
// are escaped; invalid UTF-8 becomes U+FFFD). Its UUID is derived from where
// it was read, so a redelivered log gets the same UUID:
//
//	uuid.NewSHA1(uuid.NameSpaceURL, []byte("sls://<project>/<logstore>/<shard>/<cursor>/<index>"))
//
// and its metadata holds only the SLS fields and the position.
//
// Unmarshal errors (a field that does not decode) are *UnmarshalError values
// naming the position and the content key. Decode typed fields from such a
// message's payload with Decoder.DecodeMessage.
type DefaultMarshaler struct{}

var _ MarshalerUnmarshaler = DefaultMarshaler{}

// Marshal implements Marshaler; see DefaultMarshaler for the format.
func (DefaultMarshaler) Marshal(logstore string, msg *message.Message) (Record, error) {
	if msg == nil {
		return Record{}, errors.New("slspubsub: marshal a nil message")
	}
	var rec Record
	var keys []string // metadata keys stored in wm_metadata
	if len(msg.Metadata) > 0 {
		keys = make([]string, 0, len(msg.Metadata))
	}
	hasTime := false
	metadataUTF8 := true
	for k, v := range msg.Metadata {
		if !strings.HasPrefix(k, MetadataReservedPrefix) {
			keys = append(keys, k)
			metadataUTF8 = metadataUTF8 && utf8.ValidString(k) && utf8.ValidString(v)
			continue
		}
		mapped, err := mapReservedKey(&rec, k, v)
		if err != nil {
			return Record{}, err
		}
		hasTime = hasTime || mapped == MetadataTime
	}
	if !hasTime {
		rec.Log.Time = time.Now().UTC()
	}
	slices.SortFunc(rec.Tags, func(a, b Content) int { return strings.Compare(a.Key, b.Key) })

	contents := make([]Content, 0, 6)
	if utf8.ValidString(msg.UUID) {
		contents = append(contents, Content{Key: contentUUID, Value: msg.UUID})
	} else {
		contents = append(contents,
			Content{Key: contentUUID, Value: base64.StdEncoding.EncodeToString([]byte(msg.UUID))},
			Content{Key: contentUUIDEncoding, Value: encodingBase64})
	}
	if utf8.Valid(msg.Payload) {
		contents = append(contents, Content{Key: contentPayload, Value: string(msg.Payload)})
	} else {
		contents = append(contents,
			Content{Key: contentPayload, Value: base64.StdEncoding.EncodeToString(msg.Payload)},
			Content{Key: contentPayloadEncoding, Value: encodingBase64})
	}
	if len(keys) > 0 {
		slices.Sort(keys)
		js := appendMetadataJSON(nil, msg.Metadata, keys, !metadataUTF8)
		if metadataUTF8 {
			contents = append(contents, Content{Key: contentMetadata, Value: string(js)})
		} else {
			contents = append(contents,
				Content{Key: contentMetadata, Value: base64.StdEncoding.EncodeToString(js)},
				Content{Key: contentMetadataEncoding, Value: encodingBase64})
		}
	}
	rec.Log.Contents = contents
	return rec, nil
}

// Range of log times SLS stores: a uint32 of seconds since 1970.
var (
	minLogTime = time.Unix(0, 0).UTC()
	maxLogTime = time.Unix(math.MaxUint32, 999_999_999).UTC()
)

// mapReservedKey applies a metadata key of the reserved namespace to rec and
// returns the key it mapped ("" for a dropped key).
func mapReservedKey(rec *Record, k, v string) (string, error) {
	if k == MetadataTime {
		t, err := parseMetadataTime(v)
		if err != nil {
			return "", err
		}
		if t.Before(minLogTime) || t.After(maxLogTime) {
			return "", fmt.Errorf("slspubsub: metadata %s: %q is outside the times SLS stores (%s to %s)",
				k, v, minLogTime.Format(time.RFC3339), maxLogTime.Format(time.RFC3339Nano))
		}
		rec.Log.Time = t
		return k, nil
	}
	var tag string
	switch {
	case k == MetadataTopic, k == MetadataSource:
	case strings.HasPrefix(k, MetadataTagPrefix):
		tag = k[len(MetadataTagPrefix):]
		if tag == "" {
			return "", fmt.Errorf("slspubsub: metadata %s: empty tag key", k)
		}
	default:
		return "", nil // read-only or unknown keys of the namespace are not written
	}
	if !utf8.ValidString(k) || !utf8.ValidString(v) {
		return "", fmt.Errorf("slspubsub: metadata %q=%q: SLS fields must be valid UTF-8", k, v)
	}
	switch k {
	case MetadataTopic:
		rec.Topic = v
	case MetadataSource:
		rec.Source = v
	default:
		rec.Tags = append(rec.Tags, Content{Key: tag, Value: v})
	}
	return k, nil
}

// appendMetadataJSON appends the JSON object {key: md[key]} for keys, in
// order. With raw, bytes that are not valid UTF-8 are copied as they are (the
// caller then stores the result in base64).
func appendMetadataJSON(dst []byte, md message.Metadata, keys []string, raw bool) []byte {
	n := 2
	for _, k := range keys {
		n += len(k) + len(md[k]) + 6
	}
	if dst == nil {
		dst = make([]byte, 0, n+n/8)
	}
	dst = append(dst, '{')
	for i, k := range keys {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = jsonAppendString(dst, k, raw)
		dst = append(dst, ':')
		dst = jsonAppendString(dst, md[k], raw)
	}
	return append(dst, '}')
}

// UnmarshalError reports a log DefaultMarshaler cannot turn into a message:
// a content of its format that does not decode.
type UnmarshalError struct {
	// Project and Logstore are where the log was read from.
	Project, Logstore string
	// Position is the log's position.
	Position Position
	// Key is the content key whose value does not decode (e.g. "wm_metadata").
	Key string
	// Err is the cause.
	Err error
}

// Error names the logstore, the position and the content key.
func (e *UnmarshalError) Error() string {
	return fmt.Sprintf("slspubsub: unmarshal log of %s/%s at position %s: content %s: %v",
		e.Project, e.Logstore, e.Position, e.Key, e.Err)
}

// Unwrap returns Err.
func (e *UnmarshalError) Unwrap() error { return e.Err }

// ownContents are the contents of a log written by DefaultMarshaler.
type ownContents struct {
	hasUUID                                bool
	uuid, payload, metadata                string
	uuidEnc, payloadEnc, metadataEnc       string
	hasUUIDEnc, hasPayloadEnc, hasMetadEnc bool
}

func scanOwnContents(contents []Content) (o ownContents) {
	for i := range contents {
		c := &contents[i]
		if len(c.Key) < 3 || c.Key[:3] != "wm_" {
			continue
		}
		switch c.Key {
		case contentUUID:
			o.hasUUID, o.uuid = true, c.Value
		case contentPayload:
			o.payload = c.Value
		case contentMetadata:
			o.metadata = c.Value
		case contentUUIDEncoding:
			o.hasUUIDEnc, o.uuidEnc = true, c.Value
		case contentPayloadEncoding:
			o.hasPayloadEnc, o.payloadEnc = true, c.Value
		case contentMetadataEncoding:
			o.hasMetadEnc, o.metadataEnc = true, c.Value
		}
	}
	return o
}

// Unmarshal implements Unmarshaler; see DefaultMarshaler for the format.
func (DefaultMarshaler) Unmarshal(in ReceivedLog) (*message.Message, error) {
	if in.Group == nil || in.Log == nil {
		return nil, fmt.Errorf("slspubsub: unmarshal log of %s/%s at position %s: nil Group or Log",
			in.Project, in.Logstore, in.Position)
	}
	own := scanOwnContents(in.Log.Contents)
	if !own.hasUUID {
		return unmarshalForeign(in), nil
	}
	return unmarshalOwn(in, &own)
}

func unmarshalOwn(in ReceivedLog, own *ownContents) (*message.Message, error) {
	fail := func(key string, err error) (*message.Message, error) {
		return nil, &UnmarshalError{Project: in.Project, Logstore: in.Logstore, Position: in.Position, Key: key, Err: err}
	}
	id := own.uuid
	if own.hasUUIDEnc {
		b, err := decodeBase64Content(own.uuidEnc, own.uuid)
		if err != nil {
			return fail(contentUUID, err)
		}
		id = string(b)
	}
	var payload []byte
	if own.hasPayloadEnc {
		var err error
		if payload, err = decodeBase64Content(own.payloadEnc, own.payload); err != nil {
			return fail(contentPayload, err)
		}
	} else {
		payload = []byte(own.payload)
	}
	if payload == nil {
		payload = []byte{}
	}

	js := own.metadata
	if own.hasMetadEnc {
		b, err := decodeBase64Content(own.metadataEnc, own.metadata)
		if err != nil {
			return fail(contentMetadata, err)
		}
		js = string(b)
	}
	msg := message.NewMessage(id, payload)
	n := 0
	if js != "" {
		n = strings.Count(js, ",") + 1 // members, or more when values hold commas
	}
	sizeMetadata(msg, n+slsFieldCount(in.Group))
	if js != "" {
		err := jsonScanObject(js, func(k, v string) error {
			// Marshal never stores reserved keys; ones another writer put
			// there must not stand in for the SLS fields set below.
			if !strings.HasPrefix(k, MetadataReservedPrefix) {
				msg.Metadata[k] = v
			}
			return nil
		})
		if err != nil {
			return fail(contentMetadata, err)
		}
	}
	in.SetMetadata(msg.Metadata)
	return msg, nil
}

// slsFieldCount is the number of metadata keys setLogFields and setPosition
// add for a log of g.
func slsFieldCount(g *LogGroup) int {
	n := 4 + len(g.Tags) // time, shard, cursor, index, tags
	for _, s := range [...]string{g.Topic, g.Source, g.MachineUUID} {
		if s != "" {
			n++
		}
	}
	return n
}

// sizeMetadata gives msg a metadata map sized for n keys. The map
// message.NewMessage made holds up to 8 keys without growing (one group of
// Go's swiss table); a bigger one is made at once rather than grown.
func sizeMetadata(msg *message.Message, n int) {
	if n > 8 {
		msg.Metadata = make(message.Metadata, n)
	}
}

func decodeBase64Content(encoding, value string) ([]byte, error) {
	if encoding != encodingBase64 {
		return nil, fmt.Errorf("unknown encoding %q", encoding)
	}
	b, err := base64.StdEncoding.DecodeString(value)
	if err != nil {
		return nil, fmt.Errorf("invalid base64: %w", err)
	}
	return b, nil
}

func unmarshalForeign(in ReceivedLog) *message.Message {
	if gs := in.shared; gs != nil && gs.arena != nil {
		// The Subscriber's way: payload and UUID cut from its arena.
		a := gs.arena
		payload := a.keep(appendContentsJSON(a.buf(contentsJSONSize(in.Log.Contents)), in.Log.Contents))
		id := a.keep(appendForeignUUID(a.buf(36), in.Project, in.Logstore, in.Position))
		msg := message.NewMessage(unsafe.String(unsafe.SliceData(id), len(id)), payload)
		msg.Metadata = gs.metadata(in.Log, in.Position.Index, 0)
		return msg
	}
	payload := appendContentsJSON(nil, in.Log.Contents)
	msg := message.NewMessage(foreignUUID(in.Project, in.Logstore, in.Position), payload)
	if in.shared != nil {
		msg.Metadata = in.shared.metadata(in.Log, in.Position.Index, 0)
		return msg
	}
	sizeMetadata(msg, slsFieldCount(in.Group))
	in.SetMetadata(msg.Metadata)
	return msg
}

// appendContentsJSON appends the JSON object of contents (see
// DefaultMarshaler: last value of a key wins, at its last place).
func appendContentsJSON(dst []byte, contents []Content) []byte {
	if dst == nil {
		dst = make([]byte, 0, contentsJSONSize(contents))
	}
	var last map[string]int // for many contents: index of each key's last occurrence
	if len(contents) > 64 {
		last = make(map[string]int, len(contents))
		for i := range contents {
			last[contents[i].Key] = i
		}
	}
	dst = append(dst, '{')
	first := true
	for i := range contents {
		c := &contents[i]
		if last != nil {
			if last[c.Key] != i {
				continue
			}
		} else if keyRepeatsAfter(contents, i) {
			continue
		}
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = jsonAppendString(dst, c.Key, false)
		dst = append(dst, ':')
		dst = jsonAppendString(dst, c.Value, false)
	}
	return append(dst, '}')
}

// contentsJSONSize estimates the length of appendContentsJSON's object:
// exact when nothing needs escaping, with a little room for escapes.
func contentsJSONSize(contents []Content) int {
	n := 2
	for i := range contents {
		n += len(contents[i].Key) + len(contents[i].Value) + 6
	}
	return n + n/16
}

func keyRepeatsAfter(contents []Content, i int) bool {
	k := contents[i].Key
	for j := i + 1; j < len(contents); j++ {
		if contents[j].Key == k {
			return true
		}
	}
	return false
}

// foreignUUID is uuid.NewSHA1(uuid.NameSpaceURL,
// "sls://<project>/<logstore>/<shard>/<cursor>/<index>").String(), computed
// with a single allocation (the result).
func foreignUUID(project, logstore string, p Position) string {
	var out [36]byte
	return string(appendForeignUUID(out[:0], project, logstore, p))
}

// appendForeignUUID appends the 36 bytes of foreignUUID to dst.
func appendForeignUUID(dst []byte, project, logstore string, p Position) []byte {
	var buf [256]byte
	b := append(buf[:0], uuid.NameSpaceURL[:]...)
	b = append(b, "sls://"...)
	b = append(b, project...)
	b = append(b, '/')
	b = append(b, logstore...)
	b = append(b, '/')
	b = strconv.AppendInt(b, int64(p.Shard), 10)
	b = append(b, '/')
	b = append(b, p.Cursor...)
	b = append(b, '/')
	b = strconv.AppendInt(b, int64(p.Index), 10)
	sum := sha1.Sum(b)
	sum[6] = sum[6]&0x0f | 0x50 // version 5
	sum[8] = sum[8]&0x3f | 0x80 // RFC 4122 variant

	const hex = "0123456789abcdef"
	var out [36]byte
	j := 0
	for i := 0; i < 16; i++ {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			out[j] = '-'
			j++
		}
		out[j], out[j+1] = hex[sum[i]>>4], hex[sum[i]&0x0f]
		j += 2
	}
	return append(dst, out[:]...)
}

// jsonSafe[b] is true for the ASCII bytes a JSON string holds unescaped
// (encoding/json's safeSet: printable ASCII but '"' and '\\').
var jsonSafe = func() (t [utf8.RuneSelf]bool) {
	for b := 0x20; b < utf8.RuneSelf; b++ {
		t[b] = b != '"' && b != '\\'
	}
	return t
}()

// jsonSafe8 reports whether all 8 bytes of s are jsonSafe, testing them at
// once in one word: none has its high bit set, none is below 0x20, none is
// '"' or '\\'.
func jsonSafe8(s string) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	w := uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
	hasZero := func(x uint64) uint64 { return (x - ones) & ^x & highs }
	bad := w & highs                    // non-ASCII
	bad |= (w - 0x20*ones) & ^w & highs // below 0x20 (for bytes under 0x80)
	bad |= hasZero(w ^ '"'*ones)
	bad |= hasZero(w ^ '\\'*ones)
	return bad == 0
}

// jsonSafeString reports whether every byte of s is jsonSafe: s is its own
// JSON string body. It tests 8 bytes at a time, the tail of a string of 8
// bytes or more as its last 8.
func jsonSafeString(s string) bool {
	if len(s) < 8 {
		for i := 0; i < len(s); i++ {
			if b := s[i]; b >= utf8.RuneSelf || !jsonSafe[b] {
				return false
			}
		}
		return true
	}
	for i := 0; i+8 <= len(s); i += 8 {
		if !jsonSafe8(s[i : i+8]) {
			return false
		}
	}
	return jsonSafe8(s[len(s)-8:])
}

// jsonAppendString appends s as a JSON string, escaped exactly like
// encoding/json with SetEscapeHTML(false): '"' and '\\' and control
// characters escaped (\b \f \n \r \t or \u00XX), U+2028 and U+2029 escaped,
// invalid UTF-8 replaced by \ufffd. With raw, invalid UTF-8 bytes are copied
// as they are instead (jsonScanObject reads them back unchanged).
func jsonAppendString(dst []byte, s string, raw bool) []byte {
	if jsonSafeString(s) { // most keys and values: copied as they are
		dst = append(dst, '"')
		dst = append(dst, s...)
		return append(dst, '"')
	}
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		if i+8 <= len(s) && jsonSafe8(s[i:i+8]) {
			i += 8
			continue
		}
		b := s[i]
		if b < utf8.RuneSelf {
			if jsonSafe[b] {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '\\', '"':
				dst = append(dst, '\\', b)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hex[b>>4], hex[b&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			if !raw {
				dst = append(dst, s[start:i]...)
				dst = append(dst, `\ufffd`...)
				start = i + 1
			}
		case r == '\u2028' || r == '\u2029':
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hex[r&0xf])
			start = i + size
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// jsonScanObject reads a JSON object whose values are all strings and calls
// yield for each member in order (a repeated key is yielded each time). Keys
// and values without escapes are substrings of s (no allocation). Bytes that
// are not valid UTF-8 are passed through unchanged; a lone surrogate escape
// becomes U+FFFD, like encoding/json. It stops at the first error of yield.
func jsonScanObject(s string, yield func(k, v string) error) error {
	i := jsonSkipSpace(s, 0)
	if i >= len(s) || s[i] != '{' {
		return errors.New("not a JSON object")
	}
	i = jsonSkipSpace(s, i+1)
	if i < len(s) && s[i] == '}' {
		return jsonEnd(s, i+1)
	}
	for {
		k, next, err := jsonScanString(s, i)
		if err != nil {
			return fmt.Errorf("member key at offset %d: %w", i, err)
		}
		i = jsonSkipSpace(s, next)
		if i >= len(s) || s[i] != ':' {
			return fmt.Errorf("offset %d: want ':' after key %q", i, k)
		}
		i = jsonSkipSpace(s, i+1)
		if i < len(s) && s[i] != '"' {
			return fmt.Errorf("offset %d: value of key %q is not a string", i, k)
		}
		v, next, err := jsonScanString(s, i)
		if err != nil {
			return fmt.Errorf("value of key %q: %w", k, err)
		}
		if err := yield(k, v); err != nil {
			return err
		}
		i = jsonSkipSpace(s, next)
		if i >= len(s) {
			return errors.New("unexpected end of JSON object")
		}
		switch s[i] {
		case ',':
			i = jsonSkipSpace(s, i+1)
		case '}':
			return jsonEnd(s, i+1)
		default:
			return fmt.Errorf("offset %d: want ',' or '}'", i)
		}
	}
}

func jsonSkipSpace(s string, i int) int {
	for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r') {
		i++
	}
	return i
}

func jsonEnd(s string, i int) error {
	if i = jsonSkipSpace(s, i); i != len(s) {
		return fmt.Errorf("offset %d: data after the JSON object", i)
	}
	return nil
}

// jsonScanString reads the JSON string starting at s[i] (a '"') and returns
// its value and the offset after the closing quote.
func jsonScanString(s string, i int) (string, int, error) {
	if i >= len(s) || s[i] != '"' {
		return "", i, errors.New("want a string")
	}
	start := i + 1
	for j := start; j < len(s); j++ {
		switch b := s[j]; {
		case b == '"':
			return s[start:j], j + 1, nil
		case b == '\\':
			return jsonUnquoteSlow(s, start, j)
		case b < 0x20:
			return "", j, fmt.Errorf("control character %#x in string", b)
		}
	}
	return "", len(s), errors.New("unterminated string")
}

// jsonUnquoteSlow continues jsonScanString from s[j], the first backslash of
// the string that starts at s[start].
func jsonUnquoteSlow(s string, start, j int) (string, int, error) {
	var buf strings.Builder // one allocation: String() does not copy
	buf.Grow(j - start + 16)
	buf.WriteString(s[start:j])
	for j < len(s) {
		b := s[j]
		switch {
		case b == '"':
			return buf.String(), j + 1, nil
		case b < 0x20:
			return "", j, fmt.Errorf("control character %#x in string", b)
		case b != '\\':
			buf.WriteByte(b)
			j++
			continue
		}
		if j+1 >= len(s) {
			break
		}
		switch e := s[j+1]; e {
		case '"', '\\', '/':
			buf.WriteByte(e)
		case 'b':
			buf.WriteByte('\b')
		case 'f':
			buf.WriteByte('\f')
		case 'n':
			buf.WriteByte('\n')
		case 'r':
			buf.WriteByte('\r')
		case 't':
			buf.WriteByte('\t')
		case 'u':
			r, n, ok := jsonScanUnicodeEscape(s, j)
			if !ok {
				return "", j, errors.New("invalid \\u escape")
			}
			buf.WriteRune(r)
			j += n
			continue
		default:
			return "", j, fmt.Errorf("invalid escape \\%c", e)
		}
		j += 2
	}
	return "", len(s), errors.New("unterminated string")
}

// jsonScanUnicodeEscape reads "\uXXXX" (or a surrogate pair of them) at s[j]
// and returns the rune and the bytes read. A lone surrogate is U+FFFD.
func jsonScanUnicodeEscape(s string, j int) (rune, int, bool) {
	r, ok := jsonHex4(s, j+2)
	if !ok {
		return 0, 0, false
	}
	if r < 0xd800 || r > 0xdfff {
		return r, 6, true
	}
	if r < 0xdc00 && j+12 <= len(s) && s[j+6] == '\\' && s[j+7] == 'u' {
		if r2, ok := jsonHex4(s, j+8); ok && r2 >= 0xdc00 && r2 <= 0xdfff {
			return 0x10000 + (r-0xd800)<<10 + (r2 - 0xdc00), 12, true
		}
	}
	return utf8.RuneError, 6, true
}

func jsonHex4(s string, i int) (rune, bool) {
	if i+4 > len(s) {
		return 0, false
	}
	var r rune
	for _, c := range []byte(s[i : i+4]) {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}
