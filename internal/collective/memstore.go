package collective

import (
	"errors"
	"fmt"
	"sync"
	"time"
)

// MemStore is a Store shared by ranks in one process: what tests use to
// start several ranks as goroutines (here and in the packages above, such as
// the ZeRO equivalence tests) without a rendezvous server.
type MemStore struct {
	s    *memShared
	rank int
}

// memShared is the state every rank's MemStore sees.
type memShared struct {
	mu       sync.Mutex
	changed  chan struct{} // closed and replaced on every change
	world    int
	kv       map[string][]byte
	arrived  map[string]map[int]bool // barrier name → ranks there
	finished map[string]bool         // barriers every rank reached
}

// NewMemStores returns the Stores of ranks 0 … world-1 of one job.
func NewMemStores(world int) []*MemStore {
	sh := &memShared{
		changed:  make(chan struct{}),
		world:    world,
		kv:       map[string][]byte{},
		arrived:  map[string]map[int]bool{},
		finished: map[string]bool{},
	}
	out := make([]*MemStore, world)
	for r := range out {
		out[r] = &MemStore{s: sh, rank: r}
	}
	return out
}

// notify wakes every waiter; s.mu is held.
func (s *memShared) notify() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// wait calls done under the lock until it reports true, or fails after
// timeout with the error that timedOut gives.
func (s *memShared) wait(timeout time.Duration, done func() bool, timedOut func() error) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		if done() {
			s.mu.Unlock()
			return nil
		}
		ch := s.changed
		s.mu.Unlock()
		select {
		case <-ch:
		case <-deadline.C:
			s.mu.Lock()
			defer s.mu.Unlock()
			if done() {
				return nil
			}
			return timedOut()
		}
	}
}

func (m *MemStore) Set(key string, value []byte) error {
	m.s.mu.Lock()
	defer m.s.mu.Unlock()
	m.s.kv[key] = append([]byte(nil), value...)
	m.s.notify()
	return nil
}

func (m *MemStore) Get(key string, timeout time.Duration) ([]byte, error) {
	var v []byte
	err := m.s.wait(timeout, func() bool {
		var ok bool
		v, ok = m.s.kv[key]
		return ok
	}, func() error {
		return fmt.Errorf("store: key %q not set after %v", key, timeout)
	})
	return append([]byte(nil), v...), err
}

func (m *MemStore) Barrier(name string, timeout time.Duration) error {
	m.s.mu.Lock()
	if m.s.arrived[name] == nil {
		m.s.arrived[name] = map[int]bool{}
	}
	m.s.arrived[name][m.rank] = true
	if len(m.s.arrived[name]) == m.s.world {
		m.s.finished[name] = true
	}
	m.s.notify()
	m.s.mu.Unlock()
	return m.s.wait(timeout, func() bool { return m.s.finished[name] }, func() error {
		var missing []int
		for r := 0; r < m.s.world; r++ {
			if !m.s.arrived[name][r] {
				missing = append(missing, r)
			}
		}
		return fmt.Errorf("store: barrier %q: ranks %v did not arrive within %v", name, missing, timeout)
	})
}

func (m *MemStore) Rank() int    { return m.rank }
func (m *MemStore) World() int   { return m.s.world }
func (m *MemStore) Close() error { return nil }

// NewLocalRings forms a ring of world ranks inside this process, over
// loopback TCP and MemStores: for tests of code that runs on several ranks.
// cfg.Listen defaults to 127.0.0.1:0 here.
func NewLocalRings(world int, cfg RingConfig) ([]*Ring, error) {
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	rings := make([]*Ring, world)
	errs := make([]error, world)
	var wg sync.WaitGroup
	for r, st := range NewMemStores(world) {
		wg.Go(func() { rings[r], errs[r] = NewRing(st, cfg) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		for _, r := range rings {
			if r != nil {
				r.Close()
			}
		}
		return nil, err
	}
	return rings, nil
}
