package unet

import (
	"fmt"
	"strings"
)

// Unit is one top-level module of the UNet — the time embedding, SDXL's
// added embedding, conv_in,
// each down block, the mid block, each up block, conv_norm_out, conv_out —
// and the range [Lo, Hi) of the flat parameter table its parameters fill.
// ZeRO-3 gathers a unit's weights before its passes and ZeRO-2 and 3 reduce
// its gradients after its backward.
type Unit struct {
	Name   string // parameter-name prefix, e.g. "down_blocks.1."
	Lo, Hi int
}

// Hooks are called around every unit's passes, with the unit's index in
// Units. BeforeBackward comes before the unit's activations are recomputed
// under gradient checkpointing as well as before its backward proper, and
// AfterBackward once its gradients are complete: a unit's parameters are used
// by its own passes only, and the time embedding's backward runs last (every
// block adds to its gradient). Forward runs units 0, 1, …, n−1 and Backward
// n−1, …, 0, with or without checkpointing, so a hook knows the unit that
// comes next and may fetch its weights ahead.
type Hooks interface {
	BeforeForward(unit int)
	AfterForward(unit int)
	BeforeBackward(unit int)
	AfterBackward(unit int)
}

// Units lists the UNet's units in the order Forward runs them. It is an
// error for a unit's parameters not to be one contiguous range of the table
// (the table places them in construction order).
func (u *UNet) Units() ([]Unit, error) {
	names := []string{"time_embedding."}
	if u.Add != nil {
		names = append(names, "add_embedding.")
	}
	names = append(names, "conv_in.")
	for i := range u.Down {
		names = append(names, fmt.Sprintf("down_blocks.%d.", i))
	}
	names = append(names, "mid_block.")
	for i := range u.Up {
		names = append(names, fmt.Sprintf("up_blocks.%d.", i))
	}
	names = append(names, "conv_norm_out.", "conv_out.")
	units := make([]Unit, len(names))
	covered := 0
	for k, n := range names {
		ps := u.Params.Prefixed(n)
		if len(ps) == 0 {
			return nil, fmt.Errorf("unet: unit %s has no parameters", n)
		}
		lo, hi, size := ps[0].Offset, ps[0].Offset, 0
		for _, p := range ps {
			lo, hi, size = min(lo, p.Offset), max(hi, p.Offset+p.Numel()), size+p.Numel()
		}
		if hi-lo != size {
			return nil, fmt.Errorf("unet: the parameters of %s are not contiguous in the table ([%d, %d) holds %d of theirs)", strings.TrimSuffix(n, "."), lo, hi, size)
		}
		units[k] = Unit{Name: n, Lo: lo, Hi: hi}
		covered += size
	}
	if covered != u.Params.Size {
		return nil, fmt.Errorf("unet: the units hold %d of the %d parameters", covered, u.Params.Size)
	}
	return units, nil
}

// unit indices in Units' order; add_embedding, when there is one, is unit 1.
func (u *UNet) unitTime() int      { return 0 }
func (u *UNet) unitAdd() int       { return 1 }
func (u *UNet) unitConvIn() int    { return 1 + u.added() }
func (u *UNet) unitDown(i int) int { return 2 + u.added() + i }
func (u *UNet) unitMid() int       { return 2 + u.added() + len(u.Down) }
func (u *UNet) unitUp(i int) int   { return 3 + u.added() + len(u.Down) + i }
func (u *UNet) unitNormOut() int   { return 3 + u.added() + len(u.Down) + len(u.Up) }
func (u *UNet) unitConvOut() int   { return 4 + u.added() + len(u.Down) + len(u.Up) }

// added is 1 when the UNet has SDXL's add_embedding unit, else 0.
func (u *UNet) added() int {
	if u.Add != nil {
		return 1
	}
	return 0
}

// forwardUnit runs f, the forward pass of unit k, between its hooks.
func (u *UNet) forwardUnit(k int, f func()) {
	if u.Hooks != nil {
		u.Hooks.BeforeForward(k)
	}
	f()
	if u.Hooks != nil {
		u.Hooks.AfterForward(k)
	}
}

// backwardUnit runs f, the backward pass of unit k (with its recompute), between its hooks.
func (u *UNet) backwardUnit(k int, f func()) {
	if u.Hooks != nil {
		u.Hooks.BeforeBackward(k)
	}
	f()
	if u.Hooks != nil {
		u.Hooks.AfterBackward(k)
	}
}
