package collective

import (
	"errors"
	"net"
	"sync"
	"testing"
	"time"
)

// hostStore is a MemStore that says which address its host has on the
// job's network, as the rendezvous client does.
type hostStore struct {
	*MemStore
	host string
}

func (h hostStore) LocalHost() string { return h.host }

// formRings forms a ring over stores, failing the test on an error.
func formRings(t *testing.T, stores []Store) []*Ring {
	t.Helper()
	rings := make([]*Ring, len(stores))
	errs := make([]error, len(stores))
	var wg sync.WaitGroup
	for r, st := range stores {
		wg.Go(func() { rings[r], errs[r] = NewRing(st, RingConfig{Timeout: 10 * time.Second}) })
	}
	wg.Wait()
	for _, r := range rings {
		if r != nil {
			t.Cleanup(func() { r.Close() })
		}
	}
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	return rings
}

// TestRingListensWhereStoreSays: without RingConfig.Listen a rank listens
// on the address its Store reports (127.0.0.2 here, a loopback address other
// than the fallback), and on loopback when the Store reports none, never
// on every interface.
func TestRingListensWhereStoreSays(t *testing.T) {
	for _, tt := range []struct {
		name, host, want string
	}{
		{"store with a local host", "127.0.0.2", "127.0.0.2"},
		{"store without one", "", "127.0.0.1"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var stores []Store
			for _, m := range NewMemStores(2) {
				if tt.host != "" {
					stores = append(stores, hostStore{m, tt.host})
				} else {
					stores = append(stores, m)
				}
			}
			for _, r := range formRings(t, stores) {
				host, _, err := net.SplitHostPort(r.addr)
				if err != nil || host != tt.want {
					t.Errorf("rank %d listens at %q, want host %s", r.rank, r.addr, tt.want)
				}
			}
		})
	}
}

// TestRingSilentStranger: a stranger connects to rank 2 before its left
// neighbour does and then says nothing; the neighbour is authenticated
// beside it, and the ring forms well within its Timeout, which is shorter
// than the stranger's handshake allowance.
func TestRingSilentStranger(t *testing.T) {
	stores := NewMemStores(3)
	cfg := RingConfig{Timeout: 3 * time.Second, Logf: t.Logf}
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
	var strangers []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", string(addr))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		strangers = append(strangers, c)
	}
	time.Sleep(100 * time.Millisecond) // rank 2 has accepted them
	rings[1], errs[1] = NewRing(stores[1], cfg)
	wg.Wait()
	for _, r := range rings {
		if r != nil {
			defer r.Close()
		}
	}
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("the ring did not form beside %d silent strangers: %v", len(strangers), err)
	}
	for _, r := range rings {
		wg.Go(func() {
			if err := r.Barrier(); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
}
