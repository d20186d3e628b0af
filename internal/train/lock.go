package train

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// LockFile is the lock a run holds in its output folder while it runs, so
// that a second run in the same folder stops at once instead of mixing its
// log lines and checkpoint renames with the first one's.
const LockFile = "train.lock"

// lockOwner is what the lock file says of the run that holds it.
type lockOwner struct {
	Host    string    `json:"host"`
	PID     int       `json:"pid"`
	Started time.Time `json:"started"`
}

// outputLock is a held lock of an output folder.
type outputLock struct {
	path string
	me   lockOwner
}

// lockOutput takes the lock of the output folder dir for this process. A
// lock left by a process of this host that is no longer running (killed
// with SIGKILL, or its machine restarted) is taken over, with a notice to
// out; a live one, or one from another host (whose processes this one
// cannot see), is an error naming its host and pid.
func lockOutput(dir string, out io.Writer) (*outputLock, error) {
	host, err := os.Hostname()
	if err != nil {
		return nil, fmt.Errorf("lock of output_dir %s: %w", dir, err)
	}
	l := &outputLock{path: filepath.Join(dir, LockFile), me: lockOwner{Host: host, PID: os.Getpid(), Started: time.Now().UTC()}}
	for {
		err := l.create()
		if !errors.Is(err, fs.ErrExist) {
			return l, err
		}
		held, err := readLock(l.path)
		if err != nil {
			return nil, fmt.Errorf("output_dir %s is locked, and its lock %s cannot be read (%v): if no train runs in that folder, remove the lock and start again", dir, l.path, err)
		}
		switch {
		case held.Host != host:
			return nil, fmt.Errorf("output_dir %s is in use by train pid %d on host %s since %s: if no run is alive there, remove %s and start again",
				dir, held.PID, held.Host, held.Started.Format(time.RFC3339), l.path)
		case alive(held.PID):
			return nil, fmt.Errorf("output_dir %s is in use by train pid %d on this host (%s) since %s: wait for that run to end, or give this one another output_dir",
				dir, held.PID, host, held.Started.Format(time.RFC3339))
		}
		fmt.Fprintf(out, "train: taking over the lock %s of train pid %d on %s, which is no longer running\n", l.path, held.PID, host)
		if err := os.Remove(l.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("output_dir %s: remove the stale lock: %w", dir, err)
		}
	}
}

// create writes the lock whole under a temporary name and links it in
// place, which fails if a lock exists: no reader sees half a lock.
func (l *outputLock) create() error {
	b, err := json.Marshal(l.me)
	if err != nil {
		return err
	}
	tmp := fmt.Sprintf("%s.%s.%d", l.path, l.me.Host, l.me.PID)
	// Exclusive create of a fresh name, so a link planted at tmp is removed,
	// never written through.
	os.Remove(tmp)
	if err := writeExclusive(tmp, append(b, '\n')); err != nil {
		return fmt.Errorf("lock of the output folder: %w", err)
	}
	defer os.Remove(tmp)
	err = os.Link(tmp, l.path)
	if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.ENOTSUP) {
		// A file system without hard links: create the lock in place.
		return writeExclusive(l.path, append(b, '\n'))
	}
	return err
}

// writeExclusive creates path, which must not exist (not even as a link),
// and writes b to it.
func writeExclusive(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o666)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	return errors.Join(err, f.Close())
}

// release removes the lock if it is still this process's.
func (l *outputLock) release() {
	if l == nil {
		return
	}
	if held, err := readLock(l.path); err == nil && held.Host == l.me.Host && held.PID == l.me.PID && held.Started.Equal(l.me.Started) {
		os.Remove(l.path)
	}
}

func readLock(path string) (lockOwner, error) {
	var o lockOwner
	b, err := os.ReadFile(path)
	if err != nil {
		return o, err
	}
	if err := json.Unmarshal(b, &o); err != nil {
		return o, err
	}
	if o.Host == "" || o.PID <= 0 {
		return o, fmt.Errorf("no host and pid in it")
	}
	return o, nil
}

// alive tells whether process pid of this host exists (signal 0 checks
// without sending; EPERM means it exists under another user).
func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
