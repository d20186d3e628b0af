package collective

import "github.com/zerodiff/zerodiff/internal/cpu"

// ringBackend makes the host tensors the ring's byte collectives move.
var ringBackend = cpu.New()

// AllGatherBytes moves the bytes as float32 words (AllGatherWords).
func (r *Ring) AllGatherBytes(dst, src []byte) error {
	return AllGatherWords(r, ringBackend, dst, src)
}

// BroadcastBytes moves the bytes as float32 words (BroadcastWords).
func (r *Ring) BroadcastBytes(buf []byte, root int) error {
	return BroadcastWords(r, ringBackend, buf, root)
}
