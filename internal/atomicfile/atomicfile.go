// Package atomicfile writes files that matter the way zerodiff promises:
// to a temporary name in the same folder, synced, checksummed, then renamed
// over the target and the folder synced, so a crash leaves either the old
// file or the new one, never a torn one.
package atomicfile

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
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
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return "", err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	h := sha256.New()
	bw := bufio.NewWriterSize(io.MultiWriter(f, h), 1<<20)
	if err = fill(bw); err != nil {
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	if err = bw.Flush(); err != nil {
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	if err = f.Chmod(fileMode); err != nil {
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	if err = f.Sync(); err != nil {
		return "", fmt.Errorf("sync %s: %w", path, err)
	}
	if err = f.Close(); err != nil {
		return "", fmt.Errorf("close %s: %w", path, err)
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return "", err
	}
	if err = SyncDir(dir); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// SyncDir makes a folder's entries (a rename, a new file) durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
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
