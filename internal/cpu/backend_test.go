package cpu

import "github.com/zerodiff/zerodiff/internal/tensor"

// The CPU backend implements every kernel of the interface.
var _ tensor.Backend = (*Backend)(nil)
