package collective

import (
	"bytes"
	"fmt"
	"sync"
	"testing"

	"github.com/zerodiff/zerodiff/internal/cpu"
)

// rankBytes are rank r's n bytes for the byte collectives' tests: every
// byte value turns up, and each word's bits include a signalling NaN's
// (0x7f800001) and a negative zero's, which a conversion to float would
// change or lose.
func rankBytes(r, n int) []byte {
	pat := []byte{0x01, 0x00, 0x80, 0x7f, 0x00, 0x00, 0x00, 0x80}
	b := make([]byte, n)
	for i := range b {
		b[i] = pat[i%len(pat)] ^ byte(r*37+i/len(pat))
	}
	return b
}

// checkByteCollectives runs AllGatherBytes and BroadcastBytes (from every
// root) on every comm at once, for lengths that fill whole words and
// lengths that do not, and checks each rank's bytes.
func checkByteCollectives(t *testing.T, comms []Comm) {
	t.Helper()
	world := len(comms)
	for _, n := range []int{0, 1, 3, 8, 16, 33} {
		errs := make([]error, world)
		var wg sync.WaitGroup
		for r, c := range comms {
			wg.Go(func() {
				dst := make([]byte, n*world)
				if err := c.AllGatherBytes(dst, rankBytes(r, n)); err != nil {
					errs[r] = err
					return
				}
				for q := range world {
					if got := dst[q*n : (q+1)*n]; !bytes.Equal(got, rankBytes(q, n)) {
						errs[r] = fmt.Errorf("all-gather of %d bytes: rank %d's are %x, want %x", n, q, got, rankBytes(q, n))
						return
					}
				}
				for root := range world {
					buf := rankBytes(r, n)
					if err := c.BroadcastBytes(buf, root); err != nil {
						errs[r] = err
						return
					}
					if !bytes.Equal(buf, rankBytes(root, n)) {
						errs[r] = fmt.Errorf("broadcast of %d bytes from rank %d: got %x, want %x", n, root, buf, rankBytes(root, n))
						return
					}
				}
			})
		}
		wg.Wait()
		for r, err := range errs {
			if err != nil {
				t.Fatalf("%d ranks, rank %d: %v", world, r, err)
			}
		}
	}
}

// TestByteCollectives: the byte collectives give every rank the bytes bit
// for bit on one rank (Solo) and on rings of 2 and 3 ranks with frames
// smaller than the messages.
func TestByteCollectives(t *testing.T) {
	checkByteCollectives(t, []Comm{NewSolo(cpu.New())})
	for _, world := range []int{2, 3} {
		rings := localRings(t, world, 8)
		comms := make([]Comm, world)
		for r, ring := range rings {
			comms[r] = ring
		}
		checkByteCollectives(t, comms)
	}
}

// TestByteCollectivesFailed: a failed comm's byte collectives return its
// error.
func TestByteCollectivesFailed(t *testing.T) {
	s := NewSolo(cpu.New())
	s.Abort(fmt.Errorf("out of memory"))
	if err := s.AllGatherBytes(make([]byte, 4), make([]byte, 4)); err == nil {
		t.Error("an all-gather of bytes after Abort succeeded")
	}
	if err := s.BroadcastBytes(make([]byte, 4), 0); err == nil {
		t.Error("a broadcast of bytes after Abort succeeded")
	}
}
