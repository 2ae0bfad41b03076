package slstest

import (
	"encoding/hex"
	"fmt"
	"math/big"
	"strings"
)

// Hash keys are 128-bit values written as 32 lowercase hex digits. A shard
// owns the range [InclusiveBeginKey, ExclusiveEndKey); the last shard's end
// is "ffffffffffffffffffffffffffffffff", which SLS treats as inclusive.
const (
	minHashKey = "00000000000000000000000000000000"
	maxHashKey = "ffffffffffffffffffffffffffffffff"
)

var hashSpace = new(big.Int).Lsh(big.NewInt(1), 128)

// normalizeHashKey validates a hash key and returns it as 32 lowercase hex
// digits. SLS accepts shorter keys and pads them on the right with zeros (the
// SDK producer's bucket adjustment relies on this).
func normalizeHashKey(key string) (string, error) {
	if key == "" || len(key) > 32 {
		return "", fmt.Errorf("hash key %q must be 1 to 32 hex digits", key)
	}
	if _, err := hex.DecodeString(padEven(key)); err != nil {
		return "", fmt.Errorf("hash key %q is not hexadecimal", key)
	}
	return strings.ToLower(key) + minHashKey[len(key):], nil
}

func padEven(s string) string {
	if len(s)%2 == 1 {
		return s + "0"
	}
	return s
}

func keyToInt(key string) *big.Int {
	v, _ := new(big.Int).SetString(key, 16)
	return v
}

func intToKey(v *big.Int) string {
	s := v.Text(16)
	if len(s) > 32 { // 2^128 is the exclusive end of the space
		return maxHashKey
	}
	return minHashKey[len(s):] + s
}

// splitRange divides [begin, end) into n contiguous ranges of (nearly) equal
// width and returns the n+1 boundaries.
func splitRange(begin, end string, n int) []string {
	b, e := keyToInt(begin), keyToInt(end)
	if end == maxHashKey {
		e = hashSpace
	}
	width := new(big.Int).Sub(e, b)
	bounds := make([]string, n+1)
	for i := 0; i <= n; i++ {
		off := new(big.Int).Mul(width, big.NewInt(int64(i)))
		off.Div(off, big.NewInt(int64(n)))
		bounds[i] = intToKey(off.Add(off, b))
	}
	bounds[n] = end
	return bounds
}

// inRange reports whether key (normalized) lies in [begin, end); the top of
// the hash space belongs to the shard ending at maxHashKey.
func inRange(key, begin, end string) bool {
	return key >= begin && (key < end || end == maxHashKey)
}
