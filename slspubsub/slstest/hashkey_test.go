package slstest

import (
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"math/big"
	"math/rand/v2"
	"strings"
	"testing"
)

func TestNormalizeHashKey(t *testing.T) {
	cases := []struct {
		in, want string // want "" means an error
	}{
		{"00000000000000000000000000000000", "00000000000000000000000000000000"},
		{"ffffffffffffffffffffffffffffffff", "ffffffffffffffffffffffffffffffff"},
		{"FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF", "ffffffffffffffffffffffffffffffff"},
		{"8", "80000000000000000000000000000000"},
		{"7f", "7f000000000000000000000000000000"},
		{"AbC", "abc00000000000000000000000000000"},
		{"0123456789abcdef0123456789ABCDEF", "0123456789abcdef0123456789abcdef"},
		{"", ""},
		{"0123456789abcdef0123456789abcdef0", ""}, // 33 digits
		{"xyz", ""},
		{"12 4", ""},
		{"-1", ""},
		{"0x10", ""},
		{"é", ""},
	}
	for _, c := range cases {
		got, err := normalizeHashKey(c.in)
		switch {
		case c.want == "" && err == nil:
			t.Errorf("normalizeHashKey(%q) = %q, want an error", c.in, got)
		case c.want != "" && (err != nil || got != c.want):
			t.Errorf("normalizeHashKey(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
}

func TestInRange(t *testing.T) {
	cases := []struct {
		key, begin, end string
		want            bool
	}{
		{minHashKey, minHashKey, "80000000000000000000000000000000", true},
		{"7fffffffffffffffffffffffffffffff", minHashKey, "80000000000000000000000000000000", true},
		{"80000000000000000000000000000000", minHashKey, "80000000000000000000000000000000", false},
		{"80000000000000000000000000000000", "80000000000000000000000000000000", maxHashKey, true},
		{maxHashKey, "80000000000000000000000000000000", maxHashKey, true}, // the top of the space is inclusive
		{maxHashKey, "80000000000000000000000000000000", "fffffffffffffffffffffffffffffffe", false},
		{"fffffffffffffffffffffffffffffffd", "80000000000000000000000000000000", "fffffffffffffffffffffffffffffffe", true},
		{minHashKey, "00000000000000000000000000000001", maxHashKey, false},
	}
	for _, c := range cases {
		if got := inRange(c.key, c.begin, c.end); got != c.want {
			t.Errorf("inRange(%s, %s, %s) = %v, want %v", c.key, c.begin, c.end, got, c.want)
		}
	}
}

func TestSplitRange(t *testing.T) {
	cases := []struct {
		begin, end string
		n          int
	}{
		{minHashKey, maxHashKey, 1},
		{minHashKey, maxHashKey, 2},
		{minHashKey, maxHashKey, 3},
		{minHashKey, maxHashKey, 7},
		{minHashKey, maxHashKey, 64},
		{minHashKey, maxHashKey, 256},
		{"40000000000000000000000000000000", "80000000000000000000000000000000", 3},
		{"80000000000000000000000000000000", maxHashKey, 5},
		{"00000000000000000000000000000010", "00000000000000000000000000000013", 3},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%s-%s/%d", c.begin[:4], c.end[:4], c.n), func(t *testing.T) {
			b := splitRange(c.begin, c.end, c.n)
			if len(b) != c.n+1 || b[0] != c.begin || b[c.n] != c.end {
				t.Fatalf("bounds %v: want %d bounds from %s to %s", b, c.n+1, c.begin, c.end)
			}
			lo, hi := keyToInt(c.begin), keyToInt(c.end)
			if c.end == maxHashKey {
				hi = hashSpace
			}
			ideal := new(big.Int).Div(new(big.Int).Sub(hi, lo), big.NewInt(int64(c.n)))
			for i := 1; i <= c.n; i++ {
				if len(b[i]) != 32 || b[i] <= b[i-1] {
					t.Fatalf("bound %d = %q is not a key above %q", i, b[i], b[i-1])
				}
				if i == c.n {
					break
				}
				// Ranges are as even as integer division allows.
				w := new(big.Int).Sub(keyToInt(b[i]), keyToInt(b[i-1]))
				if d := new(big.Int).Sub(w, ideal); d.Sign() < 0 || d.Cmp(big.NewInt(1)) > 0 {
					t.Fatalf("range %d is %v wide, want %v (or one more)", i-1, w, ideal)
				}
			}
		})
	}
	if got := splitRange(minHashKey, maxHashKey, 2)[1]; got != "80000000000000000000000000000000" {
		t.Fatalf("midpoint of the space = %s", got)
	}
}

func TestKeyIntRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 1000 {
		var b [16]byte
		for i := range b {
			b[i] = byte(r.UintN(256))
		}
		k := hex.EncodeToString(b[:])
		if got := intToKey(keyToInt(k)); got != k {
			t.Fatalf("intToKey(keyToInt(%s)) = %s", k, got)
		}
	}
	if got := intToKey(hashSpace); got != maxHashKey {
		t.Fatalf("intToKey(2^128) = %s, want %s", got, maxHashKey)
	}
}

// hashKeyStore builds a server with one logstore of shards shards, for the
// routing tests of this package.
func hashKeyStore(t testing.TB, shards int) (*Server, *logstore) {
	t.Helper()
	s, err := NewServer(WithoutAuth())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	if err := s.CreateLogStore("proj", "store", shards); err != nil {
		t.Fatal(err)
	}
	ls, e := s.getLogStore("proj", "store")
	if e != nil {
		t.Fatal(e)
	}
	return s, ls
}

// checkRoute fails t unless key routes to the one readwrite shard whose
// range holds it, computed independently with big integers.
func checkRoute(t testing.TB, ls *logstore, key string) {
	t.Helper()
	k := keyToInt(key)
	ls.mu.RLock()
	defer ls.mu.RUnlock()
	var owners []int
	for _, sh := range ls.readWriteShards() {
		end := keyToInt(sh.end)
		if sh.end == maxHashKey {
			end = hashSpace
		}
		if k.Cmp(keyToInt(sh.begin)) >= 0 && (k.Cmp(end) < 0 || key == maxHashKey && sh.end == maxHashKey) {
			owners = append(owners, sh.id)
		}
	}
	if len(owners) != 1 {
		t.Fatalf("key %s is held by readwrite shards %v, want exactly one", key, owners)
	}
	sh := ls.route(key)
	if sh == nil || sh.id != owners[0] {
		t.Fatalf("route(%s) = %v, want shard %d", key, sh, owners[0])
	}
}

// After any sequence of splits and merges, the readwrite shards partition
// the hash space and route finds the one holding each key.
func TestRouteAfterSplitsAndMerges(t *testing.T) {
	s, ls := hashKeyStore(t, 3)
	r := rand.New(rand.NewPCG(7, 7))
	keys := map[string]bool{minHashKey: true, maxHashKey: true, "7fffffffffffffffffffffffffffffff": true, "80000000000000000000000000000000": true}
	for range 100 {
		var b [16]byte
		for i := range b {
			b[i] = byte(r.UintN(256))
		}
		keys[hex.EncodeToString(b[:])] = true
		sum := md5.Sum([]byte(fmt.Sprint(r.Int())))
		keys[hex.EncodeToString(sum[:])] = true
	}
	for step := range 30 {
		ls.mu.RLock()
		rw := ls.readWriteShards()
		ls.mu.RUnlock()
		sh := rw[r.IntN(len(rw))]
		var err error
		switch step % 3 {
		case 0, 1:
			_, err = s.SplitShard("proj", "store", sh.id, "")
		case 2:
			if sh.end != maxHashKey {
				_, err = s.MergeShards("proj", "store", sh.id)
			}
		}
		if err != nil && !strings.Contains(err.Error(), "too narrow") {
			t.Fatalf("step %d: %v", step, err)
		}
		// Boundaries and their neighbours are the interesting keys.
		ls.mu.RLock()
		infos := ls.shardInfos()
		ls.mu.RUnlock()
		for _, info := range infos {
			keys[info.InclusiveBeginKey] = true
			if v := keyToInt(info.InclusiveBeginKey); v.Sign() > 0 {
				keys[intToKey(v.Sub(v, big.NewInt(1)))] = true
			}
		}
		for k := range keys {
			checkRoute(t, ls, k)
		}
	}
}
