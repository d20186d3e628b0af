package collective

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zerodiff/zerodiff/internal/cpu"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// failFast is how soon every rank must report a failure: the 500 ms grace
// for an explanation, a few hops round the ring, and room for a loaded
// two-core machine.
const failFast = 2 * time.Second

// faultRings forms a ring whose Close errors are not the test's business:
// the ranks here crash and abort.
func faultRings(t *testing.T, world int, timeout time.Duration) []*Ring {
	t.Helper()
	rings, err := NewLocalRings(world, RingConfig{BucketBytes: 1 << 10, Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, r := range rings {
			r.Close()
		}
	})
	return rings
}

// crash closes a rank's connections without a word, as the kernel does for a
// process that died.
func crash(r *Ring) {
	r.left.Close()
	r.right.Close()
}

// crashSoon crashes r after 100 ms, while the others are in a collective,
// and returns when it did (the zero time until then).
func crashSoon(r *Ring) (when func() time.Time) {
	var mu sync.Mutex
	var at time.Time
	go func() {
		time.Sleep(100 * time.Millisecond)
		mu.Lock()
		at = time.Now()
		mu.Unlock()
		crash(r)
	}()
	return func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return at
	}
}

// allReduceAll runs an all-reduce on every rank but skip and returns each
// rank's error and how long after `since` it came.
func allReduceAll(rings []*Ring, skip int, since func() time.Time) ([]error, []time.Duration) {
	errs := make([]error, len(rings))
	took := make([]time.Duration, len(rings))
	var wg sync.WaitGroup
	for i, r := range rings {
		if i == skip {
			continue
		}
		wg.Go(func() {
			buf := make([]float32, 100_000) // (n)
			errs[i] = r.AllReduce(cpu.FromSlice(buf, len(buf)), Sum)
			took[i] = time.Since(since())
		})
	}
	wg.Wait()
	return errs, took
}

// wantPeer checks that err is a PeerError naming rank with a reason
// containing reason.
func wantPeer(err error, rank int, reason string) error {
	var pe *PeerError
	if !errors.As(err, &pe) {
		return fmt.Errorf("error %v, want a PeerError naming rank %d", err, rank)
	}
	if pe.Rank != rank || !strings.Contains(pe.Reason, reason) {
		return fmt.Errorf("error %q, want one naming rank %d with %q", err, rank, reason)
	}
	return nil
}

// A rank that dies while the others wait in a collective: every other rank
// fails within failFast, naming the dead one, and so does every later call.
func TestRingPeerDies(t *testing.T) {
	for _, tc := range []struct{ world, dead int }{{2, 1}, {4, 2}, {5, 0}} {
		t.Run(fmt.Sprintf("world%d_dead%d", tc.world, tc.dead), func(t *testing.T) {
			rings := faultRings(t, tc.world, time.Minute)
			crashed := crashSoon(rings[tc.dead])
			errs, took := allReduceAll(rings, tc.dead, crashed)
			for i, r := range rings {
				if i == tc.dead {
					continue
				}
				if err := wantPeer(errs[i], tc.dead, "closed its connection"); err != nil {
					t.Errorf("rank %d: %v", i, err)
				}
				if took[i] > failFast {
					t.Errorf("rank %d failed %v after the crash, want within %v", i, took[i], failFast)
				}
				start := time.Now()
				if err := wantPeer(r.Barrier(), tc.dead, "closed its connection"); err != nil {
					t.Errorf("rank %d, the call after: %v", i, err)
				}
				if d := time.Since(start); d > 100*time.Millisecond {
					t.Errorf("rank %d: the call after the failure took %v", i, d)
				}
			}
		})
	}
}

// A rank that dies in a Reduce, at the start of the chain, in its middle or
// as its root: every rank after it in the chain fails within failFast,
// naming the dead one. A rank before it may have handed all its frames to
// the kernel and returned; then it learns of the death from the closed
// connection, and in any case its next call fails naming the dead rank.
func TestRingReducePeerDies(t *testing.T) {
	for _, tc := range []struct{ world, root, dead int }{{4, 0, 1}, {4, 0, 2}, {3, 1, 1}} {
		t.Run(fmt.Sprintf("world%d_root%d_dead%d", tc.world, tc.root, tc.dead), func(t *testing.T) {
			rings := faultRings(t, tc.world, time.Minute)
			crashed := crashSoon(rings[tc.dead])
			errs := make([]error, tc.world)
			took := make([]time.Duration, tc.world)
			var wg sync.WaitGroup
			for i, r := range rings {
				if i == tc.dead {
					continue
				}
				wg.Go(func() {
					src := make([]float32, 100_000) // (n)
					var dst *tensor.Tensor
					if i == tc.root {
						dst = cpu.FromSlice(make([]float32, len(src)), len(src)) // (n)
					}
					errs[i] = r.Reduce(dst, cpu.FromSlice(src, len(src)), tc.root, Sum)
					took[i] = time.Since(crashed())
				})
			}
			wg.Wait()
			// chain is a rank's place in the reduce: root+1 first, root last.
			chain := func(r int) int { return (r - tc.root - 1 + tc.world) % tc.world }
			for i, r := range rings {
				if i == tc.dead {
					continue
				}
				if chain(i) > chain(tc.dead) || errs[i] != nil {
					if err := wantPeer(errs[i], tc.dead, "closed its connection"); err != nil {
						t.Errorf("rank %d: %v", i, err)
					}
					if took[i] > failFast {
						t.Errorf("rank %d failed %v after the crash, want within %v", i, took[i], failFast)
					}
				}
				deadline := time.Now().Add(failFast)
				for r.failed() == nil && time.Now().Before(deadline) {
					time.Sleep(10 * time.Millisecond)
				}
				if err := wantPeer(r.Barrier(), tc.dead, "closed its connection"); err != nil {
					t.Errorf("rank %d, the call after: %v", i, err)
				}
			}
		})
	}
}

// Abort on one rank fails its own call in progress and those of the others,
// naming it and its reason.
func TestRingAbort(t *testing.T) {
	rings := faultRings(t, 3, time.Minute)
	oom := errors.New("out of memory")
	start := time.Now()
	go func() {
		time.Sleep(100 * time.Millisecond)
		rings[1].Abort(oom)
	}()
	// Rank 0 stays away, so the collective of ranks 1 and 2 is still pending
	// when rank 1 aborts.
	errs, took := allReduceAll(rings, 0, func() time.Time { return start })
	for i := 1; i < 3; i++ {
		if err := wantPeer(errs[i], 1, "aborted: out of memory"); err != nil {
			t.Errorf("rank %d: %v", i, err)
		}
		if took[i] > failFast {
			t.Errorf("rank %d failed %v after the start, want within %v", i, took[i], failFast)
		}
	}
	deadline := time.Now().Add(failFast)
	for rings[0].failed() == nil && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if err := wantPeer(rings[0].Barrier(), 1, "aborted: out of memory"); err != nil {
		t.Errorf("rank 0, idle during the abort: %v", err)
	}
}

// A rank that stays away: the others give up after the timeout.
func TestRingTimeout(t *testing.T) {
	const timeout = 300 * time.Millisecond
	rings := faultRings(t, 3, timeout)
	start := time.Now()
	errs, took := allReduceAll(rings, 0, func() time.Time { return start })
	for i := 1; i < 3; i++ {
		var pe *PeerError
		if !errors.As(errs[i], &pe) || !strings.Contains(pe.Reason, "no data for 300ms") {
			t.Errorf("rank %d: error %v, want a PeerError about no data for 300ms", i, errs[i])
		}
		if took[i] > timeout+failFast {
			t.Errorf("rank %d failed after %v, want within %v", i, took[i], timeout+failFast)
		}
	}
}

// Ranks that call different collectives fail with an error that says so
// instead of exchanging garbage.
func TestRingMismatch(t *testing.T) {
	rings := faultRings(t, 2, 5*time.Second)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	wg.Go(func() { errs[0] = rings[0].AllReduce(cpu.FromSlice(make([]float32, 8), 8), Sum) })
	wg.Go(func() {
		errs[1] = rings[1].AllGather(cpu.FromSlice(make([]float32, 8), 8), cpu.FromSlice(make([]float32, 4), 4))
	})
	wg.Wait()
	for i, err := range errs {
		if err == nil || !strings.Contains(err.Error(), "must call the same collectives") {
			t.Errorf("rank %d: error %v, want one about different collectives", i, err)
		}
	}
}

// A rank that closed its communicator is named as such by a rank that calls
// on, with no grace wait.
func TestRingCallAfterPeerClosed(t *testing.T) {
	rings := faultRings(t, 3, 5*time.Second)
	if err := rings[2].Close(); err != nil {
		t.Fatal(err)
	}
	errs, took := allReduceAll(rings, 2, time.Now)
	for i := range 2 {
		if err := wantPeer(errs[i], 2, "closed its communicator"); err != nil {
			t.Errorf("rank %d: %v", i, err)
		}
		if took[i] > abortGrace/2 {
			t.Errorf("rank %d took %v to see that rank 2 had left", i, took[i])
		}
	}
}

// A stranger without the job's token is refused and logged, and the ring
// forms all the same. Rank 1 starts last, so rank 2 is still waiting for
// its left neighbour when the stranger calls.
func TestRingRefusesStrangers(t *testing.T) {
	stores := NewMemStores(3)
	var mu sync.Mutex
	var logged []string
	cfg := RingConfig{Listen: "127.0.0.1:0", Timeout: 5 * time.Second, Logf: func(f string, a ...any) {
		mu.Lock()
		logged = append(logged, fmt.Sprintf(f, a...))
		mu.Unlock()
	}}
	rings := make([]*Ring, 3)
	errs := make([]error, 3)
	var wg sync.WaitGroup
	for _, i := range []int{0, 2} {
		wg.Go(func() { rings[i], errs[i] = NewRing(stores[i], cfg) })
	}
	addr, err := stores[0].Get("ring/addr/2", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", string(addr))
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	greeting := make([]byte, len(ringMagic)+32)
	if _, err := io.ReadFull(c, greeting); err != nil {
		t.Fatal(err)
	}
	nonce := greeting[len(ringMagic):]
	hello := append([]byte(ringMagic), 1, 0, 0, 0, 3, 0, 0, 0) // rank 1 of 3
	hello = append(hello, proof([]byte("a guess"), "dial", nonce, 1, 3)...)
	if _, err := c.Write(hello); err != nil {
		t.Fatal(err)
	}
	if n, err := io.ReadFull(c, make([]byte, sha256.Size)); err == nil {
		t.Fatalf("the stranger got a %d-byte answer", n)
	}
	c.Close()

	rings[1], errs[1] = NewRing(stores[1], cfg)
	wg.Wait()
	for _, r := range rings {
		if r != nil {
			defer r.Close()
		}
	}
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	for _, r := range rings {
		wg.Go(func() {
			if err := r.Barrier(); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(logged) != 1 || !strings.Contains(logged[0], "wrong ring token") {
		t.Errorf("logged %q, want one refusal for a wrong ring token", logged)
	}
}
