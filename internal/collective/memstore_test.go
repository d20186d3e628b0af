package collective

import (
	"strings"
	"sync"
	"testing"
	"time"
)

// A Get waits for the Set; a missing key and absent ranks are named on
// timeout.
func TestMemStore(t *testing.T) {
	st := NewMemStores(3)
	go func() {
		time.Sleep(20 * time.Millisecond)
		st[2].Set("k", []byte("v"))
	}()
	if v, err := st[0].Get("k", 5*time.Second); err != nil || string(v) != "v" {
		t.Fatalf("Get = %q, %v; want the value set later", v, err)
	}
	if _, err := st[1].Get("nobody", 10*time.Millisecond); err == nil || !strings.Contains(err.Error(), `"nobody"`) {
		t.Errorf("Get of a missing key: %v, want an error naming it", err)
	}
	var wg sync.WaitGroup
	for _, s := range st {
		wg.Go(func() {
			if err := s.Barrier("all", 5*time.Second); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if err := st[0].Barrier("alone", 10*time.Millisecond); err == nil || !strings.Contains(err.Error(), "ranks [1 2]") {
		t.Errorf("Barrier without ranks 1 and 2: %v, want an error naming them", err)
	}
}
