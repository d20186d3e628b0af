// Package imageio converts between float tensors and images and writes PNGs
// that carry their generation parameters, the way A1111 does ("parameters"
// text chunk), so other tools show the prompt and seed.
package imageio

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"image"
	"image/png"
	"io"
	"math"
)

// FromCHW turns one image x (3, H, W) with values in [-1, 1] into RGBA pixels,
// as diffusers' postprocess does: (x/2 + 0.5) clamped to [0, 1], ×255, rounded.
func FromCHW(x []float32, h, w int) *image.NRGBA {
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	plane := h * w
	for y := range h {
		for xx := range w {
			o := img.PixOffset(xx, y)
			for c := range 3 {
				v := float64(x[c*plane+y*w+xx])/2 + 0.5
				img.Pix[o+c] = uint8(math.Round(min(max(v, 0), 1) * 255))
			}
			img.Pix[o+3] = 255
		}
	}
	return img
}

// WritePNG encodes img as PNG with one tEXt chunk per (key, value) pair
// placed right after the header, in the order given.
func WritePNG(w io.Writer, img image.Image, text [][2]string) error {
	var buf bytes.Buffer
	enc := png.Encoder{CompressionLevel: png.BestCompression}
	if err := enc.Encode(&buf, img); err != nil {
		return err
	}
	b := buf.Bytes()
	// 8-byte signature, then IHDR: length (4) + type (4) + 13 bytes + CRC (4).
	const ihdrEnd = 8 + 4 + 4 + 13 + 4
	if len(b) < ihdrEnd || string(b[12:16]) != "IHDR" {
		return fmt.Errorf("png: unexpected encoder output")
	}
	if _, err := w.Write(b[:ihdrEnd]); err != nil {
		return err
	}
	for _, kv := range text {
		if err := writeText(w, kv[0], kv[1]); err != nil {
			return err
		}
	}
	_, err := w.Write(b[ihdrEnd:])
	return err
}

// writeText writes an uncompressed tEXt chunk: keyword, NUL, Latin-1 text.
// Characters outside Latin-1 are replaced by '?', as the format requires.
func writeText(w io.Writer, key, value string) error {
	data := []byte(key)
	data = append(data, 0)
	for _, r := range value {
		if r > 0xff {
			r = '?'
		}
		data = append(data, byte(r))
	}
	var hdr [8]byte
	binary.BigEndian.PutUint32(hdr[:4], uint32(len(data)))
	copy(hdr[4:], "tEXt")
	crc := crc32.NewIEEE()
	crc.Write(hdr[4:])
	crc.Write(data)
	var tail [4]byte
	binary.BigEndian.PutUint32(tail[:], crc.Sum32())
	for _, p := range [][]byte{hdr[:], data, tail[:]} {
		if _, err := w.Write(p); err != nil {
			return err
		}
	}
	return nil
}

// ReadText returns the tEXt chunks of a PNG stream as key → value.
func ReadText(r io.Reader) (map[string]string, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	if len(b) < 8 || string(b[1:4]) != "PNG" {
		return nil, fmt.Errorf("png: not a PNG file")
	}
	out := map[string]string{}
	for p := 8; p+12 <= len(b); {
		n := int(binary.BigEndian.Uint32(b[p:]))
		if n < 0 || p+12+n > len(b) {
			return nil, fmt.Errorf("png: chunk at byte %d runs past the end", p)
		}
		typ := string(b[p+4 : p+8])
		if typ == "tEXt" {
			data := b[p+8 : p+8+n]
			if i := bytes.IndexByte(data, 0); i >= 0 {
				out[string(data[:i])] = string(data[i+1:])
			}
		}
		p += 12 + n
	}
	return out, nil
}
