package clip

import (
	"path/filepath"
	"runtime"
	"slices"
	"testing"

	"github.com/zerodiff/zerodiff/internal/cpu"
	"github.com/zerodiff/zerodiff/internal/golden"
	"github.com/zerodiff/zerodiff/internal/sd"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// The encoder is two pre-LN layers of width 32 (fan-in ≤ 64) with softmax
// over at most 77 keys and a final LayerNorm, in float32 like the reference;
// the outputs are LayerNorm-scaled, O(1). Summation order and erf/exp
// implementations differ from torch's at ~1e-7 relative per op; measured
// differences are at most 1.2e-6, so abs 1e-5 + rel 1e-4 leaves a margin of
// ~10x, while a wrong mask, activation, position or skipped layer moves
// values by O(0.1).
var clipTol = golden.Tol{Abs: 1e-5, Rel: 1e-4, Why: "float32, 2 pre-LN layers + final LN, reordered sums vs torch (measured ≤ 1.2e-6)"}

func encode(t *testing.T, be tensor.Backend, m *Model, c *golden.Case, clipSkip int) []float32 {
	t.Helper()
	v, shape := c.I64(t, "ids")
	ids := be.New(tensor.I64, shape...) // (N, 77)
	be.UploadInt64(ids, v)
	y, err := m.Forward(be, ids, clipSkip)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]float32, y.Numel()) // (N, 77, hidden)
	be.Download(out, y)
	return out
}

// TestForwardMatchesTransformers runs both tiny models: tiny has quick_gelu
// and text_model.* names in float32, tiny-v gelu, transformers 5 names and
// float16 weights.
func TestForwardMatchesTransformers(t *testing.T) {
	for _, name := range []string{"tiny", "tiny-v"} {
		t.Run(name, func(t *testing.T) {
			c := golden.Load(t, "models/"+name+"/clip.safetensors")
			be := cpu.New()
			m, _, err := Load(be, filepath.Join(golden.Root(t), "models", name))
			if err != nil {
				t.Fatal(err)
			}
			for _, out := range []struct {
				tensor   string
				clipSkip int
			}{{"last_hidden_state", 0}, {"clip_skip1", 1}} {
				want, shape := c.F32(t, out.tensor)
				golden.Compare(t, "clip.Model "+name, out.tensor, encode(t, be, m, c, out.clipSkip), want, shape, clipTol)
			}
		})
	}
}

func TestSingleFileEncodesLikeFolder(t *testing.T) {
	root := golden.Root(t)
	be := cpu.New()
	m, tab, err := Load(be, filepath.Join(root, "models", "tiny"))
	if err != nil {
		t.Fatal(err)
	}
	w, err := sd.OpenWeights(filepath.Join(root, "models", "tiny.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	folder := make([]float32, tab.Size)
	be.Download(folder, tab.W)
	be.Zero(tab.W)
	if err := sd.LoadWeights(be, tab, w, sd.SingleFileCLIP()); err != nil {
		t.Fatal(err)
	}
	single := make([]float32, tab.Size)
	be.Download(single, tab.W)
	if !slices.Equal(single, folder) {
		t.Error("the single file's text encoder differs from the folder's")
	}
	c := golden.Load(t, "models/tiny/clip.safetensors")
	want, shape := c.F32(t, "last_hidden_state")
	golden.Compare(t, "clip.Model tiny.safetensors", "last_hidden_state", encode(t, be, m, c, 0), want, shape, clipTol)
}

// TestForwardSameBitsAnyThreads encodes with 1 and 2 threads: the kernels
// split work in fixed chunks, so the bits must agree.
func TestForwardSameBitsAnyThreads(t *testing.T) {
	be := cpu.New()
	m, _, err := Load(be, filepath.Join(golden.Root(t), "models", "tiny"))
	if err != nil {
		t.Fatal(err)
	}
	c := golden.Load(t, "models/tiny/clip.safetensors")
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	one := encode(t, be, m, c, 0)
	runtime.GOMAXPROCS(2)
	if two := encode(t, be, m, c, 0); !slices.Equal(one, two) {
		t.Error("1 and 2 threads gave different bits")
	}
}

func TestForwardRejectsBadInput(t *testing.T) {
	be := cpu.New()
	m, _, err := Load(be, filepath.Join(golden.Root(t), "models", "tiny"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		ids      *tensor.Tensor
		clipSkip int
	}{
		{be.New(tensor.F32, 1, 77), 0},
		{be.New(tensor.I64, 1, 78), 0},
		{be.New(tensor.I64, 1, 77), 2},
	} {
		if _, err := m.Forward(be, c.ids, c.clipSkip); err == nil {
			t.Errorf("ids %v, clip_skip %d: no error", c.ids, c.clipSkip)
		}
	}
}

// TestEndToken checks the pooled position as transformers'
// CLIPTextTransformer finds it: with eos_token_id 2 (the configs SD models
// were saved with) the first largest id, else the first eos_token_id — the
// pad token may equal it, so the first one, not the last.
func TestEndToken(t *testing.T) {
	row := []int64{49406, 320, 1125, 49407, 49407, 49407}
	bang := []int64{49406, 320, 1125, 49407, 0, 0} // tokenizer_2 pads with "!" (id 0)
	for _, tc := range []struct {
		eos  int
		row  []int64
		want int
	}{
		{2, row, 3}, {2, bang, 3}, {49407, row, 3}, {49407, bang, 3},
		{320, row, 1}, // a config naming another end token pools there
		{7, row, 0},   // none found: position 0, as argmax of all-false
	} {
		m := &Model{Cfg: Config{EOSTokenID: tc.eos}}
		if got := m.endToken(tc.row); got != tc.want {
			t.Errorf("eos_token_id %d, ids %v: position %d, want %d", tc.eos, tc.row, got, tc.want)
		}
	}
}
