package data

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/zerodiff/zerodiff/internal/data/datatest"
)

// benchFiles writes count photo-like JPEGs (quality 90) of w×h into
// $ZD_BENCH_DIR/WxH (kept, for testdata/bench/pil_resize.py to time the same
// files) or a temporary folder, and returns their contents.
func benchFiles(b *testing.B, w, h, count int) [][]byte {
	b.Helper()
	base := os.Getenv("ZD_BENCH_DIR")
	if base == "" {
		base = b.TempDir()
	}
	dir := filepath.Join(base, fmt.Sprintf("%dx%d", w, h))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	var files [][]byte
	for i := range count {
		jpg := datatest.JPEG(b, datatest.Photo(w, h, uint32(i+1)), 90)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("photo-%02d.jpg", i)), jpg, 0o644); err != nil {
			b.Fatal(err)
		}
		files = append(files, jpg)
	}
	return files
}

// BenchmarkDecodeResize times prep's per-image CPU work on JPEG photos:
// decode, RGB conversion, resize to 512 on the shorter side (none for
// 512×768: torchvision skips it too), 512 center crop, [-1, 1] float CHW.
// img/s is per goroutine; run with -cpu 1,2 for the parallel rate.
func BenchmarkDecodeResize(b *testing.B) {
	for _, size := range [][2]int{{512, 768}, {1024, 1536}} {
		files := benchFiles(b, size[0], size[1], 16)
		b.Run(fmt.Sprintf("%dx%d", size[0], size[1]), func(b *testing.B) {
			tr := Transform{Resolution: 512, CenterCrop: true, Filter: Bilinear}
			b.ReportAllocs()
			start := time.Now()
			var n int
			b.RunParallel(func(pb *testing.PB) {
				dst := make([]float32, 3*512*512) // (3, 512, 512)
				i := 0
				for pb.Next() {
					img, err := DecodeRGB(files[i%len(files)])
					if err != nil {
						b.Error(err)
						return
					}
					if err := tr.Apply(img, i, dst); err != nil {
						b.Error(err)
						return
					}
					i++
				}
			})
			n = b.N
			b.ReportMetric(float64(n)/time.Since(start).Seconds(), "img/s")
		})
	}
}

// BenchmarkResize times the resampler alone: 1024×1536 to 512×768, bilinear
// and bicubic.
func BenchmarkResize(b *testing.B) {
	src := NewRGB(1024, 1536)
	for i := range src.Pix {
		src.Pix[i] = uint8(i * 31 >> 4)
	}
	for _, f := range []Filter{Bilinear, Bicubic} {
		b.Run(f.String(), func(b *testing.B) {
			for b.Loop() {
				Resize(src, 512, 768, f)
			}
		})
	}
}
