package slstest

import (
	"encoding/base64"
	"strconv"
)

// A cursor is base64 (standard encoding) of a decimal int64, as SLS and the
// SDK spell it. Each shard numbers its LogGroups from a base of its own that
// no other shard of the server shares, so a cursor of one shard is rejected
// by every other shard with InvalidCursor.
const (
	cursorBase   = int64(1_600_000_000_000_000_000)
	cursorStride = int64(1_000_000_000_000) // LogGroups one shard can hold
)

func encodeCursor(v int64) string {
	var buf [20]byte
	return base64.StdEncoding.EncodeToString(strconv.AppendInt(buf[:0], v, 10))
}

func decodeCursor(c string) (int64, bool) {
	var buf [32]byte
	if base64.StdEncoding.DecodedLen(len(c)) > len(buf) {
		return 0, false
	}
	n, err := base64.StdEncoding.Decode(buf[:], []byte(c))
	if err != nil {
		return 0, false
	}
	v, err := strconv.ParseInt(string(buf[:n]), 10, 64)
	if err != nil {
		return 0, false
	}
	return v, true
}
