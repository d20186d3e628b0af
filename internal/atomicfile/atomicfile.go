// Package atomicfile writes files that matter the way zerodiff promises:
// to a temporary name in the same folder, synced, checksummed, then renamed
// over the target and the folder synced, so a crash leaves either the old
// file or the new one, never a torn one.
package atomicfile

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"syscall"
)

// fileMode is what os.Create gives a new file: 0666 less the umask, read at
// start-up (CreateTemp makes its files 0600, which would keep checkpoints
// from the other users of a shared cluster account or group).
var fileMode = func() os.FileMode {
	u := syscall.Umask(0)
	syscall.Umask(u)
	return 0o666 &^ os.FileMode(u)
}()

// Write creates path with what fill writes and returns the SHA-256 of the
// bytes, hex-encoded.
func Write(path string, fill func(w io.Writer) error) (sum string, err error) {
	f, err := Create(path)
	if err != nil {
		return "", err
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	if err = fill(bw); err == nil {
		err = bw.Flush()
	}
	if err != nil {
		f.Abort()
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	return f.Commit()
}

// File is a file being written in place of path, for writers that add to
// it over many calls (a shard, record by record): Commit makes it path,
// Abort drops it. Until Commit, path is untouched.
type File struct {
	f    *os.File
	path string
	h    hash.Hash
	n    int64
}

// Create starts writing path: a new file under a temporary name in path's
// folder (O_EXCL, so a link planted at that name redirects nothing).
func Create(path string) (*File, error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return nil, err
	}
	return &File{f: f, path: path, h: sha256.New()}, nil
}

// Write adds b to the file.
func (t *File) Write(b []byte) (int, error) {
	n, err := t.f.Write(b)
	t.h.Write(b[:n])
	t.n += int64(n)
	return n, err
}

// Size is the number of bytes written so far.
func (t *File) Size() int64 { return t.n }

// Commit gives the file the mode os.Create gives, syncs it, renames it over
// path and syncs the folder; it returns the SHA-256 of the bytes,
// hex-encoded. On an error the temporary file is removed and path is as it
// was.
func (t *File) Commit() (sum string, err error) {
	defer func() {
		if err != nil {
			t.Abort()
		}
	}()
	if err = t.f.Chmod(fileMode); err != nil {
		return "", fmt.Errorf("write %s: %w", t.path, err)
	}
	if err = t.f.Sync(); err != nil {
		return "", fmt.Errorf("sync %s: %w", t.path, err)
	}
	if err = t.f.Close(); err != nil {
		return "", fmt.Errorf("close %s: %w", t.path, err)
	}
	if err = os.Rename(t.f.Name(), t.path); err != nil {
		return "", err
	}
	if err = SyncDir(filepath.Dir(t.path)); err != nil {
		return "", err
	}
	return hex.EncodeToString(t.h.Sum(nil)), nil
}

// Abort closes and removes the temporary file; path is left as it was.
func (t *File) Abort() error {
	t.f.Close()
	if err := os.Remove(t.f.Name()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// SyncDir makes a folder's entries (a rename, a new file) durable. A file
// system that cannot sync folders (os.ErrInvalid) is not an error.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, os.ErrInvalid) {
		return fmt.Errorf("sync folder %s: %w", dir, err)
	}
	return nil
}

// Sum returns the SHA-256 of the file at path, hex-encoded.
func Sum(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
