package nn

import "github.com/zerodiff/zerodiff/internal/tensor"

// Free releases the tensors ts point to and clears the pointers; nil ones
// (parts a configuration does not have, or already released) are skipped.
// Layers own what they make: a temporary is freed when the op that made it
// is done with it, and a layer's state — what its forward saved for its
// backward — once its backward has run (or, under gradient checkpointing,
// once its forward has, Release). Clearing the pointers makes releasing a
// state twice free nothing twice.
func Free(be tensor.Backend, ts ...**tensor.Tensor) {
	for _, t := range ts {
		if *t != nil {
			be.Free(*t)
			*t = nil
		}
	}
}
