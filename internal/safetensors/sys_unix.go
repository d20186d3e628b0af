//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package safetensors

import (
	"fmt"
	"os"
	"syscall"
)

// mapFile maps the whole file read-only, so opening a multi-gigabyte model
// costs page-table entries rather than a copy; unmap releases the mapping.
func mapFile(f *os.File, size int64) (data []byte, unmap func() error, err error) {
	if size != int64(int(size)) {
		return nil, nil, fmt.Errorf("file of %d bytes does not fit in the address space", size)
	}
	b, err := syscall.Mmap(int(f.Fd()), 0, int(size), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, nil, fmt.Errorf("mmap: %w", err)
	}
	return b, func() error { return syscall.Munmap(b) }, nil
}

// createMode is what os.Create gives a new file: 0666 less the umask.
var createMode = func() os.FileMode {
	u := syscall.Umask(0)
	syscall.Umask(u)
	return 0o666 &^ os.FileMode(u)
}()

// syncDir fsyncs a folder so that a rename inside it is durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("safetensors: sync folder: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("safetensors: sync folder %s: %w", dir, err)
	}
	return nil
}
