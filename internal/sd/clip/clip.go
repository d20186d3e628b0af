// Package clip is transformers' CLIPTextModel, the text encoder of Stable
// Diffusion: token and position embeddings, pre-LayerNorm transformer layers
// with causal self-attention, and a final LayerNorm; and
// CLIPTextModelWithProjection (SDXL's second encoder), which adds
// text_projection for a pooled embedding. Forward only (SD trains the UNet,
// not the text encoder). Parameter names are transformers' own
// (text_model.embeddings.token_embedding.weight, …).
package clip

import (
	"fmt"
	"slices"
	"strings"

	"github.com/zerodiff/zerodiff/internal/nn"
	"github.com/zerodiff/zerodiff/internal/sd"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// Config is the part of transformers' CLIPTextConfig the text model uses.
type Config struct {
	HiddenSize            int     `json:"hidden_size"`
	IntermediateSize      int     `json:"intermediate_size"`
	NumHiddenLayers       int     `json:"num_hidden_layers"`
	NumAttentionHeads     int     `json:"num_attention_heads"`
	MaxPositionEmbeddings int     `json:"max_position_embeddings"`
	HiddenAct             string  `json:"hidden_act"`
	LayerNormEps          float64 `json:"layer_norm_eps"`
	VocabSize             int     `json:"vocab_size"`
	// ProjectionDim is text_projection's output width; only
	// CLIPTextModelWithProjection (Architectures) has the layer.
	ProjectionDim int `json:"projection_dim"`
	// EOSTokenID picks the pooled position (see ForwardSDXL); 2, the
	// default, is what the released SD configs say.
	EOSTokenID    int      `json:"eos_token_id"`
	Architectures []string `json:"architectures"`
}

// WithProjection reports whether the config is a CLIPTextModelWithProjection,
// the class of SDXL's text_encoder_2, which holds text_projection.
func (c Config) WithProjection() bool {
	return slices.Contains(c.Architectures, "CLIPTextModelWithProjection")
}

// ReadConfig reads <dir>/text_encoder/config.json.
func ReadConfig(dir string) (Config, error) {
	return ReadConfigOf(dir, "text_encoder")
}

// ReadConfigOf reads <dir>/<sub>/config.json (sub: text_encoder or, for
// SDXL, text_encoder_2).
func ReadConfigOf(dir, sub string) (Config, error) {
	c := Config{EOSTokenID: 2} // transformers' CLIPTextConfig default
	if err := sd.ReadConfig(dir, sub, &c); err != nil {
		return c, err
	}
	if err := c.Validate(); err != nil {
		return c, fmt.Errorf("%s: %w", sub, err)
	}
	return c, nil
}

// Validate checks that the config describes a model this package can build.
func (c Config) Validate() error {
	if c.HiddenSize <= 0 || c.IntermediateSize <= 0 || c.NumHiddenLayers <= 0 || c.NumAttentionHeads <= 0 ||
		c.MaxPositionEmbeddings <= 0 || c.VocabSize <= 0 || c.LayerNormEps <= 0 {
		return fmt.Errorf("text encoder config: hidden_size, intermediate_size, num_hidden_layers, num_attention_heads, "+
			"max_position_embeddings, vocab_size and layer_norm_eps must be positive, got %+v", c)
	}
	if c.WithProjection() && c.ProjectionDim <= 0 {
		return fmt.Errorf("text encoder config: CLIPTextModelWithProjection needs a positive projection_dim, got %d", c.ProjectionDim)
	}
	if c.HiddenSize%c.NumAttentionHeads != 0 {
		return fmt.Errorf("text encoder config: hidden_size %d is not a multiple of num_attention_heads %d", c.HiddenSize, c.NumAttentionHeads)
	}
	if _, err := c.activation(); err != nil {
		return err
	}
	return nil
}

func (c Config) activation() (tensor.Activation, error) {
	switch c.HiddenAct {
	case "quick_gelu":
		return tensor.QuickGELU, nil
	case "gelu":
		return tensor.GELU, nil
	}
	return 0, fmt.Errorf("text encoder config: hidden_act %q is not supported (quick_gelu for SD1, gelu for SD2)", c.HiddenAct)
}

// Layer is one CLIPEncoderLayer:
//
//	x += self_attn(layer_norm1(x)) (causal); x += fc2(act(fc1(layer_norm2(x))))
type Layer struct {
	Norm1, Norm2 *nn.LayerNorm
	Attn         *nn.Attention
	FC1, FC2     *nn.Linear
}

// Model is the text encoder.
type Model struct {
	Cfg      Config
	Act      tensor.Activation
	TokenEmb *nn.Param // (vocab, hidden)
	PosEmb   *nn.Param // (positions, hidden)
	Layers   []*Layer
	Final    *nn.LayerNorm
	Proj     *nn.Linear // text_projection (no bias); nil for CLIPTextModel
}

// New registers the model's parameters under b with transformers' names.
func New(b *nn.Builder, c Config) (*Model, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	act, _ := c.activation()
	eps := float32(c.LayerNormEps)
	d := c.HiddenSize
	tm := b.Sub("text_model")
	m := &Model{
		Cfg:      c,
		Act:      act,
		TokenEmb: tm.Param("embeddings.token_embedding.weight", c.VocabSize, d),
		PosEmb:   tm.Param("embeddings.position_embedding.weight", c.MaxPositionEmbeddings, d),
	}
	for i := range c.NumHiddenLayers {
		lb := tm.Subf("encoder.layers.%d", i)
		m.Layers = append(m.Layers, &Layer{
			Attn:  nn.NewAttention(lb.Sub("self_attn"), nn.CLIPAttn, d, d, c.NumAttentionHeads, d/c.NumAttentionHeads, true),
			Norm1: nn.NewLayerNorm(lb, "layer_norm1", d, eps),
			FC1:   nn.NewLinear(lb, "mlp.fc1", d, c.IntermediateSize, true),
			FC2:   nn.NewLinear(lb, "mlp.fc2", c.IntermediateSize, d, true),
			Norm2: nn.NewLayerNorm(lb, "layer_norm2", d, eps),
		})
	}
	m.Final = nn.NewLayerNorm(tm, "final_layer_norm", d, eps)
	if c.WithProjection() {
		m.Proj = nn.NewLinear(b, "text_projection", d, c.ProjectionDim, false)
	}
	return m, nil
}

// Load builds the text encoder of the diffusers folder dir on be and loads its
// weights. Folders saved by transformers 4 (every SD release) name the
// weights text_model.*; transformers 5 drops that prefix; both load.
func Load(be tensor.Backend, dir string) (*Model, *nn.Table, error) {
	return LoadOf(be, dir, "text_encoder")
}

// LoadOf is Load for the component sub of dir (text_encoder, text_encoder_2).
func LoadOf(be tensor.Backend, dir, sub string) (*Model, *nn.Table, error) {
	c, err := ReadConfigOf(dir, sub)
	if err != nil {
		return nil, nil, err
	}
	var m *Model
	tab, err := sd.LoadModel(be, dir, sub, FolderMapping, func(b *nn.Builder) (err error) {
		m, err = New(b, c)
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	return m, tab, nil
}

// FolderMapping is the mapping for a text_encoder folder's own weights:
// names as they are, or without "text_model." for transformers 5 files.
func FolderMapping(w *sd.Weights) sd.Mapping {
	if w.Has("text_model.embeddings.token_embedding.weight") {
		return sd.Diffusers
	}
	return sd.Mapping{Key: func(name string) (string, error) {
		return strings.TrimPrefix(name, "text_model."), nil
	}}
}

// Forward encodes ids (N, T) (I64, T ≤ max_position_embeddings) into hidden
// states (N, T, hidden). clipSkip counts layers left out from the top, as
// diffusers' clip_skip does: 0 gives last_hidden_state, k gives
// final_layer_norm(hidden_states[-(k+1)]).
func (m *Model) Forward(be tensor.Backend, ids *tensor.Tensor, clipSkip int) (*tensor.Tensor, error) {
	if len(ids.Shape) != 2 || ids.DType != tensor.I64 {
		return nil, fmt.Errorf("clip: ids must be I64 (N, T), got %v", ids)
	}
	t := ids.Shape[1]
	if t > m.Cfg.MaxPositionEmbeddings {
		return nil, fmt.Errorf("clip: %d tokens, the model has %d positions", t, m.Cfg.MaxPositionEmbeddings)
	}
	if clipSkip < 0 || clipSkip >= len(m.Layers) {
		return nil, fmt.Errorf("clip: clip_skip %d out of range for %d layers", clipSkip, len(m.Layers))
	}
	x := m.embed(be, ids)
	for _, l := range m.Layers[:len(m.Layers)-clipSkip] {
		x = l.forward(be, x, m.Act)
	}
	y, _ := m.Final.Forward(be, x) // (N, T, D)
	return y, nil
}

// embed maps ids (N, T) to token plus position embeddings (N, T, D).
func (m *Model) embed(be tensor.Backend, ids *tensor.Tensor) *tensor.Tensor {
	n, t, d := ids.Shape[0], ids.Shape[1], m.Cfg.HiddenSize
	x := be.New(tensor.F32, n*t, d) // (N·T, D)
	be.Embedding(x, ids.View(n*t), m.TokenEmb.W)
	pos := make([]int64, n*t) // (N·T)
	for i := range pos {
		pos[i] = int64(i % t)
	}
	posIDs := be.New(tensor.I64, n*t) // (N·T)
	be.UploadInt64(posIDs, pos)
	p := be.New(tensor.F32, n*t, d) // (N·T, D)
	be.Embedding(p, posIDs, m.PosEmb.W)
	be.Add(x, x, p)
	return x.View(n, t, d) // (N, T, D)
}

// ForwardSDXL encodes the token rows ids (N rows of T) as diffusers' SDXL
// encode_prompt reads its text encoders
// (pipelines/stable_diffusion_xl/pipeline_stable_diffusion_xl.py): hidden
// (N, T, D) is hidden_states[-(clipSkip+2)], the output of the layer
// clipSkip+1 below the top with no final LayerNorm; pooled (N, P), for a
// CLIPTextModelWithProjection only (nil otherwise), is text_projection of the
// final-normed state at each row's end token, found as transformers'
// CLIPTextTransformer does: the first largest id when eos_token_id is 2 (the
// configs SD models were saved with), else the first eos_token_id.
func (m *Model) ForwardSDXL(be tensor.Backend, ids [][]int64, clipSkip int) (hidden, pooled *tensor.Tensor, err error) {
	n := len(ids)
	if n == 0 || len(ids[0]) == 0 {
		return nil, nil, fmt.Errorf("clip: no tokens to encode")
	}
	t, d := len(ids[0]), m.Cfg.HiddenSize
	if t > m.Cfg.MaxPositionEmbeddings {
		return nil, nil, fmt.Errorf("clip: %d tokens, the model has %d positions", t, m.Cfg.MaxPositionEmbeddings)
	}
	if clipSkip < 0 || clipSkip+1 > len(m.Layers) {
		return nil, nil, fmt.Errorf("clip: clip_skip %d out of range for SDXL's penultimate-layer states of %d layers", clipSkip, len(m.Layers))
	}
	flat := make([]int64, 0, n*t) // (N·T)
	ends := make([]int64, n)      // (N): flat index of each row's end token
	for r, row := range ids {
		if len(row) != t {
			return nil, nil, fmt.Errorf("clip: token row %d has %d ids, row 0 has %d", r, len(row), t)
		}
		flat = append(flat, row...)
		ends[r] = int64(r*t + m.endToken(row))
	}
	dev := be.New(tensor.I64, n, t) // (N, T)
	be.UploadInt64(dev, flat)
	x := m.embed(be, dev)
	keep := len(m.Layers) - 1 - clipSkip // hidden_states index: 0 is the embeddings
	if keep == 0 {
		hidden = x
	}
	for i, l := range m.Layers {
		x = l.forward(be, x, m.Act)
		if i+1 == keep {
			hidden = x
		}
	}
	if m.Proj == nil {
		return hidden, nil, nil
	}
	y, _ := m.Final.Forward(be, x) // (N, T, D)
	at := be.New(tensor.I64, n)    // (N)
	be.UploadInt64(at, ends)
	eos := be.New(tensor.F32, n, d) // (N, D)
	be.Embedding(eos, at, y.View(n*t, d))
	return hidden, m.Proj.Forward(be, eos), nil // (N, P)
}

// endToken is the position transformers' CLIPTextTransformer pools from.
func (m *Model) endToken(row []int64) int {
	best := 0
	for i, id := range row {
		if m.Cfg.EOSTokenID == 2 {
			if id > row[best] {
				best = i
			}
		} else if id == int64(m.Cfg.EOSTokenID) {
			return i
		}
	}
	if m.Cfg.EOSTokenID == 2 {
		return best
	}
	return 0
}

// forward maps x (N, T, D) to the layer's output (N, T, D).
func (l *Layer) forward(be tensor.Backend, x *tensor.Tensor, act tensor.Activation) *tensor.Tensor {
	h, _ := l.Norm1.Forward(be, x)
	a, _ := l.Attn.Forward(be, h, nil, true) // (N, T, D)
	be.Add(a, a, x)
	h, _ = l.Norm2.Forward(be, a)
	f := nn.Act(be, l.FC1.Forward(be, h), act) // (N, T, I)
	y := l.FC2.Forward(be, f)                  // (N, T, D)
	be.Add(y, y, a)
	return y
}
