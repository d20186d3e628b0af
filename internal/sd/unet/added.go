package unet

import (
	"fmt"

	"github.com/zerodiff/zerodiff/internal/nn"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// NumTimeIDs is the length of SDXL's micro-conditioning vector: original
// size (h, w), crop top-left (top, left), target size (h, w).
const NumTimeIDs = 6

// Added is SDXL's added conditioning (diffusers' added_cond_kwargs):
// TextEmbeds (N, P) is the pooled text embedding and TimeIDs (N, 6) the
// micro-conditioning numbers.
type Added struct {
	TextEmbeds, TimeIDs *tensor.Tensor
}

// addEmbedding is the "text_time" branch of UNet2DConditionModel.get_aug_embed
// (diffusers models/unets/unet_2d_condition.py): add_time_proj embeds each
// time id sinusoidally, the result is flattened and appended to the pooled
// text, and add_embedding (a TimestepEmbedding: linear_1, SiLU, linear_2)
// maps that to the time embedding's width, to which it is added.
type addEmbedding struct {
	L1, L2 *nn.Linear
	dim    int // addition_time_embed_dim
}

type addState struct {
	cat, h, a *tensor.Tensor
	pooled    int
}

func newAddEmbedding(b *nn.Builder, cfg Config, tembDim int) *addEmbedding {
	ab := b.Sub("add_embedding")
	in := *cfg.ProjectionClassEmbeddingsInputDim
	return &addEmbedding{
		L1:  nn.NewLinear(ab, "linear_1", in, tembDim, true),
		L2:  nn.NewLinear(ab, "linear_2", tembDim, tembDim, true),
		dim: *cfg.AdditionTimeEmbedDim,
	}
}

// forward adds the embedding of add to temb (N, 4·C0) in place.
func (e *addEmbedding) forward(be tensor.Backend, cfg Config, add *Added, temb *tensor.Tensor) *addState {
	n, p := add.TextEmbeds.Shape[0], add.TextEmbeds.Shape[1]
	tproj := be.New(tensor.F32, n*NumTimeIDs, e.dim) // (N·6, A)
	be.TimestepEmbedding(tproj, add.TimeIDs.View(n*NumTimeIDs), cfg.FlipSinToCos, float32(cfg.FreqShift), 10000)
	s := &addState{pooled: p}
	s.cat = be.New(tensor.F32, n, p+NumTimeIDs*e.dim) // (N, P + 6·A)
	be.Concat(s.cat, 1, add.TextEmbeds, tproj.View(n, NumTimeIDs*e.dim))
	s.h = e.L1.Forward(be, s.cat)      // (N, 4·C0)
	s.a = nn.Act(be, s.h, tensor.SiLU) // (N, 4·C0)
	aug := e.L2.Forward(be, s.a)       // (N, 4·C0)
	be.Add(temb, temb, aug)
	nn.Free(be, &tproj, &aug)
	return s
}

// release frees what forward saved for backward.
func (s *addState) release(be tensor.Backend) { nn.Free(be, &s.cat, &s.h, &s.a) }

// backward accumulates the parameter gradients from dtemb (N, 4·C0) and
// returns the gradient of the pooled text embedding (N, P); the time ids
// are numbers, not learned, and get none.
func (e *addEmbedding) backward(be tensor.Backend, s *addState, dtemb *tensor.Tensor) *tensor.Tensor {
	da := e.L2.Backward(be, s.a, dtemb, true)
	dh := nn.ActBackward(be, s.h, da, tensor.SiLU)
	dcat := e.L1.Backward(be, s.cat, dh, true) // (N, P + 6·A)
	n := dcat.Shape[0]
	dtext := be.New(tensor.F32, n, s.pooled)               // (N, P)
	dtime := be.New(tensor.F32, n, dcat.Shape[1]-s.pooled) // (N, 6·A)
	be.Split([]*tensor.Tensor{dtext, dtime}, 1, dcat)
	nn.Free(be, &da, &dh, &dcat, &dtime)
	s.release(be)
	return dtext
}

// CheckAdded returns an error when add does not fit the UNet for a batch of
// n: an SDXL UNet needs it with TextEmbeds (n, P) and TimeIDs (n, 6), an SD
// 1.x/2.x UNet takes none.
func (u *UNet) CheckAdded(n int, add *Added) error {
	if u.Add == nil {
		if add != nil {
			return fmt.Errorf("unet: added conditioning (pooled text, time ids) given to a UNet without addition_embed_type \"text_time\"")
		}
		return nil
	}
	if add == nil || add.TextEmbeds == nil || add.TimeIDs == nil {
		return fmt.Errorf("unet: addition_embed_type \"text_time\" (SDXL) needs the pooled text embedding and the time ids")
	}
	p := u.Cfg.PooledDim()
	if s := add.TextEmbeds.Shape; len(s) != 2 || s[0] != n || s[1] != p {
		return fmt.Errorf("unet: pooled text embedding %v, want (%d, %d) (projection_class_embeddings_input_dim %d less %d × addition_time_embed_dim %d)",
			add.TextEmbeds, n, p, *u.Cfg.ProjectionClassEmbeddingsInputDim, NumTimeIDs, *u.Cfg.AdditionTimeEmbedDim)
	}
	if s := add.TimeIDs.Shape; len(s) != 2 || s[0] != n || s[1] != NumTimeIDs {
		return fmt.Errorf("unet: time ids %v, want (%d, %d): original size, crop top-left, target size", add.TimeIDs, n, NumTimeIDs)
	}
	return nil
}
