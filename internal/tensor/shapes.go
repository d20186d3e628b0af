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

// AttentionDims checks q (B, Tq, H·D) and k, v (B, Tk, H·D) and returns B,
// Tq, Tk and the head dim D.
func AttentionDims(op string, q, k, v *Tensor, heads int) (b, tq, tk, d int) {
	if len(q.Shape) != 3 || len(k.Shape) != 3 {
		panic(fmt.Sprintf("tensor: %s: q %v and k %v must be (B, T, H·D)", op, q, k))
	}
	b, tq, hd := q.Shape[0], q.Shape[1], q.Shape[2]
	tk = k.Shape[1]
	if heads < 1 || hd%heads != 0 {
		panic(fmt.Sprintf("tensor: %s: width %d of q %v does not split into %d heads", op, hd, q, heads))
	}
	if tk == 0 {
		panic(fmt.Sprintf("tensor: %s: k %v has no keys", op, k))
	}
	MustShape(op+" k", k, b, tk, hd)
	MustShape(op+" v", v, b, tk, hd)
	return b, tq, tk, hd / heads
}

// ChannelBiasDims checks bias (N, C) against x (N, C, *) and returns the
// number of (n, c) rows and the trailing size.
func ChannelBiasDims(op string, x, bias *Tensor) (rows, s int) {
	if len(x.Shape) < 2 {
		panic(fmt.Sprintf("tensor: %s: %v needs at least (N, C)", op, x))
	}
	MustShape(op+" bias", bias, x.Shape[0], x.Shape[1])
	s = Numel(x.Shape[2:])
	if s == 0 {
		// Nothing to add or sum; the callers' grain needs s > 0.
		return 0, 1
	}
	return x.Shape[0] * x.Shape[1], s
}

// ConcatAxis checks that the parts agree with whole on every axis but axis
// and add up to it along axis; it returns axis made non-negative.
func ConcatAxis(op string, whole *Tensor, axis int, parts []*Tensor) int {
	rank := len(whole.Shape)
	if axis < 0 {
		axis += rank
	}
	if axis < 0 || axis >= rank {
		panic(fmt.Sprintf("tensor: %s: axis %d out of range for %v", op, axis, whole))
	}
	sum := 0
	for i, p := range parts {
		if len(p.Shape) != rank {
			panic(fmt.Sprintf("tensor: %s: part %d %v and %v differ in rank", op, i, p, whole))
		}
		for a := range rank {
			if a != axis && p.Shape[a] != whole.Shape[a] {
				panic(fmt.Sprintf("tensor: %s: part %d %v and %v differ on axis %d", op, i, p, whole, a))
			}
		}
		sum += p.Shape[axis]
	}
	if sum != whole.Shape[axis] {
		panic(fmt.Sprintf("tensor: %s: parts add up to %d along axis %d of %v", op, sum, axis, whole))
	}
	return axis
}

// EmbeddingDims checks y (ids..., D) against ids and table (V, D) and returns
// the number of ids and D.
func EmbeddingDims(op string, y, ids, table *Tensor) (n, d int) {
	if len(table.Shape) != 2 {
		panic(fmt.Sprintf("tensor: %s: table %v is not (V, D)", op, table))
	}
	d = table.Shape[1]
	MustShape(op+" output", y, append(append([]int(nil), ids.Shape...), d)...)
	return ids.Numel(), d
}

// GEGLUDims checks y (*, C) against x (*, 2C) and returns the rows and C.
func GEGLUDims(y, x *Tensor) (rows, c int) {
	c = y.Dim(-1)
	ok := len(x.Shape) == len(y.Shape) && x.Dim(-1) == 2*c && c > 0 &&
		SameShape(x.Shape[:len(x.Shape)-1], y.Shape[:len(y.Shape)-1])
	if !ok {
		panic(fmt.Sprintf("tensor: geglu: x %v must be (*, 2C) for y (*, C) %v", x, y))
	}
	return y.Numel() / c, c
}

// GroupNormDims returns the batch, channel and spatial sizes of x (N, C, *).
func GroupNormDims(x *Tensor, groups int) (n, c, s int) {
	if len(x.Shape) < 2 {
		panic(fmt.Sprintf("tensor: group norm: x %v needs at least (N, C)", x))
	}
	n, c = x.Shape[0], x.Shape[1]
	if groups < 1 || c%groups != 0 {
		panic(fmt.Sprintf("tensor: group norm: %d channels of %v do not split into %d groups", c, x, groups))
	}
	return n, c, Numel(x.Shape[2:])
}

// LayerNormDims returns the number of rows and the row length of x (*, C).
func LayerNormDims(x *Tensor) (rows, c int) {
	if len(x.Shape) < 1 || x.Dim(-1) == 0 {
		panic(fmt.Sprintf("tensor: layer norm: x %v has no last axis to normalize", x))
	}
	c = x.Dim(-1)
	return x.Numel() / c, c
}

// MSEDims checks pred and target (N, *) and weight (N) or nil, and returns
// N and the size M of one sample.
func MSEDims(op string, pred, target, weight *Tensor) (n, m int) {
	if len(pred.Shape) < 1 || pred.Shape[0] == 0 {
		panic(fmt.Sprintf("tensor: %s: pred %v has no batch", op, pred))
	}
	MustShape(op+" target", target, pred.Shape...)
	n = pred.Shape[0]
	if weight != nil {
		MustShape(op+" weight", weight, n)
	}
	return n, pred.Numel() / n
}

// MustSameLen panics unless a and b hold as many elements.
func MustSameLen(op string, a, b *Tensor) {
	if a.Numel() != b.Numel() {
		panic(fmt.Sprintf("tensor: %s: %v and %v differ in size", op, a, b))
	}
}

// MustStatsLen panics unless t holds n elements; the layer-norm statistics may be
// shaped (rows) or (*, 1) as PyTorch saves them.
func MustStatsLen(op string, t *Tensor, n int) {
	if t.Numel() != n {
		panic(fmt.Sprintf("tensor: %s: got %v, want %d elements", op, t, n))
	}
}

// OuterInner returns the product of the axes before axis and after it.
func OuterInner(shape []int, axis int) (outer, inner int) {
	return Numel(shape[:axis]), Numel(shape[axis+1:])
}

// SoftmaxDims returns the number of rows and the row length of x (*, C).
func SoftmaxDims(x *Tensor) (rows, c int) {
	if len(x.Shape) < 1 || x.Dim(-1) == 0 {
		panic(fmt.Sprintf("tensor: softmax: %v has no last axis", x))
	}
	c = x.Dim(-1)
	return x.Numel() / c, c
}

// UpsampleDims checks y (N, C, 2H, 2W) against x (N, C, H, W) and returns
// the number of input rows N·C·H and the width W.
func UpsampleDims(op string, y, x *Tensor) (rows, w int) {
	if len(x.Shape) != 4 {
		panic(fmt.Sprintf("tensor: %s: %v is not (N, C, H, W)", op, x))
	}
	n, c, h, w := x.Shape[0], x.Shape[1], x.Shape[2], x.Shape[3]
	MustShape(op, y, n, c, 2*h, 2*w)
	if w == 0 {
		return 0, 1
	}
	return n * c * h, w
}
