package unet

import (
	"github.com/zerodiff/zerodiff/internal/nn"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// downBlock is CrossAttnDownBlock2D (Attns set) or DownBlock2D: resnets, each
// followed by a transformer when there is one, then an optional downsampler.
// Every layer's output is kept as a skip connection for the up path.
type downBlock struct {
	Resnets []*nn.ResnetBlock
	Attns   []*nn.Transformer2D // nil for DownBlock2D
	Down    *nn.Downsample      // nil for the last block
}

type downState struct {
	res    []*nn.ResnetState
	attn   []*nn.Transformer2DState
	hs     []*tensor.Tensor // resnet outputs that feed a transformer (its saved input)
	downIn *tensor.Tensor
}

// release frees what the block's forward saved for its backward; the
// outputs (skip connections) are the caller's.
func (s *downState) release(be tensor.Backend) {
	for _, r := range s.res {
		r.Release(be)
	}
	for _, a := range s.attn {
		a.Release(be)
	}
	for i := range s.hs {
		nn.Free(be, &s.hs[i])
	}
}

// forward maps h (N, Cin, H, W) to the block's outputs, the last of which
// feeds the next block; all of them are skip connections, which the caller
// owns.
func (d *downBlock) forward(be tensor.Backend, h, temb, ctx *tensor.Tensor) ([]*tensor.Tensor, *downState) {
	s := &downState{}
	var outs []*tensor.Tensor
	for j, r := range d.Resnets {
		var rs *nn.ResnetState
		h, rs = r.Forward(be, h, temb)
		s.res = append(s.res, rs)
		if d.Attns != nil {
			s.hs = append(s.hs, h)
			var as *nn.Transformer2DState
			h, as = d.Attns[j].Forward(be, h, ctx)
			s.attn = append(s.attn, as)
		}
		outs = append(outs, h)
	}
	if d.Down != nil {
		s.downIn = h
		h = d.Down.Forward(be, h)
		outs = append(outs, h)
	}
	return outs, s
}

// backward takes the gradient of every output (douts, entries may be nil)
// plus dnext for the last one, accumulates into dtemb and dctx, and returns
// the gradient of the block's input. It frees douts and releases s; dnext
// stays the caller's.
func (d *downBlock) backward(be tensor.Backend, s *downState, douts []*tensor.Tensor, dnext, dtemb, dctx *tensor.Tensor) *tensor.Tensor {
	k := len(douts) - 1
	g := addGrad(be, dnext, douts[k])
	next := func(n *tensor.Tensor) { // g becomes n; the last g is freed unless it is dnext
		if g != dnext {
			be.Free(g)
		}
		g = n
	}
	if d.Down != nil {
		next(d.Down.Backward(be, s.downIn, g))
		k--
		g = addGrad(be, g, douts[k])
	}
	for j := len(d.Resnets) - 1; j >= 0; j-- {
		if d.Attns != nil {
			next(d.Attns[j].Backward(be, s.attn[j], g, dctx))
		}
		next(d.Resnets[j].Backward(be, s.res[j], g, dtemb))
		if j > 0 {
			k--
			g = addGrad(be, g, douts[k])
		}
	}
	s.release(be)
	return g
}

// upBlock is CrossAttnUpBlock2D or UpBlock2D: each resnet takes the running
// hidden state concatenated with one skip connection, popped last-first.
type upBlock struct {
	Resnets []*nn.ResnetBlock
	Attns   []*nn.Transformer2D
	Up      *nn.Upsample
}

type upState struct {
	cat   []*tensor.Tensor // resnet inputs: hidden ⧺ skip (N, Ch+Cs, H, W)
	hCh   []int            // channels of the hidden part of each cat
	res   []*nn.ResnetState
	attn  []*nn.Transformer2DState
	hs    []*tensor.Tensor // resnet outputs that feed a transformer (its saved input)
	upped *tensor.Tensor
}

// release frees what the block's forward saved for its backward.
func (s *upState) release(be tensor.Backend) {
	for _, r := range s.res {
		r.Release(be)
	}
	for _, a := range s.attn {
		a.Release(be)
	}
	for i := range s.cat {
		nn.Free(be, &s.cat[i])
	}
	for i := range s.hs {
		nn.Free(be, &s.hs[i])
	}
	nn.Free(be, &s.upped)
}

// forward consumes len(Resnets) skips (the last ones of skips, in reverse),
// which stay the caller's, as do h and the output.
func (u *upBlock) forward(be tensor.Backend, h *tensor.Tensor, skips []*tensor.Tensor, temb, ctx *tensor.Tensor) (*tensor.Tensor, *upState) {
	s := &upState{}
	in := h
	done := func(x *tensor.Tensor) { // x, copied or upsampled, is no longer read
		if x != in {
			be.Free(x)
		}
	}
	for j, r := range u.Resnets {
		skip := skips[len(skips)-1-j]
		n, ch, hh, ww := h.Shape[0], h.Shape[1], h.Shape[2], h.Shape[3]
		cat := be.New(tensor.F32, n, ch+skip.Shape[1], hh, ww) // (N, Ch+Cs, H, W)
		be.Concat(cat, 1, h, skip)
		done(h)
		s.cat = append(s.cat, cat)
		s.hCh = append(s.hCh, ch)
		var rs *nn.ResnetState
		h, rs = r.Forward(be, cat, temb)
		s.res = append(s.res, rs)
		if u.Attns != nil {
			s.hs = append(s.hs, h)
			var as *nn.Transformer2DState
			h, as = u.Attns[j].Forward(be, h, ctx)
			s.attn = append(s.attn, as)
		}
	}
	if u.Up != nil {
		x := h
		h, s.upped = u.Up.Forward(be, x)
		done(x)
	}
	return h, s
}

// backward returns the gradient of the block's input and writes the gradient
// of each consumed skip into dskips (aligned with the skips forward
// consumed), which the caller then owns. It releases s; dy stays the
// caller's.
func (u *upBlock) backward(be tensor.Backend, s *upState, dy *tensor.Tensor, dskips []*tensor.Tensor, dtemb, dctx *tensor.Tensor) *tensor.Tensor {
	g := dy
	next := func(n *tensor.Tensor) { // g becomes n; the last g is freed unless it is dy
		if g != dy {
			be.Free(g)
		}
		g = n
	}
	if u.Up != nil {
		next(u.Up.Backward(be, s.upped, g))
		s.upped = nil // Upsample.Backward freed it
	}
	for j := len(u.Resnets) - 1; j >= 0; j-- {
		if u.Attns != nil {
			next(u.Attns[j].Backward(be, s.attn[j], g, dctx))
		}
		dcat := u.Resnets[j].Backward(be, s.res[j], g, dtemb)
		n, hh, ww := dcat.Shape[0], dcat.Shape[2], dcat.Shape[3]
		dh := be.New(tensor.F32, n, s.hCh[j], hh, ww)               // (N, Ch, H, W)
		ds := be.New(tensor.F32, n, dcat.Shape[1]-s.hCh[j], hh, ww) // (N, Cs, H, W)
		be.Split([]*tensor.Tensor{dh, ds}, 1, dcat)
		be.Free(dcat)
		dskips[len(dskips)-1-j] = ds
		next(dh)
	}
	s.release(be)
	return g
}

// midBlock is UNetMidBlock2DCrossAttn: resnet, then (transformer, resnet) pairs.
type midBlock struct {
	Resnets []*nn.ResnetBlock
	Attns   []*nn.Transformer2D
}

type midState struct {
	res  []*nn.ResnetState
	attn []*nn.Transformer2DState
	hs   []*tensor.Tensor // outputs of every layer but the last (the next one's saved input)
}

// release frees what the block's forward saved for its backward.
func (s *midState) release(be tensor.Backend) {
	for _, r := range s.res {
		r.Release(be)
	}
	for _, a := range s.attn {
		a.Release(be)
	}
	for i := range s.hs {
		nn.Free(be, &s.hs[i])
	}
}

// forward maps h (N, C, H, W), which stays the caller's, as does the output.
func (m *midBlock) forward(be tensor.Backend, h, temb, ctx *tensor.Tensor) (*tensor.Tensor, *midState) {
	s := &midState{}
	var rs *nn.ResnetState
	h, rs = m.Resnets[0].Forward(be, h, temb)
	s.res = append(s.res, rs)
	for i, a := range m.Attns {
		s.hs = append(s.hs, h)
		var as *nn.Transformer2DState
		h, as = a.Forward(be, h, ctx)
		s.attn = append(s.attn, as)
		s.hs = append(s.hs, h)
		h, rs = m.Resnets[i+1].Forward(be, h, temb)
		s.res = append(s.res, rs)
	}
	return h, s
}

// backward returns the gradient of the block's input; it releases s, and
// dy stays the caller's.
func (m *midBlock) backward(be tensor.Backend, s *midState, dy, dtemb, dctx *tensor.Tensor) *tensor.Tensor {
	g := dy
	next := func(n *tensor.Tensor) { // g becomes n; the last g is freed unless it is dy
		if g != dy {
			be.Free(g)
		}
		g = n
	}
	for i := len(m.Attns) - 1; i >= 0; i-- {
		next(m.Resnets[i+1].Backward(be, s.res[i+1], g, dtemb))
		next(m.Attns[i].Backward(be, s.attn[i], g, dctx))
	}
	next(m.Resnets[0].Backward(be, s.res[0], g, dtemb))
	s.release(be)
	return g
}

// addGrad returns a + b where either may be nil (no gradient), reusing a
// and freeing b.
func addGrad(be tensor.Backend, a, b *tensor.Tensor) *tensor.Tensor {
	switch {
	case a == nil:
		return b
	case b == nil:
		return a
	}
	be.Add(a, a, b)
	be.Free(b)
	return a
}
