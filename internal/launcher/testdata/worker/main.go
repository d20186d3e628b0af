// Command worker stands in for train in launch's tests: it joins the store
// as launch's variables say, records its environment and pid in -dir,
// passes a barrier with the other ranks, then fails, finishes, or waits for
// a signal as told.
//
//	worker -dir D [-fail-rank R -code C] [-stubborn-rank R] [-finish]
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/zerodiff/zerodiff/internal/rendezvous"
)

func main() {
	dir := flag.String("dir", "", "where to write rank-R.env, rank-R.pid and rank-R.signal")
	failRank := flag.Int("fail-rank", -1, "the rank that exits with -code after the barrier")
	code := flag.Int("code", 3, "the exit code of -fail-rank")
	stubborn := flag.Int("stubborn-rank", -1, "the rank that ignores SIGTERM")
	finish := flag.Bool("finish", false, "exit 0 after the barrier")
	flag.Parse()

	// Catch signals before anyone can know the pid.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGUSR1, syscall.SIGINT)
	store, err := rendezvous.FromEnv()
	if err != nil {
		fail(err)
	}
	rank := store.Rank()
	if rank == *stubborn {
		signal.Ignore(syscall.SIGTERM)
	}
	torchrun := strings.Fields("RANK WORLD_SIZE LOCAL_RANK LOCAL_WORLD_SIZE GROUP_RANK MASTER_ADDR MASTER_PORT")
	var env []string
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "ZERODIFF_") || slices.Contains(torchrun, k) {
			env = append(env, kv)
		}
	}
	write(*dir, rank, "env", strings.Join(env, "\n")+"\n")
	if err := store.Barrier("started", 10*time.Second); err != nil {
		fail(err)
	}
	write(*dir, rank, "pid", strconv.Itoa(os.Getpid()))
	switch {
	case rank == *failRank:
		os.Exit(*code) // without closing the store, as a crash would
	case *finish:
		store.Close()
		return
	}
	sig := <-sigs
	write(*dir, rank, "signal", sig.String())
	store.Close()
	os.Exit(75)
}

// write writes dir/rank-R.ext atomically (the test polls for it).
func write(dir string, rank int, ext, text string) {
	path := filepath.Join(dir, fmt.Sprintf("rank-%d.%s", rank, ext))
	if err := os.WriteFile(path+".tmp", []byte(text), 0o644); err != nil {
		fail(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "worker: %v\n", err)
	os.Exit(1)
}
