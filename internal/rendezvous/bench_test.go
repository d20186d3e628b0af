package rendezvous

import (
	"sync"
	"testing"
	"time"
)

// BenchmarkRendezvous32 measures a job's meeting: a server starts, 32
// local ranks connect, authenticate and pass one barrier, and leave.
func BenchmarkRendezvous32(b *testing.B) {
	const world = 32
	for b.Loop() {
		s, _ := startServer(b, world, ServerConfig{})
		var wg sync.WaitGroup
		for r := range world {
			wg.Go(func() {
				c, err := Dial("127.0.0.1", []int{s.Port()}, Options{Key: testKey, Role: Worker, Ranks: []int{r}, World: world, JoinTimeout: 10 * time.Second})
				if err != nil {
					b.Error(err)
					return
				}
				if err := c.Barrier("start", 10*time.Second); err != nil {
					b.Error(err)
				}
				c.Close()
			})
		}
		wg.Wait()
		<-s.Done()
		s.Close()
	}
}
