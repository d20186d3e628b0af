// Package collective is how ranks of one job talk: a key/value store for meeting
// (the rendezvous), and collectives (all-reduce, reduce-scatter, all-gather,
// broadcast, barrier) behind one interface that a TCP ring implements on
// CPUs and NCCL implements on GPUs.
package collective

import "time"

// Store is the job's meeting point: the rendezvous server on the first host
// serves it; ranks exchange addresses and ids through it.
type Store interface {
	// Set publishes value under key.
	Set(key string, value []byte) error
	// Get waits until key is set (at most timeout) and returns its value.
	// On timeout the error names the key.
	Get(key string, timeout time.Duration) ([]byte, error)
	// Barrier returns when every rank of the job has called Barrier with the
	// same name, or fails after timeout with an error naming the ranks that
	// never arrived.
	Barrier(name string, timeout time.Duration) error
	// Rank and World are this process's rank and the job's size.
	Rank() int
	World() int
	Close() error
}
