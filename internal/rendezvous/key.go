// Package rendezvous is the job's meeting point: a small TCP key/value store
// served on the first host, implementing collective.Store for the workers, plus
// membership, heartbeats and failure reports for the launchers.
//
// # Finding the server
//
// The server listens on the first free port of a fixed sequence (Ports):
// BasePort(job id) and the PortCount-1 ports after it, or the ports from
// --master-port on. Clients walk the same sequence: where another job's
// server answers, the handshake fails (a different key) and they move on;
// where nothing listens yet they come back after a pause, until the join
// timeout.
//
// # The job's key
//
// Every connection proves knowledge of the job key with an HMAC-SHA256
// challenge-response in both directions; the key itself never crosses the
// wire. The key is Key(secret, scope): secret is ZERODIFF_SECRET, a random
// value per job (the sbatch scripts export one made from /dev/urandom before
// srun, so every task of the job inherits it; `launch --nproc` makes one
// itself); scope names the job and its user, e.g. "slurm job 4711 step 0
// uid 1000", so that two jobs, or two steps of one job, never accept each
// other even when a user reuses a secret. A client with the wrong key is
// refused and the server logs its address.
package rendezvous

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash/fnv"
)

// PortCount is the length of the port sequence servers and clients walk.
const PortCount = 16

// Ports derived from a job id lie in [portLow, portLow+portSpan).
const (
	portLow  = 20000
	portSpan = 20000
)

// Key derives the job key from the per-job secret and the scope naming the
// job (see the package documentation).
func Key(secret, scope string) []byte {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte("zerodiff rendezvous v1\x00" + scope))
	return m.Sum(nil)
}

// JobScope is the scope of a job named by the user (launch --job-id, the
// rendezvous tool's --job-id) on machines without Slurm.
func JobScope(jobID string) string { return "job " + jobID }

// BasePort is the first port of a job's sequence: 20000 + FNV-1a(jobID) mod
// 20000, so that jobs sharing a node most likely start on different ports.
func BasePort(jobID string) int {
	h := fnv.New32a()
	h.Write([]byte(jobID))
	return portLow + int(h.Sum32()%portSpan)
}

// Ports is the sequence of PortCount ports from base on. A base of 0 means
// "any free port" and yields just 0.
func Ports(base int) []int {
	if base == 0 {
		return []int{0}
	}
	ports := make([]int, 0, PortCount)
	for i := range PortCount {
		if base+i > 65535 {
			break
		}
		ports = append(ports, base+i)
	}
	return ports
}

// MinSecretLen is the shortest secret accepted, in characters: 32 hex
// digits are 128 random bits. The challenge-response lets whoever sees one
// exchange try secrets offline, so a short one could be guessed.
const MinSecretLen = 32

// CheckSecret refuses a secret too short to keep strangers out.
func CheckSecret(secret string) error {
	if len(secret) < MinSecretLen {
		return fmt.Errorf("%s has %d characters; it needs at least %d, random (e.g. `openssl rand -hex 32`), or strangers could guess it",
			EnvSecret, len(secret), MinSecretLen)
	}
	return nil
}

// NewSecret returns 32 random bytes in hex, a secret for one job.
func NewSecret() string {
	b := make([]byte, 32)
	rand.Read(b)
	return hex.EncodeToString(b)
}
