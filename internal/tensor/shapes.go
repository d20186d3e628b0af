package tensor

import "fmt"

// The shape rules of the Backend's kernels, shared by every backend: each
// checks its operands with these and panics on a mismatch (a programming
// error), naming the op.

// MustShape panics unless t has exactly shape.
func MustShape(op string, t *Tensor, shape ...int) {
	if !SameShape(t.Shape, shape) {
		panic(fmt.Sprintf("tensor: %s: got %v, want shape %v", op, t, shape))
	}
}

// ConvGeom is the geometry of one Conv2D: input (N, Ci, H, W), weight
// (Co, Ci, KH, KW), output (N, Co, Ho, Wo).
type ConvGeom struct {
	N, Ci, H, W int
	Co, KH, KW  int
	Stride, Pad int
	Ho, Wo      int
}

// ConvShape checks y, x, w and b (nil allowed) of a convolution against each
// other and returns their geometry.
func ConvShape(op string, y, x, w, b *Tensor, stride, pad int) ConvGeom {
	if len(x.Shape) != 4 || len(w.Shape) != 4 || w.Shape[1] != x.Shape[1] || stride < 1 || pad < 0 {
		panic(fmt.Sprintf("tensor: %s: input %v, weight %v, stride %d, pad %d", op, x, w, stride, pad))
	}
	g := ConvGeom{
		N: x.Shape[0], Ci: x.Shape[1], H: x.Shape[2], W: x.Shape[3],
		Co: w.Shape[0], KH: w.Shape[2], KW: w.Shape[3], Stride: stride, Pad: pad,
	}
	g.Ho = (g.H+2*pad-g.KH)/stride + 1
	g.Wo = (g.W+2*pad-g.KW)/stride + 1
	if g.Ho < 1 || g.Wo < 1 {
		panic(fmt.Sprintf("tensor: %s: kernel %v does not fit input %v with pad %d", op, w, x, pad))
	}
	MustShape(op+" output", y, g.N, g.Co, g.Ho, g.Wo)
	if b != nil {
		MustShape(op+" bias", b, g.Co)
	}
	return g
}

// K is the length of one im2col column: Ci·KH·KW.
func (g ConvGeom) K() int { return g.Ci * g.KH * g.KW }

// InSize is the number of values of one input image.
func (g ConvGeom) InSize() int { return g.Ci * g.H * g.W }

// Pixels is the number of output pixels of one image.
func (g ConvGeom) Pixels() int { return g.Ho * g.Wo }

// FLOPs is the multiply-adds ×2 of one image's forward pass.
func (g ConvGeom) FLOPs() int { return 2 * g.Co * g.K() * g.Pixels() }

// Direct reports a 1×1, stride-1, unpadded convolution: the image itself is
// the im2col matrix.
func (g ConvGeom) Direct() bool { return g.KH == 1 && g.KW == 1 && g.Stride == 1 && g.Pad == 0 }

// MatDims reads a 2-D (rows, cols) or 3-D (batch, rows, cols) operand as
// (batch, rows, cols), swapping rows and cols when trans.
func MatDims(name string, t *Tensor, trans bool) (batch, rows, cols int) {
	switch len(t.Shape) {
	case 2:
		batch, rows, cols = 1, t.Shape[0], t.Shape[1]
	case 3:
		batch, rows, cols = t.Shape[0], t.Shape[1], t.Shape[2]
	default:
		panic(fmt.Sprintf("tensor: %s: %v is neither 2-D nor 3-D", name, t))
	}
	if trans {
		rows, cols = cols, rows
	}
	return batch, rows, cols
}

// LinearDims returns N, In, Out for x (*, In) and w (Out, In), checking that
// y (*, Out) has x's leading dims.
func LinearDims(op string, y, x, w *Tensor) (n, in, out int) {
	if len(w.Shape) != 2 || len(x.Shape) < 1 {
		panic(fmt.Sprintf("tensor: %s: weight %v, input %v", op, w, x))
	}
	out, in = w.Shape[0], w.Shape[1]
	if x.Dim(-1) != in {
		panic(fmt.Sprintf("tensor: %s: input %v, want last dim %d of weight %v", op, x, in, w))
	}
	want := append(append([]int(nil), x.Shape[:len(x.Shape)-1]...), out)
	MustShape(op, y, want...)
	return x.Numel() / in, in, out
}
