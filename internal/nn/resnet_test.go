package nn

import (
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/zerodiff/zerodiff/internal/cpu"
	"github.com/zerodiff/zerodiff/internal/golden"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// loadParams fills every parameter of tab from the golden tensors
// "<prefix>.w.<name>" (or "w.<name>" without a prefix), failing on any that is missing or mis-shaped.
func loadParams(t *testing.T, be tensor.Backend, c *golden.Case, tab *Table, prefix string) {
	t.Helper()
	for _, p := range tab.Params {
		v, shape := c.F32(t, join(prefix, "w."+p.Name))
		if !tensor.SameShape(shape, p.Shape) {
			t.Fatalf("%s: golden shape %v, model shape %v", p.Name, shape, p.Shape)
		}
		be.Upload(p.W, v)
	}
}

// metaInts parses the comma-separated integers of metadata key into ps.
func metaInts(t *testing.T, c *golden.Case, key string, ps ...*int) {
	t.Helper()
	dims := strings.Split(c.Meta(t, key), ",")
	if len(dims) != len(ps) {
		t.Fatalf("metadata %s = %q: want %d integers", key, c.Meta(t, key), len(ps))
	}
	for i, p := range ps {
		v, err := strconv.Atoi(dims[i])
		if err != nil {
			t.Fatalf("metadata %s: %v", key, err)
		}
		*p = v
	}
}

// compareGrads checks every parameter gradient of tab against "<prefix>.g.<name>".
func compareGrads(t *testing.T, be tensor.Backend, c *golden.Case, tab *Table, op, prefix string, tol golden.Tol) {
	t.Helper()
	for _, p := range tab.Params {
		want, shape := c.F32(t, join(prefix, "g."+p.Name))
		golden.Compare(t, op, "d "+p.Name, download(be, p.G), want, shape, tol)
	}
}

// join prefixes a golden tensor name with a case prefix, if any.
func join(prefix, name string) string {
	if prefix == "" {
		return name
	}
	return prefix + "." + name
}

func upload(t *testing.T, be tensor.Backend, c *golden.Case, name string) *tensor.Tensor {
	t.Helper()
	v, shape := c.F32(t, name)
	x := be.New(tensor.F32, shape...)
	be.Upload(x, v)
	return x
}

func download(be tensor.Backend, x *tensor.Tensor) []float32 {
	v := make([]float32, x.Numel())
	be.Download(v, x)
	return v
}

// The block chains two convolutions, two group norms and a linear layer in
// float32; torch computes the same in float32 with other summation orders.
// Outputs are O(1-10) with conv fan-in up to 24·9 = 216 terms, so relative
// differences of a few 1e-6 per op compound to ~1e-5; gradients pass through
// the chain twice more. Abs 2e-4 + rel 1e-3 bounds that with a margin, and is
// still far below any real error (a wrong term changes values by O(0.1)).
var resnetTol = golden.Tol{Abs: 2e-4, Rel: 1e-3, Why: "float32 chain of conv/groupnorm/linear, reordered sums vs torch"}

func TestResnetBlockMatchesDiffusers(t *testing.T) {
	c := golden.Load(t, "nn/resnet.safetensors")
	be := cpu.NewChecked() // Empty outputs are NaNs until a kernel writes them
	for _, prefix := range []string{"c0", "c1"} {
		t.Run(prefix, func(t *testing.T) {
			var n, cin, cout, h, w, temb, groups int
			metaInts(t, c, prefix, &n, &cin, &cout, &h, &w, &temb, &groups)
			b := NewBuilder()
			blk := NewResnetBlock(b, cin, cout, temb, groups, 1e-6)
			tab := b.Table()
			tab.Alloc(be, true)
			loadParams(t, be, c, tab, prefix)

			x := upload(t, be, c, prefix+".x")     // (N, Cin, H, W)
			tm := upload(t, be, c, prefix+".temb") // (N, T)
			dy := upload(t, be, c, prefix+".dy")   // (N, Cout, H, W)
			y, s := blk.Forward(be, x, tm)
			dtemb := be.New(tensor.F32, n, temb) // (N, T)
			dx := blk.Backward(be, s, dy, dtemb)

			op := fmt.Sprintf("nn.ResnetBlock %s", prefix)
			for _, out := range []struct {
				name string
				got  *tensor.Tensor
			}{{"y", y}, {"dx", dx}, {"dtemb", dtemb}} {
				want, shape := c.F32(t, prefix+"."+out.name)
				golden.Compare(t, op, out.name, download(be, out.got), want, shape, resnetTol)
			}
			compareGrads(t, be, c, tab, op, prefix, resnetTol)
		})
	}
}
