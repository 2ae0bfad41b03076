package slstest

import (
	"bytes"
	"errors"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// A zstd body that expands past the PutLogs limit is refused by the decoder
// itself, before it can allocate what the body expands to.
func TestZstdDecodeBounded(t *testing.T) {
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	bomb := enc.EncodeAll(bytes.Repeat([]byte{0}, 8<<20), nil)
	c := newCodec(1 << 20)
	if _, err := c.decompress("zstd", bomb, 1<<20); !errors.Is(err, zstd.ErrDecoderSizeExceeded) {
		t.Fatalf("an 8 MiB zstd body under a 1 MiB limit: %v; want the decoder to refuse it", err)
	}
	small := enc.EncodeAll(bytes.Repeat([]byte{1}, 1<<20), nil)
	out, err := c.decompress("zstd", small, 1<<20)
	if err != nil || len(out) != 1<<20 {
		t.Fatalf("a body at the limit: %d bytes, %v", len(out), err)
	}
}

// compress and decompress round-trip both methods, incompressible data
// included (stored as one literal run in lz4).
func TestCodecRoundTrip(t *testing.T) {
	c := newCodec(1 << 20)
	inputs := [][]byte{{}, []byte("x"), bytes.Repeat([]byte("abc"), 10000), randomBytes(70000)}
	for _, method := range []string{"lz4", "zstd"} {
		for _, in := range inputs {
			comp, err := c.compress(method, nil, in)
			if err != nil {
				t.Fatalf("%s compress: %v", method, err)
			}
			if len(in) == 0 {
				continue // PullLogs never compresses an empty body
			}
			out, err := c.decompress(method, comp, len(in))
			if err != nil || !bytes.Equal(out, in) {
				t.Fatalf("%s round trip of %d bytes: %v", method, len(in), err)
			}
		}
	}
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	x := uint32(2463534242)
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}
