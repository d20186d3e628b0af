package rendezvous

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/zerodiff/zerodiff/internal/collective"
)

// The variables launch sets for each worker.
const (
	EnvRank      = "ZERODIFF_RANK"
	EnvWorld     = "ZERODIFF_WORLD_SIZE"
	EnvLocalRank = "ZERODIFF_LOCAL_RANK"
	EnvAddr      = "ZERODIFF_RDZV_ADDR"  // host:port of the job's server
	EnvScope     = "ZERODIFF_RDZV_SCOPE" // the scope of the job key
	EnvSecret    = "ZERODIFF_SECRET"     // the per-job secret
)

// workerJoinTimeout bounds a worker's wait for the server launch already
// found, so a few retries at most.
const workerJoinTimeout = time.Minute

// FromEnv joins the job's store as the worker of ZERODIFF_RANK, with the
// address, scope and secret launch set. Close it before exiting, or the
// server takes the worker for lost.
func FromEnv() (collective.Store, error) {
	get := func(name string) (string, error) {
		v := os.Getenv(name)
		if v == "" {
			return "", fmt.Errorf("rendezvous: %s is not set (run the worker under launch)", name)
		}
		return v, nil
	}
	vals := map[string]string{}
	for _, name := range []string{EnvRank, EnvWorld, EnvAddr, EnvScope, EnvSecret} {
		v, err := get(name)
		if err != nil {
			return nil, err
		}
		vals[name] = v
	}
	if err := CheckSecret(vals[EnvSecret]); err != nil {
		return nil, fmt.Errorf("rendezvous: %w", err)
	}
	rank, err1 := strconv.Atoi(vals[EnvRank])
	world, err2 := strconv.Atoi(vals[EnvWorld])
	if err1 != nil || err2 != nil || rank < 0 || rank >= world {
		return nil, fmt.Errorf("rendezvous: %s=%s, %s=%s: want 0 ≤ rank < world", EnvRank, vals[EnvRank], EnvWorld, vals[EnvWorld])
	}
	host, portStr, err := net.SplitHostPort(vals[EnvAddr])
	port, perr := strconv.Atoi(portStr)
	if err != nil || perr != nil {
		return nil, fmt.Errorf("rendezvous: %s=%s: want host:port", EnvAddr, vals[EnvAddr])
	}
	return Dial(host, []int{port}, Options{
		Key: Key(vals[EnvSecret], vals[EnvScope]), Role: Worker, Ranks: []int{rank}, World: world,
		JoinTimeout: workerJoinTimeout, KnownServer: true,
	})
}
