package slspubsub

import (
	"errors"
	"fmt"
	"strconv"
	"sync"

	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
)

// Compression selects how request and response bodies are compressed on the
// wire. The zero value is CompressionLZ4, SLS's and the SDK's default.
type Compression int

// The compressions SLS accepts.
const (
	// CompressionLZ4 sends a raw LZ4 block (not an LZ4 frame), as the SDK
	// does. It is the default: cheap on CPU, about 4-6x on typical logs.
	CompressionLZ4 Compression = iota
	// CompressionZstd sends a zstd frame: smaller bodies (less network and
	// SLS traffic cost) for somewhat more CPU.
	CompressionZstd
	// CompressionNone sends bodies uncompressed (writes only; PullLogs
	// responses are always compressed, so a pull asks for lz4 instead).
	CompressionNone
)

// String returns "lz4", "zstd" or "none", the names SLS uses.
func (c Compression) String() string {
	switch c {
	case CompressionLZ4:
		return "lz4"
	case CompressionZstd:
		return "zstd"
	case CompressionNone:
		return "none"
	}
	return "Compression(" + strconv.Itoa(int(c)) + ")"
}

func (c Compression) valid() bool {
	return c == CompressionLZ4 || c == CompressionZstd || c == CompressionNone
}

// maxRawSize bounds the uncompressed size of any body the client accepts:
// a response declaring more (in x-log-bodyrawsize) is refused before any
// memory is allocated for it. SLS bounds PullLogs responses far below it.
const maxRawSize = 512 << 20

var (
	lz4Compressors = sync.Pool{New: func() any { return new(lz4.Compressor) }}

	// zstd's EncodeAll and DecodeAll are safe for concurrent use; one
	// encoder and one decoder serve every client of the process. They are
	// built on first use so that programs that never use zstd pay nothing.
	zstdEncoder = sync.OnceValue(func() *zstd.Encoder {
		enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest))
		if err != nil {
			panic(fmt.Sprintf("slspubsub: zstd encoder: %v", err)) // only fails on invalid options
		}
		return enc
	})
	// The decoder never writes more than cap(dst)-len(dst) bytes
	// (WithDecodeAllCapLimit): a body cannot expand past the size its
	// response declared.
	zstdDecoder = sync.OnceValue(func() *zstd.Decoder {
		dec, err := zstd.NewReader(nil,
			zstd.WithDecoderConcurrency(0),
			zstd.WithDecoderMaxMemory(maxRawSize),
			zstd.WithDecodeAllCapLimit(true))
		if err != nil {
			panic(fmt.Sprintf("slspubsub: zstd decoder: %v", err))
		}
		return dec
	})
)

// compressBound is the most bytes compress may append for src of n bytes.
func compressBound(c Compression, n int) int {
	switch c {
	case CompressionLZ4:
		return lz4.CompressBlockBound(n)
	case CompressionZstd:
		return zstdEncoder().MaxEncodedSize(n)
	}
	return n
}

// compress appends src compressed with c to dst and returns the extended
// slice. It does not allocate when dst has compressBound(c, len(src)) spare
// capacity.
func compress(c Compression, dst, src []byte) ([]byte, error) {
	switch c {
	case CompressionLZ4:
		bound := lz4.CompressBlockBound(len(src))
		start := len(dst)
		dst = grow(dst, bound)
		out := dst[start : start+bound]
		comp := lz4Compressors.Get().(*lz4.Compressor)
		n, err := comp.CompressBlock(src, out)
		lz4Compressors.Put(comp)
		if err != nil {
			return dst[:start], fmt.Errorf("lz4: %w", err)
		}
		if n == 0 {
			// The block format has no "stored" mode; like the SDK, write
			// incompressible input as one run of literals.
			n = copyIncompressible(src, out)
		}
		return dst[:start+n], nil
	case CompressionZstd:
		return zstdEncoder().EncodeAll(src, dst), nil
	case CompressionNone:
		return append(dst, src...), nil
	}
	return dst, fmt.Errorf("unknown compression %v", c)
}

// grow extends b by n bytes, reallocating only when its capacity is short.
func grow(b []byte, n int) []byte {
	if cap(b)-len(b) < n {
		nb := make([]byte, len(b), len(b)+n)
		copy(nb, b)
		b = nb
	}
	return b[:len(b)+n]
}

// copyIncompressible writes src into dst as a single LZ4 sequence of
// literals, a valid block for any input, and returns its length. dst must
// hold lz4.CompressBlockBound(len(src)) bytes. It is the SDK's
// copyIncompressible (log_store.go), which SLS accepts.
func copyIncompressible(src, dst []byte) int {
	n, di := len(src), 0
	if n < 0xF {
		dst[di] = byte(n << 4)
	} else {
		dst[di] = 0xF0
		di++
		for n -= 0xF; n >= 0xFF; n -= 0xFF {
			dst[di] = 0xFF
			di++
		}
		dst[di] = byte(n)
	}
	di++
	return di + copy(dst[di:], src)
}

var errSizeMismatch = errors.New("decompressed size does not match x-log-bodyrawsize")

// decompress decodes body, compressed with method ("lz4" or "zstd", the
// x-log-compresstype values), into a new slice of exactly rawSize bytes. It
// fails when the body is corrupt or decodes to any other size; it never
// produces more than rawSize bytes.
func decompress(method string, body []byte, rawSize int) ([]byte, error) {
	if rawSize < 0 || rawSize > maxRawSize {
		return nil, fmt.Errorf("x-log-bodyrawsize %d is out of range [0, %d]", rawSize, maxRawSize)
	}
	switch method {
	case "lz4":
		out := make([]byte, rawSize)
		n, err := lz4.UncompressBlock(body, out)
		if err != nil {
			return nil, fmt.Errorf("lz4: %w", err)
		}
		if n != rawSize {
			return nil, fmt.Errorf("lz4 body decodes to %d bytes, x-log-bodyrawsize is %d: %w", n, rawSize, errSizeMismatch)
		}
		return out, nil
	case "zstd":
		// One spare byte of capacity lets an over-long body show itself as
		// a size mismatch instead of being cut at exactly rawSize.
		out, err := zstdDecoder().DecodeAll(body, make([]byte, 0, rawSize+1))
		if err != nil {
			return nil, fmt.Errorf("zstd: %w", err)
		}
		if len(out) != rawSize {
			return nil, fmt.Errorf("zstd body decodes to %d bytes, x-log-bodyrawsize is %d: %w", len(out), rawSize, errSizeMismatch)
		}
		return out[:rawSize:rawSize], nil
	}
	return nil, fmt.Errorf("unknown x-log-compresstype %q", method)
}
