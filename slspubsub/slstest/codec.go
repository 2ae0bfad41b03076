package slstest

import (
	"fmt"
	"sync"

	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
)

// codec compresses PullLogs responses and decompresses PutLogs bodies in
// the two formats the SDK speaks: a raw LZ4 block and a zstd frame.
type codec struct {
	lz4 sync.Pool // *lz4.Compressor
	enc *zstd.Encoder
	dec *zstd.Decoder
}

// newCodec returns a codec whose zstd decoder refuses to produce more than
// maxDecoded bytes, so a small body cannot expand past the PutLogs limit.
func newCodec(maxDecoded int) *codec {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
	if err != nil {
		panic(fmt.Sprintf("slstest: zstd encoder: %v", err)) // only fails on invalid options
	}
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecoderMaxMemory(uint64(maxDecoded)+1))
	if err != nil {
		panic(fmt.Sprintf("slstest: zstd decoder: %v", err))
	}
	return &codec{lz4: sync.Pool{New: func() any { return new(lz4.Compressor) }}, enc: enc, dec: dec}
}

// compress appends src compressed with method ("lz4" or "zstd") to dst.
func (c *codec) compress(method string, dst, src []byte) ([]byte, error) {
	switch method {
	case "zstd":
		return c.enc.EncodeAll(src, dst), nil
	case "lz4":
		bound := lz4.CompressBlockBound(len(src))
		start := len(dst)
		dst = grow(dst, bound)
		comp := c.lz4.Get().(*lz4.Compressor)
		n, err := comp.CompressBlock(src, dst[start:start+bound])
		c.lz4.Put(comp)
		if err != nil {
			return nil, err
		}
		if n == 0 { // incompressible: store the input as one literal run
			n = literalBlock(dst[start:start+bound], src)
		}
		return dst[:start+n], nil
	}
	return nil, fmt.Errorf("unknown compression %q", method)
}

func grow(b []byte, n int) []byte {
	if cap(b)-len(b) < n {
		nb := make([]byte, len(b), len(b)+n)
		copy(nb, b)
		b = nb
	}
	return b[:len(b)+n]
}

// literalBlock writes src as a single LZ4 sequence of literals, which is a
// valid block for any input, and returns its length.
func literalBlock(dst, src []byte) int {
	n := len(src)
	i := 0
	if n < 15 {
		dst[0] = byte(n << 4)
		i = 1
	} else {
		dst[0] = 0xf0
		i = 1
		for rest := n - 15; ; rest -= 255 {
			if rest < 255 {
				dst[i] = byte(rest)
				i++
				break
			}
			dst[i] = 255
			i++
		}
	}
	return i + copy(dst[i:], src)
}

// decompress returns body decompressed by method into exactly rawSize
// bytes, or an error when it does not decode to that size.
func (c *codec) decompress(method string, body []byte, rawSize int) ([]byte, error) {
	switch method {
	case "lz4":
		out := make([]byte, rawSize)
		n, err := lz4.UncompressBlock(body, out)
		if err != nil {
			return nil, fmt.Errorf("lz4: %w", err)
		}
		if n != rawSize {
			return nil, fmt.Errorf("lz4 body decodes to %d bytes, x-log-bodyrawsize says %d", n, rawSize)
		}
		return out, nil
	case "zstd":
		out, err := c.dec.DecodeAll(body, make([]byte, 0, rawSize))
		if err != nil {
			return nil, fmt.Errorf("zstd: %w", err)
		}
		if len(out) != rawSize {
			return nil, fmt.Errorf("zstd body decodes to %d bytes, x-log-bodyrawsize says %d", len(out), rawSize)
		}
		return out, nil
	}
	return nil, fmt.Errorf("unknown compression %q", method)
}
