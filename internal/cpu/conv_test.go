package cpu

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/zerodiff/zerodiff/internal/golden"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// TestConv2DGolden checks Conv2D and Conv2DBackward against torch for 3×3
// (stride 1 and 2), 1×1 (stride 1 and 2) and 5×5 kernels, with weight
// gradients accumulating onto a non-zero start and dx overwriting garbage.
func TestConv2DGolden(t *testing.T) {
	be := New()
	c := golden.Load(t, "ops/conv2d.safetensors")
	for _, name := range strings.Split(c.Meta(t, "cases"), ",") {
		stride, pad := metaInt(t, c, name+".stride"), metaInt(t, c, name+".pad")
		x, w, dy := goldenTensor(t, c, name+".x"), goldenTensor(t, c, name+".w"), goldenTensor(t, c, name+".dy")
		k := w.Dim(1) * w.Dim(2) * w.Dim(3) // terms per output
		var b, db *tensor.Tensor
		if c.Has(name + ".b") {
			b = goldenTensor(t, c, name+".b")
			db = be.New(tensor.F32, w.Dim(0))
		}
		y := be.New(tensor.F32, dy.Shape...)
		be.Conv2D(y, x, w, b, stride, pad)
		want, shape := c.F32(t, name+".y")
		// x ~ N(0,1) and w ~ N(0,1/K): products of size 1/√K.
		golden.Compare(t, "conv2d "+name, "y", Data(y), want, shape, dotTol(k, 1/math.Sqrt(float64(k))))

		dx := be.New(tensor.F32, x.Shape...)
		for i := range Data(dx) {
			Data(dx)[i] = float32(math.NaN())
		}
		dw := be.New(tensor.F32, w.Shape...)
		const start = 0.5 // dw and db accumulate onto this
		for i := range Data(dw) {
			Data(dw)[i] = start
		}
		if db != nil {
			for i := range Data(db) {
				Data(db)[i] = start
			}
		}
		be.Conv2DBackward(dx, dw, db, dy, x, w, stride, pad)
		// An input pixel gathers at most Co·kh·kw terms dy·w; a weight
		// and a bias sum over every output pixel of the batch.
		outTaps := w.Dim(0) * w.Dim(2) * w.Dim(3)
		pixels := dy.Numel() / dy.Dim(1)
		want, shape = c.F32(t, name+".dx")
		golden.Compare(t, "conv2d "+name, "dx", Data(dx), want, shape, dotTol(outTaps, 1/math.Sqrt(float64(k))))
		want, shape = c.F32(t, name+".dw")
		golden.Compare(t, "conv2d "+name, "dw", Data(dw), shifted(want, start), shape, dotTol(pixels, 1))
		if db != nil {
			want, shape = c.F32(t, name+".db")
			golden.Compare(t, "conv2d "+name, "db", Data(db), shifted(want, start), shape, dotTol(pixels, 1))
		}
	}
}

// convRef is a float64 direct convolution of x (N, Ci, H, W) with w (Co, Ci,
// kh, kw), no bias, and its gradients for the upstream gradient dy; it shares
// no code with the im2col path.
func convRef(g convGeom, x, w, dy []float32) (y, dx, dw []float64) {
	y = make([]float64, g.N*g.Co*g.Pixels()) // (N, Co, Ho, Wo)
	dx = make([]float64, g.N*g.InSize())     // (N, Ci, H, W)
	dw = make([]float64, len(w))             // (Co, Ci, kh, kw)
	for n := range g.N {
		for co := range g.Co {
			for oy := range g.Ho {
				for ox := range g.Wo {
					o := ((n*g.Co+co)*g.Ho+oy)*g.Wo + ox
					for ci := range g.Ci {
						for ky := range g.KH {
							iy := oy*g.Stride + ky - g.Pad
							if iy < 0 || iy >= g.H {
								continue
							}
							for kx := range g.KW {
								ix := ox*g.Stride + kx - g.Pad
								if ix < 0 || ix >= g.W {
									continue
								}
								xi := ((n*g.Ci+ci)*g.H+iy)*g.W + ix
								wi := ((co*g.Ci+ci)*g.KH+ky)*g.KW + kx
								y[o] += float64(x[xi]) * float64(w[wi])
								dx[xi] += float64(dy[o]) * float64(w[wi])
								dw[wi] += float64(dy[o]) * float64(x[xi])
							}
						}
					}
				}
			}
		}
	}
	return y, dx, dw
}

// TestConv2DChunkedReference runs images large enough to need several
// im2col chunks (and a stride-2 one) against the float64 direct convolution.
func TestConv2DChunkedReference(t *testing.T) {
	be := New()
	r := rand.New(rand.NewPCG(21, 22))
	for _, tc := range []struct {
		name        string
		x, w        []int
		stride, pad int
	}{
		{"3x3 s1 chunked", []int{1, 64, 64, 64}, []int{3, 64, 3, 3}, 1, 1},
		{"3x3 s2 chunked, image tasks", []int{2, 64, 130, 130}, []int{2, 64, 3, 3}, 2, 1},
	} {
		x := FromSlice(randSlice(r, tensor.Numel(tc.x), 1), tc.x...)
		w := FromSlice(randSlice(r, tensor.Numel(tc.w), 1), tc.w...)
		g := convGeom{tensor.ConvGeom{N: tc.x[0], Ci: tc.x[1], H: tc.x[2], W: tc.x[3], Co: tc.w[0], KH: tc.w[2], KW: tc.w[3], Stride: tc.stride, Pad: tc.pad}}
		g.Ho = (g.H+2*g.Pad-g.KH)/g.Stride + 1
		g.Wo = (g.W+2*g.Pad-g.KW)/g.Stride + 1
		if g.chunkRows() >= g.Ho {
			t.Fatalf("%v: one chunk of %d rows covers the image; the test needs several", tc.x, g.chunkRows())
		}
		dy := FromSlice(randSlice(r, g.N*g.Co*g.Pixels(), 1), g.N, g.Co, g.Ho, g.Wo)
		y := be.New(tensor.F32, dy.Shape...)
		be.Conv2D(y, x, w, nil, g.Stride, g.Pad)
		dx, dw := be.New(tensor.F32, tc.x...), be.New(tensor.F32, tc.w...)
		be.Conv2DBackward(dx, dw, nil, dy, x, w, g.Stride, g.Pad)
		ry, rdx, rdw := convRef(g, Data(x), Data(w), Data(dy))
		// Uniform [-1,1) values: products of size about 1/3; the reference is
		// exact to float32 precision, so only the Go side's rounding counts.
		for _, chk := range []struct {
			name  string
			got   []float32
			want  []float64
			shape []int
			k     int
		}{
			{"y", Data(y), ry, y.Shape, g.K()},
			{"dx", Data(dx), rdx, dx.Shape, g.Co * g.KH * g.KW},
			{"dw", Data(dw), rdw, dw.Shape, g.N * g.Pixels()},
		} {
			want := make([]float32, len(chk.want))
			for i, v := range chk.want {
				want[i] = float32(v)
			}
			golden.Compare(t, "conv2d "+tc.name, chk.name, chk.got, want, chk.shape, dotTol(chk.k, 1.0/3))
		}
	}
}

// TestConv2DGradCheck compares Conv2DBackward with finite differences of
// <Conv2D(x), dy> for a padded stride-2 3×3 and a 1×1 convolution.
func TestConv2DGradCheck(t *testing.T) {
	be := New()
	r := rand.New(rand.NewPCG(23, 24))
	for _, tc := range []struct {
		x, w        []int
		stride, pad int
	}{
		{[]int{2, 3, 7, 6}, []int{4, 3, 3, 3}, 2, 1},
		{[]int{2, 5, 3, 4}, []int{3, 5, 1, 1}, 1, 0},
	} {
		xs, ws := randSlice(r, tensor.Numel(tc.x), 1), randSlice(r, tensor.Numel(tc.w), 1)
		bs := randSlice(r, tc.w[0], 1)
		x, w, b := FromSlice(xs, tc.x...), FromSlice(ws, tc.w...), FromSlice(bs, tc.w[0])
		ho := (tc.x[2]+2*tc.pad-tc.w[2])/tc.stride + 1
		wo := (tc.x[3]+2*tc.pad-tc.w[3])/tc.stride + 1
		yShape := []int{tc.x[0], tc.w[0], ho, wo}
		dys := randSlice(r, tensor.Numel(yShape), 1)
		loss := func() float64 {
			y := be.New(tensor.F32, yShape...)
			be.Conv2D(y, x, w, b, tc.stride, tc.pad)
			return dot(Data(y), dys)
		}
		dx, dw, db := be.New(tensor.F32, tc.x...), be.New(tensor.F32, tc.w...), be.New(tensor.F32, tc.w[0])
		be.Conv2DBackward(dx, dw, db, FromSlice(dys, yShape...), x, w, tc.stride, tc.pad)
		// The loss is linear in each single input, so central differences have
		// no truncation error: h = 1e-2 and tol = 1e-2 only absorb float32
		// rounding of the outputs (about 1e-6 in the loss, 1e-4 once divided by h).
		gradCheck(t, "conv2d dx", xs, Data(dx), loss, 40, 1e-2, 1e-2)
		gradCheck(t, "conv2d dw", ws, Data(dw), loss, 40, 1e-2, 1e-2)
		gradCheck(t, "conv2d db", bs, Data(db), loss, 4, 1e-2, 1e-2)
	}
}

// TestConv2DThreadInvariant runs small images (spread over goroutines, with
// per-task weight gradients) and a large one (parallel GEMMs) with 1 and 2
// threads.
func TestConv2DThreadInvariant(t *testing.T) {
	be := New()
	r := rand.New(rand.NewPCG(25, 26))
	for _, tc := range []struct {
		name string
		x, w []int
	}{
		{"small images", []int{7, 16, 24, 24}, []int{16, 16, 3, 3}},
		{"large image", []int{2, 32, 48, 48}, []int{40, 32, 3, 3}},
	} {
		x := FromSlice(randSlice(r, tensor.Numel(tc.x), 1), tc.x...)
		w := FromSlice(randSlice(r, tensor.Numel(tc.w), 1), tc.w...)
		b := FromSlice(randSlice(r, tc.w[0], 1), tc.w[0])
		yShape := []int{tc.x[0], tc.w[0], tc.x[2], tc.x[3]}
		dy := FromSlice(randSlice(r, tensor.Numel(yShape), 1), yShape...)
		sameBitsForThreads(t, "conv2d "+tc.name, func() []float32 {
			y := be.New(tensor.F32, yShape...)
			be.Conv2D(y, x, w, b, 1, 1)
			return Data(y)
		})
		sameBitsForThreads(t, "conv2d backward "+tc.name, func() []float32 {
			dx, dw, db := be.New(tensor.F32, tc.x...), be.New(tensor.F32, tc.w...), be.New(tensor.F32, tc.w[0])
			be.Conv2DBackward(dx, dw, db, dy, x, w, 1, 1)
			return append(append(Data(dx), Data(dw)...), Data(db)...)
		})
	}
}
