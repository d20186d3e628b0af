package collective

import (
	"fmt"
	"unsafe"

	"github.com/zerodiff/zerodiff/internal/tensor"
)

// AllGatherWords is AllGatherBytes over c's AllGather of float32 tensors on
// be, for Comms whose transport moves tensors (the TCP ring, NCCL): the
// bytes are padded to whole words and copied into and out of them as their
// bits, so that no value is converted, and AllGather copies words without
// arithmetic.
func AllGatherWords(c Comm, be tensor.Backend, dst, src []byte) error {
	world := c.World()
	if len(dst) != len(src)*world {
		panic(fmt.Sprintf("collective: all-gather of %d bytes into %d across %d ranks", len(src), len(dst), world))
	}
	n := (len(src) + 3) / 4
	words := make([]float32, n*world) // (World, n)
	copy(wordBytes(words[c.Rank()*n:(c.Rank()+1)*n]), src)
	all := be.New(tensor.F32, n*world) // (World, n)
	defer be.Free(all)
	mine := be.View(all, c.Rank()*n, n)
	be.Upload(mine, words[c.Rank()*n:(c.Rank()+1)*n])
	if err := c.AllGather(all, mine); err != nil {
		return err
	}
	be.Download(words, all)
	b := wordBytes(words)
	for r := range world {
		copy(dst[r*len(src):(r+1)*len(src)], b[4*r*n:])
	}
	return nil
}

// BroadcastWords is BroadcastBytes over c's Broadcast of a float32 tensor
// on be, the bytes moved as AllGatherWords moves them.
func BroadcastWords(c Comm, be tensor.Backend, buf []byte, root int) error {
	n := (len(buf) + 3) / 4
	words := make([]float32, n) // (n)
	copy(wordBytes(words), buf)
	t := be.New(tensor.F32, n) // (n)
	defer be.Free(t)
	be.Upload(t, words)
	if err := c.Broadcast(t, root); err != nil {
		return err
	}
	be.Download(words, t)
	copy(buf, wordBytes(words))
	return nil
}

// wordBytes is the memory of w as bytes.
func wordBytes(w []float32) []byte {
	if len(w) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&w[0])), 4*len(w))
}
